/**
 * The float64 reference of every backend op (DESIGN.md: "test both against the same float64
 * reference"), written from the mathematics of ALGORITHM.md, not from the C++. Each function takes
 * the exact values an op receives (float32 inputs read as float64, int8 states times their scale)
 * and returns the exact result up to float64 rounding, so the op tests can state their tolerances
 * as float32 error bounds. Also here: a seeded RNG for inputs, Philox4x32-10, the DST outcome
 * distribution, Lasagne's Adam, the smooth surrogates of φ_r, and the backend-parametrised suite
 * helpers that the CPU and GPU tests share.
 */
import { TernlabError } from "../src/errors";
import { addon } from "../src/native";

// ------------------------------------------------------------------------------------------------
// float32 error bounds

/** Unit roundoff of float32 (round to nearest). */
export const U32 = 2 ** -24;
/** γ_n = n·u/(1 − n·u): the classic bound on the relative error of n floating-point operations. */
export function gammaN(n: number, u = U32): number {
  return (n * u) / (1 - n * u);
}
/**
 * Unit roundoff of the operands of a backend's backward products (conv data and filter gradients):
 * 0 where they are multiplied in float32 (the CPU; the GPU with TERNLAB_CUDA_MATH=exact or simple),
 * 2⁻⁸ where the GPU rounds them to bf16 for its tensor cores (TERNLAB_CUDA_MATH=fast, its default).
 * Each bf16 term then carries (1 + 2⁻⁸)² − 1 on top of the float32 accumulation.
 */
export function backwardOperandRounding(backend: string): number {
  if (backend !== "cuda") return 0;
  const math = process.env.TERNLAB_CUDA_MATH ?? "";
  return math === "exact" || math === "simple" ? 0 : 2 ** -8;
}
export function abs(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, (v) => Math.abs(v));
}
export function f32(x: number): number {
  return Math.fround(x);
}
/** The next float32 above / below a float32 value. */
export function nextUp32(x: number): number {
  return stepF32(x, +1);
}
export function nextDown32(x: number): number {
  return stepF32(x, -1);
}
function stepF32(x: number, dir: 1 | -1): number {
  const f = new Float32Array([x]);
  const i = new Int32Array(f.buffer);
  if (x === 0) {
    i[0] = 1;
    return dir * f[0];
  }
  i[0] += (x > 0 ? 1 : -1) * dir;
  return f[0];
}

// ------------------------------------------------------------------------------------------------
// A seeded RNG for test inputs (sfc32 seeded by splitmix32): reproducible, independent of Philox.

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;
  constructor(seed: number) {
    let s = seed >>> 0;
    const mix = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    for (let i = 0; i < 12; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }
  /** Uniform in [0, 1) with 53 bits. */
  uniform(): number {
    return ((this.u32() >>> 5) * 67108864 + (this.u32() >>> 6)) / 9007199254740992;
  }
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.uniform();
  }
  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  floats(n: number, lo = -1, hi = 1): Float32Array {
    return Float32Array.from({ length: n }, () => this.range(lo, hi));
  }
  normals(n: number, mean = 0, sd = 1): Float32Array {
    return Float32Array.from({ length: n }, () => mean + sd * this.normal());
  }
  /** int8 states uniform in [lo, hi]. */
  ints(n: number, lo: number, hi: number): Int8Array {
    return Int8Array.from({ length: n }, () => this.int(lo, hi));
  }
  /** Ternary states with P(0) = pZero and ±1 equally likely otherwise. */
  ternary(n: number, pZero = 1 / 3): Int8Array {
    return Int8Array.from({ length: n }, () => (this.uniform() < pZero ? 0 : this.uniform() < 0.5 ? -1 : 1));
  }
  labels(n: number, classes: number): Int32Array {
    return Int32Array.from({ length: n }, () => this.int(0, classes - 1));
  }
}

// ------------------------------------------------------------------------------------------------
// Convolution, NHWC, weights [oc][kh][kw][c]: y[n,oy,ox,o] = Σ_{ky,kx,c} x[n, oy·sh − ph + ky, ox·sw − pw + kx, c]·w[o,ky,kx,c],
// input positions outside the image being zero (padding).

export interface ConvShape {
  n: number; h: number; w: number; c: number; oc: number;
  kh: number; kw: number; sh: number; sw: number; ph: number; pw: number;
}
export interface ConvDims extends ConvShape {
  oh: number; ow: number;
}
export function convDims(g: ConvShape): ConvDims {
  return { ...g, oh: Math.floor((g.h + 2 * g.ph - g.kh) / g.sh) + 1, ow: Math.floor((g.w + 2 * g.pw - g.kw) / g.sw) + 1 };
}
/** A dense layer [batch, in] → [batch, out] is the 1×1 convolution of 1×1 images. */
export function denseShape(batch: number, inputs: number, outputs: number): ConvShape {
  return { n: batch, h: 1, w: 1, c: inputs, oc: outputs, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0 };
}
/** The values an operand stands for: int8 states times their scale, floats as they are. */
export function values(a: ArrayLike<number>, scale = 1): Float64Array {
  const s = a instanceof Int8Array ? f32(scale) : 1;
  return Float64Array.from(a, (v) => v * s);
}

