// The CUDA backend: every op of backend.h as CUDA kernels on one stream per backend. The
// per-element mathematics comes from core/discrete.h and core/philox.h (the same functions the CPU
// calls), so both backends make the same discrete decisions. Where the CPU's float arithmetic is
// replayable (batch norm's sums in core/reduce.h's order, pooling, losses, elementwise ops) the
// kernels replay it in the same order with the same roundings (explicit __fmul_rn/__fadd_rn: nvcc
// would otherwise fuse a*b+c into one FMA), so those outputs are bit-identical to the CPU's.
// The products: int8·int8 forward on tensor cores (exact, so bit-identical too); the backward
// products on bf16 tensor cores with fp32 accumulation (TERNLAB_CUDA_MATH=fast, the default) or in
// fp32 on the CUDA cores (TERNLAB_CUDA_MATH=exact); TERNLAB_CUDA_MATH=simple uses the CUDA-core
// kernels for every product (a reference for the tensor-core paths).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <vector>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>

#include "../core/backend.h"
#include "../core/loss.h"
#include "../core/reduce.h"
#include "cudnn_conv.cuh"
#include "gemm.cuh"
#include "stem.h"

namespace tl {
namespace cuda {
namespace {

using ull = unsigned long long;
constexpr int kThreads = 256;

enum class Math { Fast, Exact, Simple };
Math math_mode() {
  const char* e = std::getenv("TERNLAB_CUDA_MATH");
  if (!e || !*e || !std::strcmp(e, "fast")) return Math::Fast;
  if (!std::strcmp(e, "exact")) return Math::Exact;
  if (!std::strcmp(e, "simple")) return Math::Simple;
  return Math::Fast;
}

int grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(b, 132 * 32)));
}
#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// A grid-stride loop over NHWC elements i that also tracks the channel ch = i % c: one modulo per
// thread, then a constant step per stride (a 64-bit modulo per element cost more than the memory).
#define CHANNEL_STRIDE(i, n, ch, c)                                                                         \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,                          \
               i##_stride = static_cast<int64_t>(gridDim.x) * blockDim.x, ch = i % (c), ch##_step = i##_stride % (c); \
       i < (n); i += i##_stride, ch = ch + ch##_step >= (c) ? ch + ch##_step - (c) : ch + ch##_step)

// Block-wide sum of an integer, added once per block to a device counter (exact: order-free).
__device__ void block_add(int64_t v, int64_t* counter) {
  __shared__ int64_t part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>((blockDim.x + 31) / 32) ? part[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0 && v) atomicAdd(reinterpret_cast<ull*>(counter), static_cast<ull>(v));
  }
}

// ---------------------------------------------------------------- elementwise
__device__ __forceinline__ float normalize_px(uint8_t v, float scale, float offset) {
  return __fadd_rn(__fmul_rn(static_cast<float>(v), scale), offset);
}
__global__ void k_normalize(int64_t n, const uint8_t* src, float scale, float offset, float* dst) {
  GRID_STRIDE(i, n) dst[i] = normalize_px(src[i], scale, offset);
}
// Four pixels a thread: one-byte loads kept a warp's reads at 32 bytes (ResNet's 224² batch ran at
// 250 GB/s); the same expression per element.
__global__ void k_normalize4(int64_t n4, const uchar4* src, float scale, float offset, float4* dst) {
  GRID_STRIDE(i, n4) {
    const uchar4 u = src[i];
    dst[i] = make_float4(normalize_px(u.x, scale, offset), normalize_px(u.y, scale, offset), normalize_px(u.z, scale, offset),
                         normalize_px(u.w, scale, offset));
  }
}
// φ and φ′ (discrete.h's act_forward and act_derivative) with the spec's constants worked out once,
// on the host, instead of per element: for ternary levels the two thresholds, and for the
// rectangular window its one value height·(1/(2a)), by the same expressions as discrete.h, so the
// same comparisons on the same values and the same bits. Other levels and windows take discrete.h's
// general loops. (Session 7's ncu run of a ResNet-18 step found φ's kernels at 14–30 % of the
// DRAM bandwidth with the general loops, the fused φ + BN backward at 118 registers a thread.)
struct Phi {
  ActSpec s;
  bool ternary = false, rect = false;
  float up0 = 0.0f, up1 = 0.0f;     // act_forward's thresholds, lower and upper
  float jump0 = 0.0f, jump1 = 0.0f;  // act_derivative's
  float a = 0.0f, inside = 0.0f, outside = 0.0f;
  TL_HD Phi() : Phi(ActSpec{}) {}
  TL_HD Phi(const ActSpec& spec) : s(spec) {
    const int qmax = s.levels.qmax(), qstep = s.levels.qstep();
    const float unit = s.levels.unit();
    if (qmax != 1 || qstep != 1) return;
    up0 = s.r * unit * static_cast<float>(2 * -1 + qstep);
    up1 = s.r * unit * static_cast<float>(2 * 0 + qstep);
    ternary = up0 < 0.0f && up1 > 0.0f;  // (a zero threshold compares differently: the general loop)
    jump0 = mul_rn(s.r * unit, static_cast<float>(2 * -1 + qstep));
    jump1 = mul_rn(s.r * unit, static_cast<float>(2 * 0 + qstep));
    const float height = unit * static_cast<float>(qstep);
    a = s.a;
    rect = s.window == Window::Rectangular;
    inside = mul_rn(height, 1.0f / (2.0f * a));
    outside = mul_rn(height, 0.0f);
  }
  __device__ __forceinline__ int8_t forward(float x) const {
    if (!ternary) return tl::act_forward(x, s);
    int q = -1;
    if (x > up0) q = 0;  // a negative threshold: x > t steps up
    if (x >= up1) q = 1;  // a positive one: x ≥ t
    return static_cast<int8_t>(q);
  }
  __device__ __forceinline__ float derivative(float x) const {
    if (!ternary || !rect) return act_derivative(x, s);
    float az = 3.402823466e38f;
    float z = x - jump0, d = z < 0 ? -z : z;
    az = d < az ? d : az;
    z = x - jump1;
    d = z < 0 ? -z : z;
    az = d < az ? d : az;
    return az <= a ? inside : outside;
  }
};
__global__ void k_act_forward(int64_t n, const float* x, Phi s, int8_t* q) {
  GRID_STRIDE(i, n) q[i] = s.forward(x[i]);
}
__global__ void k_act_backward(int64_t n, const float* x, const float* dq, Phi s, float* dx) {
  GRID_STRIDE(i, n) dx[i] = __fmul_rn(dq[i], s.derivative(x[i]));
}
__global__ void k_act_backward_accumulate(int64_t n, const float* x, const float* dq, Phi s, float* dx) {
  GRID_STRIDE(i, n) dx[i] = __fadd_rn(dx[i], __fmul_rn(dq[i], s.derivative(x[i])));
}
// operand conversions for the cuDNN products (ternary/multi-level states are exact in bf16)
__global__ void k_f32_to_bf16(int64_t n, const float* x, __nv_bfloat16* y) { GRID_STRIDE(i, n) y[i] = __float2bfloat16_rn(x[i]); }
__global__ void k_i8_to_bf16(int64_t n, const int8_t* q, __nv_bfloat16* y) { GRID_STRIDE(i, n) y[i] = __int2bfloat16_rn(q[i]); }
__global__ void k_i8_to_f32(int64_t n, const int8_t* q, float scale, float* y) {
  GRID_STRIDE(i, n) y[i] = __fmul_rn(static_cast<float>(q[i]), scale);
}
__global__ void k_bf16_to_f32(int64_t n, const __nv_bfloat16* x, float scale, float* y) {
  GRID_STRIDE(i, n) y[i] = __fmul_rn(__bfloat162float(x[i]), scale);
}
__global__ void k_bf16_accumulate(int64_t n, const __nv_bfloat16* x, float scale, float* y) {
  GRID_STRIDE(i, n) y[i] = __fadd_rn(y[i], __fmul_rn(__bfloat162float(x[i]), scale));
}
// The same four conversions, 8 elements a thread (16-byte float loads and stores), where n is a
// multiple of 8 and every pointer 16-byte aligned: the backward products convert 15 bytes per
// activation element of the net, so these passes are memory-bound work of the step.
__global__ void k_f32_to_bf16_x8(int64_t n8, const float4* x, uint4* y) {
  GRID_STRIDE(i, n8) {
    const float4 a = x[2 * i], b = x[2 * i + 1];
    y[i] = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
  }
}
__global__ void k_i8_to_bf16_x8(int64_t n8, const uint2* q, uint4* y) {
  GRID_STRIDE(i, n8) {
    const uint2 u = q[i];
    uint32_t w[4];
    for (int k = 0; k < 4; ++k) {
      const uint32_t word = k < 2 ? u.x : u.y, sh = 16 * (k & 1);
      const int8_t lo = static_cast<int8_t>(word >> sh), hi = static_cast<int8_t>(word >> (sh + 8));
      __nv_bfloat162 v = __halves2bfloat162(__int2bfloat16_rn(lo), __int2bfloat16_rn(hi));
      w[k] = *reinterpret_cast<uint32_t*>(&v);
    }
    y[i] = make_uint4(w[0], w[1], w[2], w[3]);
  }
}
template <bool kAccumulate>
__global__ void k_bf16_to_f32_x8(int64_t n8, const uint4* x, float scale, float4* y) {
  GRID_STRIDE(i, n8) {
    const uint4 u = x[i];
    float f[8];
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
    for (int k = 0; k < 4; ++k) {
      const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[k]));
      f[2 * k] = __fmul_rn(v.x, scale);
      f[2 * k + 1] = __fmul_rn(v.y, scale);
    }
    float4 a = make_float4(f[0], f[1], f[2], f[3]), b = make_float4(f[4], f[5], f[6], f[7]);
    if (kAccumulate) {
      const float4 p = y[2 * i], q = y[2 * i + 1];
      a = make_float4(__fadd_rn(p.x, a.x), __fadd_rn(p.y, a.y), __fadd_rn(p.z, a.z), __fadd_rn(p.w, a.w));
      b = make_float4(__fadd_rn(q.x, b.x), __fadd_rn(q.y, b.y), __fadd_rn(q.z, b.z), __fadd_rn(q.w, b.w));
    }
    y[2 * i] = a;
    y[2 * i + 1] = b;
  }
}
__global__ void k_add(int64_t n, const float* a, const float* b, float* y) { GRID_STRIDE(i, n) y[i] = __fadd_rn(a[i], b[i]); }
__global__ void k_accumulate(int64_t n, const float* s, float* d) { GRID_STRIDE(i, n) d[i] = __fadd_rn(d[i], s[i]); }

// ---------------------------------------------------------------- updates (fused: one pass per tensor)
__global__ void k_dst(int64_t n, int8_t* q, const float* g, float* m, float* v, DstParams p, int64_t* flips) {
  int64_t f = 0;
  GRID_STRIDE(i, n) {
    const int8_t old = q[i];
    const int8_t nq = dst_update_one(old, g[i], m ? m + i : nullptr, v ? v + i : nullptr, static_cast<uint32_t>(i), p);
    f += nq != old;
    q[i] = nq;
  }
  block_add(f, flips);
}
__global__ void k_adam(int64_t n, float* p, const float* g, float* m, float* v, AdamParams a) {
  GRID_STRIDE(i, n) adam_update_one(p + i, g[i], m + i, v + i, a);
}
__global__ void k_init_states(int64_t n, int8_t* q, uint64_t seed, uint32_t layer, float spread, Levels lv) {
  GRID_STRIDE(i, n) q[i] = init_state(seed, layer, static_cast<uint32_t>(i), spread, lv);
}
__global__ void k_init_uniform(int64_t n, float* p, uint64_t seed, uint32_t layer, float limit) {
  GRID_STRIDE(i, n)
  p[i] = __fmul_rn(2.0f * uniform24(philox_draw(seed, 0, layer, static_cast<uint32_t>(i), kStreamInit).v[0]) - 1.0f, limit);
}
__global__ void k_count_zeros(int64_t n, const int8_t* q, int64_t* counter) {
  int64_t z = 0;
  GRID_STRIDE(i, n) z += q[i] == 0;
  block_add(z, counter);
}

// ---------------------------------------------------------------- Gated-XNOR counters
// count[j] = rows i with a[i·cols + j] ≠ 0, and the zeros counted on the way: over the images of a
// batch (P[pixel·c + ch], zero inputs) and over the output channels of the weights (zero weights).
__global__ void k_nonzero_columns(int rows, int64_t cols, const int8_t* a, int32_t* count, int64_t* zeros) {
  int64_t z = 0;
  GRID_STRIDE(j, cols) {
    int s = 0;
    for (int i = 0; i < rows; ++i) s += a[i * cols + j] != 0;
    count[j] = s;
    z += rows - s;
  }
  block_add(z, zeros);
}
// The same counts where cols % 16 == 0 and a is 16-byte aligned (every layer of our nets but a
// 3-channel input): a thread takes 16 adjacent columns of a slice of kRowSlice rows with 16-byte
// loads, compares 4 bytes at a time (__vcmpne4) and adds its 16 counts to count[] (zeroed first) by
// atomics — integer sums, so the order does not matter. The one-column version walks all rows per
// thread with byte loads (43 µs a layer on the CIFAR net, H200).
constexpr int kRowSlice = 32;
__global__ void k_nonzero_columns16(int rows, int64_t cols, const int8_t* a, int32_t* count, int64_t* zeros) {
  const int64_t groups = cols / 16, slices = (rows + kRowSlice - 1) / kRowSlice;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  int64_t z = 0;
  if (t < groups * slices) {
    const int64_t gidx = t % groups;
    const int r0 = static_cast<int>(t / groups) * kRowSlice, r1 = min(rows, r0 + kRowSlice);
    int c[16] = {};
    for (int i = r0; i < r1; ++i) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(a + i * cols) + gidx);
      const uint32_t w[4] = {__vcmpne4(v.x, 0u), __vcmpne4(v.y, 0u), __vcmpne4(v.z, 0u), __vcmpne4(v.w, 0u)};
#pragma unroll
      for (int k = 0; k < 16; ++k) c[k] += (w[k >> 2] >> (8 * (k & 3))) & 1u;
    }
    int nz = 0;
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      if (c[k]) atomicAdd(count + gidx * 16 + k, c[k]);
      nz += c[k];
    }
    z = static_cast<int64_t>(r1 - r0) * 16 - nz;
  }
  block_add(z, zeros);
}
// active MACs = Σ_k (output positions whose im2col entry k is nonzero) · (nonzero weights at k)
__global__ void k_active_macs(ConvGeom g, const int32_t* P, const int32_t* nzw, int64_t* active) {
  const int64_t K = static_cast<int64_t>(g.kh) * g.kw * g.c;
  int64_t a = 0;
  GRID_STRIDE(t, K * g.oh) {
    const int64_t k = t % K;
    const int oy = static_cast<int>(t / K);
    const int ky = static_cast<int>(k / (g.kw * g.c)), kx = static_cast<int>((k / g.c) % g.kw), ch = static_cast<int>(k % g.c);
    const int iy = oy * g.sh - g.ph + ky;
    if (iy < 0 || iy >= g.h || nzw[k] == 0) continue;
    int64_t s = 0;
    for (int ox = 0; ox < g.ow; ++ox) {
      const int ix = ox * g.sw - g.pw + kx;
      if (ix >= 0 && ix < g.w) s += P[(static_cast<int64_t>(iy) * g.w + ix) * g.c + ch];
    }
    a += s * nzw[k];
  }
  block_add(a, active);
}

