// Philox4x32-10 (ALGORITHM.md §5): the generator every random decision of ternlab comes from.
import { strict as assert } from "assert";
import { addon } from "../src/native";
import { Rng, chiSquareUpper, philox4x32_10, uniform24 } from "./reference";

const hex = (v: ArrayLike<number>) => Array.from(v, (x) => (x >>> 0).toString(16).padStart(8, "0")).join(" ");

// Random123's known-answer vectors (kat_vectors, philox4x32 R=10).
const KAT: { ctr: number[]; key: number[]; out: string }[] = [
  { ctr: [0, 0, 0, 0], key: [0, 0], out: "6627e8d5 e169c58d bc57ac4c 9b00dbd8" },
  {
    ctr: [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
    key: [0xffffffff, 0xffffffff],
    out: "408f276d 41c83b0e a20bc7c6 6d5451fd",
  },
  {
    ctr: [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
    key: [0xa4093822, 0x299f31d0],
    out: "d16cfe09 94fdcceb 5001e420 24126ea1",
  },
];

describe("Philox4x32-10", () => {
  const a = addon();

  for (const k of KAT)
    it(`matches Random123's known answer for ctr ${hex(k.ctr)} key ${hex(k.key)}`, () => {
      assert.equal(hex(a.philox(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.key[0], k.key[1])), k.out);
    });

  it("the test reference's Philox gives the same known answers", () => {
    for (const k of KAT) assert.equal(hex(philox4x32_10(k.ctr, k.key)), k.out);
  });

  it("agrees with the reference on 2000 random counters and keys", () => {
    const rng = new Rng(7);
    for (let i = 0; i < 2000; i++) {
      const ctr = [rng.u32(), rng.u32(), rng.u32(), rng.u32()], key = [rng.u32(), rng.u32()];
      assert.equal(hex(a.philox(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1])), hex(philox4x32_10(ctr, key)), `ctr ${hex(ctr)} key ${hex(key)}`);
    }
  });

  // 4096 calls along the element word (how ternlab counts), 16384 words. Three views must each
  // look uniform: the top 4 bits of every word (16 bins), the low byte (256 bins) and uniform24
  // (the float every decision uses) in 64 bins. Each χ² must stay below its 1e-6 upper quantile.
  it("passes a χ² test of uniformity on 16384 words", () => {
    const words: number[] = [];
    for (let e = 0; e < 4096; e++) words.push(...a.philox(e, 17, 3, 3, 0x1234, 0));
    const chi = (bins: number, bin: (w: number) => number) => {
      const count = new Array<number>(bins).fill(0);
      for (const w of words) count[bin(w)]++;
      const expected = words.length / bins;
      return count.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
    };
    const z = 4.75; // one-sided p ≈ 1e-6
    const top = chi(16, (w) => w >>> 28), low = chi(256, (w) => w & 0xff), u = chi(64, (w) => Math.floor(uniform24(w) * 64));
    assert.ok(top < chiSquareUpper(15, z), `top nibble χ² ${top.toFixed(1)}`);
    assert.ok(low < chiSquareUpper(255, z), `low byte χ² ${low.toFixed(1)}`);
    assert.ok(u < chiSquareUpper(63, z), `uniform24 χ² ${u.toFixed(1)}`);
    // and not suspiciously perfect either (a counter leaking through would give χ² ≈ 0)
    assert.ok(top > 1 && low > 150 && u > 20, `χ² too small: ${top}, ${low}, ${u}`);
  });

  it("neighbouring counters give unrelated words (no bit copied through)", () => {
    // For consecutive elements, each output bit flips with probability ½: over 4096 pairs × 128
    // bits the flip fraction is ½ within 4σ.
    let flips = 0, bits = 0;
    let prev = a.philox(0, 5, 1, 3, 99, 0);
    for (let e = 1; e <= 4096; e++) {
      const cur = a.philox(e, 5, 1, 3, 99, 0);
      for (let i = 0; i < 4; i++) {
        let x = (prev[i] ^ cur[i]) >>> 0;
        while (x) {
          flips += x & 1;
          x >>>= 1;
        }
        bits += 32;
      }
      prev = cur;
    }
    const sd = Math.sqrt(bits * 0.25);
    assert.ok(Math.abs(flips - bits / 2) < 4 * sd, `flip fraction ${flips / bits}`);
  });

  it("uniform24 is in [0, 1) with 24 random bits", () => {
    assert.equal(uniform24(0), 0);
    assert.equal(uniform24(0xffffffff), 1 - 2 ** -24);
    assert.equal(uniform24(0x000000ff), 0);
  });
});
