/**
 * Every op of the backend interface (native/core/backend.h) against the float64 reference of
 * test/reference.ts, on small random shapes with odd sizes, exact edge values, every int8 kernel
 * path the CPU can run, and a gradient check of a small network against finite differences.
 *
 * Tolerances. Integer products (int8 × int8) must match exactly: the accumulation is exact and a
 * dyadic scale multiplies exactly. Float results are held to a-priori float32 error bounds with
 * u = 2⁻²⁴ and γ_n = n·u/(1 − n·u): a sum of n products, in any order and with or without FMA,
 * is within γ_{n+2}·Σ|terms| of the exact sum (the +2 covers the rounding of a scaled int8 operand
 * and of the stored result). Elementwise formulas get a small multiple of u relative to the sizes
 * of their terms, stated at each test.
 *
 * The same tests run on any backend: opsTests(backend) is registered for each backend of
 * TERNLAB_TEST_BACKENDS (default "cpu"); the GPU suite imports opsTests and registers "cuda".
 */
import { strict as assert } from "assert";
import { addon } from "../src/native";
import * as R from "./reference";
import { ActSpec, ConvShape, PoolShape, U32, Window, abs, gammaN, values } from "./reference";

const A = addon();
const ops = A.ops;

const KERNEL_PATHS = ["avx512-vnni", "avx2", "scalar"];

function shapeName(g: ConvShape): string {
  const k = g.kh === g.kw ? `${g.kh}` : `${g.kh}×${g.kw}`;
  const s = g.sh === g.sw ? `${g.sh}` : `${g.sh}×${g.sw}`;
  const p = g.ph === g.pw ? `${g.ph}` : `${g.ph}×${g.pw}`;
  return `n${g.n} ${g.h}×${g.w}×${g.c}→${g.oc} k${k} s${s} p${p}`;
}
const conv = (n: number, h: number, w: number, c: number, oc: number, k: number | [number, number], s: number | [number, number], p: number | [number, number]): ConvShape => {
  const [kh, kw] = Array.isArray(k) ? k : [k, k];
  const [sh, sw] = Array.isArray(s) ? s : [s, s];
  const [ph, pw] = Array.isArray(p) ? p : [p, p];
  return { n, h, w, c, oc, kh, kw, sh, sw, ph, pw };
};

// Odd sizes, every kernel 1/3/5, strides 1/2, paddings 0/1/2; then shapes that cross the
// implementation's block sizes: K > 256 (a float GEMM K block), oc > 64 (a GEMM panel), more than
// 4096 output rows (a product chunk), and non-square kernels, strides and paddings.
const CONV_CASES: ConvShape[] = [
  conv(3, 7, 5, 3, 5, 1, 1, 0),
  conv(3, 7, 5, 3, 5, 1, 2, 0),
  conv(3, 7, 5, 3, 5, 3, 1, 1),
  conv(3, 7, 5, 3, 5, 3, 1, 0),
  conv(3, 7, 5, 3, 5, 3, 2, 0),
  conv(3, 7, 5, 3, 5, 3, 2, 2),
  conv(3, 7, 5, 3, 5, 5, 1, 2),
  conv(3, 7, 5, 3, 5, 5, 2, 1),
  conv(3, 7, 5, 3, 5, 5, 1, 0),
  conv(2, 6, 9, 4, 3, [3, 5], [2, 1], [1, 2]),
  conv(1, 7, 5, 37, 7, 3, 1, 1),
  conv(3, 7, 5, 3, 70, 1, 1, 0),
  conv(2, 47, 45, 5, 6, 3, 1, 1),
  conv(5, 1, 1, 11, 3, 1, 1, 0), // a dense layer
];

const POOL_CASES: PoolShape[] = [
  { n: 3, h: 7, w: 5, c: 3, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0 },
  { n: 3, h: 7, w: 5, c: 3, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 },
  { n: 3, h: 7, w: 5, c: 3, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 },
  { n: 3, h: 7, w: 5, c: 3, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0 },
  { n: 2, h: 6, w: 9, c: 4, kh: 2, kw: 3, sh: 1, sw: 2, ph: 1, pw: 0 },
  { n: 2, h: 5, w: 5, c: 2, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0 },
  { n: 1, h: 7, w: 5, c: 1, kh: 5, kw: 5, sh: 1, sw: 1, ph: 2, pw: 2 },
];
const poolName = (g: PoolShape) => `n${g.n} ${g.h}×${g.w}×${g.c} k${g.kh}×${g.kw} s${g.sh}×${g.sw} p${g.ph}×${g.pw}`;

function restoreBestKernelPath(): void {
  A.setKernelPath(A.buildInfo().bestKernelPath);
}

/**
 * Tolerance of a float sum of `terms` products: γ_{terms+2}·Σ|terms|, elementwise; with operands
 * rounded to a unit roundoff `operandU` first (bf16 backward products), (2·u_op + u_op²) more.
 */
function sumTolerance(bound: Float64Array, terms: number, operandU = 0): (i: number) => number {
  const g = gammaN(terms + 2) + 2 * operandU + operandU * operandU;
  return (i) => g * bound[i];
}

