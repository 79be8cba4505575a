/**
 * The model's memory plan (native/core/model.cpp, plan_memory): x̂ is written over the BN input's
 * output, a BN fused with its φ keeps no output, and every batch-sized buffer (outputs, x̂, argmax,
 * gradients, scratch) is a range of one arena, live from the step that writes it to the last step
 * that reads it; buffers never live at the same step share bytes. So a deeper chain costs its
 * weights and forward buffers per layer, a forward output that no backward op reads costs nothing
 * once the gradients are larger, and the results are those of a plan that shares nothing.
 */
import * as assert from "node:assert/strict";
import { gxnorCifar, loadAddon, ModelSpec, NodeSpec, OP, resnet18, tinyNet, updateConfig } from "../bench/gpu_models";

const addon = loadAddon();
const WIDTH = 64, BATCH = 128;

interface Planned { node: number; layer: string; use: string; from: number; to: number; offset: number; bytes: number }
interface Report {
  batch: number; shared: boolean; steps: number; arena: number;
  weights: number; weightGradients: number; optimizer: number; batchNorm: number; other: number;
  buffers: Planned[];
}

// depth × (dense WIDTH → BN → φ), then dense 10 → BN
function chain(depth: number): ModelSpec {
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

// Every case the plan distinguishes: a BN on the input (no input gradient: its dx goes to the
// scratch), fused and unfused BN + φ, x̂ over a max-pool's output, a conv read only by its max-pool,
// an activation and an add read by two consumers (gradients accumulated through the scratch), an add
// of one tensor to itself, average pooling, a full-precision conv, flatten of a real-valued output,
// a conv no gradient reaches (its weight gradient stays zero: it updates with zeros).
function everyCase(): ModelSpec {
  const act = { levels: 1, r: 1, a: 0.5, window: 0 };
  const n: NodeSpec[] = [
    { kind: OP.input, name: "input", inputs: [] },
    { kind: OP.batchNorm, name: "bn0", inputs: [0] },
    { kind: OP.activation, name: "act0", inputs: [1], act },
    { kind: OP.conv, name: "conv1", inputs: [2], out: 8, kh: 3, kw: 3, ph: 1, pw: 1, levels: 1 },
    { kind: OP.maxPool, name: "pool1", inputs: [3], kh: 2, kw: 2, sh: 2, sw: 2 },
    { kind: OP.batchNorm, name: "bn1", inputs: [4] },
    { kind: OP.activation, name: "act1", inputs: [5], act },
    { kind: OP.conv, name: "conv2a", inputs: [6], out: 8, kh: 3, kw: 3, ph: 1, pw: 1, levels: 1 },
    { kind: OP.batchNorm, name: "bn2a", inputs: [7] },
    { kind: OP.conv, name: "conv2b", inputs: [6], out: 8, discrete: false },
    { kind: OP.batchNorm, name: "bn2b", inputs: [9] },
    { kind: OP.add, name: "add", inputs: [8, 10] },
    { kind: OP.add, name: "twice", inputs: [11, 11] },
    { kind: OP.activation, name: "act2", inputs: [12], act },
    { kind: OP.conv, name: "conv3", inputs: [13], out: 8, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1, levels: 1 },
    { kind: OP.avgPool, name: "avg", inputs: [12], kh: 2, kw: 2, sh: 2, sw: 2 },
    { kind: OP.add, name: "add3", inputs: [14, 15] },
    { kind: OP.flatten, name: "flatten", inputs: [16] },
    { kind: OP.dense, name: "fc", inputs: [17], out: 10, levels: 1 },
    { kind: OP.conv, name: "dead", inputs: [13], out: 4, kh: 3, kw: 3, ph: 1, pw: 1, levels: 1 },
    { kind: OP.batchNorm, name: "bnfc", inputs: [18] },
  ];
  return { h: 8, w: 8, c: 3, classes: 10, seed: 3, nodes: n };
}

function model(spec: ModelSpec, unshared = false, floatSums = false) {
  // read when a model is built: TERNLAB_MEMORY_UNSHARED, every planned buffer its own bytes;
  // TERNLAB_EXACT_SUMS=0, ternary products keep float outputs instead of exact int16 sums
  process.env.TERNLAB_MEMORY_UNSHARED = unshared ? "1" : "";
  if (floatSums) process.env.TERNLAB_EXACT_SUMS = "0";
  try {
    return new addon.NativeModel(spec, updateConfig(), { kind: "cpu", threads: 2 });
  } finally {
    delete process.env.TERNLAB_MEMORY_UNSHARED;
    delete process.env.TERNLAB_EXACT_SUMS;
  }
}
const dtypes = (m: { summary(): string }) =>
  Object.fromEntries((JSON.parse(m.summary()).layers as { name: string; dtype: string }[]).map((l) => [l.name, l.dtype]));

function data(spec: ModelSpec, count: number) {
  const per = spec.h * spec.w * spec.c;
  const images = new Uint8Array(count * per).map((_, i) => (i * 37 + (i >> 7) * 11) & 255);
  const labels = Int32Array.from({ length: count }, (_, i) => (i * 7) % spec.classes);
  return { images, labels, count };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function train(m: any, spec: ModelSpec, batch: number, steps: number): Promise<number[]> {
  const losses: number[] = [];
  const lr = new Float32Array(steps).fill(0.01);
  await m.train(data(spec, batch * steps), { epoch: 0, batch, firstStep: 0, begin: 0, end: steps, loss: 0, shuffle: true, lr },
    (rows: { loss: number }[]) => rows.forEach((r) => losses.push(r.loss)));
  return losses;
}

async function bytesAfterOneStep(depth: number): Promise<number> {
  const spec = chain(depth);
  const m = model(spec);
  await train(m, spec, BATCH, 1);
  return m.memoryInUse();
}

const live = (p: Planned, t: number) => p.from <= t && t <= p.to;
const overlap = (p: Planned, q: Planned) => p.offset < q.offset + q.bytes && q.offset < p.offset + p.bytes;
const find = (r: Report, layer: string, use: string) => {
  const p = r.buffers.find((b) => b.layer === layer && b.use === use);
  assert.ok(p, `no ${use} buffer planned for ${layer}`);
  return p;
};

// The placement's invariant: buffers live at a common step never share a byte, and all fit.
function assertPlaced(r: Report, what: string): void {
  for (const p of r.buffers) assert.ok(p.offset + p.bytes <= r.arena, `${what}: ${p.layer} ${p.use} lies past the arena`);
  for (let a = 0; a < r.buffers.length; ++a)
    for (let b = a + 1; b < r.buffers.length; ++b) {
      const p = r.buffers[a], q = r.buffers[b];
      if (p.to >= q.from && q.to >= p.from && p.bytes && q.bytes)
        assert.ok(!overlap(p, q), `${what}: ${p.layer} ${p.use} [${p.from}, ${p.to}] and ${q.layer} ${q.use} [${q.from}, ${q.to}] share bytes`);
    }
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

  it("the CIFAR net holds what is live at its busiest step: conv1's x̂ and states, two conv1-sized gradients", () => {
    const spec = gxnorCifar(1, 0.25), batch = 64;
    const m = model(spec);
    m.ensureCapacity(batch);
    const r: Report = JSON.parse(m.memoryReport());
    assert.equal(r.batch, batch);
    assert.ok(r.shared);
    // the report accounts for every byte the model holds
    assert.equal(r.arena + r.weights + r.weightGradients + r.optimizer + r.batchNorm + r.other, m.memoryInUse());
    assertPlaced(r, "cifar");
    // conv1's output (bn1's x̂ in place) lives until φ1's fused backward, which computes φ1's, bn1's
    // and conv1's gradients (all conv1's size) in one buffer; at conv2's backward, before it, φ1's
    // states (conv2's x), conv2's output gradient and φ1's gradient (conv2's dx) are live with it,
    // and conv2's weight gradient (each layer is updated right after its backward, so no other
    // weight gradient is). The plan holds no more than that; the old one held every output, a pool
    // of gradients and every weight gradient until the update besides.
    const conv1 = 4 * batch * 32 * 32 * 32;
    const layers: { name: string; weights: number }[] = JSON.parse(m.summary()).layers;
    const conv2WeightGradient = Math.ceil((4 * layers.find((l) => l.name === "conv2")!.weights) / 256) * 256;
    let peak = 0;
    for (let t = 0; t <= r.steps; ++t) peak = Math.max(peak, r.buffers.filter((p) => live(p, t)).reduce((sum, p) => sum + p.bytes, 0));
    assert.ok(peak <= 3.25 * conv1 + conv2WeightGradient,
      `${peak} bytes live at the busiest step; conv1's x̂, states and two gradients are ${3.25 * conv1}, conv2's weight gradient ${conv2WeightGradient}`);
    // weight gradients live one step: from their layer's backward to its update, right after it
    for (const p of r.buffers.filter((b) => b.use === "weightGradient")) assert.equal(p.from, p.to, `${p.layer}'s weight gradient`);
    // the placement (greedy, best fit) wastes little beyond what must be live together
    assert.ok(r.arena <= 1.1 * peak, `arena ${r.arena} bytes for ${peak} live at the busiest step`);
    assert.equal(r.weightGradients, 0, "weight gradients are in the arena");
    // in place: conv1 and bn1 have no gradient buffers of their own; φ1's lives until conv1's backward
    assert.ok(!r.buffers.some((p) => (p.layer === "conv1" || p.layer === "bn1") && p.use === "gradient"));
    const x1 = find(r, "conv1", "output"), g1 = find(r, "act1", "gradient");
    assert.ok(g1.to >= r.steps - 1, "φ1's gradient (conv1's, in place) must live until conv1's backward");
    // they must not share: read or written by one op
    for (const [p, q] of [[x1, g1], [g1, find(r, "conv2", "gradient")], [find(r, "act1", "output"), g1]] as const)
      assert.ok(!overlap(p, q), `${p.layer} ${p.use} shares bytes with ${q.layer} ${q.use}`);
    // what backward reads outlives the loss step; conv2's output, read only by pool2's forward, dies there
    const lossStep = r.steps / 2, backwardOf = (layer: string) => r.steps - spec.nodes.findIndex((n) => n.name === layer);
    assert.ok(x1.to >= backwardOf("act1"), "bn1's x̂ (over conv1's output) must live until φ1's fused backward");
    assert.ok(find(r, "act1", "output").to >= backwardOf("conv2"), "φ1's states are conv2's x for its weight gradient");
    assert.ok(find(r, "pool2", "argmax").to >= backwardOf("pool2"));
    const conv2 = find(r, "conv2", "output");
    assert.equal(conv2.to, conv2.from + 1, "conv2's output is read by pool2's forward only");
    assert.ok(conv2.to < lossStep);
    // ... so its bytes are reused by a gradient
    assert.ok(r.buffers.some((p) => p.use === "gradient" && overlap(p, conv2)), "conv2's output shares its bytes with no gradient");
    // the CIFAR net has one consumer per node and no BN on its input: no scratch at all
    assert.ok(!r.buffers.some((p) => p.use === "scratch"));
  });

  it("places every graph's buffers without overlap; ResNet's skip connections get their scratch", () => {
    for (const [name, spec] of [["resnet18-32", resnet18(1, 32, 10)], ["tiny", tinyNet()], ["every case", everyCase()]] as const) {
      const m = model(spec);
      m.ensureCapacity(32);
      const r: Report = JSON.parse(m.memoryReport());
      assertPlaced(r, name);
      assert.equal(r.arena + r.weights + r.weightGradients + r.optimizer + r.batchNorm + r.other, m.memoryInUse());
      const u = model(spec, true);
      u.ensureCapacity(32);
      const ru: Report = JSON.parse(u.memoryReport());
      assert.ok(!ru.shared && ru.arena === ru.buffers.reduce((s, p) => s + p.bytes, 0), `${name}: the unshared plan shares`);
      assert.ok(r.arena < ru.arena, `${name}: sharing saves nothing (${r.arena} of ${ru.arena} bytes)`);
    }
    const e: Report = JSON.parse((() => { const m = model(everyCase()); m.ensureCapacity(8); return m.memoryReport(); })());
    assert.ok(!e.buffers.some((p) => p.layer === "dead" && p.use === "weightGradient") && e.weightGradients > 0,
      "the weight gradient no backward writes must keep its own zeros, not a range of the arena");
    assert.ok(e.buffers.some((p) => p.layer === "fc" && p.use === "weightGradient"));
    const r: Report = JSON.parse((() => { const m = model(resnet18(1, 32, 10)); m.ensureCapacity(8); return m.memoryReport(); })());
    // s1b1's add feeds φ and the next block's add; the next block's add comes first in the backward
    // pass, and φ adds its gradient straight into the one written there (act_backward_accumulate):
    // no scratch at φ's step. The add's (s1b1.add's) gradient buffer is then read at its own step.
    assert.ok(!r.buffers.some((p) => p.layer === "s1b1.act2" && p.use === "scratch"), "φ's in-place accumulation got a scratch");
    assert.ok(!r.buffers.some((p) => p.use === "scratch" && /\.act\d$/.test(p.layer)), "an unfused φ got a scratch");
    // the add's gradient is its first input's (the block's last BN, which only the add reads): one
    // buffer, live from the add's gradient's first write to the BN's backward
    assert.ok(!r.buffers.some((p) => p.layer === "s1b1.add" && p.use === "gradient"), "s1b1.add keeps a gradient buffer of its own");
    const g = find(r, "s1b1.bn2", "gradient");
    const a = find(r, "s1b1.act2", "gradient"), c2 = find(r, "s1b1.conv2", "gradient");
    // written first by the next block's add, added to at φ's step, read at the BN's backward (which
    // writes conv2's gradient)
    assert.ok(g.from < a.from && g.to === c2.from, `the shared buffer (steps ${g.from}–${g.to}) spans φ's backward (${a.from}) and the BN's (${c2.from})`);
    // an add of one tensor to itself keeps its own gradient (its input gets dy twice)
    const ev: Report = JSON.parse((() => { const m = model(everyCase()); m.ensureCapacity(8); return m.memoryReport(); })());
    assert.ok(ev.buffers.some((p) => p.layer === "twice" && p.use === "gradient"));
    assert.ok(!ev.buffers.some((p) => p.layer === "add" && p.use === "gradient"));
  });

  it("ensureCapacity allocates what an evaluation pass and a training step use", async () => {
    const spec = everyCase();
    const m = model(spec);
    m.ensureCapacity(32);
    const planned = m.memoryInUse();
    await m.evaluate(data(spec, 64), 32, 0);
    assert.equal(m.memoryInUse(), planned);
    await train(m, spec, 32, 2);
    assert.equal(m.memoryInUse(), planned);
    assert.throws(() => m.ensureCapacity(0), /positive integer/);
  });

  it("ternary products read only by batch norms (directly or through max-pools) are kept as exact int16 sums, with the bits of float outputs", async () => {
    for (const [name, spec, batch] of [["every case", everyCase(), 16], ["cifar", gxnorCifar(2, 0.125), 8]] as const) {
      const exact = model(spec), float = model(spec, false, true);
      const d = dtypes(exact), f = dtypes(float);
      if (name === "every case") {
        // conv1 → pool1 → bn1 and conv2a → bn2a; not the float conv, nor conv3 (read by an add), nor a dead conv
        assert.deepEqual([d.conv1, d.pool1, d.conv2a], ["int16", "int16", "int16"]);
        assert.deepEqual([d.conv2b, d.conv3, d.fc, d.dead], ["float32", "float32", "float32", "float32"]);
      } else {
        assert.deepEqual([d.conv1, d.conv2, d.pool2, d.conv3, d.fc7, d.fc8], ["float32", "int16", "int16", "int16", "int16", "int16"]);
      }
      assert.ok(Object.values(f).every((t) => t !== "int16"));
      // BN statistics of int16 sums are exact (native/core/reduce.h), of float outputs double sums:
      // with the states' power-of-two scales μ is the same float and σ⁻¹ too unless σ² falls within
      // a double rounding of a float32 tie, which these runs do not meet
      const a = await train(exact, spec, batch, 3), b = await train(float, spec, batch, 3);
      assert.deepEqual(a, b, `${name}: losses differ`);
      const sa = exact.getState(), sb = float.getState();
      for (let i = 0; i < sa.length; ++i) assert.ok(Buffer.compare(sa[i].data, sb[i].data) === 0, `${name}: ${sa[i].name} differs`);
      const ea = await exact.evaluate(data(spec, 40), batch, 0), eb = await float.evaluate(data(spec, 40), batch, 0);
      assert.deepEqual(ea, eb, `${name}: evaluation differs`);
      // the CIFAR net's busiest step (conv1's backward: a float conv) holds no int16 sums, so there
      // the outputs shrink but not the peak
      const outputs = (m: { memoryReport(): string }) =>
        (JSON.parse(m.memoryReport()) as Report).buffers.filter((p) => p.use.startsWith("output")).reduce((t, p) => t + p.bytes, 0);
      assert.ok(outputs(exact) < (name === "cifar" ? 0.75 : 1) * outputs(float), `${name}: int16 sums do not shrink the outputs`);
      if (name === "every case") assert.ok(exact.memoryInUse() < float.memoryInUse(), `${name}: int16 sums hold no less memory`);
    }
  });

  it("training with shared buffers gives the bits of training without sharing", async () => {
    for (const [name, spec, batch] of [["every case", everyCase(), 16], ["tiny", tinyNet(), 16], ["cifar", gxnorCifar(2, 0.125), 8],
      ["resnet18-32", resnet18(4, 32, 10), 4]] as const) {
      const shared = model(spec), unshared = model(spec, true);
      const a = await train(shared, spec, batch, 3), b = await train(unshared, spec, batch, 3);
      assert.deepEqual(a, b, `${name}: losses differ`);
      const sa = shared.getState(), sb = unshared.getState();
      assert.equal(sa.length, sb.length);
      for (let i = 0; i < sa.length; ++i) assert.ok(Buffer.compare(sa[i].data, sb[i].data) === 0, `${name}: ${sa[i].name} differs`);
      const ea = await shared.evaluate(data(spec, 40), batch, 0), eb = await unshared.evaluate(data(spec, 40), batch, 0);
      assert.deepEqual(ea, eb, `${name}: evaluation differs`);
      assert.ok(shared.memoryInUse() < unshared.memoryInUse());
    }
  });
});
