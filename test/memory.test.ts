/**
 * The model's memory plan (native/core/model.cpp, plan_memory): gradients share buffers by
 * liveness, x̂ is written over the BN input's output and a BN fused with its φ keeps no output, so a
 * deeper chain costs its weights and forward buffers per layer, not a float gradient, x̂ and BN
 * output per node as well.
 */
import * as assert from "node:assert/strict";
import { loadAddon, NodeSpec, OP, updateConfig } from "../bench/gpu_models";

const addon = loadAddon();
const WIDTH = 64, BATCH = 128;

// depth × (dense WIDTH → BN → φ), then dense 10 → BN
function chain(depth: number): { h: number; w: number; c: number; classes: number; seed: number; nodes: NodeSpec[] } {
  const nodes: NodeSpec[] = [{ kind: OP.input, name: "input", inputs: [] }];
  const add = (n: NodeSpec) => nodes.push(n) - 1;
  let last = add({ kind: OP.flatten, name: "flatten", inputs: [0] });
  for (let d = 0; d < depth; ++d) {
    last = add({ kind: OP.dense, name: `dense${d}`, inputs: [last], out: WIDTH, discrete: true, levels: 1, initSpread: 1 });
    last = add({ kind: OP.batchNorm, name: `bn${d}`, inputs: [last] });
    last = add({ kind: OP.activation, name: `act${d}`, inputs: [last], act: { levels: 1, r: 1, a: 0.5, window: 0 } });
  }
  last = add({ kind: OP.dense, name: "out", inputs: [last], out: 10, discrete: true, levels: 1, initSpread: 1 });
  add({ kind: OP.batchNorm, name: "bnout", inputs: [last] });
  return { h: 4, w: 4, c: 4, classes: 10, seed: 1, nodes };
}

async function bytesAfterOneStep(depth: number): Promise<number> {
  const spec = chain(depth);
  const m = new addon.NativeModel(spec, updateConfig(), { kind: "cpu", threads: 1 });
  const per = spec.h * spec.w * spec.c, count = BATCH;
  const images = new Uint8Array(count * per).map((_, i) => (i * 37) & 255);
  const labels = Int32Array.from({ length: count }, (_, i) => i % 10);
  await m.train({ images, labels, count }, { epoch: 0, batch: BATCH, firstStep: 0, begin: 0, end: 1, loss: 0, shuffle: false, lr: new Float32Array(1).fill(0.01) }, () => undefined);
  return m.memoryInUse();
}

describe("memory plan", () => {
  it("a layer costs its weights and forward buffers; gradients and x̂ do not grow with depth", async () => {
    const shallow = await bytesAfterOneStep(2), deep = await bytesAfterOneStep(10);
    const perLayer = (deep - shallow) / 8;
    const round = (b: number) => Math.ceil(b / 256) * 256;  // the allocators round to 256 bytes
    const weights = WIDTH * WIDTH;
    // int8 states, Adam m and v, the float weight gradient; BN: 12 per-channel float vectors
    const params = round(weights) + 3 * round(4 * weights) + 11 * round(4 * WIDTH);
    // dense output (x̂ written over it) 4 B, φ's int8 states 1 B per element; no BN output: the CPU
    // backend fuses BN + φ (y stays in registers)
    const forward = round(4 * BATCH * WIDTH) + round(BATCH * WIDTH);
    // metric counters: 4 int64 per node, 3 nodes per layer (one buffer for all: rounding shared)
    const counters = 3 * 4 * 8 + 256 / 8;
    assert.ok(perLayer <= params + forward + counters,
      `each layer added ${perLayer} bytes; weights and forward buffers are ${params + forward} (a gradient, x̂ or BN output per node would add ${round(4 * BATCH * WIDTH)} each)`);
    assert.ok(perLayer >= params, `each layer added ${perLayer} bytes, less than its own parameters (${params})`);
  });
});
