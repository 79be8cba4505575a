/**
 * Training-time augmentation (native/core/train.cpp, augment_sample): random horizontal flips and
 * random crops of the zero-padded image, drawn from Philox (seed, step, position, stream 6), checked
 * against a reference written here from that definition, then through whole training runs.
 */
import * as assert from "node:assert/strict";
import { addon } from "../src/native";
import * as models from "../src/models";
import { train } from "../src/train";
import { Dataset } from "../src/datasets";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const a = addon() as any;
const STREAM_AUGMENT = 6;

function reference(img: Uint8Array, h: number, w: number, c: number, seed: number, step: number, i: number, flip: boolean, pad: number, cutout = 0): Uint8Array {
  const r = a.philox(i, step, 0, STREAM_AUGMENT, seed >>> 0, Math.floor(seed / 2 ** 32)) as Uint32Array;
  const f = flip && (r[0] & 1) === 1;
  const dy = pad > 0 ? (r[1] % (2 * pad + 1)) - pad : 0, dx = pad > 0 ? (r[2] % (2 * pad + 1)) - pad : 0;
  const out = new Uint8Array(img.length);
  for (let y = 0; y < h; ++y)
    for (let x = 0; x < w; ++x) {
      const sy = y + dy, sx = x + dx;
      if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
      const fx = f ? w - 1 - sx : sx;
      for (let k = 0; k < c; ++k) out[(y * w + x) * c + k] = img[(sy * w + fx) * c + k];
    }
  if (cutout > 0) {
    // centre: the fourth word's low 16 bits mod h, high 16 bits mod w; the square clipped to the image
    const cy = (r[3] & 0xffff) % h, cx = (r[3] >>> 16) % w;
    const y0 = cy - Math.floor(cutout / 2), x0 = cx - Math.floor(cutout / 2);
    for (let y = Math.max(0, y0); y < Math.min(h, y0 + cutout); ++y)
      for (let x = Math.max(0, x0); x < Math.min(w, x0 + cutout); ++x)
        for (let k = 0; k < c; ++k) out[(y * w + x) * c + k] = 128;
  }
  return out;
}