export function conv2dForward(shape: ConvShape, x: ArrayLike<number>, w: ArrayLike<number>): Float64Array {
  const g = convDims(shape);
  const y = new Float64Array(g.n * g.oh * g.ow * g.oc);
  for (let n = 0; n < g.n; n++)
    for (let oy = 0; oy < g.oh; oy++)
      for (let ox = 0; ox < g.ow; ox++)
        for (let o = 0; o < g.oc; o++) {
          let s = 0;
          for (let ky = 0; ky < g.kh; ky++) {
            const iy = oy * g.sh - g.ph + ky;
            if (iy < 0 || iy >= g.h) continue;
            for (let kx = 0; kx < g.kw; kx++) {
              const ix = ox * g.sw - g.pw + kx;
              if (ix < 0 || ix >= g.w) continue;
              for (let c = 0; c < g.c; c++)
                s += x[((n * g.h + iy) * g.w + ix) * g.c + c] * w[((o * g.kh + ky) * g.kw + kx) * g.c + c];
            }
          }
          y[((n * g.oh + oy) * g.ow + ox) * g.oc + o] = s;
        }
  return y;
}

/**
 * ∂L/∂x[n,iy,ix,c] = Σ_{o,ky,kx} dy[n,oy,ox,o]·w[o,ky,kx,c] over the outputs that read that pixel:
 * oy = (iy + ph − ky)/sh when that is a whole number in [0, oh) (likewise ox). Written as a gather
 * over input pixels, not as the scatter the forward suggests.
 */
export function conv2dBackwardData(shape: ConvShape, dy: ArrayLike<number>, w: ArrayLike<number>): Float64Array {
  const g = convDims(shape);
  const dx = new Float64Array(g.n * g.h * g.w * g.c);
  for (let n = 0; n < g.n; n++)
    for (let iy = 0; iy < g.h; iy++)
      for (let ix = 0; ix < g.w; ix++)
        for (let c = 0; c < g.c; c++) {
          let s = 0;
          for (let ky = 0; ky < g.kh; ky++) {
            const ty = iy + g.ph - ky;
            if (ty < 0 || ty % g.sh !== 0 || ty / g.sh >= g.oh) continue;
            const oy = ty / g.sh;
            for (let kx = 0; kx < g.kw; kx++) {
              const tx = ix + g.pw - kx;
              if (tx < 0 || tx % g.sw !== 0 || tx / g.sw >= g.ow) continue;
              const ox = tx / g.sw;
              for (let o = 0; o < g.oc; o++)
                s += dy[((n * g.oh + oy) * g.ow + ox) * g.oc + o] * w[((o * g.kh + ky) * g.kw + kx) * g.c + c];
            }
          }
          dx[((n * g.h + iy) * g.w + ix) * g.c + c] = s;
        }
  return dx;
}

/** ∂L/∂w[o,ky,kx,c] = Σ_{n,oy,ox} dy[n,oy,ox,o]·x[n, oy·sh − ph + ky, ox·sw − pw + kx, c]. */
export function conv2dBackwardFilter(shape: ConvShape, x: ArrayLike<number>, dy: ArrayLike<number>): Float64Array {
  const g = convDims(shape);
  const dw = new Float64Array(g.oc * g.kh * g.kw * g.c);
  for (let o = 0; o < g.oc; o++)
    for (let ky = 0; ky < g.kh; ky++)
      for (let kx = 0; kx < g.kw; kx++)
        for (let c = 0; c < g.c; c++) {
          let s = 0;
          for (let n = 0; n < g.n; n++)
            for (let oy = 0; oy < g.oh; oy++) {
              const iy = oy * g.sh - g.ph + ky;
              if (iy < 0 || iy >= g.h) continue;
              for (let ox = 0; ox < g.ow; ox++) {
                const ix = ox * g.sw - g.pw + kx;
                if (ix < 0 || ix >= g.w) continue;
                s += dy[((n * g.oh + oy) * g.ow + ox) * g.oc + o] * x[((n * g.h + iy) * g.w + ix) * g.c + c];
              }
            }
          dw[((o * g.kh + ky) * g.kw + kx) * g.c + c] = s;
        }
  return dw;
}

