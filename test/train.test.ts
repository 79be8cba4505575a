/**
 * Training as a whole: learning, determinism across thread counts, cancel, resume, checkpoints,
 * the run folder and the CLI.
 */
import * as assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Dataset, loadMnist, subset } from "../src/datasets";
import { TernlabError } from "../src/errors";
import { loadMetrics } from "../src/metrics";
import { Model } from "../src/model";
import * as models from "../src/models";
import { decodeCheckpoint, loadCheckpoint } from "../src/checkpoint";
import { train, CHECKPOINT_FILE } from "../src/train";

const CLI = path.resolve(__dirname, "../src/cli/main.js");
const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `ternlab-${name}-`));

function weightsOf(m: Model): Map<string, string> {
  return new Map(m.state().map((t) => [t.name, Buffer.from(t.data).toString("base64")]));
}

function assertSameWeights(a: Model, b: Model): void {
  const wa = weightsOf(a), wb = weightsOf(b);
  assert.deepEqual([...wa.keys()], [...wb.keys()]);
  for (const [k, v] of wa) assert.equal(v, wb.get(k), `tensor ${k} differs`);
}

/** Columns that must be bit-identical between two runs of the same seed (not timings). */
function deterministicColumns(t: import("apache-arrow").Table): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const f of t.schema.fields) {
    if (["wall_time", "images_per_s", "backend"].includes(f.name)) continue;
    out[f.name] = Array.from(t.getChild(f.name)!.toArray() as ArrayLike<number>);
  }
  return out;
}

