// The CUDA backend against the CPU backend, op by op and over whole training steps (issue 3, §4):
// integer forward outputs bit-identical; pooling, batch norm, activations, the squared-hinge loss and
// the DST/Adam updates bit-identical (both backends run the same formulas in the same order);
// float products within the stated tolerances (fp32: 1e-5 normwise, bf16 tensor cores: 8e-3);
// a few training steps on both give the same discrete weights.
// Without a GPU (or without a CUDA build) every test skips, saying why.
import { strict as assert } from "assert";
import { gxnorCifar, loadAddon, tinyNet, updateConfig, ModelSpec } from "../../bench/gpu_models";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const addon: any = loadAddon();
const ops = addon.ops;

function cudaUnavailable(): string | null {
  if (!addon.buildInfo().cuda) return "this build of ternlab has no CUDA backend (built without nvcc or with TERNLAB_CUDA=0)";
  try {
    ops.initStates("cuda", 4, 1, 0, 1, 1);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function ternary(n: number, seed: number, pZero = 0.4): Int8Array {
  const r = rng(seed), a = new Int8Array(n);
  for (let i = 0; i < n; ++i) { const u = r(); a[i] = u < pZero ? 0 : u < (1 + pZero) / 2 ? 1 : -1; }
  return a;
}
function normal(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed), a = new Float32Array(n);
  for (let i = 0; i < n; ++i) a[i] = scale * Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  return a;
}

// mode: a TERNLAB_CUDA_MATH value, "own" (fast, with cuDNN off: TERNLAB_CUDNN=0), "cudnn-int8"
// (fast, with the int8 forward through cuDNN too: TERNLAB_CUDNN_INT8=1), "graph" / "graph-f32"
// (fast, the backward products through cuDNN's graph API: TERNLAB_CUDNN_GRAPH=1 / f32)
const fastModes: Record<string, Record<string, string>> = {
  own: { TERNLAB_CUDNN: "0" },
  "cudnn-int8": { TERNLAB_CUDNN_INT8: "1" },
  graph: { TERNLAB_CUDNN_GRAPH: "1" },
  "graph-f32": { TERNLAB_CUDNN_GRAPH: "f32" },
  // the bf16 gradient handoffs are on by default; these turn one or both halves off
  "float-grads": { TERNLAB_CUDA_BF16_DY: "0", TERNLAB_CUDA_BF16_DX: "0" },
  "bf16-dy": { TERNLAB_CUDA_BF16_DX: "0" },
  "bf16-dx": { TERNLAB_CUDA_BF16_DY: "0" },
  "bf16-both": {},
  // cuDNN's products with every layer's backward in batch chunks of ≤ 1 MiB of bf16 dy
  chunked: { TERNLAB_CUDA_CHUNK_MB: "1" },
};
// f run with the mode's switches set (for a promise, until it settles: the backend reads them at
// every product, on the training thread too)
function withMath<T>(mode: string, f: () => T): T {
  const old = process.env.TERNLAB_CUDA_MATH;
  process.env.TERNLAB_CUDA_MATH = fastModes[mode] ? "fast" : mode;
  Object.assign(process.env, fastModes[mode] ?? {});
  const restore = () => {
    if (old === undefined) delete process.env.TERNLAB_CUDA_MATH;
    else process.env.TERNLAB_CUDA_MATH = old;
    for (const k of Object.keys(fastModes[mode] ?? {})) delete process.env[k];
  };
  let r: T;
  try {
    r = f();
  } catch (e) {
    restore();
    throw e;
  }
  if (r instanceof Promise) return r.finally(restore) as T;
  restore();
  return r;
}

// Identical typed arrays (every value equal; +0 and −0 count as equal: g++ and nvcc may give a zero
// gradient either sign, which nothing downstream can tell apart), with the first difference in the message.
function same(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths ${a.length} vs ${b.length}`);
  let bad = 0, first = -1;
  for (let i = 0; i < a.length; ++i)
    if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) { if (first < 0) first = i; ++bad; }
  assert.equal(bad, 0, `${what}: ${bad} of ${a.length} differ; first at ${first}: cpu ${a[first]} vs cuda ${b[first]}`);
}
// ‖gpu − cpu‖ / ‖cpu‖ ≤ tol, and no NaN.
function close(ref: ArrayLike<number>, got: ArrayLike<number>, tol: number, what: string): number {
  assert.equal(ref.length, got.length, `${what}: lengths`);
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) {
    assert.ok(Number.isFinite(got[i]), `${what}: element ${i} is ${got[i]}`);
    num += (got[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  const rel = Math.sqrt(num / Math.max(den, 1e-30));
  assert.ok(rel <= tol, `${what}: relative error ${rel.toExponential(2)} > ${tol}`);
  return rel;
}

interface Geom { n: number; h: number; w: number; c: number; oc: number; kh: number; kw: number; sh: number; sw: number; ph: number; pw: number }
const geoms: Array<[string, Geom]> = [
  ["3x3 pad 1, c 128 (vector path)", { n: 4, h: 8, w: 8, c: 128, oc: 160, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }],
  ["3x3 stride 2, c 16", { n: 3, h: 9, w: 7, c: 16, oc: 24, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 }],
  ["5x5 valid, c 5 (scalar path)", { n: 2, h: 12, w: 12, c: 5, oc: 7, kh: 5, kw: 5, sh: 1, sw: 1, ph: 0, pw: 0 }],
  ["1x1 stride 2 (downsample)", { n: 2, h: 8, w: 8, c: 32, oc: 64, kh: 1, kw: 1, sh: 2, sw: 2, ph: 0, pw: 0 }],
  ["dense 1000 -> 300", { n: 37, h: 1, w: 1, c: 1000, oc: 300, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0 }],
];
const outDim = (i: number, k: number, s: number, p: number) => Math.floor((i + 2 * p - k) / s) + 1;
const rows = (g: Geom) => g.n * outDim(g.h, g.kh, g.sh, g.ph) * outDim(g.w, g.kw, g.sw, g.pw);
const K = (g: Geom) => g.kh * g.kw * g.c;

describe("CUDA backend agrees with the CPU backend", function () {
  this.timeout(600000);
  before(function () {
    const why = cudaUnavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
  });

  describe("products", () => {
    for (const [name, g] of geoms) {
      const x = ternary(g.n * g.h * g.w * g.c, 1), w = ternary(g.oc * K(g), 2);
      it(`int8 forward is bit-identical: ${name}`, () => {
        const cpu = ops.convForward("cpu", g, x, 1, w, 1);
        for (const mode of ["fast", "simple", "cudnn-int8"]) same(cpu, withMath(mode, () => ops.convForward("cuda", g, x, 1, w, 1)), `${name} (${mode})`);
        // multi-level states and non-unit scales: still one float product at the end
        const x2 = ternary(x.length, 3).map((v, i) => v * (1 + (i % 2))), w2 = ternary(w.length, 4).map((v, i) => v * (1 + (i % 4)));
        for (const mode of ["fast", "cudnn-int8"])
          same(ops.convForward("cpu", g, x2, 0.5, w2, 0.25), withMath(mode, () => ops.convForward("cuda", g, x2, 0.5, w2, 0.25)), `${name} (scaled, ${mode})`);
      });
      it(`float forward within 1e-5 (cuDNN fp32 and own): ${name}`, () => {
        const xf = normal(x.length, 5);
        for (const mode of ["fast", "own"])
          close(ops.convForward("cpu", g, xf, 1, w, 1), withMath(mode, () => ops.convForward("cuda", g, xf, 1, w, 1)), 1e-5, `${name} (${mode})`);
      });
      it(`backward data and filter: fp32 within 1e-5, bf16 tensor cores within 8e-3: ${name}`, () => {
        const dy = normal(rows(g) * g.oc, 6);
        const dx = ops.convBackwardData("cpu", g, dy, w, 1), dw = ops.convBackwardFilter("cpu", g, x, 1, dy);
        // "fast" is cuDNN's bf16 products where cuDNN 9 loads, "own" ternlab's bf16 kernels
        for (const [mode, tol] of [["exact", 1e-5], ["fast", 8e-3], ["own", 8e-3], ["graph", 8e-3], ["graph-f32", 8e-3]] as Array<[string, number]>) {
          close(dx, withMath(mode, () => ops.convBackwardData("cuda", g, dy, w, 1)), tol, `${name} dx (${mode})`);
          close(dw, withMath(mode, () => ops.convBackwardFilter("cuda", g, x, 1, dy)), tol, `${name} dw (${mode})`);
        }
        const xf = normal(x.length, 8);  // the first layer: float input
        for (const mode of ["fast", "own", "graph", "graph-f32"])
          close(ops.convBackwardFilter("cpu", g, xf, 1, dy), withMath(mode, () => ops.convBackwardFilter("cuda", g, xf, 1, dy)), 8e-3, `${name} dw float x (${mode})`);
      });
      it(`Gated-XNOR counters are identical: ${name}`, () => {
        assert.deepEqual(ops.convCounters("cuda", g, x, w), ops.convCounters("cpu", g, x, w));
      });
    }
  });

  // The pipelined int8 forward (s8_conv_pipelined) by tile shape and split-K, and its fallback (the
  // mma_nt kernel: c % 16 != 0, or TERNLAB_INT8_FORWARD=v1 for every shape). Tiles: 128 × 64 where
  // oc ≤ 64, 128 × 128 otherwise; split-K where the output has < 128 tiles and ≥ 16 k tiles of 64.
  describe("int8 forward paths", () => {
    const paths: Array<[string, Geom]> = [
      ["128x128, split-K 2, padding, oc tail", { n: 4, h: 8, w: 8, c: 128, oc: 160, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }],
      ["128x128, no split, 3x1 kernel, c 48 (k tile spans pixels), 16 M tiles", { n: 8, h: 16, w: 16, c: 48, oc: 192, kh: 3, kw: 1, sh: 1, sw: 1, ph: 1, pw: 0 }],
      ["128x128, stride 2, M tail", { n: 2, h: 17, w: 17, c: 32, oc: 160, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 }],
      ["128x128, dense batch 3, split-K 2", { n: 3, h: 1, w: 1, c: 1024, oc: 300, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0 }],
      ["128x128, dense batch 5, split-K 16", { n: 5, h: 1, w: 1, c: 8192, oc: 256, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0 }],
      ["128x64, c 16, stride 2, M tail", { n: 3, h: 9, w: 7, c: 16, oc: 24, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 }],
      ["128x64, oc 64, split-K 2", { n: 2, h: 15, w: 15, c: 128, oc: 64, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }],
      ["128x64, 5x3 kernel, strides 2 and 1, c 80, split-K 2 of 10 + 9 k tiles", { n: 2, h: 11, w: 13, c: 80, oc: 40, kh: 5, kw: 3, sh: 2, sw: 1, ph: 2, pw: 1 }],
      ["128x64, no split, 144 M tiles", { n: 18, h: 32, w: 32, c: 16, oc: 64, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }],
      ["fallback: c 24", { n: 3, h: 10, w: 10, c: 24, oc: 130, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }],
      ["fallback: dense batch 3, c 1000", { n: 3, h: 1, w: 1, c: 1000, oc: 300, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0 }],
    ];
    for (const [name, g] of paths)
      it(`bit-identical to the CPU: ${name}`, () => {
        const x = ternary(g.n * g.h * g.w * g.c, 31).map((v, i) => v * (1 + (i % 2))), w = ternary(g.oc * K(g), 32);
        const cpu = ops.convForward("cpu", g, x, 0.5, w, 0.25);
        same(cpu, withMath("fast", () => ops.convForward("cuda", g, x, 0.5, w, 0.25)), name);
        process.env.TERNLAB_INT8_FORWARD = "v1";
        try {
          same(cpu, withMath("fast", () => ops.convForward("cuda", g, x, 0.5, w, 0.25)), `${name} (TERNLAB_INT8_FORWARD=v1)`);
        } finally {
          delete process.env.TERNLAB_INT8_FORWARD;
        }
      });
  });

  // The first layer on the batch's pixels (Backend::conv_forward_pixels): with int8 weights the CUDA
  // backend runs the exact int8 product on px − 128 and corrects for the padding; the CPU runs the
  // float product of the normalised input. Checked against both and against a float64 reference
  // of the input as meant, px·scale + offset unrounded (the exact product should be about as close
  // to it as the CPU's fp32 sums of the rounded input).
  describe("first layer on pixels", () => {
    const firsts: Array<[string, Geom]> = [
      ["CIFAR conv1: 3x3 pad 1, c 3", { n: 6, h: 32, w: 32, c: 3, oc: 128, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }],
      ["MNIST conv1: 5x5 valid, c 1", { n: 5, h: 28, w: 28, c: 1, oc: 32, kh: 5, kw: 5, sh: 1, sw: 1, ph: 0, pw: 0 }],
      ["7x7 stride 2 pad 3, c 3, odd size", { n: 2, h: 37, w: 35, c: 3, oc: 64, kh: 7, kw: 7, sh: 2, sw: 2, ph: 3, pw: 3 }],
    ];
    for (const [name, g] of firsts)
      it(`within 1e-6 of the CPU, at least as close to float64: ${name}`, () => {
        const r = rng(41), px = new Uint8Array(g.n * g.h * g.w * g.c).map(() => Math.floor(256 * r()));
        px[0] = 0; px[1] = 255;
        const w = ternary(g.oc * K(g), 42).map((v, i) => v * (1 + (i % 3))), scale = 2 / 255, offset = -1, ws = 0.25;
        const cpu = ops.convForwardPixels("cpu", g, px, scale, offset, w, ws);
        const gpu = withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, ws));
        const xf = Float32Array.from(px, (p) => Math.fround(Math.fround(p * Math.fround(scale)) + offset));
        same(cpu, ops.convForward("cpu", g, xf, 1, w, ws), `${name}: the CPU's is the float product`);
        const oh = outDim(g.h, g.kh, g.sh, g.ph), ow = outDim(g.w, g.kw, g.sw, g.pw), ref = new Float64Array(cpu.length);
        for (let n = 0; n < g.n; ++n)
          for (let oy = 0; oy < oh; ++oy)
            for (let ox = 0; ox < ow; ++ox)
              for (let o = 0; o < g.oc; ++o) {
                let s = 0;
                for (let ky = 0; ky < g.kh; ++ky)
                  for (let kx = 0; kx < g.kw; ++kx) {
                    const iy = oy * g.sh - g.ph + ky, ix = ox * g.sw - g.pw + kx;
                    if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
                    for (let c = 0; c < g.c; ++c)
                      s += (px[((n * g.h + iy) * g.w + ix) * g.c + c] * Math.fround(scale) + offset) * w[((o * g.kh + ky) * g.kw + kx) * g.c + c] * ws;
                  }
                ref[((n * oh + oy) * ow + ox) * g.oc + o] = s;
              }
        close(cpu, gpu, 1e-6, `${name}: cuda vs cpu`);
        const eGpu = close(ref, gpu, 1e-6, `${name}: cuda vs float64`), eCpu = close(ref, cpu, 1e-6, `${name}: cpu vs float64`);
        assert.ok(eGpu <= 2 * eCpu, `${name}: the exact product's error ${eGpu.toExponential(2)} is above twice the CPU's ${eCpu.toExponential(2)}`);
      });
  });

  // Float weights on the pixels (ResNet's and AlexNet's stems): the CUDA backend packs 7 taps × 3
  // channels of a row into 32 int8 channels (space-to-depth) and runs three exact int8 products,
  // one per base-256 digit of the weights as 24-bit fixed point per output channel
  // (native/cuda/stem.h, NOTES.md "Session 5: the float stem"). Checked: within 1e-6 of the CPU's
  // fp32 product; against a float64 reference every output within the derived bound
  // 2^(e−17)·Σ|x| + roundings (e: the channel's exponent, max|w|·2^−e in (63.5, 127]), and, for
  // He-like weights, normwise at most twice the CPU's error; the same bits in every chunking of the
  // batch and from the mma_nt kernel (TERNLAB_INT8_FORWARD=v1), and from the grouped single product
  // (TERNLAB_STEM=grouped); the fallbacks (TERNLAB_STEM=fp32, the exact maths) still the float product.
  describe("first layer on pixels, float weights (the stem on int8 tensor cores)", () => {
    // opt-in (TERNLAB_STEM=int8): measured slower than cuDNN's fp32 product (session 6), the default
    beforeEach(() => { process.env.TERNLAB_STEM = "int8"; });
    afterEach(() => { delete process.env.TERNLAB_STEM; });
    const stems: Array<[string, Geom]> = [
      ["ResNet stem: 224x224x3, 7x7 stride 2 pad 3", { n: 2, h: 224, w: 224, c: 3, oc: 64, kh: 7, kw: 7, sh: 2, sw: 2, ph: 3, pw: 3 }],
      ["7x7 stride 2 pad 3 on 37x41x3 (odd sizes)", { n: 2, h: 37, w: 41, c: 3, oc: 64, kh: 7, kw: 7, sh: 2, sw: 2, ph: 3, pw: 3 }],
      ["3x3 stride 1 pad 1, c 3", { n: 3, h: 32, w: 30, c: 3, oc: 24, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1 }],
      ["7x7 stride 2 pad 3, c 1", { n: 2, h: 19, w: 23, c: 1, oc: 12, kh: 7, kw: 7, sh: 2, sw: 2, ph: 3, pw: 3 }],
      ["5x5 valid, c 1", { n: 2, h: 28, w: 28, c: 1, oc: 10, kh: 5, kw: 5, sh: 1, sw: 1, ph: 0, pw: 0 }],
      ["AlexNet 11x11 stride 4 pad 2, c 3 (packed width 48)", { n: 1, h: 67, w: 67, c: 3, oc: 16, kh: 11, kw: 11, sh: 4, sw: 4, ph: 2, pw: 2 }],
      ["3x5 stride (1, 2) pad (0, 2), c 2", { n: 2, h: 13, w: 17, c: 2, oc: 11, kh: 3, kw: 5, sh: 1, sw: 2, ph: 0, pw: 2 }],
    ];
    const U = 2 ** -24;
    // stem.h's exponent: max|w|·2^−e in (63.5, 127]
    function exponent(m: number): number {
      if (m === 0) return 0;
      let e = Math.floor(Math.log2(m)) - 6;
      while (m * 2 ** -e > 127) ++e;
      while (m * 2 ** -e <= 63.5) --e;
      return e;
    }
    // float64 reference of x = px·s + o (s, o the floats) with the per-output bound of the int8 path,
    // and the CPU's fp32 product of the same pixels (ops.convForwardPixels on the CPU)
    function reference(g: Geom, px: Uint8Array, s: number, o: number, w: Float32Array) {
      const oh = outDim(g.h, g.kh, g.sh, g.ph), ow = outDim(g.w, g.kw, g.sw, g.pw), k = K(g);
      const ref = new Float64Array(g.n * oh * ow * g.oc), bound = new Float64Array(ref.length);
      const ex = new Int32Array(g.oc);
      for (let oc = 0; oc < g.oc; ++oc) {
        let m = 0;
        for (let i = 0; i < k; ++i) m = Math.max(m, Math.abs(w[oc * k + i]));
        ex[oc] = exponent(m);
      }
      const o2 = Math.fround(128 * s + o);  // fma(128, s, o): 128·s is exact, so one rounding
      for (let n = 0; n < g.n; ++n)
        for (let oy = 0; oy < oh; ++oy)
          for (let ox = 0; ox < ow; ++ox)
            for (let oc = 0; oc < g.oc; ++oc) {
              let y = 0, absx = 0, t = 0, b = 0;
              for (let ky = 0; ky < g.kh; ++ky) {
                const iy = oy * g.sh - g.ph + ky;
                if (iy < 0 || iy >= g.h) continue;
                for (let kx = 0; kx < g.kw; ++kx) {
                  const ix = ox * g.sw - g.pw + kx;
                  if (ix < 0 || ix >= g.w) continue;
                  for (let c = 0; c < g.c; ++c) {
                    const p = px[((n * g.h + iy) * g.w + ix) * g.c + c], wv = w[((oc * g.kh + ky) * g.kw + kx) * g.c + c];
                    const x = p * s + o;
                    y += x * wv;
                    absx += Math.abs(x);
                    t += (p - 128) * wv;
                    b += wv;
                  }
                }
              }
              const i = ((n * oh + oy) * ow + ox) * g.oc + oc;
              ref[i] = y;
              bound[i] = 2 ** (ex[oc] - 17) * absx + 1.01 * U * (2 * Math.abs(s * t) + 3 * Math.abs(o2 * b) + Math.abs(s * t + o2 * b)) + 1e-300;
            }
      return { ref, bound };
    }
    function withinBound(ref: Float64Array, bound: Float64Array, got: Float32Array, what: string): void {
      let bad = 0, first = -1, worst = 0;
      for (let i = 0; i < ref.length; ++i) {
        const r = Math.abs(got[i] - ref[i]) / bound[i];
        if (!(r <= 1)) { if (first < 0) first = i; ++bad; }
        worst = Math.max(worst, r);
      }
      assert.equal(bad, 0, `${what}: ${bad} of ${ref.length} outputs beyond the bound; first at ${first}: ${got[first]} vs float64 ${ref[first]} (bound ${bound[first]})`);
    }
    function pixels(g: Geom, seed: number): Uint8Array {
      const r = rng(seed), px = new Uint8Array(g.n * g.h * g.w * g.c).map(() => Math.floor(256 * r()));
      px[0] = 0; px[1] = 255; px[px.length - 1] = 255;
      return px;
    }
    const scale = Math.fround(1 / (255 * 0.226)), offset = Math.fround(-0.449 / 0.226);  // ImageNet-like mean and std
    for (const [name, g] of stems)
      it(`within 1e-6 of the CPU, within the bound of float64, as close as the CPU: ${name}`, () => {
        const px = pixels(g, 51), w = normal(g.oc * K(g), 52, Math.sqrt(2 / K(g)));  // He's initialisation
        const cpu = ops.convForwardPixels("cpu", g, px, scale, offset, w, 1);
        const gpu = withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1));
        close(cpu, gpu, 1e-6, `${name}: cuda vs cpu`);
        const { ref, bound } = reference(g, px, scale, offset, w);
        withinBound(ref, bound, gpu, `${name}: cuda vs float64`);
        const eGpu = close(ref, gpu, 1e-6, `${name}: cuda vs float64`), eCpu = close(ref, cpu, 1e-6, `${name}: cpu vs float64`);
        assert.ok(eGpu <= 2 * eCpu, `${name}: the int8 path's error ${eGpu.toExponential(2)} is above twice the CPU's ${eCpu.toExponential(2)}`);
        // the int8 sums are exact: the other kernel and any chunking of the batch give the same bits
        process.env.TERNLAB_INT8_FORWARD = "v1";
        try {
          same(gpu, withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1)), `${name}: TERNLAB_INT8_FORWARD=v1`);
        } finally {
          delete process.env.TERNLAB_INT8_FORWARD;
        }
        process.env.TERNLAB_STEM_CHUNK = "1";
        try {
          same(gpu, withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1)), `${name}: TERNLAB_STEM_CHUNK=1`);
        } finally {
          delete process.env.TERNLAB_STEM_CHUNK;
        }
        // the fallbacks: the float product of the normalised input, as before
        process.env.TERNLAB_STEM = "fp32";
        let fp32: Float32Array;
        try {
          fp32 = withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1));
          close(cpu, fp32, 1e-5, `${name}: TERNLAB_STEM=fp32`);
          delete process.env.TERNLAB_STEM;
          same(fp32, withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1)), `${name}: without TERNLAB_STEM, the fp32 product`);
        } finally {
          process.env.TERNLAB_STEM = "int8";
        }
        close(cpu, withMath("exact", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1)), 1e-5, `${name}: exact maths`);
      });
    // TERNLAB_STEM=grouped: one product over interleaved digit rows, combined in s8_conv_pipelined's
    // whole-tile epilogue (not the default until this passes and bench:gpu shows it faster)
    it("the grouped single product (TERNLAB_STEM=grouped) gives the three products' bits, in any chunking", () => {
      for (const [name, g] of stems) {
        const px = pixels(g, 56), w = normal(g.oc * K(g), 57, Math.sqrt(2 / K(g)));
        const three = withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1));
        for (const chunk of [undefined, "1"]) {
          process.env.TERNLAB_STEM = "grouped";
          if (chunk) process.env.TERNLAB_STEM_CHUNK = chunk;
          try {
            same(three, withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1)), `${name}: grouped, chunk ${chunk ?? "default"}`);
          } finally {
            process.env.TERNLAB_STEM = "int8";
            delete process.env.TERNLAB_STEM_CHUNK;
          }
        }
      }
    });
    it("awkward channels within the bound: all zero, one large weight among tiny ones, ties of the rounding, 1e-30, powers of two; a NaN weight gives its channel NaN", () => {
      const g = stems[1][1], k = K(g), r = rng(53);
      const px = pixels(g, 54), w = normal(g.oc * k, 55, 0.05);
      for (let oc = 0; oc < g.oc; ++oc)
        for (let i = 0; i < k; ++i) {
          const at = oc * k + i;
          switch (oc % 8) {
            case 1: w[at] = 0; break;
            case 2: w[at] = i === k >> 1 ? 3 : 1e-4 * w[at]; break;
            // ties of the rounding: the max 7.5 gives e = −4, so w·2^(16−e) = j + ½
            case 3: w[at] = i === 0 ? 7.5 : (Math.floor(2 ** 23 * r()) - 2 ** 22 + 0.5) * 2 ** -20; break;
            case 4: w[at] = 1e-30 * w[at] / 0.05; break;
            case 5: w[at] = (Math.floor(255 * r()) - 127) * 2 ** -9; if (i === 0) w[at] = 127 * 2 ** -9; break;
            case 6: w[at] = Math.fround(0.2 * (2 * r() - 1)); break;
          }
        }
      const gpu = withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, w, 1));
      const { ref, bound } = reference(g, px, scale, offset, w);
      withinBound(ref, bound, gpu, "awkward channels: cuda vs float64");
      // normwise looser than above: a 3 among 1e-4s is fixed point relative to the 3 (the bound is the check)
      close(ops.convForwardPixels("cpu", g, px, scale, offset, w, 1), gpu, 2e-6, "awkward channels: cuda vs cpu");
      for (let i = 0; i < gpu.length; i += g.oc) assert.equal(gpu[i + 1], 0, "an all-zero channel gives 0");
      const wn = Float32Array.from(w);
      wn[7 * k + 5] = NaN;
      const nan = withMath("fast", () => ops.convForwardPixels("cuda", g, px, scale, offset, wn, 1));
      for (let i = 0; i < nan.length; ++i)
        if (i % g.oc === 7) assert.ok(Number.isNaN(nan[i]), `output ${i} of the NaN weight's channel is ${nan[i]}`);
        else assert.equal(nan[i], gpu[i], `output ${i} of another channel changed`);
    });
  });

  describe("elementwise, pooling, batch norm, loss", () => {
    it("pooling (max with argmax, average; overlapping windows) is bit-identical", () => {
      // c % 4 == 0 takes the CUDA kernels that do four channels a thread (c 4, 8, 64), the rest the
      // scalar ones; the last is ResNet's stem pool (3×3, stride 2, pad 1) on a small batch
      const cases = [{ n: 3, h: 9, w: 8, c: 5, kh: 2, kw: 2, sh: 2, sw: 2 }, { n: 2, h: 9, w: 9, c: 4, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 },
        { n: 3, h: 10, w: 7, c: 8, kh: 2, kw: 2, sh: 2, sw: 2 }, { n: 2, h: 11, w: 13, c: 6, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 },
        { n: 4, h: 28, w: 28, c: 64, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1 }];
      for (const p of cases) {
        const x = normal(p.n * p.h * p.w * p.c, 9);
        for (const max of [true, false]) {
          const a = ops.pool("cpu", p, x, max), b = ops.pool("cuda", p, x, max);
          same(a.y, b.y, `pool y (max ${max}, c ${p.c})`);
          if (max) same(a.argmax, b.argmax, `argmax (c ${p.c})`);
          const dy = normal(a.y.length, 10);
          same(ops.poolBackward("cpu", p, dy, max ? a.argmax : null), ops.poolBackward("cuda", p, dy, max ? b.argmax : null), `pool dx (max ${max}, c ${p.c})`);
        }
        // int16 sums with ties (the max pool after a ternary product)
        const q = Int16Array.from(x, (v) => Math.round(v * 3));
        const a = ops.pool("cpu", p, q, true), b = ops.pool("cuda", p, q, true);
        same(a.y, b.y, `int16 pool y (c ${p.c})`);
        same(a.argmax, b.argmax, `int16 argmax (c ${p.c})`);
      }
    });
    it("pixels to floats (normalize_u8) are bit-identical, a length that is not a multiple of 4 included", () => {
      for (const n of [1, 7, 4 * 1000 + 3, 3 * 224 * 224 * 2]) {
        const px = Uint8Array.from({ length: n }, (_, i) => (i * 37 + (i >> 5)) & 255);
        for (const [scale, offset] of [[2 / 255, -1], [1 / 58.4, -2.1]])
          same(ops.normalizeU8("cpu", px, scale, offset), ops.normalizeU8("cuda", px, scale, offset), `normalize n ${n}`);
      }
    });
    // core/reduce.h's order on both: row counts that are not multiples of a run (16 rows) or of a
    // block (64 runs), more than 64 blocks (two levels of the tree over blocks: 70 000 and 300 001
    // rows), channel counts that are not multiples of 32 (a warp's tile), and pairs of ±2⁶⁰ that
    // cancel so that another order gives other float32 bits (test/ops.test.ts shows they do).
    // c % 8 == 0 takes the CUDA vector path (8 channels per thread): 66 000 × 136 has more groups of
    // 8 than threads (some threads take two rows, some one) and 17 groups per row (idle threads past
    // a multiple of 17).
    const BN_CASES: [number, number][] = [[2000, 24], [37, 300], [1, 3], [9000, 8], [70000, 40], [1025, 33], [300001, 3], [5, 16], [66000, 136]];
    function orderVisible(rows: number, c: number, seed: number): Float32Array {
      const x = normal(rows * c, seed, 3);
      for (let ch = 0; ch < c && rows > 1; ++ch) {
        x[((ch * 13) % rows) * c + ch] = 2 ** 60;
        x[((ch * 13 + (rows >> 1) + 5) % rows) * c + ch] = -(2 ** 60);
      }
      return x;
    }
    it("batch norm, float input (train, infer, backward) is bit-identical", () => {
      for (const [r, c] of BN_CASES) {
        for (const x of [normal(r * c, 11, 3), orderVisible(r, c, 11)]) {
          const gamma = normal(c, 12), beta = normal(c, 13), rm = normal(c, 14), rv = normal(c, 15).map(Math.abs);
          for (const train of [true, false]) {
            const a = ops.batchNorm("cpu", r, c, x, gamma, beta, rm, rv, { train, eps: 1e-4, momentum: 0.1 });
            const b = ops.batchNorm("cuda", r, c, x, gamma, beta, rm, rv, { train, eps: 1e-4, momentum: 0.1 });
            for (const k of train ? ["y", "xhat", "mean", "invstd", "runMean", "runVar"] : ["y"]) same(a[k], b[k], `bn ${r}x${c} ${k}`);
            if (train) {
              for (const dy of [normal(r * c, 16), orderVisible(r, c, 16)]) {
                const ga = ops.batchNormBackward("cpu", r, c, dy, a.xhat, gamma, a.invstd);
                const gb = ops.batchNormBackward("cuda", r, c, dy, b.xhat, gamma, b.invstd);
                for (const k of ["dx", "dgamma", "dbeta"]) same(ga[k], gb[k], `bn backward ${r}x${c} ${k}`);
              }
            }
          }
        }
      }
    });
    // int16 inputs: exact statistics (int64 Σq, Σq²), x̂ recomputed in the backward, BN + φ fused
    it("batch norm, int16 input (train, fused with φ, infer, backward with x̂ recomputed, fused backward) is bit-identical", () => {
      // φ as trained (ternary, r 1, a ½, rectangular: the CUDA backend's Phi fast path), with other
      // constants (the fast path's thresholds and window value worked out from them), and with the
      // triangular window (discrete.h's general loop inside the fused kernels)
      const acts = [{ levels: 1, r: 1, a: 0.5, window: 0 }, { levels: 1, r: 0.7, a: 0.3, window: 0 }, { levels: 1, r: 1, a: 0.5, window: 1 }];
      for (const [r, c] of BN_CASES) {
        const u = normal(r * c, 21), q = new Int16Array(r * c);
        // the whole int16 range in even channels; ±30 000 ± 3 in odd ones (large μ, small σ²)
        for (let i = 0; i < q.length; ++i) q[i] = (i % c) % 2 ? ((i % c) % 4 === 1 ? 30000 : -30000) + Math.round(u[i]) : Math.max(-32768, Math.min(32767, Math.round(u[i] * 12000)));
        const gamma = normal(c, 22), beta = normal(c, 23), rm = normal(c, 24), rv = normal(c, 25).map(Math.abs);
        for (const scale of [0.1, 1 / 64]) {
          const opts = { eps: 1e-4, momentum: 0.1, scale };
          for (const train of [true, false]) {
            const a = ops.batchNorm("cpu", r, c, q, gamma, beta, rm, rv, { ...opts, train });
            const b = ops.batchNorm("cuda", r, c, q, gamma, beta, rm, rv, { ...opts, train });
            for (const k of train ? ["y", "xhat", "mean", "invstd", "runMean", "runVar"] : ["y"]) same(a[k], b[k], `bn int16 ${r}x${c} ${k}`);
            for (const act of acts) {
              const fa = ops.batchNorm("cpu", r, c, q, gamma, beta, rm, rv, { ...opts, train, act });
              const fb = ops.batchNorm("cuda", r, c, q, gamma, beta, rm, rv, { ...opts, train, act });
              for (const k of train ? ["q", "mean", "invstd", "runMean", "runVar"] : ["q"]) same(fa[k], fb[k], `bn + φ int16 ${r}x${c} ${k} (r ${act.r}, window ${act.window})`);
            }
            if (!train) continue;
            const dq = orderVisible(r, c, 26), dy = normal(r * c, 27);
            const back = (kind: string, fwd: typeof a, g: Float32Array, fusedWith?: object) =>
              ops.batchNormBackward(kind, r, c, g, null, gamma, fwd.invstd, { x16: q, scale, mean: fwd.mean, ...fusedWith });
            const ga = back("cpu", a, dy), gb = back("cuda", b, dy);
            for (const k of ["dx", "dgamma", "dbeta"]) same(ga[k], gb[k], `bn int16 backward ${r}x${c} ${k}`);
            for (const act of acts) {
              const fa = back("cpu", a, dq, { act, beta }), fb = back("cuda", b, dq, { act, beta });
              for (const k of ["dx", "dgamma", "dbeta"]) same(fa[k], fb[k], `bn int16 fused φ + BN backward ${r}x${c} ${k} (r ${act.r}, window ${act.window})`);
            }
          }
        }
      }
    });
    // Rectangular and triangular windows are bit-identical; the Gaussian and logistic windows call
    // expf, whose CUDA and glibc versions may differ in the last bit (≤ 2 ulp): within 1e-6.
    it("activation and its windows (binary, ternary, 5 levels; all four shapes) agree", () => {
      const x = normal(20000, 17, 1.5);
      for (let i = 0; i < 64; ++i) x[i] = [1, -1, 0.5, -0.5, 1.5, -1.5, 0, 0.75][i % 8];  // ties at the thresholds
      // and at the thresholds and window edges of r 0.7, a 0.3 (the CUDA backend's ternary fast path
      // works its constants out once: Phi in cuda_backend.cu)
      for (let i = 64; i < 128; ++i) x[i] = Math.fround([0.7, -0.7, 0.4, -0.4, 1.0, -1.0, 0.3, -0.3][i % 8]);
      const dq = normal(x.length, 18);
      for (const [r, half] of [[1, 0.5], [0.7, 0.3]])
        for (const levels of [0, 1, 2])
          for (const window of [0, 1, 2, 3]) {
            const s = { levels, r, a: half, window };
            same(ops.activation("cpu", x, s), ops.activation("cuda", x, s), `act levels ${levels} r ${r} a ${half}`);
            const a = ops.activationBackward("cpu", x, dq, s), b = ops.activationBackward("cuda", x, dq, s);
            if (window <= 1) same(a, b, `act backward levels ${levels} window ${window}`);
            else close(a, b, 1e-6, `act backward levels ${levels} window ${window}`);
            // the accumulating form (a residual stream's gradient): given + φ′(x)·dq
            const given = normal(x.length, 19);
            const ac = ops.activationBackward("cpu", x, dq, s, given), bc = ops.activationBackward("cuda", x, dq, s, given);
            if (window <= 1) same(ac, bc, `act backward accumulating, levels ${levels} window ${window}`);
            else close(ac, bc, 1e-6, `act backward accumulating, levels ${levels} window ${window}`);
          }
    });
    it("loss: squared hinge bit-identical, cross-entropy within 1e-6, ranks identical", () => {
      const n = 500, c = 10, y = normal(n * c, 19, 2);
      const labels = Int32Array.from({ length: n }, (_, i) => (i * 7) % c);
      for (let i = 0; i < 20; ++i) y[i * c + 3] = y[i * c + 4];  // ties in the rank
      const a = ops.loss("cpu", n, c, y, labels, 0), b = ops.loss("cuda", n, c, y, labels, 0);
      same(a.dy, b.dy, "hinge dy"); same(a.rowLoss, b.rowLoss, "hinge loss"); same(a.rank, b.rank, "rank");
      const e = ops.loss("cpu", n, c, y, labels, 1), f = ops.loss("cuda", n, c, y, labels, 1);
      close(e.dy, f.dy, 1e-6, "ce dy"); close(e.rowLoss, f.rowLoss, 1e-6, "ce loss"); same(e.rank, f.rank, "ce rank");
    });
  });

  describe("updates and initialisation", () => {
    it("initial states are identical (Philox)", () => {
      for (const levels of [0, 1, 2]) same(ops.initStates("cpu", 100003, 42, 3, 1.5, levels), ops.initStates("cuda", 100003, 42, 3, 1.5, levels), `init N=${levels}`);
    });
    it("DST makes identical decisions from identical proposals (adam and sgd; tanh, linear, logistic)", () => {
      const n = 300001;
      for (const levels of [0, 1, 2])
        for (const tau of [0, 1, 2]) {
          const q = ternary(n, 20 + levels).map((v) => (levels === 0 ? (v >= 0 ? 1 : -1) : levels === 2 ? v * 2 : v));
          const g = normal(n, 21, 0.01), m = normal(n, 22, 0.001), v = normal(n, 23, 1e-5).map(Math.abs);
          const p = { levels, tau, m: 3, temperature: 0.5, lr: 0.3, seed: 12345, step: 9, layer: 4 };
          const a = ops.dstUpdate("cpu", q, g, m, v, p), b = ops.dstUpdate("cuda", q, g, m, v, p);
          same(a.q, b.q, `dst adam N=${levels} tau=${tau}`); same(a.m, b.m, "adam m"); same(a.v, b.v, "adam v");
          assert.equal(b.flips, a.flips);
          assert.ok(a.flips > 0, "some weights moved");
          const s = ops.dstUpdate("cpu", q, g, null, null, { ...p, lr: 30 }), t = ops.dstUpdate("cuda", q, g, null, null, { ...p, lr: 30 });
          same(s.q, t.q, `dst sgd N=${levels} tau=${tau}`);
          assert.equal(t.flips, s.flips);
        }
    });
  });

  describe("errors", () => {
    it("an impossible allocation is E_OOM naming the op and sizes, and the next call works", () => {
      const x = new Float32Array(16);
      assert.throws(() => ops.pool("cuda", { n: 1000000, h: 1000, w: 1000, c: 64, kh: 2, kw: 2, sh: 2, sw: 2 }, x, true), (e: Error) => {
        assert.match(e.message, /^\[E_OOM\] cuda: allocating \d+ bytes for op output failed .* bytes in use/);
        return true;
      });
      same(ops.initStates("cpu", 1000, 1, 1, 1, 1), ops.initStates("cuda", 1000, 1, 1, 1, 1), "after OOM");
    });
  });

  describe("training steps", () => {
    function run(spec: ModelSpec, kind: string, steps: number, batch: number, math: string): Promise<Map<string, Buffer>> {
      return withMath(math, async () => {
        const m = new addon.NativeModel(spec, updateConfig(), { kind, threads: 0 });
        if (kind === "cuda") backends.push(String(JSON.parse(m.summary()).backend));
        const count = batch * steps, per = spec.h * spec.w * spec.c;
        const r = rng(99), images = new Uint8Array(count * per), labels = new Int32Array(count);
        for (let i = 0; i < count; ++i) {
          labels[i] = i % spec.classes;
          for (let j = 0; j < per; ++j) images[i * per + j] = Math.min(255, Math.floor(r() * 128 + labels[i] * 12 * ((j % 3) + 1) * 0.3));
        }
        const rowsSeen: Array<{ loss: number; layers: Array<{ flips: number; activeMacs: number }> }> = [];
        await m.train({ images, labels, count }, { epoch: 0, batch, firstStep: 0, begin: 0, end: steps, loss: 0, shuffle: true, lr: new Float32Array(steps).fill(0.05) },
          (rs: typeof rowsSeen) => rowsSeen.push(...rs));
        assert.equal(rowsSeen.length, steps);
        const out = new Map<string, Buffer>();
        for (const t of m.getState() as Array<{ name: string; data: Buffer }>) out.set(t.name, t.data);
        out.set("metrics", Buffer.from(JSON.stringify(rowsSeen.map((s) => s.layers.map((l) => [l.flips, l.activeMacs])))));
        // evaluation of the trained net (BN with running statistics, fused with φ where it can be)
        if (kind === "cuda") out.set("backend", Buffer.from(String(JSON.parse(m.summary()).backend)));
        const ev = await m.evaluate({ images, labels, count }, 48, 0);
        out.set("eval", Buffer.from(JSON.stringify({ loss: ev.loss, top1: ev.top1, top5: ev.top5 })));
        return out;
      });
    }
    const backends: string[] = [];
    // int16 inputs and recomputed x̂ run through the batch norms here
    it("three steps of a small residual net give the same discrete weights and counters on CPU and GPU (fp32 products)", async () => {
      const spec = tinyNet();
      const a = await run(spec, "cpu", 3, 32, "exact");
      const b = await run(spec, "cuda", 3, 32, "exact");
      let moved = 0;
      for (const [k, v] of a) {
        if (k.endsWith(".weight")) { same(v, b.get(k)!, k); moved++; }
      }
      assert.ok(moved >= 5);
      assert.equal(b.get("metrics")!.toString(), a.get("metrics")!.toString(), "flips and active MACs per step");
      const ea = JSON.parse(a.get("eval")!.toString()), eb = JSON.parse(b.get("eval")!.toString());
      assert.equal(eb.top1, ea.top1, "evaluation: top-1");
      assert.ok(Math.abs(eb.loss - ea.loss) <= 1e-5 * Math.abs(ea.loss), `evaluation loss ${eb.loss} vs ${ea.loss}`);
    });
    // bf16 rounding of the gradients changes a decision only where a gradient is near zero (the
    // first Adam step moves by −α·sign(g)); later steps see different networks, so one step is compared.
    for (const [math, label] of [["fast", "cuDNN where it loads"], ["chunked", "cuDNN, backward in batch chunks"], ["own", "own kernels"],
      ["graph", "cuDNN's graph API"], ["graph-f32", "cuDNN's graph API, float outputs"]])
      it(`with bf16 backward products (${label}) one step's decisions agree almost everywhere (CIFAR net at width 1/4)`, async () => {
        const spec = gxnorCifar(3, 0.25);
        const a = await run(spec, "cpu", 1, 64, "exact"), b = await run(spec, "cuda", 1, 64, math);
        let total = 0, diff = 0;
        for (const [k, v] of a)
          if (k.endsWith(".weight")) {
            const w = b.get(k)!;
            for (let i = 0; i < v.length; ++i) { total++; diff += v[i] !== w[i] ? 1 : 0; }
          }
        console.log(`      bf16 (${label}) vs fp32 backward: ${diff} of ${total} discrete weights differ after 1 step (${((100 * diff) / total).toFixed(3)} %)`);
        console.log(`      ${b.get("backend")}`);
        assert.ok(diff / total < 0.01, `${diff} of ${total} differ`);
        // the graph API's products ran (not silently the legacy calls)
        if (math.startsWith("graph")) assert.match(String(b.get("backend")), /graph API[^)]*; [1-9]\d* products run/);
      });
    // A product's gradients handed over in bf16 instead of converted: dy by the op that produces it
    // (the BN backward, the fused φ + BN backward, max-pool's backward; TERNLAB_CUDA_BF16_DY=0 turns
    // it off), dx to the fused φ + BN backward that reads it (TERNLAB_CUDA_BF16_DX=0), and both
    // (the default), each against the float gradients of both switches off. The same
    // roundings, so the same bits, on nets with each producer and reader (the CIFAR net: fused
    // φ + BN, max-pool, the last BN, a flatten; tinyNet: the residual path's BN before the add).
    for (const [name, spec] of [["CIFAR net at width 1/4", () => gxnorCifar(5, 0.25)], ["tinyNet", () => tinyNet()]] as Array<[string, () => ModelSpec]>)
      it(`gradients handed over in bf16 give the float gradients' bits (${name})`, async () => {
        const a = await run(spec(), "cuda", 3, 64, "float-grads");
        assert.doesNotMatch(String(a.get("backend")), /handed over in bf16/);
        for (const mode of ["bf16-dy", "bf16-dx", "bf16-both"]) {
          const b = await run(spec(), "cuda", 3, 64, mode);
          console.log(`      ${mode}: ${b.get("backend")}`);
          if (mode === "bf16-dx") assert.doesNotMatch(String(b.get("backend")), /dy handed over/);
          if (mode === "bf16-dy") assert.doesNotMatch(String(b.get("backend")), /dx handed over/);
          if (mode !== "bf16-dx") assert.match(String(b.get("backend")), /dy handed over in bf16: [1-9]\d* products/);
          if (mode !== "bf16-dy") assert.match(String(b.get("backend")), /dx handed over in bf16: [1-9]\d* products/);
          for (const [k, v] of a) if (k !== "backend") assert.ok(v.equals(b.get(k)!), `${k} differs with ${mode}`);
        }
      });
    for (const math of ["fast", "graph", "graph-f32"])
      it(`a run with ${math === "fast" ? "the default products (cuDNN where it loads)" : `TERNLAB_CUDNN_GRAPH=${math === "graph" ? "1" : "f32"}`} repeats bit for bit`, async () => {
        const spec = gxnorCifar(5, 0.25);
        const a = await run(spec, "cuda", 3, 64, math), b = await run(spec, "cuda", 3, 64, math);
        for (const [k, v] of a) if (k !== "backend") assert.ok(v.equals(b.get(k)!), `${k} differs between two identical runs`);
      });
  });
});