/** Gated-XNOR counters by brute force: every MAC of the product visited once (ALGORITHM.md §1.5). */
export function convCountersBrute(
  shape: ConvShape,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
): { zeroInputs: number; zeroWeights: number; activeMacs: number; macs: number } {
  const g = convDims(shape);
  let zeroInputs = 0, zeroWeights = 0, activeMacs = 0;
  for (let i = 0; i < x.length; i++) zeroInputs += x[i] === 0 ? 1 : 0;
  for (let i = 0; i < w.length; i++) zeroWeights += w[i] === 0 ? 1 : 0;
  for (let n = 0; n < g.n; n++)
    for (let oy = 0; oy < g.oh; oy++)
      for (let ox = 0; ox < g.ow; ox++)
        for (let o = 0; o < g.oc; o++)
          for (let ky = 0; ky < g.kh; ky++)
            for (let kx = 0; kx < g.kw; kx++)
              for (let c = 0; c < g.c; c++) {
                const iy = oy * g.sh - g.ph + ky, ix = ox * g.sw - g.pw + kx;
                const xv = iy < 0 || iy >= g.h || ix < 0 || ix >= g.w ? 0 : x[((n * g.h + iy) * g.w + ix) * g.c + c];
                if (xv !== 0 && w[((o * g.kh + ky) * g.kw + kx) * g.c + c] !== 0) activeMacs++;
              }
  return { zeroInputs, zeroWeights, activeMacs, macs: g.n * g.oh * g.ow * g.oc * g.kh * g.kw * g.c };
}

// ------------------------------------------------------------------------------------------------
// Pooling, NHWC. Window positions in the padding are not part of the window: the max is over the
// pixels inside the image, the average divides by their count (no zero padding is averaged in).
// Max-pool ties go to the first maximal pixel in window order (ky, then kx); argmax is the flat
// NHWC index of the input pixel.

export interface PoolShape {
  n: number; h: number; w: number; c: number;
  kh: number; kw: number; sh: number; sw: number; ph: number; pw: number;
}
export function poolDims(g: PoolShape): PoolShape & { oh: number; ow: number } {
  return { ...g, oh: Math.floor((g.h + 2 * g.ph - g.kh) / g.sh) + 1, ow: Math.floor((g.w + 2 * g.pw - g.kw) / g.sw) + 1 };
}
function poolWindow(g: PoolShape & { oh: number; ow: number }, n: number, oy: number, ox: number, c: number): number[] {
  const idx: number[] = [];
  for (let ky = 0; ky < g.kh; ky++)
    for (let kx = 0; kx < g.kw; kx++) {
      const iy = oy * g.sh - g.ph + ky, ix = ox * g.sw - g.pw + kx;
      if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) idx.push(((n * g.h + iy) * g.w + ix) * g.c + c);
    }
  return idx;
}
function forEachPoolOutput(g: PoolShape, f: (o: number, window: number[]) => void): number {
  const d = poolDims(g);
  for (let n = 0; n < d.n; n++)
    for (let oy = 0; oy < d.oh; oy++)
      for (let ox = 0; ox < d.ow; ox++)
        for (let c = 0; c < d.c; c++) f(((n * d.oh + oy) * d.ow + ox) * d.c + c, poolWindow(d, n, oy, ox, c));
  return d.n * d.oh * d.ow * d.c;
}
export function maxPool(g: PoolShape, x: ArrayLike<number>): { y: Float64Array; argmax: Int32Array } {
  const d = poolDims(g);
  const out = d.n * d.oh * d.ow * d.c;
  const y = new Float64Array(out), argmax = new Int32Array(out);
  forEachPoolOutput(g, (o, win) => {
    let best = win[0];
    for (const i of win) if (x[i] > x[best]) best = i;
    y[o] = x[best];
    argmax[o] = best;
  });
  return { y, argmax };
}
/** ∂L/∂x: each output's gradient goes to the pixel that won its window. */
export function maxPoolBackward(g: PoolShape, x: ArrayLike<number>, dy: ArrayLike<number>): Float64Array {
  const dx = new Float64Array(g.n * g.h * g.w * g.c);
  const { argmax } = maxPool(g, x);
  forEachPoolOutput(g, (o) => {
    dx[argmax[o]] += dy[o];
  });
  return dx;
}
export function avgPool(g: PoolShape, x: ArrayLike<number>): Float64Array {
  const d = poolDims(g);
  const y = new Float64Array(d.n * d.oh * d.ow * d.c);
  forEachPoolOutput(g, (o, win) => {
    let s = 0;
    for (const i of win) s += x[i];
    y[o] = s / win.length;
  });
  return y;
}
export function avgPoolBackward(g: PoolShape, dy: ArrayLike<number>): Float64Array {
  const dx = new Float64Array(g.n * g.h * g.w * g.c);
  forEachPoolOutput(g, (o, win) => {
    for (const i of win) dx[i] += dy[o] / win.length;
  });
  return dx;
}

// ------------------------------------------------------------------------------------------------
// Batch norm over rows × channels (rows = n·h·w). Training: batch mean μ, biased batch variance
// σ² = mean((x − μ)²), x̂ = (x − μ)/√(σ² + ε), y = γ·x̂ + β; running statistics by EMA:
// m ← (1 − momentum)·m + momentum·μ, v ← (1 − momentum)·v + momentum·σ². Inference uses (m, v).