describe("training", function () {
  this.timeout(300_000);
  let trainSet: Dataset;
  let testSet: Dataset;
  before(async () => {
    trainSet = subset(await loadMnist("train", { limit: 3000 }), 0, 3000);
    testSet = await loadMnist("test", { limit: 1000 });
  });
  const small = (o: Record<string, unknown> = {}) => models.mlp({ hidden: [64], seed: 7, backend: "cpu", ...o });

  it("learns: a DST run beats a frozen-weights run, and flip rates start nonzero", async () => {
    const frozen = small();
    const learned = small();
    const opts = { epochs: 3, batchSize: 50 };
    const r0 = await train(frozen, { train: trainSet, test: testSet }, { ...opts, learningRate: 0 });
    const r1 = await train(learned, { train: trainSet, test: testSet }, { ...opts, learningRate: { kind: "geometric", start: 0.02, end: 0.005 } });
    const a0 = r0.testAccuracy!, a1 = r1.testAccuracy!;
    assert.ok(a1 > a0 + 0.15, `DST ${a1} should clearly beat frozen weights ${a0}`);
    assert.ok(a1 > 0.75, `DST reaches ${a1} on 3000 MNIST images`);
    const flips = r1.metrics.getChild("flip_rate/dense1")!.toArray() as Float64Array;
    assert.ok(flips[0] > 0, "flip rate of the first step is nonzero");
    const frozenFlips = r0.metrics.getChild("flip_rate/dense1")!.toArray() as Float64Array;
    assert.equal(Math.max(...frozenFlips), 0, "η = 0 moves no weight");
    // Gated-XNOR counters are fractions, and exact for ternary inputs: active ≤ 1 − s_a.
    const sa = r1.metrics.getChild("s_a/dense2")!.get(0) as number;
    const act = r1.metrics.getChild("active_fraction/dense2")!.get(0) as number;
    assert.ok(sa > 0 && sa < 1 && act > 0 && act <= 1 - sa + 1e-12, `s_a ${sa}, active ${act}`);
    assert.ok(Number.isNaN(r1.metrics.getChild("s_a/dense1")!.get(0) as number), "the real-valued input has no s_a");
  });

  it("is bit-for-bit reproducible from its seed with 1 and 2 threads", async () => {
    const m1 = small({ threads: 1 }), m2 = small({ threads: 2 });
    const opts = { epochs: 1, batchSize: 100, learningRate: 0.02 };
    const r1 = await train(m1, trainSet, opts);
    const r2 = await train(m2, trainSet, opts);
    assertSameWeights(m1, m2);
    assert.deepEqual(deterministicColumns(r1.metrics), deterministicColumns(r2.metrics));
    // and a different seed gives different weights (the test can fail)
    const m3 = small({ seed: 8 });
    await train(m3, trainSet, opts);
    assert.notEqual(weightsOf(m1).get("dense1.weight"), weightsOf(m3).get("dense1.weight"));
  });

  it("a CNN with conv, max-pool and int8 products is reproducible across thread counts", async () => {
    const data = subset(trainSet, 0, 400);
    const a = models.mnistCnn({ width: 0.25, seed: 3, backend: "cpu", threads: 1 });
    const b = models.mnistCnn({ width: 0.25, seed: 3, backend: "cpu", threads: 2 });
    await train(a, data, { epochs: 1, batchSize: 50, learningRate: 0.02 });
    await train(b, data, { epochs: 1, batchSize: 50, learningRate: 0.02 });
    assertSameWeights(a, b);
  });

  it("cancels mid-training with E_CANCELLED; the model stays usable", async () => {
    const m = small();
    const job = train(m, trainSet, { epochs: 50, batchSize: 10, learningRate: 0.01, onProgress: (p) => { if (p.step >= 20) job.cancel(); } });
    await assert.rejects(job, (e: unknown) => e instanceof TernlabError && e.code === "E_CANCELLED" && /cancelled at step/.test(e.message));
    assert.equal(job.run.status, "cancelled");
    const stepped = m.step;
    assert.ok(stepped >= 20 && stepped < 50 * 300, `stopped at step ${stepped}`);
    const ev = await m.evaluate(testSet);
    assert.ok(ev.top1 > 0.1, "the model still evaluates");
    const again = await train(m, subset(trainSet, 0, 200), { epochs: 1, batchSize: 100, learningRate: 0.01 });
    assert.equal(again.status, "done");
  });

  it("an AbortSignal cancels too", async () => {
    const m = small();
    const ac = new AbortController();
    const job = train(m, trainSet, { epochs: 20, batchSize: 10, signal: ac.signal, onProgress: (p) => { if (p.step > 5) ac.abort(); } });
    await assert.rejects(job, (e: unknown) => (e as TernlabError).code === "E_CANCELLED");
  });

  for (const augment of [undefined, { flip: true, crop: 2 }])
  it(`resume from a checkpoint equals an uninterrupted run (weights and metrics)${augment ? ", with augmentation" : ""}`, async () => {
    const dirA = tmp("full"), dirB = tmp("resumed");
    const opts = { batchSize: 100, learningRate: { kind: "geometric" as const, start: 0.02, end: 0.002 }, ...(augment ? { augment } : {}) };
    const full = small();
    const rFull = await train(full, { train: trainSet, test: testSet }, { ...opts, epochs: 3, outDir: dirA });
    // Interrupt a run after its first epoch's checkpoint, then resume with a fresh model.
    const first = small();
    const job1 = train(first, { train: trainSet, test: testSet }, { ...opts, epochs: 3, outDir: dirB, onProgress: (p) => { if (p.event === "epoch" && p.epoch === 0) job1.cancel(); } });
    await assert.rejects(job1, (e: unknown) => (e as TernlabError).code === "E_CANCELLED");
    const resumed = small();
    const rRes = await train(resumed, { train: trainSet, test: testSet }, { ...opts, epochs: 3, outDir: dirB, resumeFrom: dirB });
    assertSameWeights(full, resumed);
    assert.deepEqual(deterministicColumns(rRes.metrics), deterministicColumns(rFull.metrics));
    assert.deepEqual(deterministicColumns(rRes.epochMetrics), deterministicColumns(rFull.epochMetrics));
    const saved = await loadMetrics(path.join(dirB, "metrics.arrow"));
    assert.deepEqual(deterministicColumns(saved.steps), deterministicColumns(rFull.metrics));
  });

  it("checkpoints hold 2-bit packed ternary weights, BN and optimizer state; damage is reported", async () => {
    const dir = tmp("ckpt");
    const m = small();
    await train(m, subset(trainSet, 0, 500), { epochs: 1, batchSize: 100, outDir: dir, report: false });
    const file = path.join(dir, CHECKPOINT_FILE);
    const bytes = fs.readFileSync(file);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString());
    assert.equal(header["dense1.weight"].dtype, "U8");
    assert.deepEqual(header["dense1.weight"].shape, [Math.ceil((784 * 64) / 4)]);
    for (const k of ["bn1.gamma", "bn1.running_var", "dense1.weight.adam_m"]) assert.ok(header[k], k);
    const ck = await loadCheckpoint(file);
    assert.equal(ck.meta.step, 5);
    const w = ck.tensors.find((t) => t.name === "dense1.weight")!;
    assert.equal(Buffer.from(w.data).toString("base64"), weightsOf(m).get("dense1.weight"));
    assert.throws(() => decodeCheckpoint(bytes.subarray(0, 100), file), (e: unknown) => (e as TernlabError).code === "E_CHECKPOINT" && (e as Error).message.includes(file));
    const bad = Buffer.from(bytes);
    bad.writeBigUInt64LE(BigInt(bytes.length * 2), 0);
    assert.throws(() => decodeCheckpoint(bad, file), /header length/);
    // a checkpoint of another model is refused before anything is loaded
    const other = models.mlp({ hidden: [32], seed: 7, backend: "cpu" });
    await assert.rejects(train(other, trainSet, { epochs: 2, resumeFrom: dir }), (e: unknown) => (e as TernlabError).code === "E_CHECKPOINT");
  });

  it("a crash in the middle of writing a checkpoint leaves the previous one intact", async () => {
    const dir = tmp("crash");
    const m = small();
    await train(m, subset(trainSet, 0, 500), { epochs: 1, batchSize: 100, outDir: dir, report: false });
    const file = path.join(dir, CHECKPOINT_FILE);
    const before = fs.readFileSync(file);
    // A child process rewrites the checkpoint with a large payload in a loop; kill it mid-write.
    const script = `
      const { writeFileAtomic } = require(${JSON.stringify(path.resolve(__dirname, "../src/metrics.js"))});
      const big = Buffer.alloc(64 << 20, 7);
      (async () => { for (;;) { process.send("writing"); await writeFileAtomic(${JSON.stringify(file)}, big, "checkpoint"); } })();`;
    const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
    await new Promise<void>((resolve) => child.once("message", () => setTimeout(resolve, 30)));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const after = fs.readFileSync(file);
    const intact = after.equals(before) || after.length === 64 << 20;
    assert.ok(intact, "the checkpoint is the old one or a complete new one, never a torn file");
    if (after.equals(before)) {
      const ck = await loadCheckpoint(file);
      assert.equal(ck.meta.step, 5);
    }
  });

  it("selects on a held-out validation split and keeps that epoch's checkpoint", async () => {
    const dir = tmp("val");
    const m = small();
    const run = await train(m, { train: trainSet, test: testSet }, { epochs: 3, batchSize: 100, validationFraction: 0.2, outDir: dir, report: false });
    const val = Array.from(run.epochMetrics.getChild("val_accuracy")!.toArray() as Float64Array);
    const test = Array.from(run.epochMetrics.getChild("test_accuracy")!.toArray() as Float64Array);
    assert.ok(val.every((v) => v > 0.3 && v <= 1), `validation accuracies ${val}`);
    const best = val.indexOf(Math.max(...val));
    assert.deepEqual(run.bestValidation, { epoch: best + 1, valAccuracy: val[best], testAccuracy: test[best] });
    const ck = await loadCheckpoint(path.join(dir, "checkpoint-best-validation.safetensors"));
    assert.equal(ck.meta.epoch, best);
    assert.equal(Array.from(run.epochMetrics.getChild("epoch")!.toArray() as Int32Array).join(), "1,2,3", "epochs are numbered from 1");
    // 20 % of 3000 images were held out, stratified: 2400 are left to train on, 24 steps an epoch
    assert.equal(run.metrics.numRows, 3 * 24);
  });

  it("rejects bad options with E_OPTION naming the key", async () => {
    const m = small();
    assert.throws(() => train(m, trainSet, { epochs: 0 }), (e: unknown) => (e as TernlabError).code === "E_OPTION" && /train\.epochs/.test((e as Error).message));
    assert.throws(() => train(m, trainSet, { epochs: 1, bogus: 1 } as never), /unknown key.*"bogus"/);
    assert.throws(() => train(m, trainSet, { epochs: 1, learningRate: { kind: "geometric", start: -1, end: 1 } }), /train\.learningRate/);
    assert.throws(() => models.mlp({ weightLevels: 9 }), /mlp\.weightLevels/);
    assert.throws(() => models.mlp({ hidden: [0] }), /mlp\.hidden/);
    const cifarShaped = { ...trainSet, height: 32, width: 32, channels: 3 };
    assert.throws(() => train(m, cifarShaped, { epochs: 1 }), (e: unknown) => (e as TernlabError).code === "E_SHAPE");
  });

  it("per-layer weight levels: Z_2 in one layer, ternary elsewhere, all weights stay on their grids", async () => {
    const m = small({ layerWeightLevels: { dense1: 2 } });
    assert.deepEqual(m.layers.filter((l) => l.discrete).map((l) => [l.name, l.levels]), [["dense1", 2], ["dense2", 1]]);
    await train(m, subset(trainSet, 0, 500), { epochs: 2, batchSize: 50, learningRate: 0.05 });
    const state = new Map(m.state().map((t) => [t.name, new Int8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)]));
    const q1 = state.get("dense1.weight")!, q2 = state.get("dense2.weight")!;
    assert.ok(q1.every((q) => q >= -2 && q <= 2) && q1.some((q) => Math.abs(q) === 1), "Z_2 states are −2..2 (w = q/2)");
    assert.ok(q2.every((q) => q >= -1 && q <= 1));
    assert.throws(() => small({ layerWeightLevels: { nope: 2 } }), /layerWeightLevels.*"nope"/);
  });

  it("after an error the model and the next call still work (bad labels, out of memory)", async () => {
    const m = small();
    const bad = { ...subset(trainSet, 0, 200), labels: Int32Array.from(subset(trainSet, 0, 200).labels, (l, i) => (i === 77 ? 12 : l)) };
    await assert.rejects(train(m, bad, { epochs: 1, batchSize: 50 }), (e: unknown) => (e as TernlabError).code === "E_DATASET" && /label 12 of sample 77/.test((e as Error).message));
    const ok = await train(m, subset(trainSet, 0, 200), { epochs: 1, batchSize: 50 });
    assert.equal(ok.status, "done");
    assert.throws(
      () => models.mlp({ hidden: [1 << 30], backend: "cpu" }),
      (e: unknown) => (e as TernlabError).code === "E_OOM" && /weights of layer "dense1"/.test((e as Error).message) && /bytes in use/.test((e as Error).message),
    );
    assert.ok((await m.evaluate(testSet)).count === testSet.count);
  });

  it("summary shows one byte per discrete weight and no float copy", () => {
    const m = models.mnistCnn({ backend: "cpu" });
    const s = m.summary();
    assert.equal(s.floatWeights, 0);
    assert.equal(s.discreteWeights, 32 * 25 + 64 * 32 * 25 + 512 * 1024 + 10 * 512);
    assert.match(s.toString(), /\{-1,0,\+1\}/);
    assert.ok(s.rows.filter((r) => r.discrete).every((r) => r.bytesPerWeight === 1));
    const sgd = models.mnistCnn({ backend: "cpu", sampler: { proposal: "sgd" } }).summary();
    assert.equal(sgd.optimizerBytes, 0, "the sgd proposal keeps no per-weight state");
  });
});