// ---------------------------------------------------------------- pooling (the CPU's order and roundings)
// An NHWC element index → (n, y, x, channel), in the index type I (uint32_t where every index of
// the tensor fits: 64-bit division is a long software sequence on the GPU).
template <class I>
struct Nhwc {
  I n;
  int y, x, c;
  __device__ __forceinline__ Nhwc(I i, int h, int w, int ch) {
    c = static_cast<int>(i % ch);
    I t = i / ch;
    x = static_cast<int>(t % w);
    t /= w;
    y = static_cast<int>(t % h);
    n = t / h;
  }
};
template <class T>
__global__ void k_maxpool(PoolGeom g, const T* x, T* y, int32_t* argmax, T empty) {
  // argmax holds int32 input indices, so every index fits 32 bits: 32-bit index arithmetic (64-bit
  // division is a long software sequence on the GPU and dominated these kernels)
  const uint32_t total = static_cast<uint32_t>(g.n) * g.oh * g.ow * g.c;
  for (uint32_t o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
    const Nhwc<uint32_t> p(o, g.oh, g.ow, g.c);
    const uint32_t n = p.n;
    const int oy = p.y, ox = p.x, c = p.c;
    T best = empty;
    int32_t bi = -1;
    for_taps_inside(g, oy, ox, [&](int, int, int iy, int ix) {
      const uint32_t idx = ((n * g.h + iy) * g.w + ix) * g.c + c;
      const T v = x[idx];
      if (bi < 0 || v > best) { best = v; bi = static_cast<int32_t>(idx); }
    });
    y[o] = best;
    argmax[o] = bi;
  }
}
// Four consecutive channels a thread (c % 4 == 0, tensors aligned to 4 elements): one index decode and
// vector loads for four channels — the scalar kernels' per-element decode (three divisions by runtime
// sizes) and 4-byte accesses held ResNet's stem pool at a fifth of the bandwidth. Per channel the
// same taps in the same order with the same comparison, so the same outputs and argmax.
template <class T> struct Vec4;
template <> struct Vec4<float> {
  using type = float4;
  __device__ static type make(const float* v) { return make_float4(v[0], v[1], v[2], v[3]); }
};
template <> struct Vec4<int16_t> {
  using type = short4;
  __device__ static type make(const int16_t* v) { return make_short4(v[0], v[1], v[2], v[3]); }
};
template <class T>
__global__ void k_maxpool4(PoolGeom g, const T* x, T* y, int32_t* argmax, T empty) {
  using V = typename Vec4<T>::type;
  const int c4 = g.c / 4;
  const uint32_t total = static_cast<uint32_t>(g.n) * g.oh * g.ow * c4;  // 32-bit: see k_maxpool
  for (uint32_t o4 = blockIdx.x * blockDim.x + threadIdx.x; o4 < total; o4 += gridDim.x * blockDim.x) {
    const Nhwc<uint32_t> p(o4, g.oh, g.ow, c4);
    const uint32_t n = p.n;
    T best[4] = {empty, empty, empty, empty};
    int32_t bi[4] = {-1, -1, -1, -1};
    for_taps_inside(g, p.y, p.x, [&](int, int, int iy, int ix) {
      const uint32_t idx = ((n * g.h + iy) * g.w + ix) * g.c + 4 * p.c;
      const V v = *reinterpret_cast<const V*>(x + idx);
      const T vs[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (bi[j] < 0 || vs[j] > best[j]) { best[j] = vs[j]; bi[j] = static_cast<int32_t>(idx) + j; }
    });
    *reinterpret_cast<V*>(y + 4 * o4) = Vec4<T>::make(best);
    *reinterpret_cast<int4*>(argmax + 4 * o4) = make_int4(bi[0], bi[1], bi[2], bi[3]);
  }
}
// The outputs whose window holds input (iy, ix), in ascending order (the CPU's accumulation order).
__device__ __forceinline__ void window_range(int i, int k, int s, int p, int on, int* lo, int* hi) {
  // o·s − p ≤ i ≤ o·s − p + k − 1
  const int a = i + p - k + 1;
  *lo = a <= 0 ? 0 : (a + s - 1) / s;
  *hi = min(on - 1, (i + p) / s);
}
// Where a backward op writes its gradient: float (GradF32), or bf16 rounded to nearest (GradBf16),
// for a product's output gradient handed over in bf16 (Backend::takes_bf16_dy): the value is
// computed in float either way, and bf16(it) is what conv_backward's conversion would have made.
struct GradF32 {
  float* p;
  __device__ __forceinline__ void put(int64_t i, float v) const { p[i] = v; }
  __device__ __forceinline__ void put4(int64_t i, float a, float b, float c, float d) const {
    *reinterpret_cast<float4*>(p + i) = make_float4(a, b, c, d);
  }
  bool aligned() const { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
};
struct GradBf16 {
  __nv_bfloat16* p;
  __device__ __forceinline__ void put(int64_t i, float v) const { p[i] = __float2bfloat16_rn(v); }
  __device__ __forceinline__ void put4(int64_t i, float a, float b, float c, float d) const {
    *reinterpret_cast<uint2*>(p + i) = make_uint2(pack_bf16(a, b), pack_bf16(c, d));
  }
  bool aligned() const { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
};
template <class G>
__global__ void k_maxpool_backward(PoolGeom g, const float* dy, const int32_t* argmax, G dx) {
  const uint32_t total = static_cast<uint32_t>(g.n) * g.h * g.w * g.c;  // < 2^31: see k_maxpool
  for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
    const Nhwc<uint32_t> p(idx, g.h, g.w, g.c);
    const uint32_t n = p.n;
    const int iy = p.y, ix = p.x, c = p.c;
    int y0, y1, x0, x1;
    window_range(iy, g.kh, g.sh, g.ph, g.oh, &y0, &y1);
    window_range(ix, g.kw, g.sw, g.pw, g.ow, &x0, &x1);
    float s = 0.0f;
    for (int oy = y0; oy <= y1; ++oy)
      for (int ox = x0; ox <= x1; ++ox) {
        const uint32_t o = ((n * g.oh + oy) * g.ow + ox) * g.c + c;
        if (argmax[o] == static_cast<int32_t>(idx)) s = __fadd_rn(s, dy[o]);
      }
    dx.put(idx, s);
  }
}
// k_maxpool_backward four channels a thread (see k_maxpool4); dy is read only where a channel's
// argmax is this input.
template <class G>
__global__ void k_maxpool_backward4(PoolGeom g, const float* dy, const int32_t* argmax, G dx) {
  const int c4 = g.c / 4;
  const uint32_t total = static_cast<uint32_t>(g.n) * g.h * g.w * c4;
  for (uint32_t i4 = blockIdx.x * blockDim.x + threadIdx.x; i4 < total; i4 += gridDim.x * blockDim.x) {
    const Nhwc<uint32_t> p(i4, g.h, g.w, c4);
    const uint32_t n = p.n;
    const int32_t idx = static_cast<int32_t>(4 * i4);
    int y0, y1, x0, x1;
    window_range(p.y, g.kh, g.sh, g.ph, g.oh, &y0, &y1);
    window_range(p.x, g.kw, g.sw, g.pw, g.ow, &x0, &x1);
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int oy = y0; oy <= y1; ++oy)
      for (int ox = x0; ox <= x1; ++ox) {
        const uint32_t o = ((n * g.oh + oy) * g.ow + ox) * g.c + 4 * p.c;
        const int4 a = *reinterpret_cast<const int4*>(argmax + o);
        const bool hit[4] = {a.x == idx, a.y == idx + 1, a.z == idx + 2, a.w == idx + 3};
        if (!(hit[0] || hit[1] || hit[2] || hit[3])) continue;
        const float4 d = *reinterpret_cast<const float4*>(dy + o);
        const float ds[4] = {d.x, d.y, d.z, d.w};
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (hit[j]) s[j] = __fadd_rn(s[j], ds[j]);
      }
    dx.put4(idx, s[0], s[1], s[2], s[3]);
  }
}
template <class G>
__global__ void k_maxpool_scatter(int64_t outs, const float* dy, const int32_t* argmax, G dx) {
  GRID_STRIDE(o, outs) dx.put(argmax[o], __fadd_rn(0.0f, dy[o]));
}
__device__ __forceinline__ int window_count(const PoolGeom& g, int oy, int ox) {
  int cy = 0, cx = 0;
  for (int ky = 0; ky < g.kh; ++ky) { const int iy = oy * g.sh - g.ph + ky; cy += iy >= 0 && iy < g.h; }
  for (int kx = 0; kx < g.kw; ++kx) { const int ix = ox * g.sw - g.pw + kx; cx += ix >= 0 && ix < g.w; }
  return cy * cx;
}
__global__ void k_avgpool(PoolGeom g, const float* x, float* y) {
  const int64_t total = static_cast<int64_t>(g.n) * g.oh * g.ow * g.c;
  GRID_STRIDE(o, total) {
    const Nhwc<int64_t> p(o, g.oh, g.ow, g.c);
    const int64_t n = p.n;
    const int oy = p.y, ox = p.x, c = p.c;
    double s = 0;
    int cnt = 0;
    for_taps_inside(g, oy, ox, [&](int, int, int iy, int ix) {
      s += x[((n * g.h + iy) * g.w + ix) * g.c + c];
      ++cnt;
    });
    y[o] = cnt ? static_cast<float>(s / cnt) : 0.0f;
  }
}
__global__ void k_avgpool_backward(PoolGeom g, const float* dy, float* dx) {
  const int64_t total = static_cast<int64_t>(g.n) * g.h * g.w * g.c;
  GRID_STRIDE(idx, total) {
    const Nhwc<int64_t> p(idx, g.h, g.w, g.c);
    const int64_t n = p.n;
    const int iy = p.y, ix = p.x, c = p.c;
    int y0, y1, x0, x1;
    window_range(iy, g.kh, g.sh, g.ph, g.oh, &y0, &y1);
    window_range(ix, g.kw, g.sw, g.pw, g.ow, &x0, &x1);
    float s = 0.0f;
    for (int oy = y0; oy <= y1; ++oy)
      for (int ox = x0; ox <= x1; ++ox) {
        const int cnt = window_count(g, oy, ox);
        if (cnt) s = __fadd_rn(s, dy[((n * g.oh + oy) * g.ow + ox) * g.c + c] / static_cast<float>(cnt));
      }
    dx[idx] = s;
  }
}

// ---------------------------------------------------------------- batch norm (the sums of core/reduce.h)
// The vector path of the per-element passes (apply, infer, backward apply), where c % 8 == 0 and the
// tensors are 16-byte aligned: a thread takes 8 consecutive channels of a row, one 16-byte load of
// int16 (two of float) and one 8-byte store of states per 8 elements instead of 1–2-byte accesses.
// Thread t takes channels ch0 = 8·(t mod c/8) of rows t div (c/8) + k·step: its channels never
// change, so their parameters stay in registers and no element needs a division.
constexpr int kVec = 8;
__device__ __forceinline__ void load_vec(const float* p, float (&v)[kVec]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
// 8 bf16 values (16 bytes) to float, exactly
__device__ __forceinline__ void load_vec(const __nv_bfloat16* p, float (&v)[kVec]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[j]));
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}
__device__ __forceinline__ float grad_value(float v) { return v; }
__device__ __forceinline__ float grad_value(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void load_vec(const int16_t* p, int16_t (&v)[kVec]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {  // little-endian: the lower half is the lower address
    v[2 * j] = static_cast<int16_t>(w[j] & 0xffffu);
    v[2 * j + 1] = static_cast<int16_t>(w[j] >> 16);
  }
}
__device__ __forceinline__ void store_vec(float* p, const float (&v)[kVec]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store_vec(int8_t* p, const int8_t (&v)[kVec]) {
  uint32_t w[2] = {0u, 0u};
#pragma unroll
  for (int j = 0; j < kVec; ++j) w[j >> 2] |= static_cast<uint32_t>(static_cast<uint8_t>(v[j])) << (8 * (j & 3));
  *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
}
// a per-channel parameter of channels ch0 … ch0 + 7, to registers
__device__ __forceinline__ void load_params(const float* p, int ch0, float (&v)[kVec]) {
#pragma unroll
  for (int j = 0; j < kVec; ++j) v[j] = p[ch0 + j];
}
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
// The vector path's grid (at most max_blocks), or 0 where it cannot run (c not a multiple of 8,
// fewer threads than c/8).
int vec_grid(int64_t rows, int c, int max_blocks = 132 * 32) {
  if (c % kVec) return 0;
  const int grid = std::min(grid_for(rows * (c / kVec)), max_blocks);
  return static_cast<int64_t>(grid) * kThreads >= c / kVec ? grid : 0;
}
// Thread t's channels and rows in the vector path; false for the threads past the last whole
// multiple of c/8 (they idle). The apply kernels take kRowsInFlight of a thread's rows per iteration,
// all loads before the first store: one row's 16–48 bytes per thread leave the loads latency-bound.
constexpr int kRowsInFlight = 2;
struct GroupRows {
  int ch0;
  int64_t first, step;
};
__device__ __forceinline__ bool group_rows(int c, GroupRows* g) {
  const int groups = c / kVec;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t lanes = static_cast<int64_t>(gridDim.x) * blockDim.x / groups * groups;
  if (t >= lanes) return false;
  g->ch0 = static_cast<int>(t % groups) * kVec;
  g->first = t / groups;
  g->step = lanes / groups;
  return true;
}
// Readers, chosen on the host per call (kernels are templated on them): the BN input as float or
// as exact int16 sums times their scale; x̂ as stored or recomputed from the int16 input.
// load8 and group(ch0).load8 read elements i … i + 7 of a row's channels ch0 … ch0 + 7 (the vector path).
struct F32In {
  const float* p;
  __device__ __forceinline__ float operator()(int64_t i) const { return p[i]; }
  __device__ __forceinline__ void load8(int64_t i, float (&v)[kVec]) const { load_vec(p + i, v); }
  bool aligned() const { return aligned16(p); }
};
struct I16In {
  const int16_t* p;
  float scale;
  __device__ __forceinline__ float operator()(int64_t i) const { return i16_value(p[i], scale); }
  __device__ __forceinline__ void load8(int64_t i, float (&v)[kVec]) const {
    int16_t q[kVec];
    load_vec(p + i, q);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = i16_value(q[j], scale);
  }
  bool aligned() const { return aligned16(p); }
};
// raw(i) and value(raw, ch) split operator() into the load and the arithmetic (the backward's sums
// issue a run's loads before any arithmetic).
struct XhatStored {
  const float* p;
  __device__ __forceinline__ float operator()(int64_t i, int) const { return p[i]; }
  using Raw = float;
  __device__ __forceinline__ Raw raw(int64_t i) const { return p[i]; }
  __device__ __forceinline__ float value(Raw v, int) const { return v; }
  struct Group {
    const float* p;
    __device__ __forceinline__ void load8(int64_t i, float (&h)[kVec]) const { load_vec(p + i, h); }
  };
  __device__ __forceinline__ Group group(int) const { return {p}; }
  bool aligned() const { return aligned16(p); }
};
struct XhatRecomputed {
  XhatSource s;
  __device__ __forceinline__ float operator()(int64_t i, int ch) const { return s.recompute(i, ch); }
  using Raw = int16_t;
  __device__ __forceinline__ Raw raw(int64_t i) const { return s.q[i]; }
  __device__ __forceinline__ float value(Raw q, int ch) const { return xhat_of(q, s.scale, s.mean[ch], s.invstd[ch]); }
  struct Group {
    const int16_t* q;
    float scale;
    float mean[kVec], invstd[kVec];
    __device__ __forceinline__ void load8(int64_t i, float (&h)[kVec]) const {
      int16_t v[kVec];
      load_vec(q + i, v);
#pragma unroll
      for (int j = 0; j < kVec; ++j) h[j] = xhat_of(v[j], scale, mean[j], invstd[j]);
    }
  };
  __device__ __forceinline__ Group group(int ch0) const {
    Group g{s.q, s.scale, {}, {}};
    load_params(s.mean, ch0, g.mean);
    load_params(s.invstd, ch0, g.invstd);
    return g;
  }
  bool aligned() const { return aligned16(s.q); }
};
template <class F>
void with_input(Operand x, F f) {
  if (x.dtype == DType::I16) f(I16In{static_cast<const int16_t*>(x.ptr), x.scale});
  else f(F32In{static_cast<const float*>(x.ptr)});
}
template <class F>
void with_xhat(const XhatSource& xs, F f) {
  if (xs.stored) f(XhatStored{xs.stored});
  else f(XhatRecomputed{xs});
}

// The sums in core/reduce.h's order. A block takes kTreeLeaves (a power of two) consecutive leaves
// (runs of kSumRun rows) of a 32-channel tile: lane = channel, so a warp's loads of one row are
// contiguous; each warp sums its runs serially (a run's loads issued before its adds), then the
// block adds the leaves by the pairwise tree in shared memory. Blocks' sums go through the same
// tree, kTreeLeaves at a time, until one is left: the tree of core/reduce.h, unchanged.
constexpr int kTreeLeaves = 64;
constexpr int kTreeWarps = 8;
template <int kTerms>
struct Terms {
  double v[kTerms];
};
// The pairwise tree over leaf[t][0..n) per lane, in place, then the block's sums (leaf[t][0]) to
// out[(t·gridDim.x + block)·c + ch], divided by `divide_by` where it is not 0 (the last level of a mean).
template <int kTerms>
__device__ void block_pairwise_store(double (*leaf)[kTreeLeaves][32], int n, int c, int64_t divide_by, double* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ch = blockIdx.y * 32 + lane;
  for (int s = 1; s < n; s <<= 1) {
    __syncthreads();
    for (int i = warp * 2 * s; i + s < n; i += kTreeWarps * 2 * s)
#pragma unroll
      for (int t = 0; t < kTerms; ++t) leaf[t][i][lane] = __dadd_rn(leaf[t][i][lane], leaf[t][i + s][lane]);
  }
  __syncthreads();
  if (warp == 0 && ch < c)
    for (int t = 0; t < kTerms; ++t) {
      const double v = leaf[t][0][lane];
      out[(t * static_cast<int64_t>(gridDim.x) + blockIdx.x) * c + ch] = divide_by ? v / static_cast<double>(divide_by) : v;
    }
}
// A block's sum of its kTreeLeaves leaves of term(r, ch), stored by block_pairwise_store. Three
// blocks per SM: the register cap (80) keeps a run's loads in flight without spilling, and 24 warps
// per SM hide latency.
template <int kTerms, class Term>
__global__ void __launch_bounds__(kTreeWarps * 32, 3) k_column_runs(int64_t rows, int c, Term term, int64_t divide_by, double* out) {
  __shared__ double leaf[kTerms][kTreeLeaves][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ch = blockIdx.y * 32 + lane;
  const int64_t runs = (rows + kSumRun - 1) / kSumRun, first = blockIdx.x * static_cast<int64_t>(kTreeLeaves);
  const int n = static_cast<int>(min(static_cast<int64_t>(kTreeLeaves), runs - first));
  for (int j = warp; j < n; j += kTreeWarps) {
    const int64_t r0 = (first + j) * kSumRun;
    double sum[kTerms] = {};
    if (ch < c) {  // lanes past c sum nothing (terms may read per-channel data)
      typename Term::Raw v[kSumRun];
#pragma unroll
      for (int k = 0; k < kSumRun; ++k) v[k] = r0 + k < rows ? term.load(r0 + k, ch) : typename Term::Raw{};
      // the terms of every k, only those of rows added: no branch around a term, so its per-channel
      // data (μ, σ⁻¹, γ, β) is loaded once per run, not once per element
#pragma unroll
      for (int k = 0; k < kSumRun; ++k) {
        const Terms<kTerms> d = term.terms(v[k], ch);
        if (r0 + k < rows)
#pragma unroll
          for (int t = 0; t < kTerms; ++t) sum[t] = __dadd_rn(sum[t], d.v[t]);
      }
    }
#pragma unroll
    for (int t = 0; t < kTerms; ++t) leaf[t][j][lane] = sum[t];
  }
  block_pairwise_store<kTerms>(leaf, n, c, divide_by, out);
}
// The next level of the tree: a block adds kTreeLeaves of the n sums in[(t·n + k)·c + ch].
template <int kTerms>
__global__ void __launch_bounds__(kTreeWarps * 32) k_column_tree(int64_t n, int c, const double* in, int64_t divide_by, double* out) {
  __shared__ double leaf[kTerms][kTreeLeaves][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ch = blockIdx.y * 32 + lane;
  const int64_t first = blockIdx.x * static_cast<int64_t>(kTreeLeaves);
  const int m = static_cast<int>(min(static_cast<int64_t>(kTreeLeaves), n - first));
  for (int j = warp; j < m; j += kTreeWarps)
#pragma unroll
    for (int t = 0; t < kTerms; ++t) leaf[t][j][lane] = ch < c ? in[(t * n + first + j) * c + ch] : 0.0;
  block_pairwise_store<kTerms>(leaf, m, c, divide_by, out);
}
// The terms of row r, channel ch (element r·c + ch): load gives the floats (all of a run's loads are
// issued before its adds, in few registers), terms their double terms, the CPU's expressions.
template <class X>
struct TermX {
  using Raw = float;
  X x;
  int c;
  __device__ __forceinline__ Raw load(int64_t r, int ch) const { return x(r * c + ch); }
  __device__ __forceinline__ Terms<1> terms(Raw v, int) const { return {{static_cast<double>(v)}}; }
};
template <class X>
struct TermSqDev {
  using Raw = float;
  X x;
  int c;
  const double* mean;
  __device__ __forceinline__ Raw load(int64_t r, int ch) const { return x(r * c + ch); }
  __device__ __forceinline__ Terms<1> terms(Raw v, int ch) const {
    const double d = __dsub_rn(static_cast<double>(v), mean[ch]);
    return {{__dmul_rn(d, d)}};
  }
};
// Σdy and Σdy·x̂ of the backward, in one pass. load only loads: x̂ and dy (φ′'s branches in the
// fused backward) come in terms, after all of a run's loads were issued.
template <class D, class H>
struct TermDy {
  struct Raw {
    typename D::Raw dy;
    typename H::Raw xhat;
  };
  D dy;
  H xhat;
  int c;
  __device__ __forceinline__ Raw load(int64_t r, int ch) const {
    const int64_t i = r * c + ch;
    return {dy.raw(i), xhat.raw(i)};
  }
  __device__ __forceinline__ Terms<2> terms(Raw v, int ch) const {
    const float h = xhat.value(v.xhat, ch), d = dy.value(v.dy, h, ch);
    return {{static_cast<double>(d), __dmul_rn(static_cast<double>(d), static_cast<double>(h))}};
  }
};
// Σq and Σq² per channel of int16 sums, exact in int64 and so in any order: lane = channel of a
// 32-channel tile, warps stride over rows, a block's sums added to sums[ch] and sums[c + ch].
__global__ void __launch_bounds__(kTreeWarps * 32) k_int_moments(int64_t rows, int c, const int16_t* q, ull* sums) {
  __shared__ long long part[2][kTreeWarps][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ch = blockIdx.y * 32 + lane;
  long long s1 = 0, s2 = 0;
  if (ch < c) {
    const int64_t step = static_cast<int64_t>(gridDim.x) * kTreeWarps;
#pragma unroll 8
    for (int64_t r = blockIdx.x * static_cast<int64_t>(kTreeWarps) + warp; r < rows; r += step) {
      const int v = q[r * c + ch];
      s1 += v;
      s2 += v * v;
    }
  }
  part[0][warp][lane] = s1;
  part[1][warp][lane] = s2;
  __syncthreads();
  if (warp < 2 && ch < c) {
    long long s = 0;
    for (int w = 0; w < kTreeWarps; ++w) s += part[warp][w][lane];
    if (s) atomicAdd(sums + warp * c + ch, static_cast<ull>(s));  // two's complement: negative sums add as well
  }
}
// k_int_moments in the vector path (group_rows; blocks of kThreads): a thread sums its 8 channels
// over its rows (16-byte loads, 4 in flight), the block adds the sums of its threads of each channel
// (threads rep, rep + c/8, … share rep's channels) and adds them to sums once per block: few blocks
// (kMomentBlocks), so few atomics.
constexpr int kMomentBlocks = 132 * 4;
__global__ void __launch_bounds__(kThreads) k_int_moments8(int64_t rows, int c, const int16_t* q, ull* sums) {
  __shared__ long long part[kThreads][2 * kVec + 1];  // + 1: rows of 34 words, a half-warp's 8-byte stores in distinct banks
  long long s1[kVec] = {}, s2[kVec] = {};
  GroupRows g;
  if (group_rows(c, &g)) {
#pragma unroll 4
    for (int64_t r = g.first; r < rows; r += g.step) {
      int16_t v[kVec];
      load_vec(q + r * c + g.ch0, v);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const int x = v[j];
        s1[j] += x;
        s2[j] += x * x;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    part[threadIdx.x][j] = s1[j];
    part[threadIdx.x][kVec + j] = s2[j];
  }
  __syncthreads();
  const int groups = c / kVec, reps = min(groups, kThreads);
  const int64_t t0 = blockIdx.x * static_cast<int64_t>(kThreads);
  for (int item = threadIdx.x; item < reps * 2 * kVec; item += kThreads) {
    const int rep = item / (2 * kVec), j = item % (2 * kVec);
    long long s = 0;
    for (int u = rep; u < kThreads; u += groups) s += part[u][j];  // idle threads hold 0
    const int ch = static_cast<int>((t0 + rep) % groups) * kVec + j % kVec;
    if (s) atomicAdd(sums + (j / kVec) * c + ch, static_cast<ull>(s));  // two's complement, as k_int_moments
  }
}
// μ and σ² to float μ, σ⁻¹ and the running statistics (as CpuBackend::bn_statistics)
__device__ __forceinline__ void bn_stats_one(int ch, double m, double var, float eps, float momentum, float* run_mean,
                                             float* run_var, float* mf, float* invstd) {
  const float mean = static_cast<float>(m);
  mf[ch] = mean;
  invstd[ch] = static_cast<float>(1.0 / sqrt(__dadd_rn(var, static_cast<double>(eps))));
  run_mean[ch] = __fadd_rn(__fmul_rn(1.0f - momentum, run_mean[ch]), __fmul_rn(momentum, mean));
  run_var[ch] = __fadd_rn(__fmul_rn(1.0f - momentum, run_var[ch]), __fmul_rn(momentum, static_cast<float>(var)));
}
__global__ void k_bn_stats(int c, const double* mean, const double* var, float eps, float momentum, float* run_mean,
                           float* run_var, float* mf, float* invstd) {
  GRID_STRIDE(ch, c) bn_stats_one(static_cast<int>(ch), mean[ch], var[ch], eps, momentum, run_mean, run_var, mf, invstd);
}
__global__ void k_bn_stats_exact(int64_t rows, int c, const ull* sums, float scale, float eps, float momentum,
                                 float* run_mean, float* run_var, float* mf, float* invstd) {
  GRID_STRIDE(ch, c) {
    double m, var;
    bn_moments_from_sums(rows, static_cast<int64_t>(sums[ch]), static_cast<int64_t>(sums[c + ch]), scale, &m, &var);
    bn_stats_one(static_cast<int>(ch), m, var, eps, momentum, run_mean, run_var, mf, invstd);
  }
}
// The BN output's gradient behind φ, recomputed where the fused backward needs it: y = γ·x̂ + β as
// k_bn_apply writes it, then dq·φ'(y) as k_act_backward — the same bits as the unfused ops.
__device__ __forceinline__ float act_grad(float dq, float xhat, float gamma, float beta, const Phi& act) {
  const float y = __fadd_rn(__fmul_rn(gamma, xhat), beta);
  return __fmul_rn(dq, act.derivative(y));
}
struct ActGrad {
  const float* gamma = nullptr;
  const float* beta = nullptr;
  Phi act;
  __device__ __forceinline__ float operator()(float dq, float xhat, int ch) const { return act_grad(dq, xhat, gamma[ch], beta[ch], act); }
};
// Where a BN output goes: stored as float, or turned into φ's int8 states at once (the fused op:
// no float BN output, recomputed from x̂ when the backward needs it).
struct StoreY {
  float* y;
  __device__ __forceinline__ void operator()(int64_t i, float v) const { y[i] = v; }
  __device__ __forceinline__ void store8(int64_t i, const float (&v)[kVec]) const { store_vec(y + i, v); }
  bool aligned() const { return aligned16(y); }
};
struct StorePhi {
  Phi act;
  int8_t* q;
  __device__ __forceinline__ void operator()(int64_t i, float v) const { q[i] = act.forward(v); }
  __device__ __forceinline__ void store8(int64_t i, const float (&v)[kVec]) const {
    int8_t s[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) s[j] = act.forward(v[j]);
    store_vec(q + i, s);
  }
  bool aligned() const { return aligned16(q); }
};
// y = γ·x̂ + β with x̂ = (x − μ)·σ⁻¹, written unless xhat is null (an int16 input: the backward
// recomputes it)
template <class X, class Out>
__global__ void k_bn_apply(int64_t n, int c, X x, const float* mf, const float* is, const float* gamma,
                           const float* beta, float* xhat, Out out) {
  CHANNEL_STRIDE(i, n, ch, c) {
    const float h = __fmul_rn(__fsub_rn(x(i), mf[ch]), is[ch]);
    if (xhat) xhat[i] = h;
    out(i, __fadd_rn(__fmul_rn(gamma[ch], h), beta[ch]));
  }
}
// The vector path's walk over a thread's rows: kRowsInFlight rows at a time, every load issued
// before the work on them; f(i, v) gets the index of the row's first channel and its kVec values.
template <class X, class F>
__device__ __forceinline__ void walk_rows8(const GroupRows& g, int64_t rows, int c, const X& x, F f) {
  for (int64_t r = g.first; r < rows; r += kRowsInFlight * g.step) {
    float v[kRowsInFlight][kVec];
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u)
      if (r + u * g.step < rows) x.load8((r + u * g.step) * c + g.ch0, v[u]);
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u)
      if (r + u * g.step < rows) f((r + u * g.step) * c + g.ch0, v[u]);
  }
}
// k_bn_apply in the vector path (group_rows), the same expressions
template <class X, class Out>
__global__ void k_bn_apply8(int64_t rows, int c, X x, const float* mf, const float* is, const float* gamma,
                            const float* beta, float* xhat, Out out) {
  GroupRows g;
  if (!group_rows(c, &g)) return;
  float m[kVec], s[kVec], ga[kVec], be[kVec];
  load_params(mf, g.ch0, m);
  load_params(is, g.ch0, s);
  load_params(gamma, g.ch0, ga);
  load_params(beta, g.ch0, be);
  walk_rows8(g, rows, c, x, [&](int64_t i, const float (&v)[kVec]) {
    float h[kVec], y[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      h[j] = __fmul_rn(__fsub_rn(v[j], m[j]), s[j]);
      y[j] = __fadd_rn(__fmul_rn(ga[j], h[j]), be[j]);
    }
    if (xhat) store_vec(xhat + i, h);
    out.store8(i, y);
  });
}
// The BN output's gradient dy: as stored, or recomputed from φ's gradient and x̂ (the fused backward)
// In the vector path, group(ch0).load8 loads the stored floats (dy, or φ's gradient dq) and
// group(ch0).dy8 turns them into dy with x̂ of the same elements from the caller (read once for dy
// and dx): separate, so that all of a thread's loads are issued before φ′'s branches.
struct DyStored {
  const float* p;
  __device__ __forceinline__ float operator()(int64_t i, int) const { return p[i]; }
  using Raw = float;  // raw and value as the x̂ readers', value given x̂
  __device__ __forceinline__ Raw raw(int64_t i) const { return p[i]; }
  __device__ __forceinline__ float value(Raw v, float, int) const { return v; }
  struct Group {
    const float* p;
    __device__ __forceinline__ void load8(int64_t i, float (&dy)[kVec]) const { load_vec(p + i, dy); }
    __device__ __forceinline__ void dy8(const float (&)[kVec], float (&)[kVec]) const {}
  };
  __device__ __forceinline__ Group group(int) const { return {p}; }
  bool aligned() const { return aligned16(p); }
};
// dq: φ's output gradient, float or (handed over by the product that reads φ's states) bf16
template <class H, class Q = float>
struct DyFromPhi {
  const Q* dq;
  H xhat;
  ActGrad ag;
  __device__ __forceinline__ float operator()(int64_t i, int ch) const { return ag(grad_value(dq[i]), xhat(i, ch), ch); }
  using Raw = float;
  __device__ __forceinline__ Raw raw(int64_t i) const { return grad_value(dq[i]); }
  __device__ __forceinline__ float value(Raw d, float xh, int ch) const { return ag(d, xh, ch); }
  struct Group {
    const Q* dq;
    float gamma[kVec], beta[kVec];
    Phi act;
    __device__ __forceinline__ void load8(int64_t i, float (&d)[kVec]) const { load_vec(dq + i, d); }
    __device__ __forceinline__ void dy8(const float (&h)[kVec], float (&d)[kVec]) const {
#pragma unroll
      for (int j = 0; j < kVec; ++j) d[j] = act_grad(d[j], h[j], gamma[j], beta[j], act);
    }
  };
  __device__ __forceinline__ Group group(int ch0) const {
    Group g{dq, {}, {}, ag.act};
    load_params(ag.gamma, ch0, g.gamma);
    load_params(ag.beta, ch0, g.beta);
    return g;
  }
  bool aligned() const { return aligned16(dq) && xhat.aligned(); }
};
// evaluation: the running statistics
template <class X, class Out>
__global__ void k_bn_infer(int64_t n, int c, X x, const float* gamma, const float* beta, const float* rm,
                           const float* rv, float eps, Out out) {
  CHANNEL_STRIDE(i, n, ch, c) {
    const float sc = gamma[ch] / sqrtf(__fadd_rn(rv[ch], eps));
    const float sh = __fsub_rn(beta[ch], __fmul_rn(rm[ch], sc));
    out(i, __fadd_rn(__fmul_rn(x(i), sc), sh));
  }
}
template <class X, class Out>
__global__ void k_bn_infer8(int64_t rows, int c, X x, const float* gamma, const float* beta, const float* rm,
                            const float* rv, float eps, Out out) {
  GroupRows g;
  if (!group_rows(c, &g)) return;
  float sc[kVec], sh[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int ch = g.ch0 + j;
    sc[j] = gamma[ch] / sqrtf(__fadd_rn(rv[ch], eps));
    sh[j] = __fsub_rn(beta[ch], __fmul_rn(rm[ch], sc[j]));
  }
  walk_rows8(g, rows, c, x, [&](int64_t i, const float (&v)[kVec]) {
    float y[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) y[j] = __fadd_rn(__fmul_rn(v[j], sc[j]), sh[j]);
    out.store8(i, y);
  });
}
__global__ void k_bn_backward_coeffs(int64_t rows, int c, const double* db, const double* dg, const float* gamma,
                                     const float* invstd, float* dgamma, float* dbeta, float* k) {
  GRID_STRIDE(ch, c) {
    dgamma[ch] = static_cast<float>(dg[ch]);
    dbeta[ch] = static_cast<float>(db[ch]);
    k[ch] = __fmul_rn(gamma[ch], invstd[ch]);
    k[c + ch] = static_cast<float>(db[ch] / static_cast<double>(rows));
    k[2 * c + ch] = static_cast<float>(dg[ch] / static_cast<double>(rows));
  }
}
template <class D, class H, class G>
__global__ void k_bn_backward_apply(int64_t n, int c, D dy, H xhat, const float* k, G dx) {
  CHANNEL_STRIDE(i, n, ch, c) {
    const int h = static_cast<int>(ch);
    dx.put(i, __fmul_rn(k[ch], __fsub_rn(__fsub_rn(dy(i, h), k[c + ch]), __fmul_rn(xhat(i, h), k[2 * c + ch]))));
  }
}
// k_bn_backward_apply in the vector path: x̂ read (or recomputed) once for dy and dx. dx may be dq's
// buffer: a thread reads its 8 elements before it writes them.
template <class D, class H, class G>
__global__ void k_bn_backward_apply8(int64_t rows, int c, D dy, H xhat, const float* k, G dx) {
  GroupRows g;
  if (!group_rows(c, &g)) return;
  float k0[kVec], k1[kVec], k2[kVec];
  load_params(k, g.ch0, k0);
  load_params(k + c, g.ch0, k1);
  load_params(k + 2 * c, g.ch0, k2);
  const auto hg = xhat.group(g.ch0);
  const auto dg = dy.group(g.ch0);
  for (int64_t r = g.first; r < rows; r += kRowsInFlight * g.step) {
    float h[kRowsInFlight][kVec], d[kRowsInFlight][kVec];
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u)
      if (r + u * g.step < rows) {
        const int64_t i = (r + u * g.step) * c + g.ch0;
        hg.load8(i, h[u]);
        dg.load8(i, d[u]);
      }
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u)
      if (r + u * g.step < rows) {
        dg.dy8(h[u], d[u]);
        float o[kVec];
#pragma unroll
        for (int j = 0; j < kVec; ++j) o[j] = __fmul_rn(k0[j], __fsub_rn(__fsub_rn(d[u][j], k1[j]), __fmul_rn(h[u][j], k2[j])));
        const int64_t at = (r + u * g.step) * c + g.ch0;
        dx.put4(at, o[0], o[1], o[2], o[3]);
        dx.put4(at + 4, o[4], o[5], o[6], o[7]);
      }
  }
}

// ---------------------------------------------------------------- loss (one thread per row, as the CPU)
__global__ void k_loss(int64_t n, int c, const float* y, const int32_t* labels, LossKind kind, float inv, float* dy,
                       float* row_loss, int32_t* rank) {
  GRID_STRIDE(r, n) loss_row(c, y + r * c, labels[r], kind, inv, dy + r * c, row_loss + r, rank + r);
}

// ---------------------------------------------------------------- product operands (loaders)
template <class Acc>
__device__ __forceinline__ Acc value_of(const void* p, bool i8, float scale, int64_t i) {
  if (i8) {
    const int8_t q = static_cast<const int8_t*>(p)[i];
    if constexpr (std::is_same<Acc, int32_t>::value) return q;
    else return __fmul_rn(static_cast<float>(q), scale);
  }
  if constexpr (std::is_same<Acc, int32_t>::value) return 0;  // not used: integer products take int8 operands
  else return static_cast<const float*>(p)[i];
}

// A(m = output position, k = (ky, kx, c)) = im2col(x)
struct Im2colA {
  static constexpr bool kMajorK = true;
  ConvGeom g;
  const void* x;
  bool i8;
  float scale;
  template <class Acc>
  __device__ Acc get(int64_t m, int64_t k) const {
    const int per = g.oh * g.ow;
    const int64_t n = m / per;
    const int p = static_cast<int>(m % per), oy = p / g.ow, ox = p % g.ow;
    const int kwc = g.kw * g.c;
    const int ky = static_cast<int>(k / kwc), rem = static_cast<int>(k % kwc), kx = rem / g.c, ch = rem % g.c;
    const int iy = oy * g.sh - g.ph + ky, ix = ox * g.sw - g.pw + kx;
    if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) return Acc(0);
    return value_of<Acc>(x, i8, scale, ((n * g.h + iy) * g.w + ix) * g.c + ch);
  }
};
// B(k, n = o) = w[o][k]
struct WeightKN {
  static constexpr bool kMajorK = true;
  const void* w;
  bool i8;
  float scale;
  int64_t K;
  template <class Acc>
  __device__ Acc get(int64_t k, int64_t n) const { return value_of<Acc>(w, i8, scale, n * K + k); }
};
// backward data: A(m = input pixel, k = (ky, kx, o)) = dy at the output that pixel feeds through (ky, kx)
struct DyGatherA {
  static constexpr bool kMajorK = true;
  ConvGeom g;
  const float* dy;
  template <class Acc>
  __device__ Acc get(int64_t m, int64_t k) const {
    const int64_t hw = static_cast<int64_t>(g.h) * g.w;
    const int64_t n = m / hw;
    const int p = static_cast<int>(m % hw), iy = p / g.w, ix = p % g.w;
    const int kwo = g.kw * g.oc;
    const int ky = static_cast<int>(k / kwo), rem = static_cast<int>(k % kwo), kx = rem / g.oc, o = rem % g.oc;
    const int ty = iy + g.ph - ky, tx = ix + g.pw - kx;
    if (ty < 0 || tx < 0 || ty % g.sh || tx % g.sw) return Acc(0);
    const int oy = ty / g.sh, ox = tx / g.sw;
    if (oy >= g.oh || ox >= g.ow) return Acc(0);
    return dy[((n * g.oh + oy) * g.ow + ox) * g.oc + o];
  }
};
// backward data: B(k = (ky, kx, o), n = c) = w[o][ky][kx][c]
struct WeightBD {
  static constexpr bool kMajorK = false;
  ConvGeom g;
  const void* w;
  bool i8;
  float scale;
  template <class Acc>
  __device__ Acc get(int64_t k, int64_t n) const {
    const int kk = static_cast<int>(k / g.oc), o = static_cast<int>(k % g.oc);
    return value_of<Acc>(w, i8, scale, (static_cast<int64_t>(o) * g.kh * g.kw + kk) * g.c + n);
  }
};
// backward filter: A(m = o, k = r) = dy[r][o]
struct DyT {
  static constexpr bool kMajorK = false;
  const float* dy;
  int oc;
  template <class Acc>
  __device__ Acc get(int64_t m, int64_t k) const { return dy[k * oc + m]; }
};
// backward filter: B(k = r, n = column of im2col) = im2col(x)[r][n]
struct Im2colB {
  static constexpr bool kMajorK = false;
  Im2colA a;
  template <class Acc>
  __device__ Acc get(int64_t k, int64_t n) const { return a.template get<Acc>(k, n); }
};

struct StoreF {
  float* y;
  int ld;
  float scale;
  template <class Acc>
  __device__ void operator()(int, int m, int n, Acc v) const {
    y[static_cast<int64_t>(m) * ld + n] = __fmul_rn(static_cast<float>(v), scale);
  }
};
// The first layer on raw pixels: the int8 product ran on px − 128, so its sum v = Σ (px − 128)·w
// over the taps inside the image (padding is 0 in x = px·s + o, not in px); border holds Σ w over
// those taps. Σ px·w = v + 128·border exactly, and y = (s·Σ px·w + o·Σ w)·w.scale: the exact
// product rounded a few times, where the float product rounds once per tap.
struct StorePixels {
  float* y;
  int ld, per;  // per: output positions per image
  const int32_t* border;
  float s, o, wscale;
  template <class Acc>
  __device__ void operator()(int, int m, int n, Acc v) const {
    const int32_t b = border[(m % per) * ld + n];
    const float u = static_cast<float>(static_cast<int32_t>(v) + 128 * b);
    y[static_cast<int64_t>(m) * ld + n] = __fmul_rn(__fadd_rn(__fmul_rn(s, u), __fmul_rn(o, static_cast<float>(b))), wscale);
  }
};
// Rows of c values (pixels px − 128, or weights) copied to rows of cp ≥ c, zero-filled: the
// pipelined int8 kernel takes channels in 16-byte chunks (an RGB image has 3).
__global__ void k_pad_rows(int64_t rows, int c, int cp, const void* src, bool pixels, int8_t* dst) {
  GRID_STRIDE(i, rows * cp) {
    const int64_t r = i / cp;
    const int j = static_cast<int>(i % cp);
    int8_t v = 0;
    if (j < c) v = pixels ? static_cast<int8_t>(static_cast<int>(static_cast<const uint8_t*>(src)[r * c + j]) - 128)
                          : static_cast<const int8_t*>(src)[r * c + j];
    dst[i] = v;
  }
}
// border[(oy·ow + ox)·oc + o] = Σ over the taps of output (oy, ox) inside the image, Σ over channels,
// of w[o][ky][kx][c]
__global__ void k_border_sums(ConvGeom g, const int8_t* w, int32_t* border) {
  const int64_t total = static_cast<int64_t>(g.oh) * g.ow * g.oc;
  GRID_STRIDE(i, total) {
    const int o = static_cast<int>(i % g.oc), p = static_cast<int>(i / g.oc), oy = p / g.ow, ox = p % g.ow;
    int32_t s = 0;
    for_taps_inside(g, oy, ox, [&](int ky, int kx, int, int) {
      const int8_t* wt = w + ((static_cast<int64_t>(o) * g.kh + ky) * g.kw + kx) * g.c;
      for (int c = 0; c < g.c; ++c) s += wt[c];
    });
    border[i] = s;
  }
}
// ---- the float stem on int8 tensor cores (stem.h; conv_forward_pixels with float weights)
// Per output channel o: the exponent e[o] of its largest |w|, and the three digit planes of the
// fixed-point weights in the packed layout W_i[o][ky][j] (j = kx·c + ch, zero for j ≥ kw·c), each
// plane oc·kh·cp bytes. One thread per (o, ky, j) after one thread per o found e[o].
__global__ void k_stem_exponents(ConvGeom g, const float* w, int* ex) {
  GRID_STRIDE(o, static_cast<int64_t>(g.oc)) {
    const int64_t K = static_cast<int64_t>(g.kh) * g.kw * g.c;  // ConvGeom::k() is host-only
    const float* wo = w + o * K;
    float m = 0.0f;
    bool finite = true;
    for (int64_t k = 0; k < K; ++k) {
      const float a = fabsf(wo[k]);
      finite = finite && a <= 3.40282347e38f;  // NaN fails the comparison too
      m = fmaxf(m, a);
    }
    ex[o] = finite ? stem::exponent(m) : stem::kNonFinite;
  }
}
__global__ void k_stem_digits(ConvGeom g, int cp, const float* w, const int* ex, int8_t* planes) {
  const int64_t per_plane = static_cast<int64_t>(g.oc) * g.kh * cp;
  GRID_STRIDE(i, per_plane) {
    const int j = static_cast<int>(i % cp);
    const int64_t oky = i / cp;  // o·kh + ky
    const int o = static_cast<int>(oky / g.kh);
    int8_t d[3] = {0, 0, 0};
    if (j < g.kw * g.c) stem::split(stem::fixed(w[oky * g.kw * g.c + j], ex[o]), d);  // [o][ky][kx][ch] = [o][ky][j]
    planes[i] = d[0];
    planes[per_plane + i] = d[1];
    planes[2 * per_plane + i] = d[2];
  }
}
// border[(oy·ow + ox)·oc + o] = Σ N over output (oy, ox)'s taps inside the image (exact, int64)
__global__ void k_stem_border(ConvGeom g, const float* w, const int* ex, int64_t* border) {
  GRID_STRIDE(i, static_cast<int64_t>(g.oh) * g.ow * g.oc) {
    const int o = static_cast<int>(i % g.oc), p = static_cast<int>(i / g.oc);
    border[i] = stem::border_sum(g, w, ex[o], o, p / g.ow, p % g.ow);
  }
}
// P for images [n0, n0 + nb): one thread per 16-byte chunk of a packed row (cp % 16 == 0), written
// as one uint4; the reads are gathered bytes (each pixel feeds ≈ kw/sw packed rows, from L1/L2)
__global__ void k_stem_pack(ConvGeom g, int cp, const uint8_t* px, int n0, int nb, int8_t* out) {
  const int chunks = cp / 16;
  GRID_STRIDE(i, static_cast<int64_t>(nb) * g.h * g.ow * chunks) {
    const int q = static_cast<int>(i % chunks);
    const int64_t r = i / chunks;  // (n − n0)·h·ow + iy·ow + ox
    const int ox = static_cast<int>(r % g.ow), iy = static_cast<int>((r / g.ow) % g.h);
    const int64_t n = n0 + r / (static_cast<int64_t>(g.ow) * g.h);
    alignas(16) int8_t v[16];
#pragma unroll
    for (int b = 0; b < 16; ++b) v[b] = stem::pack_value(px, g, n, iy, ox, 16 * q + b);
    reinterpret_cast<uint4*>(out)[i] = *reinterpret_cast<const uint4*>(v);
  }
}
// The three products write into y in turn (same stream, so in order), its 4-byte slots holding
// int32 until the last: digit 2's sums v2, then low = v1·256 + v2 (exact, stem::combine_low), then
// the float y from v0, low and the border sum (stem::combine). No scratch of the output's size.
struct StoreStemLow {
  int32_t* y;
  int ld;
  template <class Acc>
  __device__ void operator()(int, int m, int n, Acc v) const { y[static_cast<int64_t>(m) * ld + n] = static_cast<int32_t>(v); }
};
struct StoreStemMid {
  int32_t* y;
  int ld;
  template <class Acc>
  __device__ void operator()(int, int m, int n, Acc v) const {
    int32_t* p = y + static_cast<int64_t>(m) * ld + n;
    *p = stem::combine_low(static_cast<int32_t>(v), *p);
  }
};
struct StoreStemTop {
  float* y;
  int ld, per;  // per: output positions per image (a chunk starts at an image)
  const int64_t* border;
  const int* ex;
  float s, o2;
  template <class Acc>
  __device__ void operator()(int, int m, int n, Acc v) const {
    float* p = y + static_cast<int64_t>(m) * ld + n;
    const int32_t low = *reinterpret_cast<const int32_t*>(p);
    *p = stem::combine(static_cast<int32_t>(v), low, border[(m % per) * ld + n], s, o2, ex[n]);
  }
};
// TERNLAB_STEM=grouped: one product over interleaved digit rows (stem::grouped_row), the three sums
// of each output combined in the thread that holds them (s8_conv_pipelined's whole-tile epilogue)
__global__ void k_stem_grouped_digits(ConvGeom g, int cp, const float* w, const int* ex, int8_t* rows) {
  const int64_t kp = static_cast<int64_t>(g.kh) * cp;
  GRID_STRIDE(i, stem::grouped_columns(g.oc) * kp) {
    const int row = static_cast<int>(i / kp), k = static_cast<int>(i % kp);
    int o, d;
    stem::grouped_source(row, &o, &d);
    const int ky = k / cp, j = k % cp;
    int8_t v = 0;
    if (d < 3 && o < g.oc && j < g.kw * g.c) {
      int8_t dg[3];
      stem::split(stem::fixed(w[(static_cast<int64_t>(o) * g.kh + ky) * g.kw * g.c + j], ex[o]), dg);
      v = dg[d];
    }
    rows[i] = v;
  }
}
struct StoreStemGrouped {
  static constexpr bool kWholeTile = true;
  float* y;
  int oc, per;
  const int64_t* border;
  const int* ex;
  float s, o2;
  // acc[mt][nt][c]: row m0 + 16·mt + g (+8 for c ≥ 2), column n0 + 8·nt + 2t + (c & 1): n8 tile nt
  // is digit nt of channel stem::grouped_channel(n0, t, c & 1) (tile 3 unused)
  template <class Acc>
  __device__ void tile(const Acc (&acc)[4][4][4], int m0, int n0, int g, int t, int M, int, int) const {
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int m = m0 + mt * 16 + g + (c >= 2 ? 8 : 0);
        const int o = stem::grouped_channel(n0, t, c & 1);
        if (m >= M || o >= oc) continue;
        const int32_t low = stem::combine_low(static_cast<int32_t>(acc[mt][1][c]), static_cast<int32_t>(acc[mt][2][c]));
        y[static_cast<int64_t>(m) * oc + o] =
            stem::combine(static_cast<int32_t>(acc[mt][0][c]), low, border[static_cast<int64_t>(m % per) * oc + o], s, o2, ex[o]);
      }
  }
};
struct StoreI16 {  // exact integer sums (the caller guarantees they fit)
  int16_t* y;
  int ld;
  template <class Acc>
  __device__ void operator()(int, int m, int n, Acc v) const { y[static_cast<int64_t>(m) * ld + n] = static_cast<int16_t>(v); }
};
struct StoreSplit {
  float* ws;
  int64_t mn;
  int ld;
  __device__ void operator()(int z, int m, int n, float v) const { ws[z * mn + static_cast<int64_t>(m) * ld + n] = v; }
};
__global__ void k_split_combine(int64_t mn, int z, const float* ws, float* out) {
  GRID_STRIDE(i, mn) {
    float s = 0.0f;
    for (int k = 0; k < z; ++k) s = __fadd_rn(s, ws[k * mn + i]);
    out[i] = s;
  }
}