// The batch norm's per-channel sums in native/core/reduce.h's order, replayed in float64 (the
// backends' double arithmetic): runs of 16 rows summed in row order from 0, then the runs' sums
// by the pairwise tree (neighbours added level by level, an odd last one carried up).
export const SUM_RUN = 16;
export function pairwiseColumnSum(rows: number, term: (r: number) => number): number {
  let level: number[] = [];
  for (let r0 = 0; r0 < rows; r0 += SUM_RUN) {
    let s = 0;
    for (let r = r0; r < Math.min(rows, r0 + SUM_RUN); ++r) s += term(r);
    level.push(s);
  }
  while (level.length > 1) {
    const next: number[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? level[i] + level[i + 1] : level[i]);
    level = next;
  }
  return level.length ? level[0] : 0;
}
// The same sum in the order it replaced (serial 512-row chunks, chunk sums added in order): a test
// shows with it that its data make the order visible.
export function chunkedColumnSum(rows: number, term: (r: number) => number): number {
  let total = 0;
  for (let r0 = 0; r0 < rows; r0 += 512) {
    let s = 0;
    for (let r = r0; r < Math.min(rows, r0 + 512); ++r) s += term(r);
    total += s;
  }
  return total;
}
// Batch statistics as both backends compute them: from float inputs, Σx/n then Σ(x − μ)²/n by
// `sum`; from int16 sums q (value q·scale), exactly from Σq and Σq² (bn_moments_from_sums).
export function bnMomentsFloat(rows: number, c: number, x: Float32Array, sum = pairwiseColumnSum): { mean: number[]; variance: number[] } {
  const mean: number[] = [], variance: number[] = [];
  for (let ch = 0; ch < c; ++ch) {
    const m = sum(rows, (r) => x[r * c + ch]) / rows;
    mean.push(m);
    variance.push(sum(rows, (r) => (x[r * c + ch] - m) ** 2) / rows);
  }
  return { mean, variance };
}
export function bnMomentsInt16(rows: number, c: number, q: Int16Array, scale: number): { mean: number[]; variance: number[] } {
  const mean: number[] = [], variance: number[] = [];
  const n = BigInt(rows), s = Math.fround(scale);
  for (let ch = 0; ch < c; ++ch) {
    let s1 = 0n, s2 = 0n;
    for (let r = 0; r < rows; ++r) {
      const v = BigInt(q[r * c + ch]);
      s1 += v;
      s2 += v * v;
    }
    const m = n * s2 - s1 * s1;
    const md = Number(m >> 32n) * 4294967296 + Number(m & 0xffffffffn);
    mean.push((Number(s1) / rows) * s);
    variance.push((md / (rows * rows)) * (s * s));
  }
  return { mean, variance };
}
// μ, σ⁻¹ and the running statistics in float32 from float64 moments, as the backends round them
export function bnStatsFloat32(moments: { mean: number[]; variance: number[] }, rm: Float32Array, rv: Float32Array, eps: number, momentum: number) {
  const f = Math.fround, e = f(eps), mo = f(momentum), keep = f(1 - mo);
  const mean = moments.mean.map(f), invstd = moments.variance.map((v) => f(1 / Math.sqrt(v + e)));
  const runMean = mean.map((m, ch) => f(f(keep * rm[ch]) + f(mo * m)));
  const runVar = moments.variance.map((v, ch) => f(f(keep * rv[ch]) + f(mo * f(v))));
  return { mean, invstd, runMean, runVar };
}


export interface BnTrainResult {
  y: Float64Array; xhat: Float64Array; invstd: Float64Array; mean: Float64Array; variance: Float64Array;
  runMean: Float64Array; runVar: Float64Array;
}
export function batchNormTrain(
  rows: number, c: number, x: ArrayLike<number>, gamma: ArrayLike<number>, beta: ArrayLike<number>,
  runMean: ArrayLike<number>, runVar: ArrayLike<number>, eps: number, momentum: number,
): BnTrainResult {
  const mean = new Float64Array(c), variance = new Float64Array(c), invstd = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let r = 0; r < rows; r++) s += x[r * c + ch];
    mean[ch] = s / rows;
    let v = 0;
    for (let r = 0; r < rows; r++) v += (x[r * c + ch] - mean[ch]) ** 2;
    variance[ch] = v / rows;
    invstd[ch] = 1 / Math.sqrt(variance[ch] + eps);
  }
  const xhat = new Float64Array(rows * c), y = new Float64Array(rows * c);
  for (let r = 0; r < rows; r++)
    for (let ch = 0; ch < c; ch++) {
      xhat[r * c + ch] = (x[r * c + ch] - mean[ch]) * invstd[ch];
      y[r * c + ch] = gamma[ch] * xhat[r * c + ch] + beta[ch];
    }
  return {
    y, xhat, invstd, mean, variance,
    runMean: Float64Array.from({ length: c }, (_, ch) => (1 - momentum) * runMean[ch] + momentum * mean[ch]),
    runVar: Float64Array.from({ length: c }, (_, ch) => (1 - momentum) * runVar[ch] + momentum * variance[ch]),
  };
}
export function batchNormInfer(
  rows: number, c: number, x: ArrayLike<number>, gamma: ArrayLike<number>, beta: ArrayLike<number>,
  runMean: ArrayLike<number>, runVar: ArrayLike<number>, eps: number,
): Float64Array {
  const y = new Float64Array(rows * c);
  for (let r = 0; r < rows; r++)
    for (let ch = 0; ch < c; ch++)
      y[r * c + ch] = (gamma[ch] * (x[r * c + ch] - runMean[ch])) / Math.sqrt(runVar[ch] + eps) + beta[ch];
  return y;
}
/**
 * The gradient of the training-mode forward (μ and σ² depend on every row):
 * ∂L/∂β = Σ dy, ∂L/∂γ = Σ dy·x̂, ∂L/∂x = γ/√(σ²+ε) · (dy − mean(dy) − x̂·mean(dy·x̂)).
 */