describe("augmentation", () => {
  const h = 7, w = 9, c = 3;
  const img = Uint8Array.from({ length: h * w * c }, (_, i) => 1 + ((i * 37) % 250));  // no zero pixels

  it("matches the reference for flips, crops and both, over many steps and positions", () => {
    // pad 12 > w: some shifts move the whole image out (rows of zeros); one channel as MNIST
    const gray = Uint8Array.from({ length: h * w }, (_, i) => 1 + ((i * 53) % 250));
    for (const [im, ch] of [[img, c], [gray, 1]] as Array<[Uint8Array, number]>)
      for (const [flip, pad] of [[true, 0], [false, 2], [true, 4], [false, 0], [false, 12], [true, 12]] as Array<[boolean, number]>)
        for (let step = 0; step < 40; step += 7)
          for (let i = 0; i < 5; ++i) {
            const got = a.augmentSample(im, h, w, ch, 12345, step, i, flip, pad) as Uint8Array;
            assert.deepEqual(got, reference(im, h, w, ch, 12345, step, i, flip, pad), `c ${ch} flip ${flip} pad ${pad} step ${step} position ${i}`);
          }
    assert.deepEqual(a.augmentSample(img, h, w, c, 1, 3, 0, false, 0), img, "no augmentation is the identity");
  });

  it("cutout: a mid-grey square after flip and crop, clipped at the edges; flips and crops drawn as without it", () => {
    for (const [flip, pad, cutout] of [[false, 0, 3], [true, 2, 4], [false, 1, 1], [true, 0, 9], [false, 3, 20]] as Array<[boolean, number, number]>)
      for (let step = 0; step < 60; step += 5)
        for (let i = 0; i < 4; ++i) {
          const got = a.augmentSample(img, h, w, c, 99, step, i, flip, pad, cutout) as Uint8Array;
          const want = reference(img, h, w, c, 99, step, i, flip, pad, cutout);
          assert.deepEqual(got, want, `flip ${flip} pad ${pad} cutout ${cutout} step ${step} position ${i}`);
          // outside the square, the image is the one without cutout
          const plain = a.augmentSample(img, h, w, c, 99, step, i, flip, pad) as Uint8Array;
          let grey = 0;
          for (let j = 0; j < got.length; ++j) if (got[j] !== plain[j]) { assert.equal(got[j], 128); grey++; }
          assert.ok(grey <= cutout * cutout * c, `${grey} changed bytes for a ${cutout}² square`);
        }
    // a square that fits (5 ≤ 7 and 9) covers 5·5 pixels exactly where its centre is at least 2 from every edge
    let inside = 0;
    for (let step = 0; step < 200; ++step) {
      const got = a.augmentSample(img, h, w, c, 5, step, 0, false, 0, 5) as Uint8Array;
      let n = 0;
      for (let j = 0; j < got.length; j += c) n += got[j] === 128 && got[j + 1] === 128 && got[j + 2] === 128 ? 1 : 0;
      if (n === 25) inside++;
      else assert.ok(n < 25 && n >= 9, `a clipped 5² square leaves ${n} pixels`);
    }
    // centres uniform over 7 × 9: (3·5)/(7·9) of them keep the whole square
    assert.ok(Math.abs(inside / 200 - 15 / 63) < 0.1, `${inside} of 200 squares inside`);
  });

  it("flips half the time and shifts uniformly over [−pad, pad]² (read back from the images)", () => {
    const pad = 2, n = 5000, W = 16;
    // two channels: row + 1 and column + 1 of the input pixel (0 is the padding)
    const probe = new Uint8Array(W * W * 2);
    for (let y = 0; y < W; ++y) for (let x = 0; x < W; ++x) { probe[(y * W + x) * 2] = y + 1; probe[(y * W + x) * 2 + 1] = x + 1; }
    let flips = 0;
    const shifts = new Map<string, number>();
    for (let s = 0; s < n; ++s) {
      const out = a.augmentSample(probe, W, W, 2, 7, s, 3, true, pad) as Uint8Array;
      // output pixel (8, 2) shows input (8 + dy, x') with x' = 2 + dx, or W − 1 − (2 + dx) when flipped
      const sy = out[(8 * W + 2) * 2] - 1, sx = out[(8 * W + 2) * 2 + 1] - 1;
      const flipped = sx >= W / 2;
      flips += flipped ? 1 : 0;
      const key = `${sy - 8},${(flipped ? W - 1 - sx : sx) - 2}`;
      shifts.set(key, (shifts.get(key) ?? 0) + 1);
    }
    assert.ok(Math.abs(flips - n / 2) < 4 * Math.sqrt(n / 4), `${flips} flips in ${n}`);
    assert.equal(shifts.size, 25, `every (dy, dx) in [−2, 2]² occurs: ${[...shifts.keys()].join(" ")}`);
    for (const [k, v] of shifts) assert.ok(Math.abs(v - n / 25) < 4 * Math.sqrt(n / 25), `shift ${k}: ${v} of ${n}`);
  });

  describe("in training", function () {
    this.timeout(120000);
    // 10×10 RGB images, 3 classes told apart by which third of the image is bright
    function data(count: number, seed: number): Dataset {
      const images = new Uint8Array(count * 300), labels = new Int32Array(count);
      let s = seed;
      const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
      for (let i = 0; i < count; ++i) {
        labels[i] = i % 3;
        for (let y = 0; y < 10; ++y)
          for (let x = 0; x < 10; ++x)
            for (let k = 0; k < 3; ++k) images[i * 300 + (y * 10 + x) * 3 + k] = Math.floor(rnd() * 80 + (Math.floor(y / 3.4) === labels[i] ? 150 : 0));
      }
      return { images, labels, count, height: 10, width: 10, channels: 3, classes: 3, name: "stripes" } as unknown as Dataset;
    }
    const mk = () => models.mlp({ hidden: [32], seed: 3, backend: "cpu", input: [10, 10, 3], classes: 3 });
    const weights = (m: ReturnType<typeof mk>) => m.state().filter((t) => t.name.endsWith(".weight")).map((t) => Buffer.from(t.data).toString("base64")).join();

    it("is repeatable, changes the run, and rejects a bad option naming it", async () => {
      const set = { train: data(300, 1), test: data(60, 2) };
      const run = async (augment?: { flip?: boolean; crop?: number; cutout?: number }) => {
        const m = mk();
        await train(m, set, { epochs: 2, batchSize: 50, report: false, ...(augment ? { augment } : {}) });
        return weights(m);
      };
      const a1 = await run({ flip: true, crop: 2 }), a2 = await run({ flip: true, crop: 2 }), plain = await run();
      assert.equal(a1, a2, "same seed and augmentation: the same weights");
      assert.notEqual(a1, plain, "augmentation changes what the net sees");
      const c1 = await run({ flip: true, crop: 2, cutout: 4 });
      assert.equal(c1, await run({ flip: true, crop: 2, cutout: 4 }), "cutout is repeatable");
      assert.notEqual(c1, a1, "cutout changes what the net sees");
      await assert.rejects(async () => { await train(mk(), set, { epochs: 1, augment: { crop: -1 } }); }, /augment\.crop/);
      await assert.rejects(async () => { await train(mk(), set, { epochs: 1, augment: { cutout: -3 } }); }, /augment\.cutout/);
    });
  });
});