// split-K of the int8 forward: partial sums per split, then the store of their exact total
struct StoreSplitI32 {
  int32_t* ws;
  int64_t mn;
  int ld;
  __device__ void operator()(int z, int m, int n, int32_t v) const { ws[z * mn + static_cast<int64_t>(m) * ld + n] = v; }
};
template <class Store>
__global__ void k_s8_split_combine(int M, int N, int splits, const int32_t* ws, Store store) {
  const int64_t mn = static_cast<int64_t>(M) * N;
  GRID_STRIDE(i, mn) {
    int32_t s = 0;
    for (int z = 0; z < splits; ++z) s += ws[z * mn + i];
    store(0, static_cast<int>(i / N), static_cast<int>(i % N), s);
  }
}

// ---- tensor-core loaders: 16-byte chunks of k
__device__ __forceinline__ uint32_t pack_s8(const int8_t* v) {
  return static_cast<uint32_t>(static_cast<uint8_t>(v[0])) | (static_cast<uint32_t>(static_cast<uint8_t>(v[1])) << 8) |
         (static_cast<uint32_t>(static_cast<uint8_t>(v[2])) << 16) | (static_cast<uint32_t>(static_cast<uint8_t>(v[3])) << 24);
}
struct S8Im2col {  // A of the int8 forward
  ConvGeom g;
  const int8_t* x;
  struct Row { int64_t n; int iy0, ix0; bool ok; };
  __device__ Row row(int m, int M) const {
    Row r;
    r.ok = m < M;
    const int per = g.oh * g.ow;
    const int mm = r.ok ? m : 0;
    r.n = mm / per;
    const int p = mm % per;
    r.iy0 = (p / g.ow) * g.sh - g.ph;
    r.ix0 = (p % g.ow) * g.sw - g.pw;
    return r;
  }
  __device__ int8_t at(const Row& r, int64_t k) const {
    const int kwc = g.kw * g.c;
    const int ky = static_cast<int>(k / kwc), rem = static_cast<int>(k % kwc), kx = rem / g.c, ch = rem % g.c;
    const int iy = r.iy0 + ky, ix = r.ix0 + kx;
    if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) return 0;
    return x[((r.n * g.h + iy) * g.w + ix) * g.c + ch];
  }
  struct KCtx { int64_t k0; int ky, kx, ch; bool in; };
  __device__ KCtx kctx(int64_t k0) const {
    const int64_t K = static_cast<int64_t>(g.kh) * g.kw * g.c;
    const int kwc = g.kw * g.c;
    const int ky = static_cast<int>(k0 / kwc), rem = static_cast<int>(k0 % kwc);
    return KCtx{k0, ky, rem / g.c, rem % g.c, k0 < K};
  }
  __device__ uint4 chunk(const Row& r, const KCtx& kc) const {
    const int64_t K = static_cast<int64_t>(g.kh) * g.kw * g.c;
    const int64_t k0 = kc.k0;
    if (!r.ok || !kc.in) return make_uint4(0, 0, 0, 0);
    if ((g.c & 15) == 0) {
      const int ky = kc.ky, kx = kc.kx, ch = kc.ch;
      const int iy = r.iy0 + ky, ix = r.ix0 + kx;
      if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) return make_uint4(0, 0, 0, 0);
      return __ldg(reinterpret_cast<const uint4*>(x + ((r.n * g.h + iy) * g.w + ix) * g.c + ch));
    }
    int8_t v[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) v[j] = k0 + j < K ? at(r, k0 + j) : 0;
    return make_uint4(pack_s8(v), pack_s8(v + 4), pack_s8(v + 8), pack_s8(v + 12));
  }
};
struct S8Rows {  // B of the int8 forward: w[o][k], k contiguous
  const int8_t* w;
  int64_t K;
  struct Row { const int8_t* p; bool ok; };
  __device__ Row row(int n, int N) const { return Row{w + static_cast<int64_t>(n < N ? n : 0) * K, n < N}; }
  using KCtx = int64_t;
  __device__ KCtx kctx(int64_t k0) const { return k0; }
  __device__ uint4 chunk(const Row& r, int64_t k0) const {
    if (!r.ok || k0 >= K) return make_uint4(0, 0, 0, 0);
    if ((K & 15) == 0) return __ldg(reinterpret_cast<const uint4*>(r.p + k0));
    int8_t v[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) v[j] = k0 + j < K ? r.p[k0 + j] : 0;
    return make_uint4(pack_s8(v), pack_s8(v + 4), pack_s8(v + 8), pack_s8(v + 12));
  }
};
struct Bf16DyGather {  // A of the bf16 backward data
  DyGatherA a;
  struct Row { int64_t m; bool ok; int64_t n; int iy, ix; };
  __device__ Row row(int m, int M) const {
    Row r;
    r.ok = m < M;
    r.m = r.ok ? m : 0;
    const int64_t hw = static_cast<int64_t>(a.g.h) * a.g.w;
    r.n = r.m / hw;
    const int p = static_cast<int>(r.m % hw);
    r.iy = p / a.g.w;
    r.ix = p % a.g.w;
    return r;
  }
  struct KCtx { int64_t k0; int ky, kx, o; bool in; };
  __device__ KCtx kctx(int64_t k0) const {
    const ConvGeom& g = a.g;
    const int64_t K = static_cast<int64_t>(g.kh) * g.kw * g.oc;
    const int kwo = g.kw * g.oc;
    const int ky = static_cast<int>(k0 / kwo), rem = static_cast<int>(k0 % kwo);
    return KCtx{k0, ky, rem / g.oc, rem % g.oc, k0 < K};
  }
  __device__ uint4 chunk(const Row& r, const KCtx& kc) const {
    const ConvGeom& g = a.g;
    const int64_t K = static_cast<int64_t>(g.kh) * g.kw * g.oc;
    const int64_t k0 = kc.k0;
    if (!r.ok || !kc.in) return make_uint4(0, 0, 0, 0);
    if ((g.oc & 7) == 0) {
      const int ky = kc.ky, kx = kc.kx, o = kc.o;
      const int ty = r.iy + g.ph - ky, tx = r.ix + g.pw - kx;
      int oy = ty, ox = tx;
      if (ty < 0 || tx < 0) return make_uint4(0, 0, 0, 0);
      if (g.sh != 1 || g.sw != 1) {  // stride 1 (the common case) needs no division
        if (ty % g.sh || tx % g.sw) return make_uint4(0, 0, 0, 0);
        oy = ty / g.sh;
        ox = tx / g.sw;
      }
      if (oy >= g.oh || ox >= g.ow) return make_uint4(0, 0, 0, 0);
      const float4* p = reinterpret_cast<const float4*>(a.dy + ((r.n * g.oh + oy) * g.ow + ox) * g.oc + o);
      const float4 u = __ldg(p), w = __ldg(p + 1);
      return make_uint4(pack_bf16(u.x, u.y), pack_bf16(u.z, u.w), pack_bf16(w.x, w.y), pack_bf16(w.z, w.w));
    }
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = k0 + j < K ? a.get<float>(r.m, k0 + j) : 0.0f;
    return make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
  }
};
struct Bf16Rows {  // B of the bf16 backward data: transposed weights wt[c][(ky, kx, o)]
  const __nv_bfloat16* w;
  int64_t K;
  struct Row { const __nv_bfloat16* p; bool ok; };
  __device__ Row row(int n, int N) const { return Row{w + static_cast<int64_t>(n < N ? n : 0) * K, n < N}; }
  using KCtx = int64_t;
  __device__ KCtx kctx(int64_t k0) const { return k0; }
  __device__ uint4 chunk(const Row& r, int64_t k0) const {
    if (!r.ok || k0 >= K) return make_uint4(0, 0, 0, 0);
    if ((K & 7) == 0) return __ldg(reinterpret_cast<const uint4*>(r.p + k0));
    uint16_t v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = k0 + j < K ? reinterpret_cast<const uint16_t*>(r.p)[k0 + j] : 0;
    return make_uint4(v[0] | (uint32_t(v[1]) << 16), v[2] | (uint32_t(v[3]) << 16), v[4] | (uint32_t(v[5]) << 16),
                      v[6] | (uint32_t(v[7]) << 16));
  }
};
// wt[c][(ky·kw + kx)·oc + o] = bf16(w[o][ky][kx][c]·scale): exact for ternary and multi-level states.
__global__ void k_weights_bd(ConvGeom g, const void* w, bool i8, float scale, __nv_bfloat16* wt) {
  const int64_t K2 = static_cast<int64_t>(g.kh) * g.kw * g.oc, total = K2 * g.c;
  GRID_STRIDE(i, total) {
    const int64_t c = i / K2, k = i % K2;
    const int64_t kk = k / g.oc, o = k % g.oc;
    const float v = value_of<float>(w, i8, scale, (o * g.kh * g.kw + kk) * g.c + c);
    wt[i] = __float2bfloat16_rn(v);
  }
}
struct TnDy {  // A of the bf16 filter gradient: dy[r][o], 8 o's
  const float* dy;
  int oc;
  __device__ uint4 chunk(int64_t r, int m0, int M) const {
    const float* p = dy + r * oc + m0;
    if ((oc & 7) == 0 && m0 + 8 <= M) {
      const float4 u = __ldg(reinterpret_cast<const float4*>(p)), w = __ldg(reinterpret_cast<const float4*>(p) + 1);
      return make_uint4(pack_bf16(u.x, u.y), pack_bf16(u.z, u.w), pack_bf16(w.x, w.y), pack_bf16(w.z, w.w));
    }
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = m0 + j < M ? p[j] : 0.0f;
    return make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
  }
};
struct TnIm2col {  // B of the bf16 filter gradient: im2col(x)[r][8 columns]
  Im2colA a;
  struct Col { int ky, kx, ch; };
  __device__ Col col(int n0, int N) const {
    const int kwc = a.g.kw * a.g.c;
    const int nn = n0 < N ? n0 : 0;
    return Col{nn / kwc, (nn % kwc) / a.g.c, (nn % kwc) % a.g.c};
  }
  __device__ uint4 chunk(const Col& cc, int64_t r, int n0, int N) const {
    const ConvGeom& g = a.g;
    if ((g.c & 7) == 0 && n0 + 8 <= N) {
      const int per = g.oh * g.ow;
      const int64_t n = r / per;
      const int p = static_cast<int>(r % per);
      const int iy = (p / g.ow) * g.sh - g.ph + cc.ky, ix = (p % g.ow) * g.sw - g.pw + cc.kx;
      if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) return make_uint4(0, 0, 0, 0);
      const int64_t off = ((n * g.h + iy) * g.w + ix) * g.c + cc.ch;
      float v[8];
      if (a.i8) {
        const uint2 q = __ldg(reinterpret_cast<const uint2*>(static_cast<const int8_t*>(a.x) + off));
        const int8_t* b = reinterpret_cast<const int8_t*>(&q);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = __fmul_rn(static_cast<float>(b[j]), a.scale);
      } else {
        const float4* f = reinterpret_cast<const float4*>(static_cast<const float*>(a.x) + off);
        const float4 u = __ldg(f), w = __ldg(f + 1);
        v[0] = u.x; v[1] = u.y; v[2] = u.z; v[3] = u.w; v[4] = w.x; v[5] = w.y; v[6] = w.z; v[7] = w.w;
      }
      return make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
    }
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = n0 + j < N ? a.get<float>(r, n0 + j) : 0.0f;
    return make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
  }
};

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A reduction of length R split into chunks of a multiple of `align`, aiming at `target` blocks in
// all: a function of the shape only, so the float result never depends on the card.
int64_t split_chunk(int64_t R, int64_t tiles, int64_t align, int64_t min_chunk) {
  const int64_t target = 1024;
  const int64_t z = std::max<int64_t>(1, std::min<int64_t>(cdiv(target, tiles), cdiv(R, min_chunk)));
  return cdiv(cdiv(R, z), align) * align;
}