export function batchNormBackward(
  rows: number, c: number, dy: ArrayLike<number>, xhat: ArrayLike<number>, gamma: ArrayLike<number>, invstd: ArrayLike<number>,
): { dx: Float64Array; dgamma: Float64Array; dbeta: Float64Array } {
  const dgamma = new Float64Array(c), dbeta = new Float64Array(c), dx = new Float64Array(rows * c);
  for (let ch = 0; ch < c; ch++) {
    for (let r = 0; r < rows; r++) {
      dbeta[ch] += dy[r * c + ch];
      dgamma[ch] += dy[r * c + ch] * xhat[r * c + ch];
    }
    for (let r = 0; r < rows; r++)
      dx[r * c + ch] = gamma[ch] * invstd[ch] * (dy[r * c + ch] - dbeta[ch] / rows - (xhat[r * c + ch] * dgamma[ch]) / rows);
  }
  return { dx, dgamma, dbeta };
}

// ------------------------------------------------------------------------------------------------
// Discrete levels Z_N (ALGORITHM.md §1.1) and the activation φ_r with its windows (§1.2).

export interface LevelsInfo {
  /** N */
  n: number;
  /** value of one integer step of the stored state q (w = q·unit) */
  unit: number;
  /** spacing Δ of neighbouring states */
  delta: number;
  /** the stored states q, ascending */
  states: number[];
}
/** Z_N = { k/2^(N−1) − 1 : k = 0..2^N }, stored as q = w/unit with unit = 2^−max(N−1, 0). */
export function levels(N: number): LevelsInfo {
  const delta = N === 0 ? 2 : 1 / 2 ** (N - 1);
  const unit = N <= 1 ? 1 : delta;
  const states: number[] = [];
  for (let k = 0; k <= 2 ** N; k++) states.push((k * (N === 0 ? 2 : 1 / 2 ** (N - 1)) - 1) / unit);
  return { n: N, unit, delta, states };
}

export enum Window {
  Rectangular = 0,
  Triangular = 1,
  Gaussian = 2,
  Logistic = 3,
}
export const WINDOWS = [Window.Rectangular, Window.Triangular, Window.Gaussian, Window.Logistic];

export interface ActSpec {
  levels: number;
  r: number;
  a: number;
  window: Window;
}

/**
 * The jumps of the staircase φ_r: between neighbouring levels z_j < z_{j+1} at t_j = r·(z_j + z_{j+1}),
 * of height z_{j+1} − z_j (±r for ternary, 0 for binary, ±r/2 and ±3r/2 for N = 2).
 */
export function jumps(spec: ActSpec): { t: number; height: number }[] {
  const lv = levels(spec.levels);
  const z = lv.states.map((q) => q * lv.unit);
  const out: { t: number; height: number }[] = [];
  for (let j = 0; j + 1 < z.length; j++) out.push({ t: spec.r * (z[j] + z[j + 1]), height: z[j + 1] - z[j] });
  return out;
}

/**
 * φ_r(x) as the stored state q (value q·unit): the lowest level plus one step per jump passed.
 * Ties at a jump go away from zero (x = t > 0 is up, x = t < 0 stays down); at t = 0 (binary), x ≥ 0 is up.
 */
export function activation(x: number, spec: ActSpec): number {
  const lv = levels(spec.levels);
  let value = lv.states[0] * lv.unit;
  for (const { t, height } of jumps(spec)) {
    const up = t > 0 ? x >= t : t < 0 ? x > t : x >= 0;
    if (up) value += height;
  }
  return Math.round(value / lv.unit);
}