export function opsTests(backend: string): void {
  const bwdU = R.backwardOperandRounding(backend);
  // ---------------------------------------------------------------------------------- products
  describe("conv forward", () => {
    const paths = backend === "cpu" ? KERNEL_PATHS : [null];
    for (const path of paths) {
      it(`int8 × int8 is exact${path ? ` on the ${path} kernel path` : ""} (ternary, dyadic scales, levels ±64)`, function () {
        if (path !== null && !A.setKernelPath(path)) this.skip();
        try {
          CONV_CASES.forEach((g, ci) => {
            const rng = new R.Rng(100 + ci);
            const d = R.convDims(g);
            const nx = g.n * g.h * g.w * g.c, nw = g.oc * g.kh * g.kw * g.c;
            const inputs: [Int8Array, number, Int8Array, number][] = [
              [rng.ternary(nx, 0.4), 1, rng.ternary(nw, 0.3), 1],
              [rng.ternary(nx, 0.5), 0.5, rng.ternary(nw, 0.5), 0.25],
              [rng.ints(nx, -2, 2), 0.5, rng.ints(nw, -2, 2), 1],
              // the int8 GEMM's contract: activations and weights within ±64
              [rng.ints(nx, -64, 64), 1, rng.ints(nw, -64, 64), 1],
              // all zero and all one: the u8 offset correction of the integer path
              [new Int8Array(nx), 1, rng.ints(nw, -1, 1), 1],
              [new Int8Array(nx).fill(1), 1, new Int8Array(nw).fill(-1), 1],
            ];
            inputs.forEach(([x, xs, w, ws], k) => {
              const y: Float32Array = ops.convForward(backend, g, x, xs, w, ws);
              assert.equal(y.length, d.n * d.oh * d.ow * d.oc, shapeName(g));
              const ref = R.conv2dForward(g, values(x, xs), values(w, ws));
              R.assertExact(`${path ?? backend} ${shapeName(g)} input set ${k}`, y, ref);
            });
          });
        } finally {
          restoreBestKernelPath();
        }
      });
    }

    if (backend === "cpu")
      it("every kernel path gives bit-identical results, and the best path is restored", () => {
        const best = A.buildInfo().bestKernelPath;
        const g = CONV_CASES[10];
        const rng = new R.Rng(5);
        const x = rng.ternary(g.n * g.h * g.w * g.c), w = rng.ternary(g.oc * g.kh * g.kw * g.c);
        const results: Float32Array[] = [];
        try {
          for (const p of KERNEL_PATHS) if (A.setKernelPath(p)) results.push(ops.convForward(backend, g, x, 1, w, 1));
        } finally {
          restoreBestKernelPath();
        }
        assert.ok(results.length >= 1);
        for (const r of results) assert.deepEqual(Array.from(r), Array.from(results[0]));
        assert.equal(A.buildInfo().kernelPath, best);
        // paths above the CPU's are refused, never silently used
        if (best !== "avx512-vnni") assert.equal(A.setKernelPath("avx512-vnni"), false);
      });

    it("int8 × int8 with non-dyadic scales: exact sum, one rounding of the scale and one of the product (≤ γ₂·|y|)", () => {
      CONV_CASES.slice(0, 6).forEach((g, ci) => {
        const rng = new R.Rng(200 + ci);
        const x = rng.ternary(g.n * g.h * g.w * g.c), w = rng.ternary(g.oc * g.kh * g.kw * g.c);
        const y: Float32Array = ops.convForward(backend, g, x, 0.3, w, 0.7);
        const ref = R.conv2dForward(g, values(x, 0.3), values(w, 0.7));
        R.assertClose(shapeName(g), y, ref, (i) => gammaN(2) * Math.abs(ref[i]));
      });
    });

    it("float operands (f32·f32, f32·int8 as the first layer, int8·f32) within γ_{K+2}·Σ|x·w|", () => {
      CONV_CASES.forEach((g, ci) => {
        const rng = new R.Rng(300 + ci);
        const nx = g.n * g.h * g.w * g.c, nw = g.oc * g.kh * g.kw * g.c, K = g.kh * g.kw * g.c;
        const combos: [Float32Array | Int8Array, number, Float32Array | Int8Array, number][] = [
          [rng.normals(nx), 1, rng.normals(nw, 0, 0.5), 1],
          [rng.floats(nx, -1, 1), 1, rng.ternary(nw), 0.5],
          [rng.ternary(nx), 0.3, rng.normals(nw), 1],
          [rng.normals(nx, 3, 0.1), 1, rng.normals(nw), 1],
        ];
        combos.forEach(([x, xs, w, ws], k) => {
          const y: Float32Array = ops.convForward(backend, g, x, xs, w, ws);
          const xv = values(x, xs), wv = values(w, ws);
          const ref = R.conv2dForward(g, xv, wv);
          R.assertClose(`${shapeName(g)} combo ${k}`, y, ref, sumTolerance(R.conv2dForward(g, abs(xv), abs(wv)), K));
        });
      });
    });
  });

  describe("conv backward", () => {
    it("data gradient (float and int8 weights) within γ_{oc·kh·kw+2}·Σ|dy·w| (+ bf16 operand rounding where used)", () => {
      CONV_CASES.forEach((g, ci) => {
        const rng = new R.Rng(400 + ci);
        const d = R.convDims(g);
        const ny = d.n * d.oh * d.ow * d.oc, nw = g.oc * g.kh * g.kw * g.c;
        const dy = rng.normals(ny);
        const weights: [Float32Array | Int8Array, number][] = [
          [rng.normals(nw), 1],
          [rng.ternary(nw), 1],
          [rng.ints(nw, -2, 2), 0.5],
          [rng.ternary(nw), 0.3],
        ];
        weights.forEach(([w, ws], k) => {
          const dx: Float32Array = ops.convBackwardData(backend, g, dy, w, ws);
          const wv = values(w, ws);
          const ref = R.conv2dBackwardData(g, dy, wv);
          R.assertClose(`${shapeName(g)} weights ${k}`, dx, ref, sumTolerance(R.conv2dBackwardData(g, abs(dy), abs(wv)), g.oc * g.kh * g.kw, bwdU));
        });
      });
    });

    it("filter gradient (float and int8 inputs) within γ_{n·oh·ow+2}·Σ|dy·x| (+ bf16 operand rounding where used)", () => {
      CONV_CASES.forEach((g, ci) => {
        const rng = new R.Rng(500 + ci);
        const d = R.convDims(g);
        const nx = g.n * g.h * g.w * g.c, ny = d.n * d.oh * d.ow * d.oc;
        const dy = rng.normals(ny);
        const inputs: [Float32Array | Int8Array, number][] = [
          [rng.normals(nx), 1],
          [rng.ternary(nx), 1],
          [rng.ternary(nx, 0.6), 0.5],
        ];
        inputs.forEach(([x, xs], k) => {
          const dw: Float32Array = ops.convBackwardFilter(backend, g, x, xs, dy);
          const xv = values(x, xs);
          const ref = R.conv2dBackwardFilter(g, xv, dy);
          R.assertClose(`${shapeName(g)} input ${k}`, dw, ref, sumTolerance(R.conv2dBackwardFilter(g, abs(xv), abs(dy)), d.n * d.oh * d.ow, bwdU));
        });
      });
    });
  });

  describe("Gated-XNOR counters", () => {
    it("zero inputs, zero weights and active MACs equal a brute-force count", () => {
      CONV_CASES.forEach((g, ci) => {
        const rng = new R.Rng(600 + ci);
        const nx = g.n * g.h * g.w * g.c, nw = g.oc * g.kh * g.kw * g.c;
        const sets: [Int8Array, Int8Array][] = [
          [rng.ternary(nx, 0.5), rng.ternary(nw, 0.4)],
          [rng.ternary(nx, 0.9), rng.ternary(nw, 0.1)],
          [new Int8Array(nx), rng.ternary(nw)],
          [rng.ternary(nx), new Int8Array(nw)],
          [new Int8Array(nx).fill(1), new Int8Array(nw).fill(-1)],
          [rng.ints(nx, -2, 2), rng.ints(nw, -2, 2)],
        ];
        sets.forEach(([x, w], k) => {
          const got = ops.convCounters(backend, g, x, w);
          const ref = R.convCountersBrute(g, x, w);
          const what = `${shapeName(g)} set ${k}`;
          assert.equal(got.zeroInputs, ref.zeroInputs, `${what}: zero inputs`);
          assert.equal(got.zeroWeights, ref.zeroWeights, `${what}: zero weights`);
          assert.equal(got.activeMacs, ref.activeMacs, `${what}: active MACs`);
        });
      });
    });

    it("counts a padded position as resting, and a fully active product as every in-image MAC", () => {
      const g = conv(1, 3, 3, 1, 1, 3, 1, 1);
      const got = ops.convCounters(backend, g, new Int8Array(9).fill(1), new Int8Array(9).fill(1));
      // 9 outputs; the taps inside the image: 4 corners × 4 + 4 edges × 6 + centre × 9 = 49
      assert.deepEqual({ ...got }, { zeroInputs: 0, zeroWeights: 0, activeMacs: 49 });
    });
  });

  // ---------------------------------------------------------------------------------- pooling
  describe("pooling", () => {
    it("max-pool forward: exact values and the argmax of the reference", () => {
      POOL_CASES.forEach((g, ci) => {
        const rng = new R.Rng(700 + ci);
        const x = rng.normals(g.n * g.h * g.w * g.c);
        const got = ops.pool(backend, g, x, true);
        const ref = R.maxPool(g, x);
        R.assertExact(`${poolName(g)} y`, got.y, ref.y);
        R.assertExact(`${poolName(g)} argmax`, got.argmax, ref.argmax);
      });
    });

    it("max-pool ties (integer-valued inputs, as after an int8 product) go to the first pixel in window order", () => {
      POOL_CASES.forEach((g, ci) => {
        const rng = new R.Rng(750 + ci);
        const x = Float32Array.from({ length: g.n * g.h * g.w * g.c }, () => rng.int(-1, 1));
        const got = ops.pool(backend, g, x, true);
        const ref = R.maxPool(g, x);
        R.assertExact(`${poolName(g)} y`, got.y, ref.y);
        R.assertExact(`${poolName(g)} argmax`, got.argmax, ref.argmax);
      });
    });

    it("pixels to floats: u8·scale + offset, each rounded once (no fused multiply-add)", () => {
      const px = Uint8Array.from({ length: 1027 }, (_, i) => (i * 37) & 255);
      const got: Float32Array = ops.normalizeU8(backend, px, 2 / 255, -1);
      const f = Math.fround, s = f(2 / 255);
      px.forEach((v, i) => assert.equal(got[i], f(f(v * s) + -1), `pixel ${i} (${v})`));
    });

    it("max-pool of int16 sums (the model's path after a ternary product): the float pool's values and argmax", () => {
      POOL_CASES.forEach((g, ci) => {
        const rng = new R.Rng(775 + ci);
        const q = Int16Array.from({ length: g.n * g.h * g.w * g.c }, () => rng.int(-4608, 4608));
        const got = ops.pool(backend, g, q, true);
        const ref = R.maxPool(g, Float32Array.from(q));
        assert.ok(got.y instanceof Int16Array, "int16 in, int16 out");
        R.assertExact(`${poolName(g)} y`, Float32Array.from(got.y), ref.y);
        R.assertExact(`${poolName(g)} argmax`, got.argmax, ref.argmax);
      });
    });

    it("max-pool backward: each output's gradient to its argmax (exact without overlap, else γ_{k}·Σ|dy|)", () => {
      POOL_CASES.forEach((g, ci) => {
        const rng = new R.Rng(800 + ci);
        const x = rng.normals(g.n * g.h * g.w * g.c);
        const fwd = ops.pool(backend, g, x, true);
        const dy = rng.normals(fwd.y.length);
        const dx: Float32Array = ops.poolBackward(backend, g, dy, fwd.argmax);
        const ref = R.maxPoolBackward(g, x, dy);
        R.assertClose(poolName(g), dx, ref, sumTolerance(R.maxPoolBackward(g, x, abs(dy)), g.kh * g.kw));
      });
    });

    it("avg-pool forward and backward (padding excluded from the count) within γ_{k+2}", () => {
      POOL_CASES.forEach((g, ci) => {
        const rng = new R.Rng(850 + ci);
        const x = rng.normals(g.n * g.h * g.w * g.c, 0.5, 2);
        const got = ops.pool(backend, g, x, false);
        R.assertClose(`${poolName(g)} y`, got.y, R.avgPool(g, x), sumTolerance(R.avgPool(g, abs(x)), g.kh * g.kw));
        const dy = rng.normals(got.y.length);
        const dx: Float32Array = ops.poolBackward(backend, g, dy, null);
        R.assertClose(`${poolName(g)} dx`, dx, R.avgPoolBackward(g, dy), sumTolerance(R.avgPoolBackward(g, abs(dy)), g.kh * g.kw));
      });
    });
  });

  // ---------------------------------------------------------------------------------- batch norm
  describe("batch norm", () => {
    const CASES: [number, number][] = [[105, 3], [1100, 5], [7, 1], [2, 4], [1, 3]];
    const eps = 1e-4, momentum = 0.1;

    it("training forward: y, x̂, 1/σ, running mean and biased running variance (EMA)", () => {
      CASES.forEach(([rows, c], ci) => {
        const rng = new R.Rng(900 + ci);
        const x = rng.normals(rows * c, 0.5, 2);
        const gamma = rng.floats(c, 0.5, 1.5), beta = rng.floats(c, -0.5, 0.5);
        const rm = rng.floats(c, -1, 1), rv = rng.floats(c, 0.5, 2);
        const got = ops.batchNorm(backend, rows, c, x, gamma, beta, rm, rv, { train: true, eps, momentum });
        const ref = R.batchNormTrain(rows, c, x, gamma, beta, rm, rv, eps, momentum);
        const what = `rows ${rows} c ${c}`;
        // x̂ = (x − μ)/σ: float32 x − μ and one product; μ itself carries u·|μ|: ≤ 8u·(|x̂| + |μ|/σ + 1)
        const xhatTol = (i: number) => 8 * U32 * (Math.abs(ref.xhat[i]) + Math.abs(ref.mean[i % c]) * ref.invstd[i % c] + 1);
        R.assertClose(`${what} x̂`, got.xhat, ref.xhat, xhatTol);
        R.assertClose(`${what} y`, got.y, ref.y, (i) => Math.abs(gamma[i % c]) * xhatTol(i) + 4 * U32 * (Math.abs(ref.y[i]) + Math.abs(beta[i % c])));
        R.assertClose(`${what} 1/σ`, got.invstd, ref.invstd, (i) => 4 * U32 * ref.invstd[i]);
        R.assertClose(`${what} running mean`, got.runMean, ref.runMean, (i) => 4 * U32 * (Math.abs(rm[i]) + Math.abs(ref.mean[i])));
        R.assertClose(`${what} running var`, got.runVar, ref.runVar, (i) => 4 * U32 * (rv[i] + ref.variance[i]));
      });
    });

    it("inference forward uses the running statistics", () => {
      CASES.forEach(([rows, c], ci) => {
        const rng = new R.Rng(950 + ci);
        const x = rng.normals(rows * c, 0.5, 2);
        const gamma = rng.floats(c, -1.5, 1.5), beta = rng.floats(c, -0.5, 0.5);
        const rm = rng.floats(c, -1, 1), rv = rng.floats(c, 0.01, 2);
        const got = ops.batchNorm(backend, rows, c, x, gamma, beta, rm, rv, { train: false, eps, momentum });
        const ref = R.batchNormInfer(rows, c, x, gamma, beta, rm, rv, eps);
        // y = x·s + (β − m·s), s = γ/√(v+ε): ≤ 8u·(|x·s| + |m·s| + |β|)
        R.assertClose(`rows ${rows} c ${c} y`, got.y, ref, (i) => {
          const ch = i % c, s = Math.abs(gamma[ch]) / Math.sqrt(rv[ch] + eps);
          return 8 * U32 * (Math.abs(x[i]) * s + Math.abs(rm[ch]) * s + Math.abs(beta[ch]));
        });
        // inference leaves the running statistics alone
        assert.deepEqual(Array.from(got.runMean), Array.from(rm));
        assert.deepEqual(Array.from(got.runVar), Array.from(rv));
      });
    });

    it("backward: dx, dγ, dβ of the training forward", () => {
      CASES.forEach(([rows, c], ci) => {
        const rng = new R.Rng(980 + ci);
        const x = rng.normals(rows * c, 0.5, 2);
        const gamma = rng.floats(c, -1.5, 1.5), beta = rng.floats(c, -0.5, 0.5);
        const fwd = ops.batchNorm(backend, rows, c, x, gamma, beta, new Float32Array(c), new Float32Array(c).fill(1), { train: true, eps, momentum });
        const dy = rng.normals(rows * c);
        const got = ops.batchNormBackward(backend, rows, c, dy, fwd.xhat, gamma, fwd.invstd);
        const ref = R.batchNormBackward(rows, c, dy, fwd.xhat, gamma, fwd.invstd);
        const sums = R.batchNormBackward(rows, c, abs(dy), abs(fwd.xhat), gamma, fwd.invstd);
        const what = `rows ${rows} c ${c}`;
        R.assertClose(`${what} dβ`, got.dbeta, ref.dbeta, (i) => 4 * U32 * sums.dbeta[i]);
        R.assertClose(`${what} dγ`, got.dgamma, ref.dgamma, (i) => 4 * U32 * sums.dgamma[i]);
        // dx = γ/σ·(dy − Σdy/m − x̂·Σdy·x̂/m): ≤ 8u·|γ/σ|·(|dy| + Σ|dy|/m + |x̂|·Σ|dy·x̂|/m)
        R.assertClose(`${what} dx`, got.dx, ref.dx, (i) => {
          const ch = i % c;
          return 8 * U32 * Math.abs(gamma[ch] * fwd.invstd[ch]) * (Math.abs(dy[i]) + sums.dbeta[ch] / rows + (Math.abs(fwd.xhat[i]) * sums.dgamma[ch]) / rows);
        });
      });
    });

    // The sums' order is part of the contract (native/core/reduce.h), bit for bit. Pairs of ±2⁶⁰ that
    // cancel exactly make it visible in float32: each order loses a different set of the small
    // values summed next to them (ulp(2⁶⁰) = 256), and each test checks that the order it replaced
    // gives other bits on its data.
    const f = Math.fround;
    function orderVisible(rows: number, c: number, rng: R.Rng): Float32Array {
      const x = rng.normals(rows * c, 0.5, 2);
      for (let ch = 0; ch < c; ++ch) {
        x[((ch * 13) % rows) * c + ch] = 2 ** 60;
        x[((ch * 13 + (rows >> 1) + 5) % rows) * c + ch] = -(2 ** 60);
      }
      return x;
    }
    const ORDER_CASES: [number, number][] = [[37, 3], [1100, 5], [2049, 33], [70001, 2]];
    const bits = (a: ArrayLike<number>) => Array.from(a, (v) => f(v));
    it("float input: Σx and Σ(x − μ)² in core/reduce.h's order (runs of 16 rows, pairwise tree), bit for bit", () => {
      ORDER_CASES.forEach(([rows, c], ci) => {
        const rng = new R.Rng(1200 + ci);
        const x = orderVisible(rows, c, rng);
        const gamma = rng.floats(c, 0.5, 1.5), beta = rng.floats(c, -0.5, 0.5), rm = rng.floats(c, -1, 1), rv = rng.floats(c, 0.5, 2);
        const got = ops.batchNorm(backend, rows, c, x, gamma, beta, rm, rv, { train: true, eps, momentum });
        const ref = R.bnStatsFloat32(R.bnMomentsFloat(rows, c, x), rm, rv, eps, momentum);
        const what = `rows ${rows} c ${c}`;
        assert.deepEqual(bits(got.mean), ref.mean, `${what} μ`);
        assert.deepEqual(bits(got.invstd), ref.invstd, `${what} 1/σ`);
        assert.deepEqual(bits(got.runMean), ref.runMean, `${what} running mean`);
        assert.deepEqual(bits(got.runVar), ref.runVar, `${what} running var`);
        const xhat = Array.from(x, (v, i) => f(f(v - ref.mean[i % c]) * ref.invstd[i % c]));
        assert.deepEqual(bits(got.xhat), xhat, `${what} x̂`);
        const old = R.bnStatsFloat32(R.bnMomentsFloat(rows, c, x, R.chunkedColumnSum), rm, rv, eps, momentum);
        assert.notDeepEqual(old.mean, ref.mean, `${what}: the data do not tell the orders apart`);
      });
    });
    it("backward: Σdy and Σdy·x̂ in core/reduce.h's order, and dx from them, bit for bit", () => {
      ORDER_CASES.forEach(([rows, c], ci) => {
        const rng = new R.Rng(1300 + ci);
        const x = rng.normals(rows * c, 0.5, 2), gamma = rng.floats(c, -1.5, 1.5), beta = rng.floats(c, -0.5, 0.5);
        const fwd = ops.batchNorm(backend, rows, c, x, gamma, beta, new Float32Array(c), new Float32Array(c).fill(1), { train: true, eps, momentum });
        const dy = orderVisible(rows, c, rng);
        const got = ops.batchNormBackward(backend, rows, c, dy, fwd.xhat, gamma, fwd.invstd);
        const sums = (sum: typeof R.pairwiseColumnSum) => {
          const db: number[] = [], dg: number[] = [];
          for (let ch = 0; ch < c; ++ch) {
            db.push(sum(rows, (r) => dy[r * c + ch]));
            dg.push(sum(rows, (r) => dy[r * c + ch] * fwd.xhat[r * c + ch]));
          }
          return { db, dg };
        };
        const { db, dg } = sums(R.pairwiseColumnSum);
        const what = `rows ${rows} c ${c}`;
        assert.deepEqual(bits(got.dbeta), db.map(f), `${what} dβ`);
        assert.deepEqual(bits(got.dgamma), dg.map(f), `${what} dγ`);
        const dx = Array.from(dy, (v, i) => {
          const ch = i % c, k1 = f(gamma[ch] * fwd.invstd[ch]), k2 = f(db[ch] / rows), k3 = f(dg[ch] / rows);
          return f(k1 * f(f(v - k2) - f(fwd.xhat[i] * k3)));
        });
        assert.deepEqual(bits(got.dx), dx, `${what} dx`);
        assert.notDeepEqual(sums(R.chunkedColumnSum).db.map(f), db.map(f), `${what}: the data do not tell the orders apart`);
      });
    });
    // Int16 inputs (exact conv sums q, value q·scale): μ and σ² exactly from Σq and Σq²; a scale that
    // is not a power of two makes them differ from the float path's statistics of the values q·scale.
    it("int16 input: exact statistics from Σq and Σq², x̂ and the fused φ from them; the fused backward", () => {
      const act = { levels: 1, r: 1, a: 0.5, window: 0 };
      for (const [rows, c] of [[37, 3], [1100, 40], [70001, 2]] as const) {
        const rng = new R.Rng(1400 + rows);
        const q = new Int16Array(rows * c);
        // wide channels over the whole int16 range; narrow ones around ±30 000 (large μ, small σ²)
        for (let i = 0; i < q.length; ++i) q[i] = (i % c) % 2 ? ((i % c) % 4 === 1 ? 30000 : -30000) + rng.int(-3, 3) : rng.int(-32768, 32767);
        const scale = 0.1, gamma = rng.floats(c, 0.5, 1.5), beta = rng.floats(c, -0.5, 0.5), rm = rng.floats(c, -1, 1), rv = rng.floats(c, 0.5, 2);
        const opts = { train: true, eps, momentum, scale };
        const got = ops.batchNorm(backend, rows, c, q, gamma, beta, rm, rv, opts);
        const ref = R.bnStatsFloat32(R.bnMomentsInt16(rows, c, q, scale), rm, rv, eps, momentum);
        const what = `rows ${rows} c ${c}`;
        assert.deepEqual(bits(got.mean), ref.mean, `${what} μ`);
        assert.deepEqual(bits(got.invstd), ref.invstd, `${what} 1/σ`);
        assert.deepEqual(bits(got.runMean), ref.runMean, `${what} running mean`);
        assert.deepEqual(bits(got.runVar), ref.runVar, `${what} running var`);
        const values = Float32Array.from(q, (v) => f(v * f(scale)));
        const xhat = Array.from(values, (v, i) => f(f(v - ref.mean[i % c]) * ref.invstd[i % c]));
        assert.deepEqual(bits(got.xhat), xhat, `${what} x̂`);
        const viaFloat = R.bnStatsFloat32(R.bnMomentsFloat(rows, c, values), rm, rv, eps, momentum);
        assert.notDeepEqual(viaFloat.invstd, ref.invstd, `${what}: the exact statistics are those of the float path`);
        // fused BN + φ forward and backward (x̂ recomputed from q) give the unfused ops' bits
        const fused = ops.batchNorm(backend, rows, c, q, gamma, beta, rm, rv, { ...opts, act });
        assert.deepEqual(Array.from(fused.q), Array.from(ops.activation(backend, got.y, act)), `${what} φ(y)`);
        const dq = rng.normals(rows * c);
        const dy = ops.activationBackward(backend, got.y, dq, act);
        const unfused = ops.batchNormBackward(backend, rows, c, dy, got.xhat, gamma, got.invstd);
        const fusedBack = ops.batchNormBackward(backend, rows, c, dq, null, gamma, got.invstd, { x16: q, scale, mean: got.mean, act, beta });
        for (const k of ["dx", "dgamma", "dbeta"]) assert.deepEqual(bits(fusedBack[k]), bits(unfused[k]), `${what} fused backward ${k}`);
      }
    });
  });

  // ---------------------------------------------------------------------------------- activation
  describe("activation φ_r and its windows", () => {
    const SPECS: ActSpec[] = [];
    for (const levels of [0, 1, 2])
      for (const [r, a] of [[1, 0.5], [0.75, 0.25], [0.6, 0.3]])
        for (const window of R.WINDOWS) SPECS.push({ levels, r, a, window });
    const specName = (s: ActSpec) => `N=${s.levels} r=${s.r} a=${s.a} ${Window[s.window]}`;

    /** |error| of dq·∂φ/∂x: 16u relative, plus a rounding of z = x − t (u·(|x| + |t|)) times the
     *  window's steepest slope, which is at most height/a² for all four shapes. */
    function derivTol(spec: ActSpec, x: number, dq: number, ref: number): number {
      let slope = 0, tmax = 0;
      for (const { t, height } of R.jumps(spec)) {
        slope += height / (spec.a * spec.a);
        tmax = Math.max(tmax, Math.abs(t));
      }
      return Math.abs(dq) * (2 * U32 * (Math.abs(x) + tmax) * slope) + 16 * U32 * Math.abs(ref);
    }

    it("forward on random inputs equals the staircase with thresholds r·(z_j + z_{j+1})", () => {
      const rng = new R.Rng(1000);
      const x = rng.floats(4000, -3, 3);
      for (const spec of SPECS) {
        const q: Int8Array = ops.activation(backend, x, spec);
        R.assertExact(specName(spec), q, Array.from(x, (v) => R.activation(v, spec)));
      }
    });

    it("backward on random inputs is dq·Σ_j height·window(x − t_j)", () => {
      const rng = new R.Rng(1001);
      const x = rng.floats(4000, -3, 3), dq = rng.normals(4000);
      for (const spec of SPECS) {
        const dx: Float32Array = ops.activationBackward(backend, x, dq, spec);
        const ref = Float64Array.from(x, (v, i) => dq[i] * R.activationDerivative(v, spec));
        R.assertClose(specName(spec), dx, ref, (i) => derivTol(spec, x[i], dq[i], ref[i]));
      }
    });

    it("the accumulating backward is the given gradient plus the backward, rounded once more (bit for bit)", () => {
      const rng = new R.Rng(1002);
      const x = rng.floats(3000, -3, 3), dq = rng.normals(3000), given = rng.normals(3000);
      for (const spec of SPECS) {
        const dx: Float32Array = ops.activationBackward(backend, x, dq, spec);
        const acc: Float32Array = ops.activationBackward(backend, x, dq, spec, given);
        R.assertExact(specName(spec), acc, Array.from(given, (g, i) => Math.fround(g + dx[i])));
      }
      assert.throws(() => ops.activationBackward(backend, x, dq, SPECS[0], new Float32Array(5)), /5 elements, not 3000/);
    });

    it("exact edge values: x = 0, ±t, ±(t ± a) and their float32 neighbours", () => {
      for (const spec of SPECS) {
        if (spec.r === 0.6) continue; // the edges must be float32-exact: r and a dyadic
        const edges = new Set<number>([0, -0, 1e-30, -1e-30, 3 * spec.r + 5, -(3 * spec.r + 5)]);
        for (const { t } of R.jumps(spec))
          for (const e of [t, t - spec.a, t + spec.a]) for (const v of [e, R.nextUp32(e), R.nextDown32(e)]) edges.add(v);
        const x = Float32Array.from(edges);
        const q: Int8Array = ops.activation(backend, x, spec);
        R.assertExact(`${specName(spec)} forward`, q, Array.from(x, (v) => R.activation(v, spec)));
        const dq = new Float32Array(x.length).fill(1);
        const dx: Float32Array = ops.activationBackward(backend, x, dq, spec);
        // The window is a function of z = x − t as a float32 (so every backend agrees bit for bit):
        // x one ulp inside or outside an edge lands where its rounded z does.
        // The nearest jump's window only (§1.2's form in |x| − r for ternary).
        const ref = Float64Array.from(x, (v) => {
          const zs = R.jumps(spec).map(({ t, height }) => ({ z: Math.abs(Math.fround(v - t)), height }));
          const near = zs.reduce((b, c) => (c.z < b.z ? c : b));
          return near.height * R.windowDensity(near.z, spec.a, spec.window);
        });
        if (spec.window === Window.Rectangular || spec.window === Window.Triangular)
          R.assertExact(`${specName(spec)} backward`, dx, ref);
        else R.assertClose(`${specName(spec)} backward`, dx, ref, (i) => derivTol(spec, x[i], 1, ref[i]));
      }
    });

    it("ternary, r = 1, a = ½ (the released code): φ and the rectangular window at the named points", () => {
      const spec: ActSpec = { levels: 1, r: 1, a: 0.5, window: Window.Rectangular };
      const x = Float32Array.from([-2, -1.5, -1, -0.75, -0.5, 0, 0.5, R.nextDown32(1), 1, 1.5, R.nextUp32(1.5), 2]);
      assert.deepEqual(Array.from(ops.activation(backend, x, spec) as Int8Array), [-1, -1, -1, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
      const dx: Float32Array = ops.activationBackward(backend, x, new Float32Array(x.length).fill(2), spec);
      assert.deepEqual(Array.from(dx), [0, 2, 2, 2, 2, 0, 2, 2, 2, 2, 0, 0]);
      const tri: Float32Array = ops.activationBackward(backend, x, new Float32Array(x.length).fill(1), { ...spec, window: Window.Triangular });
      assert.deepEqual(Array.from(tri), [0, 0, 2, 1, 0, 0, 0, 2 - 4 * (1 - R.nextDown32(1)), 2, 0, 0, 0]);
      // binary: the jump is at 0, x ≥ 0 is +1
      assert.deepEqual(Array.from(ops.activation(backend, Float32Array.from([-1e-30, -0, 0, 1e-30]), { ...spec, levels: 0 }) as Int8Array), [-1, 1, 1, 1]);
    });
  });

  // ---------------------------------------------------------------------------------- losses
  describe("losses", () => {
    const HINGE = 0, XENT = 1;

    function checkLoss(kind: number, n: number, c: number, y: Float32Array, labels: Int32Array, what: string): void {
      const got = ops.loss(backend, n, c, y, labels, kind);
      const ref = kind === HINGE ? R.squaredHinge(n, c, y, labels) : R.softmaxCrossEntropy(n, c, y, labels);
      R.assertExact(`${what} rank`, got.rank, R.rankOfTrue(n, c, y, labels));
      if (kind === HINGE) {
        // h = 1 − t·y rounds once, then two exact-or-once-rounded products: ≤ 4u relative
        R.assertClose(`${what} dy`, got.dy, ref.dy, (i) => 4 * U32 * Math.abs(ref.dy[i]));
        R.assertClose(`${what} row loss`, got.rowLoss, ref.rowLoss, (i) => 4 * U32 * ref.rowLoss[i]);
      } else {
        // y_j − max rounds in float32 (u·|y_j − max| inside an exp or the log-sum): ≤ 4u·(|ref| + spread/n)
        const spread = (r: number) => {
          let lo = Infinity, hi = -Infinity;
          for (let j = 0; j < c; j++) {
            lo = Math.min(lo, y[r * c + j]);
            hi = Math.max(hi, y[r * c + j]);
          }
          return hi - lo;
        };
        R.assertClose(`${what} dy`, got.dy, ref.dy, (i) => 4 * U32 * (Math.abs(ref.dy[i]) + spread(Math.floor(i / c)) / n));
        R.assertClose(`${what} row loss`, got.rowLoss, ref.rowLoss, (i) => 4 * U32 * (ref.rowLoss[i] + spread(i)));
      }
      // the mean the optimiser sees is the mean of the row losses
      const mean = Array.from(got.rowLoss as Float32Array).reduce((s, v) => s + v, 0) / n;
      assert.ok(Math.abs(mean - ref.loss) <= 1e-6 * (1 + ref.loss), `${what} mean loss ${mean} vs ${ref.loss}`);
    }

    for (const [kind, name] of [[HINGE, "squared hinge (mean over batch × classes)"], [XENT, "softmax cross-entropy (mean over the batch)"]] as const)
      it(`${name}: gradient, row loss and rank of the true class`, () => {
        for (const [n, c, seed] of [[7, 10, 1], [1, 2, 2], [33, 3, 3], [4, 1000, 4]]) {
          const rng = new R.Rng(1100 + seed);
          const y = rng.normals(n * c, 0, 1.5);
          checkLoss(kind, n, c, y, rng.labels(n, c), `n ${n} c ${c}`);
        }
      });

    it("squared hinge at the hinge: t·y = 1 exactly and beyond give zero gradient", () => {
      const y = Float32Array.from([1, -1, -1, -2, 0.5, -3, -1, 1, R.nextDown32(1), -R.nextDown32(1), 1.5, -1]);
      const labels = Int32Array.from([0, 1, 0]);
      checkLoss(HINGE, 3, 4, y, labels, "hinge edges");
      const got = ops.loss(backend, 3, 4, y, labels, HINGE);
      for (let j = 0; j < 4; j++) assert.ok(got.dy[j] === 0, `dy[${j}] = ${got.dy[j]}`);
      assert.equal(got.rowLoss[0], 0);
    });

    it("ranks with ties: equal scores rank the lower class index first", () => {
      const n = 4, c = 5;
      const y = Float32Array.from([0, 0, 0, 0, 0, 1, 2, 2, 1, 0, 3, 3, 3, 3, 3, -1, 5, -1, -1, -1]);
      const labels = Int32Array.from([3, 3, 0, 4]);
      for (const kind of [HINGE, XENT]) checkLoss(kind, n, c, y, labels, `ties kind ${kind}`);
      assert.deepEqual(Array.from(ops.loss(backend, n, c, y, labels, HINGE).rank as Int32Array), [3, 3, 0, 4]);
    });

    it("cross-entropy stays finite for logits of ±80 (computed about the row maximum)", () => {
      const y = Float32Array.from([80, -80, 0, -80, 80, 79, 80, 80, 80]);
      const labels = Int32Array.from([1, 2, 0]);
      checkLoss(XENT, 3, 3, y, labels, "large logits");
      const got = ops.loss(backend, 3, 3, y, labels, XENT);
      for (const v of [...got.dy, ...got.rowLoss]) assert.ok(Number.isFinite(v));
    });
  });

  // ---------------------------------------------------------------------------------- gradient check
  describe("gradients of a small network against finite differences of its smoothed form", () => {
    // The network of the released code in miniature: product → [max-pool] → BN → φ_r → dense → BN → loss.
    // Backpropagated through the ops, with φ_r's forward replaced by its smooth surrogate
    // S(x) = z_0 + Σ_j height_j·F((x − t_j)/a) (F the CDF of the window: clipped linear,
    // piecewise quadratic, normal, logistic), the analytic gradient must be the exact gradient
    // of the smoothed network: central differences in float64 of the reference network, h = 1e-6.
    // A window that is not the derivative of its surrogate, a BN backward that forgets the batch
    // coupling or a loss gradient scaled wrongly each fail this by orders of magnitude.
    interface Net {
      name: string;
      first: ConvShape;
      pool: PoolShape | null;
      hidden: number;
      classes: number;
      act: ActSpec;
      loss: 0 | 1;
    }
    const NETS: Net[] = [];
    for (const window of R.WINDOWS)
      NETS.push({
        name: `dense → BN → φ (N=1, ${Window[window]}) → dense → BN → squared hinge`,
        first: R.denseShape(8, 6, 5), pool: null, hidden: 5, classes: 4,
        act: { levels: 1, r: 1, a: 0.5, window }, loss: 0,
      });
    NETS.push({
      name: "conv 3×3 → max-pool → BN → φ (N=2, Gaussian) → dense → BN → cross-entropy",
      first: conv(3, 6, 5, 2, 4, 3, 1, 1),
      pool: { n: 3, h: 6, w: 5, c: 4, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0 },
      hidden: 4, classes: 5, act: { levels: 2, r: 0.75, a: 0.3, window: Window.Gaussian }, loss: 1,
    });
    NETS.push({
      name: "conv 3×3 stride 2 → BN → φ (binary, logistic) → dense → BN → squared hinge",
      first: conv(4, 5, 5, 2, 3, 3, 2, 1), pool: null, hidden: 3, classes: 3,
      act: { levels: 0, r: 1, a: 0.5, window: Window.Logistic }, loss: 0,
    });
    const eps = 1e-4;

    for (const net of NETS)
      it(net.name, () => {
        const rng = new R.Rng(1200 + NETS.indexOf(net));
        const g1 = net.first, d1 = R.convDims(g1);
        const B = g1.n;
        const rows1 = net.pool ? B * R.poolDims(net.pool).oh * R.poolDims(net.pool).ow : B * d1.oh * d1.ow;
        const perImage = (rows1 / B) * net.hidden;
        const g2 = R.denseShape(B, perImage, net.classes);
        const x = rng.normals(g1.n * g1.h * g1.w * g1.c);
        const w1 = rng.normals(g1.oc * g1.kh * g1.kw * g1.c, 0, 0.7);
        const gamma1 = rng.floats(net.hidden, 0.6, 1.4), beta1 = rng.floats(net.hidden, -0.3, 0.3);
        const w2 = rng.normals(net.classes * perImage, 0, 0.7);
        const gamma2 = rng.floats(net.classes, 0.6, 1.4), beta2 = rng.floats(net.classes, -0.3, 0.3);
        const labels = rng.labels(B, net.classes);

        // --- the analytic gradient, through the ops
        const y1: Float32Array = ops.convForward(backend, g1, x, 1, w1, 1);
        const pooled = net.pool ? ops.pool(backend, net.pool, y1, true) : null;
        const bn1 = ops.batchNorm(backend, rows1, net.hidden, pooled ? pooled.y : y1, gamma1, beta1,
          new Float32Array(net.hidden), new Float32Array(net.hidden).fill(1), { train: true, eps, momentum: 0.1 });
        const a1 = Float32Array.from(bn1.y as Float32Array, (v) => R.activationSurrogate(v, net.act));
        const y2: Float32Array = ops.convForward(backend, g2, a1, 1, w2, 1);
        const bn2 = ops.batchNorm(backend, B, net.classes, y2, gamma2, beta2,
          new Float32Array(net.classes), new Float32Array(net.classes).fill(1), { train: true, eps, momentum: 0.1 });
        const L = ops.loss(backend, B, net.classes, bn2.y, labels, net.loss);
        const b2 = ops.batchNormBackward(backend, B, net.classes, L.dy, bn2.xhat, gamma2, bn2.invstd);
        const da1: Float32Array = ops.convBackwardData(backend, g2, b2.dx, w2, 1);
        const dz1: Float32Array = ops.activationBackward(backend, bn1.y, da1, net.act);
        const b1 = ops.batchNormBackward(backend, rows1, net.hidden, dz1, bn1.xhat, gamma1, bn1.invstd);
        const dy1: Float32Array = pooled ? ops.poolBackward(backend, net.pool, b1.dx, pooled.argmax) : b1.dx;
        const analytic = {
          x: ops.convBackwardData(backend, g1, dy1, w1, 1) as Float32Array,
          w1: ops.convBackwardFilter(backend, g1, x, 1, dy1) as Float32Array,
          gamma1: b1.dgamma as Float32Array,
          beta1: b1.dbeta as Float32Array,
        };

        // --- the smoothed network in float64
        const params = { x: Float64Array.from(x), w1: Float64Array.from(w1), gamma1: Float64Array.from(gamma1), beta1: Float64Array.from(beta1) };
        const lossOf = (p: typeof params): number => {
          let h = R.conv2dForward(g1, p.x, p.w1);
          if (net.pool) h = R.maxPool(net.pool, h).y;
          const n1 = R.batchNormTrain(rows1, net.hidden, h, p.gamma1, p.beta1, new Float64Array(net.hidden), new Float64Array(net.hidden), eps, 0.1);
          const s = n1.y.map((v) => R.activationSurrogate(v, net.act));
          const o = R.conv2dForward(g2, s, w2);
          const n2 = R.batchNormTrain(B, net.classes, o, gamma2, beta2, new Float64Array(net.classes), new Float64Array(net.classes), eps, 0.1);
          return net.loss === 0 ? R.squaredHinge(B, net.classes, n2.y, labels).loss : R.softmaxCrossEntropy(B, net.classes, n2.y, labels).loss;
        };
        const L0 = lossOf(params);
        const opsLoss = Array.from(L.rowLoss as Float32Array).reduce((s, v) => s + v, 0) / B;
        assert.ok(Math.abs(opsLoss - L0) <= 1e-4 * (1 + L0), `forward loss: ops ${opsLoss}, reference ${L0}`);

        for (const key of ["x", "w1", "gamma1", "beta1"] as const) {
          const p = params[key];
          const fd = new Float64Array(p.length);
          for (let i = 0; i < p.length; i++) {
            const keep = p[i], h = 1e-6 * Math.max(1, Math.abs(keep));
            p[i] = keep + h;
            const up = lossOf(params);
            p[i] = keep - h;
            const down = lossOf(params);
            p[i] = keep;
            fd[i] = (up - down) / (2 * h);
          }
          const scale = fd.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
          assert.ok(scale > 1e-4, `${key}: the gradient is essentially zero (${scale}); the check would be vacuous`);
          // float32 forward and backward against float64 differences: 1e-4 of the largest component
          // (observed ≤ 1.3e-6 on the CPU); bf16 backward operands add 16·2⁻⁸ (6 %), still far below
          // the errors a wrong window, BN coupling or loss scale make (tens of percent and more)
          R.assertClose(`∂L/∂${key}`, analytic[key], fd, () => (1e-4 + 16 * bwdU) * scale);
        }
      });
  });
}

// ------------------------------------------------------------------------------------------------
// The reference checks itself where the maths gives an independent handle.
describe("float64 reference (self-consistency)", () => {
  it("conv backward data and filter are the adjoints of the forward", () => {
    for (const g of CONV_CASES.slice(0, 11)) {
      const rng = new R.Rng(1);
      const d = R.convDims(g);
      const x = rng.normals(g.n * g.h * g.w * g.c), w = rng.normals(g.oc * g.kh * g.kw * g.c), dy = rng.normals(d.n * d.oh * d.ow * d.oc);
      const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => s + v * b[i], 0);
      const yDy = dot(R.conv2dForward(g, x, w), dy);
      assert.ok(Math.abs(yDy - dot(x, R.conv2dBackwardData(g, dy, w))) < 1e-9 * (1 + Math.abs(yDy)), shapeName(g));
      assert.ok(Math.abs(yDy - dot(w, R.conv2dBackwardFilter(g, x, dy))) < 1e-9 * (1 + Math.abs(yDy)), shapeName(g));
    }
  });

  it("batch-norm backward is the derivative of the training forward", () => {
    const rng = new R.Rng(2);
    const rows = 6, c = 2;
    const x = Float64Array.from(rng.normals(rows * c)), gamma = [0.7, 1.3], beta = [0.1, -0.2], dy = rng.normals(rows * c);
    const f = (xx: Float64Array) => R.batchNormTrain(rows, c, xx, gamma, beta, [0, 0], [1, 1], 1e-4, 0.1);
    const fwd = f(x);
    const { dx } = R.batchNormBackward(rows, c, dy, fwd.xhat, gamma, fwd.invstd);
    for (let i = 0; i < x.length; i++) {
      const keep = x[i];
      x[i] = keep + 1e-6;
      const up = f(x).y.reduce((s, v, j) => s + v * dy[j], 0);
      x[i] = keep - 1e-6;
      const down = f(x).y.reduce((s, v, j) => s + v * dy[j], 0);
      x[i] = keep;
      assert.ok(Math.abs((up - down) / 2e-6 - dx[i]) < 1e-6, `element ${i}`);
    }
  });

  it("each window integrates to 1, is the derivative of its CDF, and the surrogate is a staircase at a → 0", () => {
    for (const window of R.WINDOWS)
      for (const a of [0.5, 0.25]) {
        let integral = 0;
        const dz = 1e-4;
        for (let z = -12; z < 12; z += dz) integral += R.windowDensity(z + dz / 2, a, window) * dz;
        assert.ok(Math.abs(integral - 1) < 1e-6, `${Window[window]} a=${a}: ∫ = ${integral}`);
        for (const z of [-0.7, -0.3, -0.1, 0.05, 0.2, 0.4, 0.9]) {
          if (Math.abs(Math.abs(z) - a) < 1e-3) continue;
          const num = (R.windowCdf(z + 1e-6, a, window) - R.windowCdf(z - 1e-6, a, window)) / 2e-6;
          assert.ok(Math.abs(num - R.windowDensity(z, a, window)) < 1e-6, `${Window[window]} a=${a} z=${z}`);
        }
      }
    const spec: ActSpec = { levels: 2, r: 1, a: 1e-9, window: Window.Logistic };
    for (const x of [-2, -1.2, -0.7, -0.2, 0.2, 0.7, 1.2, 2]) assert.ok(Math.abs(R.activationSurrogate(x, spec) - R.activation(x, spec) * 0.5) < 1e-12);
  });

  it("the ternary derivative is ALGORITHM.md §1.2's form in |x| − r, for all four windows", () => {
    const sigma = (u: number) => 1 / (1 + Math.exp(-u));
    for (const a of [0.5, 0.8])
      for (const window of R.WINDOWS)
        for (let x = -3; x <= 3; x += 0.01) {
          const r = 1, u = Math.abs(x) - r, au = Math.abs(u);
          const paper = [
            au <= a ? 1 / (2 * a) : 0,
            au <= a ? (a - au) / (a * a) : 0,
            Math.exp(-(u * u) / (2 * a * a)) / (Math.sqrt(2 * Math.PI) * a),
            (sigma(u / a) * (1 - sigma(u / a))) / a,
          ][window];
          assert.ok(Math.abs(R.activationDerivative(x, { levels: 1, r, a, window }) - paper) < 1e-12, `${Window[window]} a ${a} x ${x}`);
        }
  });

  it("erfc and the normal CDF match tabulated values", () => {
    const table: [number, number][] = [[0, 1], [0.5, 0.4795001221869535], [1, 0.15729920705028513], [2, 0.004677734981047266],
      [2.5, 4.069520174449590e-4], [3, 2.209049699858544e-5], [5, 1.537459794428035e-12], [-1, 1.8427007929497148]];
    for (const [x, v] of table) assert.ok(Math.abs(R.erfc(x) - v) <= 1e-14 * Math.max(1, v) + 1e-15 * v, `erfc(${x}) = ${R.erfc(x)}`);
    assert.ok(Math.abs(R.normalCdf(1.959963984540054) - 0.975) < 1e-14);
  });
});

R.describeBackends("ops", opsTests);