Status cuda_status(const char* what, cudaError_t e) {
  return Status(Code::Cuda, std::string("cuda: ") + what + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
#define CU(call)                                              \
  do {                                                        \
    cudaError_t e_ = (call);                                  \
    if (e_ != cudaSuccess) return ::tl::cuda::cuda_status(#call, e_);     \
  } while (0)
#define LAUNCHED(op)                                          \
  do {                                                        \
    cudaError_t e_ = cudaGetLastError();                      \
    if (e_ != cudaSuccess) return ::tl::cuda::cuda_status(op, e_);        \
  } while (0)

class CudaBackend;
// TERNLAB_CUDA_PROFILE=1: a per-op table of GPU time, shown by describe() (so in a model's summary)
// and on stderr when the backend goes. Each op's time comes from a pair of events recorded on the
// stream around it (no synchronisation, so the step runs much as it would unprofiled; the sum is the
// GPU's busy time plus any gaps inside an op's span; session 6's version synchronised every op).
// Nested scopes ("of which ...") are pairs inside another pair. Names are string literals. Pending pairs are read back when the text is asked for, or every 4096.
struct ProfTable {
  bool on = false;
  struct Pending {
    const char* name;
    cudaEvent_t a, b;
  };
  mutable std::vector<std::pair<std::string, std::pair<double, long>>> rows;
  mutable std::vector<Pending> pending;
  mutable std::vector<cudaEvent_t> pool;
  ~ProfTable() {
    flush();
    for (cudaEvent_t e : pool) cudaEventDestroy(e);
  }
  cudaEvent_t record(cudaStream_t s) const {
    cudaEvent_t e = nullptr;
    if (pool.empty()) cudaEventCreate(&e);
    else e = pool.back(), pool.pop_back();
    cudaEventRecord(e, s);
    return e;
  }
  void add(const char* name, double ms) const {
    for (auto& r : rows)
      if (r.first == name) { r.second.first += ms; r.second.second++; return; }
    rows.push_back({name, {ms, 1}});
  }
  void push(const char* name, cudaEvent_t a, cudaEvent_t b) const {
    pending.push_back({name, a, b});
    if (pending.size() >= 4096) flush();
  }
  void flush() const {
    if (pending.empty()) return;
    cudaEventSynchronize(pending.back().b);
    for (const Pending& p : pending) {
      float ms = 0;
      cudaEventSynchronize(p.b);
      cudaEventElapsedTime(&ms, p.a, p.b);
      add(p.name, ms);
      pool.push_back(p.a);
      pool.push_back(p.b);
    }
    pending.clear();
  }
  std::string text() const {
    flush();
    std::string t;
    char buf[160];
    for (auto& r : rows) {
      std::snprintf(buf, sizeof buf, "%s%s %.1f ms/%ld", t.empty() ? "" : "; ", r.first.c_str(), r.second.first, r.second.second);
      t += buf;
    }
    return t;
  }
};
struct Prof {
  const ProfTable* table;
  cudaStream_t stream;
  const char* name;
  cudaEvent_t a = nullptr;
  Prof(const ProfTable* t, cudaStream_t s, const char* n) : table(t), stream(s), name(n) {
    if (table->on) a = table->record(stream);
  }
  ~Prof() {
    if (table->on) table->push(name, a, table->record(stream));
  }
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, cudaStream_t stream, const cudaDeviceProp& prop) : device_(device), stream_(stream), prop_(prop) {
    const char* e = std::getenv("TERNLAB_CUDA_PROFILE");
    prof_.on = e && *e && std::strcmp(e, "0") != 0;
    dnn_ = Cudnn::open(stream_, &in_use_, &dnn_why_);
  }
  ~CudaBackend() override {
    if (prof_.on) std::fprintf(stderr, "ternlab cuda profile: %s\n", prof_.text().c_str());
    cudaStreamSynchronize(stream_);
    dnn_.reset();
    if (copy_) {
      cudaStreamSynchronize(copy_);
      for (cudaEvent_t e : {up_[0], up_[1], done_[0], done_[1]}) cudaEventDestroy(e);
      cudaStreamDestroy(copy_);
    }
    for (Scratch* s : {&split_, &wt_, &part_, &tree_, &counts_, &pixels_, &opx_, &opdy_, &opw_}) if (s->p) cudaFree(s->p);
    cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "cuda"; }
  std::string describe() const override {
    return std::string("cuda (") + prop_.name + ", sm_" + std::to_string(prop_.major) + std::to_string(prop_.minor) + ", " +
           std::to_string(prop_.multiProcessorCount) + " SMs, " + std::to_string(prop_.totalGlobalMem >> 20) + " MiB; " +
           products() + ")" +
           (prof_.on ? " | profile: " + prof_.text() : "");
  }

  // ---- memory
  Status alloc(size_t bytes, const char* what, Buffer* out) override {
    const size_t rounded = (bytes + 255) / 256 * 256;
    void* p = nullptr;
    if (rounded) {
      cudaError_t e = cudaMalloc(&p, rounded);
      if (e != cudaSuccess) {
        cudaGetLastError();  // clear it: the next call must still work
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return Status(Code::Oom, "cuda: allocating " + std::to_string(bytes) + " bytes for " + what + " failed (" +
                                     cudaGetErrorName(e) + ") with " + std::to_string(in_use_.load()) +
                                     " bytes in use by ternlab and " + std::to_string(free_b) + " of " + std::to_string(total_b) +
                                     " bytes free on " + prop_.name + ". Use a smaller batch size or model.");
      }
      CU(cudaMemsetAsync(p, 0, rounded, stream_));
    }
    in_use_ += rounded;
    *out = Buffer(this, p, rounded);
    return Status::ok();
  }
  void release(void* p, size_t bytes) override {
    in_use_ -= bytes;
    cudaFree(p);
  }
  Status upload(void* dst, const void* src, size_t bytes) override {
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    return Status::ok();
  }
  Status download(void* dst, const void* src, size_t bytes) override {
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CU(cudaStreamSynchronize(stream_));
    return Status::ok();
  }
  // ---- the training pipeline's transfers: uploads on copy_ beside the computation, two slots
  Status host_alloc(size_t bytes, const char* what, void** p) override {
    *p = nullptr;
    if (!bytes) return Status::ok();
    cudaError_t e = cudaMallocHost(p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      *p = nullptr;
      return Status(Code::Oom, "cuda: allocating " + std::to_string(bytes) + " bytes of pinned host memory for " + what +
                                   " failed (" + cudaGetErrorName(e) + ")");
    }
    return Status::ok();
  }
  void host_free(void* p) override { cudaFreeHost(p); }
  Status upload_async(void* dst, const void* src, size_t bytes, int slot) override {
    TL_TRY(ensure_pipeline());
    // dst was last read by the step that marked this slot: the copy waits for it
    CU(cudaStreamWaitEvent(copy_, done_[slot], 0));
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, copy_));
    CU(cudaEventRecord(up_[slot], copy_));
    return Status::ok();
  }
  Status wait_upload(int slot) override {
    TL_TRY(ensure_pipeline());
    CU(cudaStreamWaitEvent(stream_, up_[slot], 0));
    return Status::ok();
  }
  Status host_wait_upload(int slot) override {
    TL_TRY(ensure_pipeline());
    CU(cudaEventSynchronize(up_[slot]));
    return Status::ok();
  }
  Status download_async(void* dst, const void* src, size_t bytes) override {
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    return Status::ok();
  }
  Status mark(int slot) override {
    TL_TRY(ensure_pipeline());
    CU(cudaEventRecord(done_[slot], stream_));
    return Status::ok();
  }
  Status host_wait(int slot) override {
    TL_TRY(ensure_pipeline());
    CU(cudaEventSynchronize(done_[slot]));
    return Status::ok();
  }

  Status zero(void* dst, size_t bytes) override {
    CU(cudaMemsetAsync(dst, 0, bytes, stream_));
    return Status::ok();
  }
  Status copy(void* dst, const void* src, size_t bytes) override {
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
    return Status::ok();
  }
  Status synchronize() override {
    CU(cudaStreamSynchronize(stream_));
    return Status::ok();
  }
  size_t bytes_in_use() const override { return in_use_.load(); }

  Status normalize_u8(int64_t n, const uint8_t* src, float scale, float offset, float* dst) override {
    Prof prof_scope(&prof_, stream_, "normalize_u8");
    if (reinterpret_cast<uintptr_t>(src) % 4 == 0 && aligned16(dst)) {
      const int64_t n4 = n / 4, done = 4 * n4;
      if (n4) k_normalize4<<<grid_for(n4), kThreads, 0, stream_>>>(n4, reinterpret_cast<const uchar4*>(src), scale, offset,
                                                                   reinterpret_cast<float4*>(dst));
      if (n > done) k_normalize<<<1, kThreads, 0, stream_>>>(n - done, src + done, scale, offset, dst + done);
    } else {
      k_normalize<<<grid_for(n), kThreads, 0, stream_>>>(n, src, scale, offset, dst);
    }
    LAUNCHED("normalize_u8");
    return Status::ok();
  }

  // ---- products
  Status conv_forward(const ConvGeom& g, Operand x, Operand w, float* y) override {
    Prof prof_scope(&prof_, stream_, "conv_forward");
    const int64_t M = g.rows(), K = g.k();
    const bool xi = x.dtype == DType::I8, wi = w.dtype == DType::I8;
    if (M == 0 || g.oc == 0) return Status::ok();
    if (xi && wi) {
      const float scale = x.scale * w.scale;  // as the CPU: one float product, applied once
      if (cudnn_int8() && use_dnn(ConvProduct::ForwardInt8, g)) {
        prof_scope.name = "conv_forward (cuDNN int8)";
        return dnn_->forward_int8(g, static_cast<const int8_t*>(x.ptr), static_cast<const int8_t*>(w.ptr), scale, y);
      }
      return int8_product(g, x, w, StoreF{y, g.oc, scale}, "conv_forward (int8 tensor cores)");
    }
    prof_scope.name = "conv_forward (float operand)";
    if (use_dnn(ConvProduct::ForwardF32, g)) {
      prof_scope.name = "conv_forward (float operand, cuDNN fp32)";
      const float* xf = static_cast<const float*>(x.ptr);
      const float* wf = static_cast<const float*>(w.ptr);
      if (xi) TL_TRY(to_f32(&opx_, g.in_elems(), x, "conv_forward (states to fp32)", &xf));
      if (wi) TL_TRY(to_f32(&opw_, g.oc * K, w, "conv_forward (weights to fp32)", &wf));
      return dnn_->forward_f32(g, xf, wf, y);
    }
    return simt<float>("conv_forward", M, g.oc, K, K, Im2colA{g, x.ptr, xi, x.scale}, WeightKN{w.ptr, wi, w.scale, K},
                       StoreF{y, g.oc, 1.0f});
  }

  // int8 weights: the exact int8 product on the pixels (StorePixels); it replaces an fp32 product
  // of K = kh·kw·c (27 on CIFAR) with one on the int8 tensor cores
  Status conv_forward_pixels(const ConvGeom& g, Operand x, const Pixels& px, Operand w, float* y) override {
    // (float weights carry no scale; one that did would take the float product)
    if (w.dtype == DType::F32 && w.scale == 1.0f && stem_applies(g)) return stem_forward(g, px, static_cast<const float*>(w.ptr), y);
    if (w.dtype != DType::I8 || math_mode() != Math::Fast || g.k() > (int64_t(1) << 16)) return conv_forward(g, x, w, y);
    Prof prof_scope(&prof_, stream_, "conv_forward (pixels, int8 tensor cores)");
    if (g.rows() == 0 || g.oc == 0) return Status::ok();
    // centred pixels and weights with their channels padded to a multiple of 16, then the border
    // sums (of the unpadded weights), each part 16-byte aligned
    ConvGeom gp = g;
    gp.c = static_cast<int>(cdiv(g.c, 16) * 16);
    const int64_t pixels = static_cast<int64_t>(g.n) * g.h * g.w, taps = static_cast<int64_t>(g.oc) * g.kh * g.kw;
    const int64_t per = static_cast<int64_t>(g.oh) * g.ow;
    const int64_t w_at = pixels * gp.c, border_at = w_at + cdiv(taps * gp.c, 16) * 16;
    TL_TRY(scratch(&pixels_, border_at + sizeof(int32_t) * per * g.oc, "conv_forward (centred pixels and border sums)"));
    auto* q = static_cast<int8_t*>(pixels_.p);
    auto* wp = q + w_at;
    auto* border = reinterpret_cast<int32_t*>(q + border_at);
    k_pad_rows<<<grid_for(pixels * gp.c), kThreads, 0, stream_>>>(pixels, g.c, gp.c, px.px, true, q);
    k_pad_rows<<<grid_for(taps * gp.c), kThreads, 0, stream_>>>(taps, g.c, gp.c, w.ptr, false, wp);
    k_border_sums<<<grid_for(per * g.oc), kThreads, 0, stream_>>>(g, static_cast<const int8_t*>(w.ptr), border);
    LAUNCHED("conv_forward (centred pixels and border sums)");
    return int8_product(gp, Operand{DType::I8, q, 1.0f}, Operand{DType::I8, wp, w.scale},
                        StorePixels{y, g.oc, static_cast<int>(per), border, px.scale, px.offset, w.scale},
                        "conv_forward (pixels, int8 tensor cores)");
  }

  // Float weights on the pixels (ResNet's and AlexNet's stems): three exact int8 products over the
  // space-to-depth packed pixels, one per digit plane of the fixed-point weights (stem.h, NOTES.md
  // "Session 5: the float stem"). Replaces cuDNN's fp32 product, slow with 3 input channels.
  // Opt-in: on an H200 it measured slower than cuDNN's fp32 product (session 6: 4.7 against 3.0 ms;
  // the grouped product 2.8 ms, training 1.01×). TERNLAB_STEM=int8 (three products) or grouped;
  // otherwise, and in the exact and simple maths, the float product of x. (Session 7 tried the fp32
  // product as four TF32 products over split operands, commit 7a941cc: 2.56 against 3.02 ms,
  // training 1.02×, but twice the CPU's error against float64 and 86 MiB more, so it was removed.)
  bool stem_applies(const ConvGeom& g) const {
    const char* e = std::getenv("TERNLAB_STEM");
    if (!e || (std::strcmp(e, "int8") && std::strcmp(e, "grouped"))) return false;
    return math_mode() == Math::Fast && stem::applies(g) && g.rows() <= INT32_MAX;
  }
  // Images per pass: the packed pixels and the output of one pass should stay in L2 between the
  // three products (the middle and last stores read what the one before wrote): at most half of L2.
  // Below that, the count whose product fills the card's block slots best (ResNet on an H200: 6
  // images are 588 tiles of 128 × 64 on 132·4 slots, 56 % of two waves; 5 are 490, 93 % of one).
  // TERNLAB_STEM_CHUNK=images overrides. Any chunking gives the same bits: each output is made of
  // the same exact integer sums wherever the chunk boundaries fall. (Measured in session 6, the
  // three products: larger chunks were faster — 1 image 12.4 ms, this rule's 5 images 4.7 ms, all
  // 256 images 3.7 ms — so the L2 reasoning does not hold; the chunk's scratch grows with it.)
  int stem_chunk(const ConvGeom& g, bool grouped) const {
    const char* e = std::getenv("TERNLAB_STEM_CHUNK");
    if (e && std::atoi(e) > 0) return std::min(std::atoi(e), g.n);
    const int64_t per = static_cast<int64_t>(g.oh) * g.ow;
    const int64_t per_image = per * g.oc * 4 + static_cast<int64_t>(g.h) * g.ow * stem::packed_width(g);
    const int64_t budget = std::max<int64_t>(prop_.l2CacheSize / 2, 1);
    const int most = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(g.n, budget / std::max<int64_t>(per_image, 1))));
    const int cols = grouped ? stem::grouped_columns(g.oc) : g.oc;
    const bool narrow = !grouped && g.oc <= 64;  // int8_product's choice of tile (the grouped product: 128 × 128)
    const int bm = narrow ? S8Tile128x64::kBM : S8Tile128x128::kBM, bn = narrow ? S8Tile128x64::kBN : S8Tile128x128::kBN;
    const int min_blocks = narrow ? S8Tile128x64::kMinBlocks : S8Tile128x128::kMinBlocks;
    const int smem = narrow ? S8Tile128x64::kSmemBytes : S8Tile128x128::kSmemBytes;
    const int64_t per_sm = std::max<int64_t>(1, std::min<int64_t>(min_blocks, static_cast<int64_t>(prop_.sharedMemPerMultiprocessor) / (smem + 1024)));
    const int64_t slots = per_sm * prop_.multiProcessorCount;
    auto fill = [&](int nb) {
      const int64_t tiles = cdiv(nb * per, bm) * cdiv(cols, bn);
      return static_cast<double>(tiles) / static_cast<double>(cdiv(tiles, slots) * slots);
    };
    int best = most;
    for (int nb = most - 1; nb >= 1; --nb)
      if (fill(nb) > fill(best) + 0.03) best = nb;  // a smaller chunk only for a clearly better fill
    return best;
  }
  Status stem_forward(const ConvGeom& g, const Pixels& px, const float* w, float* y) {
    const char* mode = std::getenv("TERNLAB_STEM");
    const bool grouped = mode && !std::strcmp(mode, "grouped");
    Prof prof_scope(&prof_, stream_, grouped ? "conv_forward (pixels, float stem on int8 tensor cores, grouped)"
                                             : "conv_forward (pixels, float stem on int8 tensor cores)");
    if (g.rows() == 0 || g.oc == 0) return Status::ok();
    const ConvGeom gp = stem::packed_geom(g);
    const int cp = gp.c;
    const int64_t per = static_cast<int64_t>(g.oh) * g.ow;
    const int64_t plane = static_cast<int64_t>(g.oc) * g.kh * cp;  // = oc·K' bytes
    const int64_t grouped_bytes = stem::grouped_columns(g.oc) * gp.k();
    const int nb = stem_chunk(g, grouped);
    // scratch, each part 16-byte aligned: three digit planes (or the grouped rows), e[oc], border
    // sums, packed pixels of nb images
    const int64_t ex_at = cdiv(grouped ? grouped_bytes : 3 * plane, 16) * 16, border_at = ex_at + cdiv(sizeof(int) * g.oc, 16) * 16;
    const int64_t packed_at = border_at + cdiv(sizeof(int64_t) * per * g.oc, 16) * 16;
    const int64_t packed_bytes = static_cast<int64_t>(nb) * g.h * g.ow * cp;
    TL_TRY(scratch(&pixels_, packed_at + packed_bytes, "conv_forward (float stem: digit planes, border sums, packed pixels)"));
    auto* base = static_cast<int8_t*>(pixels_.p);
    int8_t* planes = base;
    int* ex = reinterpret_cast<int*>(base + ex_at);
    auto* border = reinterpret_cast<int64_t*>(base + border_at);
    int8_t* packed = base + packed_at;
    k_stem_exponents<<<grid_for(g.oc), kThreads, 0, stream_>>>(g, w, ex);
    if (grouped) k_stem_grouped_digits<<<grid_for(grouped_bytes), kThreads, 0, stream_>>>(g, cp, w, ex, planes);
    else k_stem_digits<<<grid_for(plane), kThreads, 0, stream_>>>(g, cp, w, ex, planes);
    k_stem_border<<<grid_for(per * g.oc), kThreads, 0, stream_>>>(g, w, ex, border);
    LAUNCHED("conv_forward (float stem: digits and border sums)");
    const float o2 = std::fma(128.0f, px.scale, px.offset);  // o + 128·s, one rounding
    for (int n0 = 0; n0 < g.n; n0 += nb) {
      ConvGeom gc = gp;
      gc.n = std::min(nb, g.n - n0);
      k_stem_pack<<<grid_for(static_cast<int64_t>(gc.n) * g.h * g.ow * (cp / 16)), kThreads, 0, stream_>>>(g, cp, px.px, n0, gc.n, packed);
      LAUNCHED("conv_forward (float stem: packing)");
      float* yc = y + static_cast<int64_t>(n0) * per * g.oc;
      auto* yi = reinterpret_cast<int32_t*>(yc);
      if (grouped) {
        TL_TRY(stem_grouped_product(gc, packed, planes, StoreStemGrouped{yc, g.oc, static_cast<int>(per), border, ex, px.scale, o2}));
        continue;
      }
      const Operand xo{DType::I8, packed, 1.0f};
      TL_TRY(int8_product(gc, xo, Operand{DType::I8, planes + 2 * plane, 1.0f}, StoreStemLow{yi, g.oc}, "conv_forward (float stem, digit 2)"));
      TL_TRY(int8_product(gc, xo, Operand{DType::I8, planes + plane, 1.0f}, StoreStemMid{yi, g.oc}, "conv_forward (float stem, digit 1)"));
      TL_TRY(int8_product(gc, xo, Operand{DType::I8, planes, 1.0f},
                          StoreStemTop{yc, g.oc, static_cast<int>(per), border, ex, px.scale, o2}, "conv_forward (float stem, digit 0)"));
    }
    return Status::ok();
  }

  // The grouped single product: s8_conv_pipelined with 128 × 128 tiles over grouped_columns(oc)
  // weight rows, one k range (the whole-tile epilogue needs complete sums: no split-K)
  Status stem_grouped_product(const ConvGeom& gc, const int8_t* packed, const int8_t* rows, StoreStemGrouped store) {
    using Tile = S8Tile128x128;
    const int M = static_cast<int>(gc.rows()), N = stem::grouped_columns(gc.oc), K = static_cast<int>(gc.k());
    const int ktiles = static_cast<int>(cdiv(K, kS8BK));
    dim3 grid(static_cast<unsigned>(cdiv(M, Tile::kBM)), static_cast<unsigned>(cdiv(N, Tile::kBN)), 1);
    CU(cudaFuncSetAttribute(s8_conv_pipelined<Tile, StoreStemGrouped>, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
    s8_conv_pipelined<Tile><<<grid, Tile::kThreads, Tile::kSmemBytes, stream_>>>(gc, packed, rows, M, N, K, ktiles, store);
    LAUNCHED("conv_forward (float stem, grouped digits)");
    return Status::ok();
  }

  Status conv_forward_i16(const ConvGeom& g, Operand x, Operand w, int16_t* y) override {
    Prof prof_scope(&prof_, stream_, "conv_forward");
    if (g.rows() == 0 || g.oc == 0) return Status::ok();
    return int8_product(g, x, w, StoreI16{y, g.oc}, "conv_forward (int8 tensor cores, int16 sums)");
  }
  // The exact int8 × int8 product, its int32 sums handed to `store` (float times the scale, or int16).
  template <class Store>
  Status int8_product(const ConvGeom& g, Operand x, Operand w, Store store, const char* what) {
    const int64_t M = g.rows(), K = g.k();
    if (math_mode() == Math::Simple)
      return simt<int32_t>("conv_forward", M, g.oc, K, K, Im2colA{g, x.ptr, true, 1.0f}, WeightKN{w.ptr, true, 1.0f, K}, store);
    const auto* xs = static_cast<const int8_t*>(x.ptr);
    const auto* ws = static_cast<const int8_t*>(w.ptr);
    if (s8_pipelined_fits(g, xs, ws))
      return g.oc <= 64 ? s8_pipelined<S8Tile128x64>(g, xs, ws, store, what) : s8_pipelined<S8Tile128x128>(g, xs, ws, store, what);
    dim3 grid(static_cast<unsigned>(cdiv(M, kMmaBM)), static_cast<unsigned>(cdiv(g.oc, kMmaBN)));
    mma_nt<S8Policy><<<grid, 256, 0, stream_>>>(static_cast<int>(M), g.oc, K, S8Im2col{g, xs}, S8Rows{ws, K}, store);
    LAUNCHED(what);
    return Status::ok();
  }
  // s8_conv_pipelined's preconditions (16-byte chunks of whole channels, aligned; 32-bit M and K);
  // TERNLAB_INT8_FORWARD=v1 runs mma_nt for every shape (the bench compares the two)
  static bool s8_pipelined_fits(const ConvGeom& g, const int8_t* x, const int8_t* w) {
    const char* e = std::getenv("TERNLAB_INT8_FORWARD");
    if (e && !std::strcmp(e, "v1")) return false;
    return g.c % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
           g.rows() <= INT32_MAX && g.k() <= INT32_MAX - kS8BK;
  }
  // Split-K only where the output has fewer than 128 tiles (the dense layers, small batches): up to
  // 256 blocks in all, ≥ 8 k tiles each. A function of the shape alone, as every split here.
  template <class Tile, class Store>
  Status s8_pipelined(const ConvGeom& g, const int8_t* x, const int8_t* w, Store store, const char* what) {
    const int M = static_cast<int>(g.rows()), N = g.oc, K = static_cast<int>(g.k());
    const int64_t tiles = cdiv(M, Tile::kBM) * cdiv(N, Tile::kBN);
    const int ktiles = static_cast<int>(cdiv(K, kS8BK));
    const int64_t splits = tiles >= 128 ? 1 : std::max<int64_t>(1, std::min<int64_t>(cdiv(256, tiles), ktiles / 8));
    const int per = static_cast<int>(cdiv(ktiles, splits));
    const int z = static_cast<int>(cdiv(ktiles, per));
    dim3 grid(static_cast<unsigned>(cdiv(M, Tile::kBM)), static_cast<unsigned>(cdiv(N, Tile::kBN)), static_cast<unsigned>(z));
    if (z == 1) {
      CU(cudaFuncSetAttribute(s8_conv_pipelined<Tile, Store>, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
      s8_conv_pipelined<Tile><<<grid, Tile::kThreads, Tile::kSmemBytes, stream_>>>(g, x, w, M, N, K, per, store);
      LAUNCHED(what);
      return Status::ok();
    }
    const int64_t mn = static_cast<int64_t>(M) * N;
    // the partials borrow the backward's bf16 operand buffer (free during a forward product, and on
    // the CIFAR net at batch 256 already larger than FC1024's 16 MB of partials: no extra memory)
    TL_TRY(scratch(&opx_, sizeof(int32_t) * z * mn, "int8 forward (split-K partial sums)"));
    auto* part = static_cast<int32_t*>(opx_.p);
    CU(cudaFuncSetAttribute(s8_conv_pipelined<Tile, StoreSplitI32>, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmemBytes));
    s8_conv_pipelined<Tile><<<grid, Tile::kThreads, Tile::kSmemBytes, stream_>>>(g, x, w, M, N, K, per, StoreSplitI32{part, mn, N});
    LAUNCHED(what);
    k_s8_split_combine<<<grid_for(mn), kThreads, 0, stream_>>>(M, N, z, part, store);
    LAUNCHED("conv_forward (int8 split-K combine)");
    return Status::ok();
  }

  Status conv_backward_data(const ConvGeom& g, const float* dy, Operand w, float* dx) override {
    if (use_dnn(ConvProduct::BackwardDataBf16, g)) {
      Prof prof_scope(&prof_, stream_, "conv_backward_data (cuDNN bf16)");
      const __nv_bfloat16* dyb;
      TL_TRY(to_bf16(&opdy_, g.rows() * g.oc, Operand{DType::F32, dy, 1.0f}, "conv_backward_data (dy to bf16)", &dyb));
      return dnn_backward_data(g, dyb, w, dx);
    }
    Prof prof_scope(&prof_, stream_, "conv_backward_data");
    const int64_t M = g.in_elems() / g.c, K2 = static_cast<int64_t>(g.kh) * g.kw * g.oc;
    const bool wi = w.dtype == DType::I8;
    if (M == 0 || g.c == 0) return Status::ok();
    if (math_mode() == Math::Fast) {
      TL_TRY(scratch(&wt_, sizeof(__nv_bfloat16) * K2 * g.c, "transposed weights"));
      auto* wt = static_cast<__nv_bfloat16*>(wt_.p);
      k_weights_bd<<<grid_for(K2 * g.c), kThreads, 0, stream_>>>(g, w.ptr, wi, w.scale, wt);
      LAUNCHED("conv_backward_data (weights)");
      dim3 grid(static_cast<unsigned>(cdiv(M, kMmaBM)), static_cast<unsigned>(cdiv(g.c, kMmaBN)));
      mma_nt<Bf16Policy><<<grid, 256, 0, stream_>>>(static_cast<int>(M), g.c, K2, Bf16DyGather{DyGatherA{g, dy}},
                                                    Bf16Rows{wt, K2}, StoreF{dx, g.c, 1.0f});
      LAUNCHED("conv_backward_data (bf16 tensor cores)");
      return Status::ok();
    }
    return simt<float>("conv_backward_data", M, g.c, K2, K2, DyGatherA{g, dy}, WeightBD{g, w.ptr, wi, w.scale},
                       StoreF{dx, g.c, 1.0f});
  }

  Status conv_backward_filter(const ConvGeom& g, Operand x, const float* dy, float* dw) override {
    if (use_dnn(ConvProduct::BackwardFilterBf16, g)) {
      Prof prof_scope(&prof_, stream_, "conv_backward_filter (cuDNN bf16)");
      const __nv_bfloat16* dyb;
      TL_TRY(to_bf16(&opdy_, g.rows() * g.oc, Operand{DType::F32, dy, 1.0f}, "conv_backward_filter (dy to bf16)", &dyb));
      return dnn_backward_filter(g, x, dyb, dw);
    }
    Prof prof_scope(&prof_, stream_, "conv_backward_filter");
    const int64_t R = g.rows(), M = g.oc, N = g.k();
    const Im2colA xa{g, x.ptr, x.dtype == DType::I8, x.scale};
    if (M == 0 || N == 0) return Status::ok();
    if (R == 0) return zero(dw, sizeof(float) * M * N);
    if (math_mode() == Math::Fast) {
      const int64_t tiles = cdiv(M, kMmaBM) * cdiv(N, kMmaBN);
      const int64_t chunk = split_chunk(R, tiles, kTnBK, 256);
      const int64_t z = cdiv(R, chunk);
      dim3 grid(static_cast<unsigned>(cdiv(M, kMmaBM)), static_cast<unsigned>(cdiv(N, kMmaBN)), static_cast<unsigned>(z));
      if (z == 1) {
        mma_tn<<<grid, 256, 0, stream_>>>(static_cast<int>(M), static_cast<int>(N), R, chunk, TnDy{dy, g.oc}, TnIm2col{xa},
                                          StoreF{dw, static_cast<int>(N), 1.0f});
        LAUNCHED("conv_backward_filter (bf16 tensor cores)");
        return Status::ok();
      }
      TL_TRY(scratch(&split_, sizeof(float) * z * M * N, "split-reduction partials"));
      mma_tn<<<grid, 256, 0, stream_>>>(static_cast<int>(M), static_cast<int>(N), R, chunk, TnDy{dy, g.oc}, TnIm2col{xa},
                                        StoreSplit{static_cast<float*>(split_.p), M * N, static_cast<int>(N)});
      LAUNCHED("conv_backward_filter (bf16 tensor cores)");
      k_split_combine<<<grid_for(M * N), kThreads, 0, stream_>>>(M * N, static_cast<int>(z), static_cast<float*>(split_.p), dw);
      LAUNCHED("conv_backward_filter (combine)");
      return Status::ok();
    }
    const int64_t tiles = cdiv(M, kSimtBM) * cdiv(N, kSimtBN);
    const int64_t chunk = split_chunk(R, tiles, kSimtBK, 256);
    const int64_t z = cdiv(R, chunk);
    TL_TRY(scratch(&split_, sizeof(float) * z * M * N, "split-reduction partials"));
    TL_TRY(simt<float>("conv_backward_filter", M, N, R, chunk, DyT{dy, g.oc}, Im2colB{xa},
                       StoreSplit{static_cast<float*>(split_.p), M * N, static_cast<int>(N)}));
    k_split_combine<<<grid_for(M * N), kThreads, 0, stream_>>>(M * N, static_cast<int>(z), static_cast<float*>(split_.p), dw);
    LAUNCHED("conv_backward_filter (combine)");
    return Status::ok();
  }

  // Both backward products of one layer: with cuDNN, dy is converted to bf16 once for the two.
  Status conv_backward(const ConvGeom& g, Operand x, const float* dy, Operand w, float* dw, float* dx) override {
    if (!use_dnn(ConvProduct::BackwardFilterBf16, g) || (dx && !use_dnn(ConvProduct::BackwardDataBf16, g)))
      return Backend::conv_backward(g, x, dy, w, dw, dx);
    Prof prof_scope(&prof_, stream_, "conv_backward (cuDNN bf16)");
    return dnn_conv_backward(g, x, dy, nullptr, w, dw, dx);
  }
  // A layer whose dy in bf16 would pass this bound (ResNet-18's stem at 224², batch 256: 411 MB)
  // runs its backward in batch chunks, so the converted operands are held for one chunk only. Its
  // filter gradient is then the float sum of the chunks' products, in chunk order (deterministic);
  // an image's data gradient does not depend on the other images.
  // (TERNLAB_CUDA_CHUNK_MB lowers the bound: the GPU suite runs small layers chunked)
  static int64_t chunk_bytes() {
    const char* chunk_mb = std::getenv("TERNLAB_CUDA_CHUNK_MB");
    return (chunk_mb && std::atoi(chunk_mb) > 0 ? std::atoi(chunk_mb) : 128) * (int64_t(1) << 20);
  }
  // The products with dy as floats (converted a chunk at a time) or already in bf16 (dyb_all); dx as
  // floats, or (keep_dx_bf16: one chunk only) left in bf16 in opx_ for its reader.
  Status dnn_conv_backward(const ConvGeom& g, Operand x, const float* dy, const __nv_bfloat16* dyb_all, Operand w, float* dw,
                           float* dx, bool keep_dx_bf16 = false) {
    const int64_t y_img = static_cast<int64_t>(g.oh) * g.ow * g.oc, x_img = static_cast<int64_t>(g.h) * g.w * g.c;
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(g.n, cdiv(g.n * y_img * 2, chunk_bytes())));
    const int nb = static_cast<int>(cdiv(g.n, chunks));
    const size_t x_elem = x.dtype == DType::I8 ? 1 : sizeof(float);
    for (int b = 0; b < g.n; b += nb) {
      ConvGeom gc = g;
      gc.n = std::min(nb, g.n - b);
      Operand xc = x;
      xc.ptr = static_cast<const uint8_t*>(x.ptr) + b * x_img * x_elem;
      const __nv_bfloat16* dyb = dyb_all ? dyb_all + b * y_img : nullptr;
      if (!dyb_all)
        TL_TRY(to_bf16(&opdy_, gc.rows() * g.oc, Operand{DType::F32, dy + b * y_img, 1.0f}, "conv_backward (dy to bf16)", &dyb));
      TL_TRY(dnn_backward_filter(gc, xc, dyb, dw, b > 0));
      if (dx) TL_TRY(dnn_backward_data(gc, dyb, w, dx + b * x_img, keep_dx_bf16));
    }
    return Status::ok();
  }

  // ---- a product's gradients handed over in bf16 (Backend::takes_bf16_dy / gives_bf16_dx). On
  // by default since session 7's first GPU run (same bits as the float path in the GPU suite;
  // training 1.07x on the CIFAR net, 1.05x on ResNet-18, H200); TERNLAB_CUDA_BF16_DY=0 /
  // TERNLAB_CUDA_BF16_DX=0 (read per call) turn a half off, for comparison. The buffers are the
  // products' scratch (opdy_, opx_), so only layers whose whole bf16 tensor fits the chunk bound
  // take them (no memory beyond the float path's).
  static bool switch_not_off(const char* name) {
    const char* e = std::getenv(name);
    return !(e && !std::strcmp(e, "0"));
  }
  static bool bf16_dy_enabled() { return switch_not_off("TERNLAB_CUDA_BF16_DY"); }
  static bool bf16_dx_enabled() { return switch_not_off("TERNLAB_CUDA_BF16_DX"); }
  // both backward products of g on cuDNN's bf16 path in one chunk (the handoffs' buffers are the
  // products' scratch, sized for one chunk)
  bool bf16_products_whole(const ConvGeom& g) {
    return math_mode() == Math::Fast && use_dnn(ConvProduct::BackwardFilterBf16, g) && use_dnn(ConvProduct::BackwardDataBf16, g) &&
           static_cast<int64_t>(g.n) * g.oh * g.ow * g.oc * 2 <= chunk_bytes();
  }
  bool takes_bf16_dy(const ConvGeom& g) override { return bf16_dy_enabled() && bf16_products_whole(g); }
  Status bf16_dy(int64_t elems, void** out) override {
    TL_TRY(scratch(&opdy_, sizeof(__nv_bfloat16) * elems, "bf16 gradient handed to a product"));
    *out = opdy_.p;
    return Status::ok();
  }
  Status maxpool_backward_bf16(const PoolGeom& g, const float* dy, const int32_t* argmax, void* dx) override {
    Prof prof_scope(&prof_, stream_, "maxpool_backward (bf16 out)");
    return maxpool_backward_to(g, dy, argmax, GradBf16{static_cast<__nv_bfloat16*>(dx)});
  }
  Status bn_backward_bf16(int64_t rows, int c, const float* dy, const XhatSource& xhat, const float* gamma, const float* invstd,
                          void* dx, float* dgamma, float* dbeta) override {
    Prof prof_scope(&prof_, stream_, "bn_backward (bf16 out)");
    TL_TRY(bn_backward_scratch(rows, c));
    const GradBf16 out{static_cast<__nv_bfloat16*>(dx)};
    with_xhat(xhat, [&](auto xh) { bn_backward_from(rows, c, DyStored{dy}, xh, gamma, invstd, out, dgamma, dbeta); });
    LAUNCHED("bn_backward (bf16 out)");
    return Status::ok();
  }
  Status act_bn_backward_bf16(int64_t rows, int c, const float* dq, const void* dq_bf16, const float* y, const XhatSource& xhat,
                              const float* gamma, const float* beta, const float* invstd, const ActSpec& act, float* dx,
                              void* dx_bf16, float* dgamma, float* dbeta) override {
    Prof prof_scope(&prof_, stream_, "act_bn_backward (fused, bf16 in or out)");
    TL_TRY(bn_backward_scratch(rows, c));
    const ActGrad ag{gamma, beta, act};
    auto to = [&](auto xh, auto d) {
      if (dx_bf16) bn_backward_from(rows, c, d, xh, gamma, invstd, GradBf16{static_cast<__nv_bfloat16*>(dx_bf16)}, dgamma, dbeta);
      else bn_backward_from(rows, c, d, xh, gamma, invstd, GradF32{dx}, dgamma, dbeta);
    };
    with_xhat(xhat, [&](auto xh) {
      using X = decltype(xh);
      if (dq_bf16) to(xh, DyFromPhi<X, __nv_bfloat16>{static_cast<const __nv_bfloat16*>(dq_bf16), xh, ag});
      else to(xh, DyFromPhi<X>{dq, xh, ag});
    });
    LAUNCHED("act_bn_backward (bf16 in or out)");
    return Status::ok();
  }
  // The consumer half (TERNLAB_CUDA_BF16_DX=0 turns it off): the data product's bf16 dx stays in
  // the backend's buffer (opx_, where cuDNN writes it) for the op that reads it next (the fused
  // φ + BN backward), instead of a pass to float. Only where the whole
  // layer runs as one chunk and the weights' scale is 1 (from_bf16's product by it is then exact).
  bool gives_bf16_dx(const ConvGeom& g) override {
    return bf16_dx_enabled() && bf16_products_whole(g) && g.in_elems() * 2 <= chunk_bytes();
  }
  Status conv_backward_bf16(const ConvGeom& g, Operand x, const float* dy, const void* dy_bf16, Operand w, float* dw, float* dx,
                            void** dx_bf16) override {
    if (dy_bf16 && !takes_bf16_dy(g)) return Status(Code::Internal, "conv_backward_bf16: this layer's products do not take a bf16 dy");
    if (dx_bf16 && (!dx || !gives_bf16_dx(g) || (w.dtype == DType::I8 && w.scale != 1.0f)))
      return Status(Code::Internal, "conv_backward_bf16: this layer's products do not give a bf16 dx");
    Prof prof_scope(&prof_, stream_, "conv_backward (cuDNN bf16, gradients handed over)");
    if (dy_bf16) bf16_dy_products_++;
    if (dx_bf16) bf16_dx_products_++;
    TL_TRY(dnn_conv_backward(g, x, dy, static_cast<const __nv_bfloat16*>(dy_bf16), w, dw, dx, dx_bf16 != nullptr));
    if (dx_bf16) *dx_bf16 = opx_.p;
    return Status::ok();
  }

  // count[j] = rows of column j that are nonzero; the zeros added to *zeros
  Status nonzero_columns(int rows, int64_t cols, const int8_t* a, int32_t* count, int64_t* zeros) {
    if (cols % 16 || reinterpret_cast<uintptr_t>(a) % 16) {
      k_nonzero_columns<<<grid_for(cols), kThreads, 0, stream_>>>(rows, cols, a, count, zeros);
      return Status::ok();
    }
    CU(cudaMemsetAsync(count, 0, sizeof(int32_t) * cols, stream_));
    const int64_t threads = cols / 16 * cdiv(rows, kRowSlice);
    if (threads == 0) return Status::ok();
    k_nonzero_columns16<<<static_cast<unsigned>(cdiv(threads, kThreads)), kThreads, 0, stream_>>>(rows, cols, a, count, zeros);
    return Status::ok();
  }
  Status conv_counters(const ConvGeom& g, const int8_t* x, const int8_t* w, int64_t* counters) override {
    Prof prof_scope(&prof_, stream_, "conv_counters");
    const int64_t hwc = static_cast<int64_t>(g.h) * g.w * g.c, K = g.k();
    TL_TRY(scratch(&counts_, sizeof(int32_t) * (hwc + K), "activity counts"));
    int32_t* P = static_cast<int32_t*>(counts_.p);
    int32_t* nzw = P + hwc;
    TL_TRY(nonzero_columns(g.n, hwc, x, P, counters + kZeroInputs));
    TL_TRY(nonzero_columns(g.oc, K, w, nzw, counters + kZeroWeights));
    k_active_macs<<<grid_for(K * g.oh), kThreads, 0, stream_>>>(g, P, nzw, counters + kActiveMacs);
    LAUNCHED("conv_counters");
    return Status::ok();
  }

  // ---- pooling
  // The four-channel kernels where channels come in fours and every tensor is aligned to four elements.
  // (a and b may differ in type: max-pool's backward reads a float dy and writes a float or bf16 dx)
  template <class T, class U>
  static bool pool_vec4(const PoolGeom& g, const T* a, const U* b, const int32_t* argmax) {
    return g.c % 4 == 0 && reinterpret_cast<uintptr_t>(a) % (4 * sizeof(T)) == 0 &&
           reinterpret_cast<uintptr_t>(b) % (4 * sizeof(U)) == 0 && aligned16(argmax);
  }
  template <class T>
  Status maxpool_forward_any(const PoolGeom& g, const T* x, T* y, int32_t* argmax, T empty) {
    Prof prof_scope(&prof_, stream_, "maxpool_forward");
    const int64_t outs = static_cast<int64_t>(g.n) * g.oh * g.ow * g.c;
    if (pool_vec4(g, x, y, argmax)) k_maxpool4<<<grid_for(outs / 4), kThreads, 0, stream_>>>(g, x, y, argmax, empty);
    else k_maxpool<<<grid_for(outs), kThreads, 0, stream_>>>(g, x, y, argmax, empty);
    LAUNCHED("maxpool_forward");
    return Status::ok();
  }
  Status maxpool_forward(const PoolGeom& g, const float* x, float* y, int32_t* argmax) override {
    return maxpool_forward_any(g, x, y, argmax, -INFINITY);
  }
  Status maxpool_forward_i16(const PoolGeom& g, const int16_t* x, int16_t* y, int32_t* argmax) override {
    return maxpool_forward_any(g, x, y, argmax, static_cast<int16_t>(-32768));
  }
  Status maxpool_backward(const PoolGeom& g, const float* dy, const int32_t* argmax, float* dx) override {
    Prof prof_scope(&prof_, stream_, "maxpool_backward");
    return maxpool_backward_to(g, dy, argmax, GradF32{dx});
  }
  template <class G>
  Status maxpool_backward_to(const PoolGeom& g, const float* dy, const int32_t* argmax, G dx) {
    if (g.kh == g.sh && g.kw == g.sw && g.ph == 0 && g.pw == 0) {
      // Windows that do not overlap: each input is in at most one window, so the gradient is a
      // scatter of dy to the argmax (0 + dy, as the gather computes it) over zeros.
      const int64_t outs = static_cast<int64_t>(g.n) * g.oh * g.ow * g.c;
      CU(cudaMemsetAsync(dx.p, 0, sizeof(*dx.p) * g.n * g.h * g.w * g.c, stream_));
      k_maxpool_scatter<<<grid_for(outs), kThreads, 0, stream_>>>(outs, dy, argmax, dx);
      LAUNCHED("maxpool_backward");
      return Status::ok();
    }
    const int64_t ins = static_cast<int64_t>(g.n) * g.h * g.w * g.c;
    if (pool_vec4(g, dy, dx.p, argmax))
      k_maxpool_backward4<<<grid_for(ins / 4), kThreads, 0, stream_>>>(g, dy, argmax, dx);
    else k_maxpool_backward<<<grid_for(ins), kThreads, 0, stream_>>>(g, dy, argmax, dx);
    LAUNCHED("maxpool_backward");
    return Status::ok();
  }
  Status avgpool_forward(const PoolGeom& g, const float* x, float* y) override {
    Prof prof_scope(&prof_, stream_, "avgpool_forward");
    k_avgpool<<<grid_for(static_cast<int64_t>(g.n) * g.oh * g.ow * g.c), kThreads, 0, stream_>>>(g, x, y);
    LAUNCHED("avgpool_forward");
    return Status::ok();
  }
  Status avgpool_backward(const PoolGeom& g, const float* dy, float* dx) override {
    Prof prof_scope(&prof_, stream_, "avgpool_backward");
    k_avgpool_backward<<<grid_for(static_cast<int64_t>(g.n) * g.h * g.w * g.c), kThreads, 0, stream_>>>(g, dy, dx);
    LAUNCHED("avgpool_backward");
    return Status::ok();
  }

  // ---- batch norm
  Status bn_forward_train(int64_t rows, int c, Operand x, const float* gamma, const float* beta, float eps,
                          float momentum, float* run_mean, float* run_var, float* y, float* xhat, float* mean,
                          float* invstd) override {
    Prof prof_scope(&prof_, stream_, "bn_forward_train");
    return bn_train(rows, c, x, gamma, beta, eps, momentum, run_mean, run_var, xhat, mean, invstd, StoreY{y});
  }
  Status bn_act_forward_train(int64_t rows, int c, Operand x, const float* gamma, const float* beta, float eps,
                              float momentum, float* run_mean, float* run_var, float* y, float* xhat, float* mean,
                              float* invstd, const ActSpec& act, int8_t* q) override {
    Prof prof_scope(&prof_, stream_, "bn_act_forward_train (fused)");
    return bn_train(rows, c, x, gamma, beta, eps, momentum, run_mean, run_var, xhat, mean, invstd, StorePhi{act, q});
  }
  // batch statistics, then x̂ and the BN output handed to `out`
  template <class Out>
  Status bn_train(int64_t rows, int c, Operand x, const float* gamma, const float* beta, float eps, float momentum,
                  float* run_mean, float* run_var, float* xhat, float* mean, float* invstd, Out out) {
    TL_TRY(bn_statistics(rows, c, x, eps, momentum, run_mean, run_var, mean, invstd));
    with_input(x, [&](auto xv) {
      const int grid = vec_grid(rows, c);
      if (grid && xv.aligned() && aligned16(xhat) && out.aligned())
        k_bn_apply8<<<grid, kThreads, 0, stream_>>>(rows, c, xv, mean, invstd, gamma, beta, xhat, out);
      else
        k_bn_apply<<<grid_for(rows * c), kThreads, 0, stream_>>>(rows * c, c, xv, mean, invstd, gamma, beta, xhat, out);
    });
    LAUNCHED("bn_forward_train");
    return Status::ok();
  }
  template <class Out>
  Status bn_infer(int64_t rows, int c, Operand x, const float* gamma, const float* beta, const float* run_mean,
                  const float* run_var, float eps, Out out) {
    with_input(x, [&](auto xv) {
      const int grid = vec_grid(rows, c);
      if (grid && xv.aligned() && out.aligned())
        k_bn_infer8<<<grid, kThreads, 0, stream_>>>(rows, c, xv, gamma, beta, run_mean, run_var, eps, out);
      else
        k_bn_infer<<<grid_for(rows * c), kThreads, 0, stream_>>>(rows * c, c, xv, gamma, beta, run_mean, run_var, eps, out);
    });
    LAUNCHED("bn_forward_infer");
    return Status::ok();
  }
  bool fuses_bn_act() const override { return true; }
  Status bn_act_forward_infer(int64_t rows, int c, Operand x, const float* gamma, const float* beta,
                              const float* run_mean, const float* run_var, float eps, float* y, const ActSpec& act,
                              int8_t* q) override {
    Prof prof_scope(&prof_, stream_, "bn_act_forward_infer (fused)");
    return bn_infer(rows, c, x, gamma, beta, run_mean, run_var, eps, StorePhi{act, q});
  }
  // The BN output's gradient dy = dq·φ′(γ·x̂ + β) is recomputed where it is read (the sums' pass and
  // the apply pass) instead of written by a pass of its own: dy_scratch stays unused. (In the
  // earlier serial 512-row chains that recomputation was measured 2.7× slower: they were
  // latency-bound; the pairwise tree's passes are not.)
  Status act_bn_backward(int64_t rows, int c, const float* dq, const float* y, const XhatSource& xhat, const float* gamma,
                         const float* beta, const float* invstd, const ActSpec& act, float* dy_scratch, float* dx,
                         float* dgamma, float* dbeta) override {
    Prof prof_scope(&prof_, stream_, "act_bn_backward (fused)");
    TL_TRY(bn_backward_scratch(rows, c));
    with_xhat(xhat, [&](auto xh) {
      bn_backward_from(rows, c, DyFromPhi<decltype(xh)>{dq, xh, ActGrad{gamma, beta, act}}, xh, gamma, invstd, GradF32{dx}, dgamma, dbeta);
    });
    LAUNCHED("act_bn_backward");
    return Status::ok();
  }
  // Device scratch of the pairwise tree's levels for kTerms sums of rows × c (tree_, two levels at once).
  Status tree_scratch(int64_t rows, int c, int terms) {
    const int64_t n = cdiv(cdiv(rows, kSumRun), kTreeLeaves);
    return scratch(&tree_, sizeof(double) * terms * c * (n + cdiv(n, kTreeLeaves)), "batch-norm tree sums");
  }
  // kTerms per-channel sums of term(r, ch) in core/reduce.h's order into out[t·c + ch] (divided by
  // divide_by unless it is 0), level by level of the tree; tree_scratch must have been called.
  template <int kTerms, class Term>
  void column_sums(int64_t rows, int c, Term term, int64_t divide_by, double* out) {
    const unsigned tiles = static_cast<unsigned>(cdiv(c, 32));
    int64_t n = cdiv(cdiv(rows, kSumRun), kTreeLeaves);
    double* level = static_cast<double*>(tree_.p);
    double* next = level + kTerms * c * n;
    k_column_runs<kTerms><<<dim3(static_cast<unsigned>(n), tiles), kTreeWarps * 32, 0, stream_>>>(
        rows, c, term, n == 1 ? divide_by : 0, n == 1 ? out : level);
    while (n > 1) {
      const int64_t m = cdiv(n, kTreeLeaves);
      k_column_tree<kTerms><<<dim3(static_cast<unsigned>(m), tiles), kTreeWarps * 32, 0, stream_>>>(
          n, c, level, m == 1 ? divide_by : 0, m == 1 ? out : next);
      std::swap(level, next);
      n = m;
    }
  }
  // Batch statistics (core/reduce.h: exact integer moments of int16 sums, else the float values'
  // pairwise double sums, Σx then Σ(x − μ)²), running statistics, float μ and 1/σ.
  Status bn_statistics(int64_t rows, int c, Operand x, float eps, float momentum, float* run_mean, float* run_var,
                       float* mf, float* invstd) {
    if (x.dtype == DType::I16 && rows <= kExactMomentRows) {
      TL_TRY(scratch(&part_, sizeof(ull) * 2 * c, "batch-norm moments"));
      ull* sums = static_cast<ull*>(part_.p);
      CU(cudaMemsetAsync(sums, 0, sizeof(ull) * 2 * c, stream_));
      const int grid = vec_grid(rows, c, kMomentBlocks);
      if (grid && aligned16(x.ptr)) {
        k_int_moments8<<<grid, kThreads, 0, stream_>>>(rows, c, static_cast<const int16_t*>(x.ptr), sums);
      } else {
        const unsigned tiles = static_cast<unsigned>(cdiv(c, 32));
        // enough blocks to fill the GPU (16 per SM of 132), each at least 64 rows per warp
        const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(cdiv(rows, kTreeWarps * 64), 132 * 16 / tiles));
        k_int_moments<<<dim3(static_cast<unsigned>(blocks), tiles), kTreeWarps * 32, 0, stream_>>>(
            rows, c, static_cast<const int16_t*>(x.ptr), sums);
      }
      k_bn_stats_exact<<<grid_for(c), kThreads, 0, stream_>>>(rows, c, sums, x.scale, eps, momentum, run_mean, run_var, mf, invstd);
      LAUNCHED("bn statistics (exact)");
      return Status::ok();
    }
    TL_TRY(scratch(&part_, sizeof(double) * 2 * c, "batch-norm moments"));
    TL_TRY(tree_scratch(rows, c, 1));
    double* mean = static_cast<double*>(part_.p);
    double* var = mean + c;
    with_input(x, [&](auto xv) {
      column_sums<1>(rows, c, TermX<decltype(xv)>{xv, c}, rows, mean);
      column_sums<1>(rows, c, TermSqDev<decltype(xv)>{xv, c, mean}, rows, var);
    });
    k_bn_stats<<<grid_for(c), kThreads, 0, stream_>>>(c, mean, var, eps, momentum, run_mean, run_var, mf, invstd);
    LAUNCHED("bn statistics");
    return Status::ok();
  }
  Status bn_forward_infer(int64_t rows, int c, Operand x, const float* gamma, const float* beta,
                          const float* run_mean, const float* run_var, float eps, float* y) override {
    Prof prof_scope(&prof_, stream_, "bn_forward_infer");
    return bn_infer(rows, c, x, gamma, beta, run_mean, run_var, eps, StoreY{y});
  }
  Status bn_backward(int64_t rows, int c, const float* dy, const XhatSource& xhat, const float* gamma, const float* invstd,
                     float* dx, float* dgamma, float* dbeta) override {
    Prof prof_scope(&prof_, stream_, "bn_backward");
    TL_TRY(bn_backward_scratch(rows, c));
    with_xhat(xhat, [&](auto xh) { bn_backward_from(rows, c, DyStored{dy}, xh, gamma, invstd, GradF32{dx}, dgamma, dbeta); });
    LAUNCHED("bn_backward");
    return Status::ok();
  }
  Status bn_backward_scratch(int64_t rows, int c) {
    TL_TRY(scratch(&part_, sizeof(double) * 2 * c + sizeof(float) * 3 * c, "batch-norm backward sums"));
    return tree_scratch(rows, c, 2);
  }
  // Σdy and Σdy·x̂ in one pass, the coefficients, then dx in a second pass (dy read through D twice);
  // bn_backward_scratch must have been called.
  template <class D, class H, class G>
  void bn_backward_from(int64_t rows, int c, D dy, H xh, const float* gamma, const float* invstd, G dx,
                        float* dgamma, float* dbeta) {
    double* db = static_cast<double*>(part_.p);  // db, then dg = db + c: column_sums' two terms
    double* dg = db + c;
    float* k = reinterpret_cast<float*>(dg + c);
    column_sums<2>(rows, c, TermDy<D, H>{dy, xh, c}, 0, db);
    k_bn_backward_coeffs<<<grid_for(c), kThreads, 0, stream_>>>(rows, c, db, dg, gamma, invstd, dgamma, dbeta, k);
    const int grid = vec_grid(rows, c);
    if (grid && dy.aligned() && xh.aligned() && dx.aligned())
      k_bn_backward_apply8<<<grid, kThreads, 0, stream_>>>(rows, c, dy, xh, k, dx);
    else
      k_bn_backward_apply<<<grid_for(rows * c), kThreads, 0, stream_>>>(rows * c, c, dy, xh, k, dx);
  }

  // ---- activation, elementwise
  Status act_forward(int64_t n, const float* x, const ActSpec& s, int8_t* q) override {
    Prof prof_scope(&prof_, stream_, "act_forward");
    k_act_forward<<<grid_for(n), kThreads, 0, stream_>>>(n, x, s, q);
    LAUNCHED("act_forward");
    return Status::ok();
  }
  Status act_backward(int64_t n, const float* x, const float* dq, const ActSpec& s, float* dx) override {
    Prof prof_scope(&prof_, stream_, "act_backward");
    k_act_backward<<<grid_for(n), kThreads, 0, stream_>>>(n, x, dq, s, dx);
    LAUNCHED("act_backward");
    return Status::ok();
  }
  Status act_backward_accumulate(int64_t n, const float* x, const float* dq, const ActSpec& s, float* dx) override {
    Prof prof_scope(&prof_, stream_, "act_backward (accumulating)");
    k_act_backward_accumulate<<<grid_for(n), kThreads, 0, stream_>>>(n, x, dq, s, dx);
    LAUNCHED("act_backward (accumulating)");
    return Status::ok();
  }
  Status add(int64_t n, const float* a, const float* b, float* y) override {
    Prof prof_scope(&prof_, stream_, "add");
    k_add<<<grid_for(n), kThreads, 0, stream_>>>(n, a, b, y);
    LAUNCHED("add");
    return Status::ok();
  }
  Status accumulate(int64_t n, const float* src, float* dst) override {
    Prof prof_scope(&prof_, stream_, "accumulate");
    k_accumulate<<<grid_for(n), kThreads, 0, stream_>>>(n, src, dst);
    LAUNCHED("accumulate");
    return Status::ok();
  }

  Status loss(int64_t n, int c, const float* y, const int32_t* labels, LossKind kind, float* dy, float* row_loss,
              int32_t* rank) override {
    Prof prof_scope(&prof_, stream_, "loss");
    const float inv = kind == LossKind::SquaredHinge ? 1.0f / (static_cast<float>(n) * c) : 1.0f / static_cast<float>(n);
    if (n <= 0) return Status::ok();
    k_loss<<<static_cast<int>(cdiv(n, 128)), 128, 0, stream_>>>(n, c, y, labels, kind, inv, dy, row_loss, rank);
    LAUNCHED("loss");
    return Status::ok();
  }

  // ---- updates
  Status dst_update(int64_t n, int8_t* q, const float* g, float* m, float* v, const DstParams& p,
                    int64_t* counters) override {
    Prof prof_scope(&prof_, stream_, "dst_update");
    k_dst<<<grid_for(n), kThreads, 0, stream_>>>(n, q, g, m, v, p, counters + kFlips);
    LAUNCHED("dst_update");
    return Status::ok();
  }
  Status adam_update(int64_t n, float* p, const float* g, float* m, float* v, const AdamParams& a) override {
    Prof prof_scope(&prof_, stream_, "adam_update");
    k_adam<<<grid_for(n), kThreads, 0, stream_>>>(n, p, g, m, v, a);
    LAUNCHED("adam_update");
    return Status::ok();
  }
  Status init_states(int64_t n, int8_t* q, uint64_t seed, uint32_t layer, float spread, const Levels& lv) override {
    Prof prof_scope(&prof_, stream_, "init_states");
    k_init_states<<<grid_for(n), kThreads, 0, stream_>>>(n, q, seed, layer, spread, lv);
    LAUNCHED("init_states");
    return Status::ok();
  }
  Status init_uniform(int64_t n, float* p, uint64_t seed, uint32_t layer, float limit) override {
    Prof prof_scope(&prof_, stream_, "init_uniform");
    k_init_uniform<<<grid_for(n), kThreads, 0, stream_>>>(n, p, seed, layer, limit);
    LAUNCHED("init_uniform");
    return Status::ok();
  }
  Status count_zeros(int64_t n, const int8_t* q, int64_t* counters) override {
    Prof prof_scope(&prof_, stream_, "count_zeros");
    k_count_zeros<<<grid_for(n), kThreads, 0, stream_>>>(n, q, counters + kZeroWeights);
    LAUNCHED("count_zeros");
    return Status::ok();
  }

 private:
  // Grow-only device scratch owned by the backend (reused op after op: one stream orders them).
  struct Scratch {
    void* p = nullptr;
    size_t bytes = 0;
  };
  Status scratch(Scratch* s, size_t bytes, const char* what) {
    if (s->bytes >= bytes) return Status::ok();
    if (s->p) {
      CU(cudaStreamSynchronize(stream_));
      cudaFree(s->p);
      in_use_ -= s->bytes;
      s->p = nullptr;
      s->bytes = 0;
    }
    const size_t want = std::max(bytes, static_cast<size_t>(1) << 20);
    cudaError_t e = cudaMalloc(&s->p, want);
    if (e != cudaSuccess) {
      cudaGetLastError();
      s->p = nullptr;
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      return Status(Code::Oom, std::string("cuda: allocating ") + std::to_string(want) + " bytes of scratch for " + what +
                                   " failed with " + std::to_string(in_use_.load()) + " bytes in use by ternlab and " +
                                   std::to_string(free_b) + " bytes free. Use a smaller batch size or model.");
    }
    s->bytes = want;
    in_use_ += want;
    return Status::ok();
  }

  // cuDNN runs the products it has deterministic algorithms for when it loaded, TERNLAB_CUDA_MATH is
  // fast (the default) and TERNLAB_CUDNN is not 0 (both read per call, as the tests switch them).
  static bool cudnn_allowed() {
    const char* e = std::getenv("TERNLAB_CUDNN");
    return math_mode() == Math::Fast && !(e && !std::strcmp(e, "0"));
  }
  // TERNLAB_CUDNN_INT8=1: the int8 forward through cuDNN too (an experiment; off by default)
  static bool cudnn_int8() {
    const char* e = std::getenv("TERNLAB_CUDNN_INT8");
    return cudnn_allowed() && e && !std::strcmp(e, "1");
  }
  std::string products() const {
    if (dnn_ && cudnn_allowed() && cudnn_int8())
      return "products: cuDNN " + dnn_->version() + " int8 forward (TERNLAB_CUDNN_INT8=1), bf16 backward and fp32 float-operand forward";
    if (dnn_ && cudnn_allowed())
      return "products: int8 tensor cores (own) forward, cuDNN " + dnn_->version() + " bf16 backward" +
             (cudnn_graph_mode() ? std::string(cudnn_graph_mode() == 2 ? " (graph API, float outputs: TERNLAB_CUDNN_GRAPH=f32; " : " (graph API: TERNLAB_CUDNN_GRAPH=1; ") +
                                       std::to_string(dnn_->graph_runs()) + " products run, " + std::to_string(dnn_->graph_fallbacks()) +
                                       " without a qualifying engine took the legacy call)"
                                 : std::string()) +
             " and fp32 float-operand forward" +
             (bf16_dy_enabled() ? "; dy handed over in bf16: " + std::to_string(bf16_dy_products_) + " products" : "") +
             (bf16_dx_enabled() ? "; dx handed over in bf16: " + std::to_string(bf16_dx_products_) + " products" : "");
    return std::string("products: own kernels, ") + (math_mode() == Math::Fast ? "bf16 tensor-core" : "fp32") +
           " backward; cuDNN not used: " + (dnn_ ? std::string(math_mode() != Math::Fast ? "TERNLAB_CUDA_MATH is not fast" : "TERNLAB_CUDNN=0") : dnn_why_);
  }
  bool use_dnn(ConvProduct p, const ConvGeom& g) {
    return dnn_ && cudnn_allowed() && g.rows() > 0 && g.oc > 0 && g.k() > 0 && dnn_->supports(p, g);
  }
  // An operand in bf16 (states exactly; floats rounded to nearest) in scratch s.
  Status to_bf16(Scratch* s, int64_t n, Operand a, const char* what, const __nv_bfloat16** out) {
    TL_TRY(scratch(s, sizeof(__nv_bfloat16) * n, what));
    auto* d = static_cast<__nv_bfloat16*>(s->p);
    Prof prof_scope(&prof_, stream_, "  (of which conversions to bf16)");
    const bool x8 = n % 8 == 0 && aligned16(a.ptr) && aligned16(d);
    if (a.dtype == DType::I8 && x8 && reinterpret_cast<uintptr_t>(a.ptr) % 8 == 0)
      k_i8_to_bf16_x8<<<grid_for(n / 8), kThreads, 0, stream_>>>(n / 8, static_cast<const uint2*>(a.ptr), reinterpret_cast<uint4*>(d));
    else if (a.dtype == DType::I8) k_i8_to_bf16<<<grid_for(n), kThreads, 0, stream_>>>(n, static_cast<const int8_t*>(a.ptr), d);
    else if (x8) k_f32_to_bf16_x8<<<grid_for(n / 8), kThreads, 0, stream_>>>(n / 8, static_cast<const float4*>(a.ptr), reinterpret_cast<uint4*>(d));
    else k_f32_to_bf16<<<grid_for(n), kThreads, 0, stream_>>>(n, static_cast<const float*>(a.ptr), d);
    LAUNCHED(what);
    *out = d;
    return Status::ok();
  }
  Status to_f32(Scratch* s, int64_t n, Operand a, const char* what, const float** out) {
    TL_TRY(scratch(s, sizeof(float) * n, what));
    k_i8_to_f32<<<grid_for(n), kThreads, 0, stream_>>>(n, static_cast<const int8_t*>(a.ptr), a.scale, static_cast<float*>(s->p));
    LAUNCHED(what);
    *out = static_cast<const float*>(s->p);
    return Status::ok();
  }
  // a bf16 product → float, times the states' scale (applied once, at the end, as the CPU)
  Status from_bf16(int64_t n, const void* src, float scale, float* out, const char* what, bool accumulate = false) {
    Prof prof_scope(&prof_, stream_, "  (of which conversions from bf16)");
    const auto* b = static_cast<const __nv_bfloat16*>(src);
    const bool x8 = n % 8 == 0 && aligned16(src) && aligned16(out);
    auto* b8 = static_cast<const uint4*>(src);
    auto* o8 = reinterpret_cast<float4*>(out);
    if (x8 && accumulate) k_bf16_to_f32_x8<true><<<grid_for(n / 8), kThreads, 0, stream_>>>(n / 8, b8, scale, o8);
    else if (x8) k_bf16_to_f32_x8<false><<<grid_for(n / 8), kThreads, 0, stream_>>>(n / 8, b8, scale, o8);
    else if (accumulate) k_bf16_accumulate<<<grid_for(n), kThreads, 0, stream_>>>(n, b, scale, out);
    else k_bf16_to_f32<<<grid_for(n), kThreads, 0, stream_>>>(n, b, scale, out);
    LAUNCHED(what);
    return Status::ok();
  }
  // TERNLAB_CUDNN_GRAPH: 1 = the backward products through cuDNN's graph API with bf16 outputs (as the
  // legacy calls), f32 = with float outputs written straight to dx / dw (no conversion pass; where
  // the states' scale is 1 and nothing accumulates); otherwise (the default) the legacy calls.
  // Read per call, as the tests switch it. Opt-in: measured as fast as the legacy calls, and no
  // cuDNN 9.14 engine gives float outputs for bf16 operands (session 6; cudnn_conv.cuh).
  static int cudnn_graph_mode() {
    const char* e = std::getenv("TERNLAB_CUDNN_GRAPH");
    if (!e) return 0;
    if (!std::strcmp(e, "f32")) return 2;
    return std::strcmp(e, "1") ? 0 : 1;
  }
  Status dnn_backward_filter(const ConvGeom& g, Operand x, const __nv_bfloat16* dyb, float* dw, bool accumulate = false) {
    const __nv_bfloat16* xb;
    TL_TRY(to_bf16(&opx_, g.in_elems(), x, "conv_backward_filter (x to bf16)", &xb));
    const float scale = x.dtype == DType::I8 ? x.scale : 1.0f;
    const int graph = cudnn_graph_mode();
    if (graph == 2 && scale == 1.0f && !accumulate && aligned16(dw)) {  // (the graph declares 16-byte alignment)
      bool done = false;
      Prof prof_scope(&prof_, stream_, "  (of which cuDNN backward filter)");
      TL_TRY(dnn_->backward_filter_graph(g, xb, dyb, dw, true, &done));
      if (done) return Status::ok();
    }
    // dw in bf16 goes where the data product will put w in bf16 (same size): it is converted to
    // fp32 before conv_backward runs the data product, on the same stream, and one buffer of a
    // layer's weights less is held (16 MiB for the CIFAR net's FC1024)
    TL_TRY(scratch(&opw_, sizeof(__nv_bfloat16) * g.oc * g.k(), "conv_backward_filter (bf16 output)"));
    {
      Prof prof_scope(&prof_, stream_, "  (of which cuDNN backward filter)");
      bool done = false;
      if (graph) TL_TRY(dnn_->backward_filter_graph(g, xb, dyb, opw_.p, false, &done));
      if (!done) TL_TRY(dnn_->backward_filter(g, xb, dyb, opw_.p));
    }
    return from_bf16(g.oc * g.k(), opw_.p, scale, dw, "conv_backward_filter (to fp32)", accumulate);
  }
  Status dnn_backward_data(const ConvGeom& g, const __nv_bfloat16* dyb, Operand w, float* dx, bool keep_bf16 = false) {
    const __nv_bfloat16* wb;
    TL_TRY(to_bf16(&opw_, g.oc * g.k(), w, "conv_backward_data (w to bf16)", &wb));
    const float scale = w.dtype == DType::I8 ? w.scale : 1.0f;
    const int graph = cudnn_graph_mode();
    if (graph == 2 && scale == 1.0f && aligned16(dx) && !keep_bf16) {
      bool done = false;
      Prof prof_scope(&prof_, stream_, "  (of which cuDNN backward data)");
      TL_TRY(dnn_->backward_data_graph(g, dyb, wb, dx, true, &done));
      if (done) return Status::ok();
    }
    // dx (x's shape) goes where x in bf16 was: conv_backward runs the filter product, which read
    // it, first, and one buffer of that size less is held
    TL_TRY(scratch(&opx_, sizeof(__nv_bfloat16) * g.in_elems(), "conv_backward_data (bf16 output)"));
    {
      Prof prof_scope(&prof_, stream_, "  (of which cuDNN backward data)");
      bool done = false;
      if (graph) TL_TRY(dnn_->backward_data_graph(g, dyb, wb, opx_.p, false, &done));
      if (!done) TL_TRY(dnn_->backward_data(g, dyb, wb, opx_.p));
    }
    if (keep_bf16) return Status::ok();  // dx stays in opx_, in bf16, for its reader (conv_backward_bf16)
    return from_bf16(g.in_elems(), opx_.p, scale, dx, "conv_backward_data (to fp32)");
  }

  Status ensure_pipeline() {
    if (copy_) return Status::ok();
    CU(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    for (cudaEvent_t* e : {&up_[0], &up_[1], &done_[0], &done_[1]}) CU(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
    return Status::ok();
  }

  template <class Acc, class LA, class LB, class Epi>
  Status simt(const char* op, int64_t M, int64_t N, int64_t K, int64_t kchunk, LA la, LB lb, Epi epi) {
    const int64_t z = cdiv(K, kchunk);
    dim3 grid(static_cast<unsigned>(cdiv(M, kSimtBM)), static_cast<unsigned>(cdiv(N, kSimtBN)), static_cast<unsigned>(z));
    simt_gemm<Acc><<<grid, 256, 0, stream_>>>(static_cast<int>(M), static_cast<int>(N), K, kchunk, la, lb, epi);
    LAUNCHED(op);
    return Status::ok();
  }

  friend struct Prof;
  int device_;
  ProfTable prof_;
  cudaStream_t stream_;
  cudaDeviceProp prop_;
  std::atomic<size_t> in_use_{0};
  Scratch split_, wt_, part_, tree_, counts_, pixels_;
  Scratch opx_, opdy_, opw_;  // converted operands and outputs of the cuDNN products
  std::unique_ptr<Cudnn> dnn_;
  int64_t bf16_dy_products_ = 0;  // products that took a dy handed over in bf16 (in describe())
  int64_t bf16_dx_products_ = 0;  // products that left their dx in bf16 for its reader (in describe())
  cudaStream_t copy_ = nullptr;  // uploads of the training pipeline
  cudaEvent_t up_[2] = {}, done_[2] = {};
  std::string dnn_why_;
};

}  // namespace
}  // namespace cuda

bool cuda_compiled() { return true; }

Status make_cuda_backend(int device, std::unique_ptr<Backend>* out) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    return Status(Code::Backend, std::string("backend \"cuda\" is not available: no usable CUDA device (") +
                                     (e != cudaSuccess ? std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e)
                                                       : std::string("the driver reports 0 devices")) +
                                     "). Run on a machine with an NVIDIA GPU and driver, or use backend \"cpu\".");
  }
  if (device < 0 || device >= count)
    return Status(Code::Backend, "backend \"cuda\": device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                                     " device(s))");
  CU(cudaSetDevice(device));
  cudaDeviceProp prop;
  CU(cudaGetDeviceProperties(&prop, device));
  if (prop.major < 8)
    return Status(Code::Backend, std::string("backend \"cuda\": ") + prop.name + " has compute capability " + std::to_string(prop.major) +
                                     "." + std::to_string(prop.minor) + "; ternlab's kernels need 8.0 or newer (Ampere, Hopper)");
  cudaStream_t stream;
  CU(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  *out = std::make_unique<cuda::CudaBackend>(device, stream, prop);
  return Status::ok();
}

}  // namespace tl