/** The window of half-width a centred on a jump, as a density in z = x − t (integral 1). */
export function windowDensity(z: number, a: number, window: Window): number {
  const az = Math.abs(z);
  switch (window) {
    case Window.Rectangular:
      return az <= a ? 1 / (2 * a) : 0;
    case Window.Triangular:
      return az <= a ? (a - az) / (a * a) : 0;
    case Window.Gaussian:
      return Math.exp(-(z * z) / (2 * a * a)) / (Math.sqrt(2 * Math.PI) * a);
    case Window.Logistic: {
      const s = logistic(z / a);
      return (s * (1 - s)) / a;
    }
  }
}
/** The integral of the window from −∞ to z: the smooth step whose derivative the window is. */
export function windowCdf(z: number, a: number, window: Window): number {
  switch (window) {
    case Window.Rectangular:
      return Math.min(1, Math.max(0, (z + a) / (2 * a)));
    case Window.Triangular:
      if (z <= -a) return 0;
      if (z >= a) return 1;
      return z <= 0 ? (z + a) ** 2 / (2 * a * a) : 1 - (a - z) ** 2 / (2 * a * a);
    case Window.Gaussian:
      return normalCdf(z / a);
    case Window.Logistic:
      return logistic(z / a);
  }
}
/** The jump nearest to x (the first of two at equal distance: their windows agree there). */
function nearestJump(x: number, spec: ActSpec): { t: number; height: number; index: number } {
  const js = jumps(spec);
  let best = 0;
  for (let j = 1; j < js.length; j++) if (Math.abs(x - js[j].t) < Math.abs(x - js[best].t)) best = j;
  return { ...js[best], index: best };
}
/**
 * ∂φ/∂x of the backward pass (§1.2): the window around the nearest jump, scaled by its height.
 * For ternary that is the document's form in |x| − r, e.g. σ'((|x| − r)/a)/a.
 */
export function activationDerivative(x: number, spec: ActSpec): number {
  const { t, height } = nearestJump(x, spec);
  return height * windowDensity(x - t, spec.a, spec.window);
}
/**
 * The smooth surrogate of φ_r whose derivative is exactly activationDerivative (value units): the
 * integral of the nearest jump's window, piece by piece between the midpoints of the jumps.
 */
export function activationSurrogate(x: number, spec: ActSpec): number {
  const lv = levels(spec.levels);
  const js = jumps(spec);
  const mid = (j: number) => (js[j].t + js[j + 1].t) / 2; // boundary between the regions of j and j + 1
  const cdf = (z: number) => windowCdf(z, spec.a, spec.window);
  const { index } = nearestJump(x, spec);
  let v = lv.states[0] * lv.unit;
  for (let j = 0; j < index; j++) v += js[j].height * (cdf(mid(j) - js[j].t) - (j === 0 ? 0 : cdf(mid(j - 1) - js[j].t)));
  const { t, height } = js[index];
  return v + height * (cdf(x - t) - (index === 0 ? 0 : cdf(mid(index - 1) - t)));
}