describe("model zoo", function () {
  this.timeout(120_000);
  const random = (n: number, h: number, w: number, classes: number): Dataset => ({
    name: "random", count: n, height: h, width: w, channels: 3, numClasses: classes, classNames: [],
    images: (() => {
      let x = 12345; // an LCG: distinct images (a pattern periodic in the image size would make them equal)
      return Uint8Array.from({ length: n * h * w * 3 }, () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24));
    })(),
    labels: Int32Array.from({ length: n }, (_, i) => i % classes),
  });
  for (const [name, size] of [["resnet18", 32], ["resnet18", 64], ["alexnet", 32]] as const)
    it(`${name} at ${size}×${size}: ternary but the first conv and the last dense layer, and it trains`, async () => {
      const m = models[name]({ input: [size, size, 3], classes: 10, backend: "cpu", seed: 1 });
      const weighted = m.layers.filter((l) => l.weights > 0);
      assert.equal(weighted[0].discrete, false, "the first conv is full precision");
      assert.equal(weighted[weighted.length - 1].discrete, false, "the last dense layer is full precision");
      assert.ok(weighted.slice(1, -1).every((l) => l.discrete), "every other weight layer is discrete");
      if (name === "resnet18") assert.equal(m.layers.filter((l) => l.kind === "add").length, 8, "eight residual blocks");
      const before = m.state().find((t) => t.name === `${weighted[1].name}.weight`)!.data.slice();
      const run = await train(m, random(8, size, size, 10), { epochs: 1, batchSize: 4, loss: "crossEntropy", learningRate: 0.05 });
      const loss0 = run.metrics.getChild("loss")!.get(0) as number;
      // near log 10 = 2.30 at the start (ResNet's real-valued residual stream widens the logits a little)
      assert.ok(loss0 > 1.5 && loss0 < 4, `initial cross-entropy ${loss0}`);
      const after = m.state().find((t) => t.name === `${weighted[1].name}.weight`)!.data;
      assert.ok(!Buffer.from(after).equals(Buffer.from(before)), "DST moved some ternary weights");
    });
});

