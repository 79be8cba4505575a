/**
 * `npm run bench`: CPU training throughput of the MLP and the paper's MNIST CNN, and the integer
 * forward product's rate next to the float32 product of the same shape, measured side by side in
 * one process (the ratios are what to compare; absolute figures depend on the machine's load).
 */
import * as os from "os";
import { loadMnist, subset } from "../src/datasets";
import * as models from "../src/models";
import { addon } from "../src/native";
import { train } from "../src/train";

function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0) / 2 ** 32);
}

// The fastest of the repeats: on a shared machine other work only ever slows a repeat down, so the
// minimum is the least disturbed estimate of what the code itself costs.
function fastest(xs: number[]): number {
  return Math.min(...xs);
}

/** GOP/s of y[M,N] = x[M,K]·w[N,K]^T through the backend's product (a 1×1 convolution). */
function productRate(kind: "int8" | "float32", M: number, N: number, K: number, reps: number): number {
  const a = addon();
  const r = rng(1);
  const tern = (n: number) => Int8Array.from({ length: n }, () => Math.floor(r() * 3) - 1);
  const x = kind === "int8" ? tern(M * K) : Float32Array.from(tern(M * K));
  const w = kind === "int8" ? tern(N * K) : Float32Array.from(tern(N * K));
  const geom = { n: M, h: 1, w: 1, c: K, oc: N, kh: 1, kw: 1 };
  a.ops.convForward("cpu", geom, x, 1, w, 1); // warm-up
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    a.ops.convForward("cpu", geom, x, 1, w, 1);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return (2 * M * N * K) / fastest(times) / 1e9;
}

/** GOP/s of the same product as a plain single-threaded float32 loop. */
function plainRate(M: number, N: number, K: number): number {
  const a = addon();
  const r = rng(2);
  const x = Float32Array.from({ length: M * K }, () => Math.floor(r() * 3) - 1);
  const w = Float32Array.from({ length: N * K }, () => Math.floor(r() * 3) - 1);
  const times: number[] = [];
  for (let i = 0; i < 2; i++) {
    const t0 = process.hrtime.bigint();
    a.ops.plainFloatProduct(M, N, K, x, w);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return (2 * M * N * K) / fastest(times) / 1e9;
}

async function trainingRate(name: "mlp" | "mnistCnn", images: number, batch: number): Promise<number> {
  const data = subset(await loadMnist("train", { limit: images }), 0, images);
  const model = name === "mlp" ? models.mlp({ backend: "cpu", seed: 1 }) : models.mnistCnn({ backend: "cpu", seed: 1 });
  await train(model, subset(data, 0, batch * 3), { epochs: 1, batchSize: batch }); // warm-up
  const t0 = process.hrtime.bigint();
  await train(model, data, { epochs: 1, batchSize: batch });
  return images / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function main() {
  const a = addon();
  const info = a.buildInfo();
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  console.log(`ternlab CPU benchmark — ${new Date().toISOString()} — ${cpu}, ${os.cpus().length} threads, kernel path ${info.bestKernelPath}`);
  console.log("");
  console.log("training throughput (batch 100, one epoch of MNIST images, DST with the Adam proposal):");
  for (const [name, n] of [["mlp", 20000], ["mnistCnn", 5000]] as const) {
    const rate = await trainingRate(name, n, 100);
    console.log(`  ${name.padEnd(9)} ${rate.toFixed(0).padStart(7)} images/s`);
  }
  console.log("");
  console.log("forward product y = x·wᵀ with ternary operands (fastest of repeats, GOP/s = 2·M·N·K/s):");
  const shapes: [string, number, number, number][] = [
    ["MNIST conv2 as GEMM (6400×64×800)", 6400, 64, 800],
    ["FC 1024→512, batch 1000", 1000, 512, 1024],
    ["square 2048×1024×1024", 2048, 1024, 1024],
  ];
  const paths = ["avx512-vnni", "avx2", "scalar"].filter((p) => a.setKernelPath(p));
  for (const [label, M, N, K] of shapes) {
    const reps = M * N * K > 1e9 ? 5 : 9;
    const plain = plainRate(M, N, K);
    const f32 = productRate("float32", M, N, K, reps);
    const cells = [`plain float32 loop (1 thread) ${plain.toFixed(1)}`, `float32 GEMM ${f32.toFixed(1)}`];
    for (const p of paths) {
      a.setKernelPath(p);
      const i8 = productRate("int8", M, N, K, reps);
      cells.push(`int8/${p} ${i8.toFixed(1)} (${(i8 / f32).toFixed(2)}× GEMM, ${(i8 / plain).toFixed(0)}× plain)`);
    }
    a.setKernelPath(info.bestKernelPath);
    console.log(`  ${label.padEnd(36)} ${cells.join("  ")}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