export function logistic(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}
/** erfc to about 1e-15: Taylor series of erf near 0, Laplace's continued fraction in the tails. */
export function erfc(x: number): number {
  if (x < 0) return 2 - erfc(-x);
  if (x < 2.5) {
    let term = x, sum = x;
    for (let n = 1; n < 200; n++) {
      term *= (-x * x) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = x;
  for (let k = 120; k >= 1; k--) f = x + k / 2 / f;
  return Math.exp(-x * x) / (Math.sqrt(Math.PI) * f);
}
export function normalCdf(x: number): number {
  return 0.5 * erfc(-x / Math.SQRT2);
}

// ------------------------------------------------------------------------------------------------
// Losses over n rows × c classes (ALGORITHM.md §1.4). `loss` is the mean the training minimises,
// dy its gradient w.r.t. y; rowLoss the per-row loss (squared hinge: mean over the row's classes).

export function squaredHinge(n: number, c: number, y: ArrayLike<number>, labels: ArrayLike<number>) {
  const dy = new Float64Array(n * c), rowLoss = new Float64Array(n);
  let loss = 0;
  for (let r = 0; r < n; r++)
    for (let j = 0; j < c; j++) {
      const t = j === labels[r] ? 1 : -1;
      const h = Math.max(0, 1 - t * y[r * c + j]);
      loss += (h * h) / (n * c);
      rowLoss[r] += (h * h) / c;
      dy[r * c + j] = (-2 * t * h) / (n * c);
    }
  return { loss, dy, rowLoss };
}
/** Softmax cross-entropy, mean over the batch. */
export function softmaxCrossEntropy(n: number, c: number, y: ArrayLike<number>, labels: ArrayLike<number>) {
  const dy = new Float64Array(n * c), rowLoss = new Float64Array(n);
  let loss = 0;
  for (let r = 0; r < n; r++) {
    let mx = -Infinity;
    for (let j = 0; j < c; j++) mx = Math.max(mx, y[r * c + j]);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(y[r * c + j] - mx);
    const lse = mx + Math.log(s);
    rowLoss[r] = lse - y[r * c + labels[r]];
    loss += rowLoss[r] / n;
    for (let j = 0; j < c; j++) dy[r * c + j] = (Math.exp(y[r * c + j] - lse) - (j === labels[r] ? 1 : 0)) / n;
  }
  return { loss, dy, rowLoss };
}
/** Rank of the true class (0 = top-1): classes scoring higher, plus equal ones of lower index. */
export function rankOfTrue(n: number, c: number, y: ArrayLike<number>, labels: ArrayLike<number>): Int32Array {
  const rank = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    const order = Array.from({ length: c }, (_, j) => j).sort((i, j) => y[r * c + j] - y[r * c + i] || i - j);
    rank[r] = order.indexOf(labels[r]);
  }
  return rank;
}

// ------------------------------------------------------------------------------------------------
// Lasagne's Adam (lasagne.updates.adam): t ← t + 1, α_t = η·√(1 − β2^t)/(1 − β1^t),
// m ← β1·m + (1 − β1)·g, v ← β2·v + (1 − β2)·g², step = α_t·m/(√v + ε), θ ← θ − step.

export interface AdamHyper {
  beta1: number;
  beta2: number;
  eps: number;
}
export const LASAGNE_ADAM: AdamHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
export function adamAlpha(eta: number, t: number, h: AdamHyper = LASAGNE_ADAM): number {
  return (eta * Math.sqrt(1 - h.beta2 ** t)) / (1 - h.beta1 ** t);
}
export function lasagneAdam(g: number, m: number, v: number, alphaT: number, h: AdamHyper = LASAGNE_ADAM) {
  const m1 = h.beta1 * m + (1 - h.beta1) * g;
  const v1 = h.beta2 * v + (1 - h.beta2) * g * g;
  return { m: m1, v: v1, step: (alphaT * m1) / (Math.sqrt(v1) + h.eps) };
}

// ------------------------------------------------------------------------------------------------
// DST (ALGORITHM.md §1.3): the distribution of the next state given state w and proposal ΔW.

export enum Tau {
  Tanh = 0,
  Linear = 1,
  Logistic = 2,
}
export interface TauSpec {
  tau: Tau;
  /** tanh steepness */
  m?: number;
  /** logistic temperature */
  temperature?: number;
}
export function tauOf(x: number, s: TauSpec): number {
  switch (s.tau) {
    case Tau.Tanh:
      return Math.tanh((s.m ?? 3) * x);
    case Tau.Linear:
      return x;
    case Tau.Logistic:
      return 1 / (1 + Math.exp(-(x - 0.5) / (s.temperature ?? 1)));
  }
}
/**
 * P(next state q') for a weight at state q (value q·unit) and proposal ΔW: clip ΔW to [−1 − w, 1 − w],
 * κ = sgn(ΔW)·floor(|ΔW|/Δ), ν = ΔW − κΔ, w' = w + κΔ + sgn(ν)·Δ·B with B ~ Bernoulli(τ(|ν|/Δ)),
 * then clip to [−1, 1]. Returns a map from q' to its probability, and the clipped ΔW.
 */
export function dstOutcomes(N: number, q: number, dW: number, s: TauSpec): { probs: Map<number, number>; clipped: number } {
  const lv = levels(N);
  const w = q * lv.unit;
  const clipped = Math.min(1 - w, Math.max(-1 - w, dW));
  const probs = new Map<number, number>();
  const add = (wNext: number, p: number) => {
    const qn = Math.round(Math.min(1, Math.max(-1, wNext)) / lv.unit);
    probs.set(qn, (probs.get(qn) ?? 0) + p);
  };
  if (clipped === 0) {
    add(w, 1);
    return { probs, clipped };
  }
  const x = Math.abs(clipped) / lv.delta;
  const kappa = Math.floor(x);
  const tau = tauOf(x - kappa, s);
  const sgn = Math.sign(clipped);
  add(w + sgn * kappa * lv.delta, 1 - tau);
  add(w + sgn * (kappa + 1) * lv.delta, tau);
  return { probs, clipped };
}

/** Initial states (§1.1): u ~ U(−s, s) clipped to [−1, 1] and rounded to the nearest state of Z_N. */
export function initProbabilities(N: number, spread: number): Map<number, number> {
  const lv = levels(N);
  const z = lv.states.map((q) => q * lv.unit);
  const probs = new Map<number, number>();
  for (let i = 0; i < z.length; i++) {
    const lo = i === 0 ? -Infinity : (z[i - 1] + z[i]) / 2;
    const hi = i === z.length - 1 ? Infinity : (z[i] + z[i + 1]) / 2;
    const len = Math.max(0, Math.min(hi, spread) - Math.max(lo, -spread));
    probs.set(lv.states[i], len / (2 * spread));
  }
  return probs;
}

// ------------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al., SC'11; Random123): 10 rounds of
// (c0, c1, c2, c3) ← (hi(M1·c2) ⊕ c1 ⊕ k0, lo(M1·c2), hi(M0·c0) ⊕ c3 ⊕ k1, lo(M0·c0)),
// the key bumped by the Weyl constants (W0, W1) between rounds.

function mulhilo32(a: number, b: number): [number, number] {
  const aL = a & 0xffff, aH = a >>> 16, bL = b & 0xffff, bH = b >>> 16;
  const ll = aL * bL, lh = aL * bH, hl = aH * bL, hh = aH * bH;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  const hi = (hh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}
export function philox4x32_10(ctr: readonly number[], key: readonly number[]): number[] {
  let [c0, c1, c2, c3] = ctr.map((v) => v >>> 0);
  let [k0, k1] = key.map((v) => v >>> 0);
  for (let r = 0; r < 10; r++) {
    const [hi0, lo0] = mulhilo32(0xd2511f53, c0);
    const [hi1, lo1] = mulhilo32(0xcd9e8d57, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}
/** The uniform in [0, 1) made of the top 24 bits of a word. */
export function uniform24(word: number): number {
  return (word >>> 8) / 16777216;
}
/** ternlab's Philox streams (ALGORITHM.md §5: the counter is (step, layer, element, stream)). */
export const STREAM_INIT = 1, STREAM_DST = 3;
/**
 * The DST draw of weight `element`: the counter layout of native/core/discrete.h (dst_uniform),
 * which both backends share: one Philox call per four weights, counter (element/4, step, layer,
 * stream 3), word element % 4, key (seed low, seed high).
 */
export function dstUniform(seed: number, step: number, layer: number, element: number): number {
  const key = [seed % 2 ** 32, Math.floor(seed / 2 ** 32)];
  return uniform24(philox4x32_10([Math.floor(element / 4), step, layer, STREAM_DST], key)[element % 4]);
}

// ------------------------------------------------------------------------------------------------
// Statistics

/** |observed frequency − p| within k standard errors of a binomial proportion over n draws. */
export function withinSigmas(count: number, n: number, p: number, k = 4): { ok: boolean; z: number; freq: number } {
  const freq = count / n;
  const sd = Math.sqrt((p * (1 - p)) / n);
  if (sd === 0) return { ok: count === Math.round(p * n), z: freq === p ? 0 : Infinity, freq };
  const z = (freq - p) / sd;
  return { ok: Math.abs(z) <= k, z, freq };
}
/** Upper quantile of χ²_k by Wilson–Hilferty, for a given standard-normal z (z = 4.75 ↔ p ≈ 1e-6). */
export function chiSquareUpper(k: number, z: number): number {
  const a = 2 / (9 * k);
  return k * (1 - a + z * Math.sqrt(a)) ** 3;
}

// ------------------------------------------------------------------------------------------------
// Comparisons: the first offending element, named, with the bound it broke.

export function assertClose(
  what: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tolerance: (i: number) => number,
): void {
  if (actual.length !== expected.length) throw new Error(`${what}: length ${actual.length}, expected ${expected.length}`);
  let worst = -1, worstRatio = 1;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    const tol = tolerance(i);
    const ratio = err / tol;
    if (!(err <= tol) && (worst < 0 || ratio > worstRatio || Number.isNaN(err))) {
      worst = i;
      worstRatio = Number.isNaN(err) ? Infinity : ratio;
    }
  }
  if (worst >= 0)
    throw new Error(
      `${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} ` +
        `(error ${Math.abs(actual[worst] - expected[worst])} > tolerance ${tolerance(worst)})`,
    );
}
export function assertExact(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  assertClose(what, actual, expected, () => 0);
}

// ------------------------------------------------------------------------------------------------
// The same suites on every backend: describeBackend("cuda", "ops", (backend) => { … }) registers
// the body for that backend and skips it where the backend is not available.

/** Backends the op suites run on: TERNLAB_TEST_BACKENDS (comma-separated), default "cpu". */
export function backendsUnderTest(): string[] {
  return (process.env.TERNLAB_TEST_BACKENDS ?? "cpu").split(",").map((s) => s.trim()).filter(Boolean);
}

/** Why `backend` cannot run here, or null when it can. */
export function backendUnavailable(backend: string): string | null {
  try {
    addon().ops.activation(backend, new Float32Array(1), { levels: 1, r: 1, a: 0.5, window: 0 });
    return null;
  } catch (e) {
    if (e instanceof TernlabError && (e.code === "E_BACKEND" || e.code === "E_CUDA")) return e.message;
    throw e;
  }
}

export function describeBackend(backend: string, title: string, body: (backend: string) => void): void {
  describe(`${title} [${backend}]`, function () {
    before(function () {
      const why = backendUnavailable(backend);
      if (why !== null) {
        // eslint-disable-next-line no-console
        console.log(`      (skipped: ${why})`);
        this.skip();
      }
    });
    body(backend);
  });
}

/** describeBackend for every backend of backendsUnderTest(). */
export function describeBackends(title: string, body: (backend: string) => void): void {
  for (const b of backendsUnderTest()) describeBackend(b, title, body);
}