describe("ternlab CLI", function () {
  this.timeout(120_000);
  it("--help documents the training flags", () => {
    const r = spawnSync(process.execPath, [CLI, "train", "--help"], { encoding: "utf8" });
    assert.equal(r.status, 0);
    for (const flag of ["--dataset", "--model", "--epochs", "--batch-size", "--lr", "--proposal", "--tau", "--seed", "--backend", "--out", "--resume"])
      assert.ok(r.stdout.includes(flag), flag);
  });
  it("trains end to end and writes a run folder", () => {
    const out = tmp("cli");
    const r = spawnSync(process.execPath, [CLI, "train", "--model", "mlp", "--hidden", "32", "--limit", "600", "--test-limit", "200", "--epochs", "2", "--batch-size", "50", "--out", out, "--backend", "cpu"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /epoch 2\/2: test accuracy \d+\.\d\d %/);
    for (const f of ["metrics.arrow", "metrics-epochs.arrow", "checkpoint.safetensors", "report.html"]) assert.ok(fs.existsSync(path.join(out, f)), f);
    assert.ok(fs.readFileSync(path.join(out, "report.html"), "utf8").includes("Plotly"));
  });
  it("bad flags fail with a clear message", () => {
    const r = spawnSync(process.execPath, [CLI, "train", "--epochs", "zero"], { encoding: "utf8" });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--epochs must be a number/);
    const b = spawnSync(process.execPath, [CLI, "train", "--beta1", "1"], { encoding: "utf8" });
    assert.notEqual(b.status, 0);
    assert.match(b.stderr, /--beta1 must be in \[0, 1\), got "1"/);
  });
  it("--beta1 reaches the DST proposal: the same run with another β1 ends with other weights", () => {
    const weights = (extra: string[]) => {
      const out = tmp("beta1");
      const r = spawnSync(process.execPath, [CLI, "train", "--model", "mlp", "--hidden", "32", "--limit", "300", "--test-limit", "100", "--epochs", "1",
        "--batch-size", "50", "--out", out, "--backend", "cpu", "--no-progress", ...extra], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      const file = path.join(out, "checkpoint.safetensors");
      // the tensors only (the metadata holds the wall time and date)
      return Buffer.concat(decodeCheckpoint(fs.readFileSync(file), file).tensors.map((t) => Buffer.from(t.data)));
    };
    const a = weights([]), again = weights(["--beta1", "0.9"]), b = weights(["--beta1", "0.5"]);
    assert.ok(a.equals(again), "the default is β1 = 0.9");
    assert.ok(!a.equals(b), "β1 = 0.5 gives other weights");
  });
});
