/**
 * bench/work.ts counts the work of a training step from a model spec; the floor it reports for
 * issue 3's speed target rests on these counts, so they are checked against hand counts.
 */
import * as assert from "node:assert/strict";
import { gxnorCifar, resnet18 } from "../bench/gpu_models";
import { floorReport, workOf } from "../bench/work";

describe("bench/work.ts: the work of a training step", () => {
  it("the paper's CIFAR-10 net: 615 917 568 MACs per image, all ternary; BN'd elements counted after the pools", () => {
    // 3×3 convs (k = 9·c_in) at 32², 32², 16², 16², 8², 8², then 8192→1024 and 1024→10
    const convs = [[27, 128, 1024], [1152, 128, 1024], [1152, 256, 256], [2304, 256, 256], [2304, 512, 64], [4608, 512, 64]];
    const macs = convs.reduce((s, [k, oc, px]) => s + k * oc * px, 0) + 8192 * 1024 + 1024 * 10;
    const w = workOf(gxnorCifar());
    assert.equal(w.int8Macs, macs);
    assert.equal(w.bf16Macs, 0);
    assert.equal(w.backwardMacs, 2 * macs - 27 * 128 * 1024, "the first conv needs no data gradient");
    // a BN after every product; conv2/4/6 through 2×2 pools (a quarter of their outputs)
    assert.equal(w.bnElements, 128 * 1024 + 128 * 256 + 256 * 256 + 256 * 64 + 512 * 64 + 512 * 16 + 1024 + 10);
  });

  it("ResNet-18 at 224²: 1 814 073 344 MACs per image (torchvision's count), the stem and fc in float", () => {
    const stem = 7 * 7 * 3 * 64 * 112 * 112, fc = 512 * 1000;
    const stage = (cin: number, c: number, px: number) =>
      9 * cin * c * px + 3 * 9 * c * c * px + (cin !== c ? cin * c * px : 0);
    const ternary = stage(64, 64, 56 * 56) + stage(64, 128, 28 * 28) + stage(128, 256, 14 * 14) + stage(256, 512, 7 * 7);
    const w = workOf(resnet18());
    assert.equal(w.int8Macs + w.bf16Macs, 1814073344);
    assert.equal(w.bf16Macs, stem + fc);
    assert.equal(w.int8Macs, ternary);
    assert.equal(w.layers, 21);
  });

  it("the report divides by the ceilings it is given and sets the 2× budget from compiled PyTorch", () => {
    const lines = floorReport([{ kind: "ceilings", int8_TOPS: 1000, bf16_TFLOPS: 500, copy_GBps: 4000 },
      { kind: "pytorch", model: "cifar", mode: "compile", ms_per_step: 8 }]);
    const w = workOf(gxnorCifar());
    const products = 1e3 * 256 * (2 * w.int8Macs / 1e15 + 2 * w.backwardMacs / 5e14);
    assert.match(lines[2], new RegExp(`products ${products.toFixed(2)} ms`));
    assert.match(lines[3], /2x needs 4\.00 ms/);
  });
});
