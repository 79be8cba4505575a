// The products of the CUDA backend as implicit GEMMs: C[m][n] = Σ_k A(m,k)·B(k,n), where the
// operands are never materialised (no im2col buffer): loaders gather them from the NHWC tensors
// tile by tile. Four kernels:
//   simt_gemm  fp32 or int32 FMA on the CUDA cores: any operand, any shape; the "exact" path and the
//              first layer (float input).
//   mma_nt     tensor cores through mma.sync, both operands k-contiguous in shared memory:
//              s8·s8 → s32 (m16n8k32, exact) for the ternary forward where s8_conv_pipelined does
//              not apply (c % 16 != 0), bf16·bf16 → f32 (m16n8k16) for the backward data product.
//   s8_conv_pipelined  the int8 forward for c % 16 == 0: s8 mma.sync fed by a cp.async pipeline.
//   mma_tn     bf16 tensor cores with both operands reduction-major in global memory (the filter
//              gradient Σ_r dy[r][o]·x̂[r][k]), loaded into shared memory as they lie and transposed
//              by ldmatrix.trans; split over r into fixed-size chunks combined in chunk order.
// The split of a reduction is a function of the shape alone (never of the device), so results are
// reproducible run to run and card to card.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>
#include <type_traits>

#include "../core/backend.h"

namespace tl {
namespace cuda {

// ---------------------------------------------------------------- SIMT
constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16;

// Loaders: a(m, k) / b(k, n) return the operand's value (as Acc); kMajorK says whether
// neighbouring k (true) or neighbouring m/n (false) are adjacent in memory, for coalescing.
template <class Acc, class LA, class LB, class Epi>
__global__ void __launch_bounds__(256) simt_gemm(int M, int N, int64_t K, int64_t kchunk, LA la, LB lb, Epi epi) {
  __shared__ Acc As[kSimtBK][kSimtBM + 4];
  __shared__ Acc Bs[kSimtBK][kSimtBN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.x * kSimtBM, n0 = blockIdx.y * kSimtBN;  // x: M (may exceed 65535 tiles)
  const int64_t kb = static_cast<int64_t>(blockIdx.z) * kchunk;
  const int64_t ke = kb + kchunk < K ? kb + kchunk : K;
  Acc acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);
  for (int64_t k0 = kb; k0 < ke; k0 += kSimtBK) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = tid + e * 256;
      int mm, kk;
      if (LA::kMajorK) { mm = i / kSimtBK; kk = i % kSimtBK; } else { kk = i / kSimtBM; mm = i % kSimtBM; }
      const int64_t k = k0 + kk;
      As[kk][mm] = (m0 + mm < M && k < ke) ? la.template get<Acc>(m0 + mm, k) : Acc(0);
      int nn;
      if (LB::kMajorK) { nn = i / kSimtBK; kk = i % kSimtBK; } else { kk = i / kSimtBN; nn = i % kSimtBN; }
      const int64_t k2 = k0 + kk;
      Bs[kk][nn] = (n0 + nn < N && k2 < ke) ? lb.template get<Acc>(k2, n0 + nn) : Acc(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtBK; ++kk) {
      Acc a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) { a[i] = As[kk][ty + 16 * i]; b[i] = Bs[kk][tx + 16 * i]; }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < M && n < N) epi(blockIdx.z, m, n, acc[i][j]);
    }
}

// ---------------------------------------------------------------- tensor cores (mma.sync)
struct S8Policy {
  using Acc = int32_t;
  static constexpr int kElems = 16;  // elements per 16-byte chunk
  static __device__ __forceinline__ void mma(int32_t* c, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};
struct Bf16Policy {
  using Acc = float;
  static constexpr int kElems = 8;
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

constexpr int kMmaBM = 128, kMmaBN = 128, kMmaBKB = 128;  // tile: 128 × 128 × 128 bytes of k
constexpr int kMmaRowW = kMmaBKB / 4 + 4;                  // shared row stride in words (+16 B: no bank conflicts)

// Both operands k-contiguous ("row.col"). la.row(m) / lb.row(n) decode a row once, la.kctx(k0) a
// position in k once per tile; la.chunk(row, kctx) returns the 16 bytes of elements [k0, k0 + kElems) of that row (zeros past K or outside the tensor).
// A warp's 64×32 accumulator tile of the mma kernels: 4×4 fragments m16n8 of 4 values each.
template <class Acc>
__device__ __forceinline__ void zero_tile(Acc (&acc)[4][4][4]) {
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = Acc(0);
}
// Hands each value of the tile at (m0, n0) to epi(z, m, n, v), inside M × N; g = lane/4, t = lane%4
// (the m16n8 fragment layout: rows g and g + 8, columns 2t and 2t + 1).
template <class Acc, class Epi>
__device__ __forceinline__ void store_tile(const Acc (&acc)[4][4][4], int m0, int n0, int g, int t, int M, int N, int z, const Epi& epi) {
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int m = m0 + mt * 16 + g + (c >= 2 ? 8 : 0);
        const int n = n0 + nt * 8 + 2 * t + (c & 1);
        if (m < M && n < N) epi(z, m, n, acc[mt][nt][c]);
      }
}

template <class P, class LA, class LB, class Epi>
__global__ void __launch_bounds__(256) mma_nt(int M, int N, int64_t K, LA la, LB lb, Epi epi) {
  __shared__ __align__(16) uint32_t As[kMmaBM * kMmaRowW];
  __shared__ __align__(16) uint32_t Bs[kMmaBN * kMmaRowW];
  constexpr int kChunksPerRow = kMmaBKB / 16;   // 8
  constexpr int kBK = kChunksPerRow * P::kElems; // elements of k per tile
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp >> 2, wn = warp & 3;  // 2 × 4 warps, each 64 × 32
  const int m0 = blockIdx.x * kMmaBM, n0 = blockIdx.y * kMmaBN;
  const int crow = tid / kChunksPerRow, ccol = tid % kChunksPerRow;  // rows crow + 32 i

  typename LA::Row ra[4];
  typename LB::Row rb[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    ra[i] = la.row(m0 + crow + 32 * i, M);
    rb[i] = lb.row(n0 + crow + 32 * i, N);
  }
  typename P::Acc acc[4][4][4];
  zero_tile(acc);

  uint4 pa[4], pb[4];
  const int64_t tiles = (K + kBK - 1) / kBK;
  // the thread's four rows of tile kt into registers; k is decoded once per tile (kctx)
  auto fetch = [&](int64_t kt) {
    const int64_t k0 = kt * kBK + static_cast<int64_t>(ccol) * P::kElems;
    const typename LA::KCtx ka = la.kctx(k0);
    const typename LB::KCtx kb = lb.kctx(k0);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      pa[i] = la.chunk(ra[i], ka);
      pb[i] = lb.chunk(rb[i], kb);
    }
  };
  fetch(0);
  for (int64_t kt = 0; kt < tiles; ++kt) {
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      *reinterpret_cast<uint4*>(&As[(crow + 32 * i) * kMmaRowW + ccol * 4]) = pa[i];
      *reinterpret_cast<uint4*>(&Bs[(crow + 32 * i) * kMmaRowW + ccol * 4]) = pb[i];
    }
    __syncthreads();
    if (kt + 1 < tiles) fetch(kt + 1);
#pragma unroll
    for (int ks = 0; ks < kMmaBKB / 32; ++ks) {
      const int kw0 = ks * 8;
      uint32_t af[4][4], bfr[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const int r = wm * 64 + mt * 16 + g;
        af[mt][0] = As[r * kMmaRowW + kw0 + t];
        af[mt][1] = As[(r + 8) * kMmaRowW + kw0 + t];
        af[mt][2] = As[r * kMmaRowW + kw0 + t + 4];
        af[mt][3] = As[(r + 8) * kMmaRowW + kw0 + t + 4];
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int c = wn * 32 + nt * 8 + g;
        bfr[nt][0] = Bs[c * kMmaRowW + kw0 + t];
        bfr[nt][1] = Bs[c * kMmaRowW + kw0 + t + 4];
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) P::mma(acc[mt][nt], af[mt], bfr[nt]);
    }
  }
  store_tile(acc, m0 + wm * 64, n0 + wn * 32, g, t, M, N, 0, epi);
}

// ---------------------------------------------------------------- int8 forward through a cp.async pipeline
// The ternary convolution (or dense layer) y = im2col(x)·wᵀ as s8·s8 → s32 mma.sync with both
// operands streamed into shared memory by cp.async, kS8Stages k tiles in flight. It needs c % 16 == 0
// (a 16-byte chunk of an im2col row is then 16 channels of one input pixel, or zeros outside the
// image: cp.async's zero-fill) and x, w 16-byte aligned; int8_product runs mma_nt otherwise.
//   tile   kBM × kBN per block, kS8BK bytes (= elements) of k per stage; warps of 64 × 32 as mma_nt's,
//          kWarpsM × kWarpsN of them; ≤ 128 registers a thread, so 2 blocks of 256 threads fit an SM.
//   smem   row r of a stage is 64 bytes, its 16-byte chunk j at slot j ^ ((r >> 1) & 3): the 8 rows one
//          ldmatrix phase reads (same j, 8 consecutive rows) then sit in 8 different bank groups.
//   split  blockIdx.z runs k tiles [z·per, min((z + 1)·per, tiles)); epi(z, m, n, v) gets its partial
//          sums (integers: any combine order gives the same result).
constexpr int kS8BK = 64;
constexpr int kS8Stages = 4;

// An epilogue may take a warp's whole 64 × 32 accumulator tile at once instead of value by value:
// it declares kWholeTile = true and tile(acc, m0, n0, g, t, M, N, z) (arguments as store_tile's).
// The float stem's single product does (StoreStemGrouped: the three digit sums of an output lie in
// one thread's n8 tiles 0–2). No split-K for such an epilogue: its caller launches one k range.
template <class E, class = void>
struct whole_tile_epi : std::false_type {};
template <class E>
struct whole_tile_epi<E, std::void_t<decltype(E::kWholeTile)>> : std::bool_constant<E::kWholeTile> {};

template <int WarpsM, int WarpsN>
struct S8Tile {
  static constexpr int kWarpsM = WarpsM, kWarpsN = WarpsN;
  static constexpr int kThreads = 32 * WarpsM * WarpsN;
  static constexpr int kBM = 64 * WarpsM, kBN = 32 * WarpsN;
  static constexpr int kRowsPerPass = kThreads / (kS8BK / 16);  // rows of a stage one pass of all threads fills
  static constexpr int kRowsA = kBM / kRowsPerPass, kRowsB = kBN / kRowsPerPass;  // per thread
  static constexpr int kStageBytes = (kBM + kBN) * kS8BK;
  static constexpr int kSmemBytes = kS8Stages * kStageBytes;
  static constexpr int kMinBlocks = 512 / kThreads;  // 128 registers a thread
};
using S8Tile128x128 = S8Tile<2, 4>;
using S8Tile128x64 = S8Tile<2, 2>;  // layers with ≤ 64 output channels

// 16 bytes global → shared; full = false writes 16 zeros and reads nothing
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(full ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory"); }
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
// byte offset of chunk j of row r in a stage (the swizzle above)
__device__ __forceinline__ int s8_slot(int r, int j) { return r * kS8BK + ((j ^ ((r >> 1) & 3)) << 4); }

// y[m][n] = Σ_k im2col(x)[m][k]·w[n][k], M = g.rows(), N = g.oc, K = g.k(); k_per_split tiles of k per blockIdx.z
template <class Tile, class Epi>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
    s8_conv_pipelined(ConvGeom g, const int8_t* __restrict__ x, const int8_t* __restrict__ w, int M, int N, int K, int k_per_split,
                      Epi epi) {
  extern __shared__ __align__(128) uint8_t s8_smem[];
  constexpr int kOutside = -(1 << 30);  // iy0 of a row past M: no ky brings it inside the image
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / Tile::kWarpsN, wn = warp % Tile::kWarpsN;
  const int m0 = blockIdx.x * Tile::kBM, n0 = blockIdx.y * Tile::kBN;
  const int tiles = (K + kS8BK - 1) / kS8BK;
  const int kt_begin = blockIdx.z * k_per_split;
  const int kt_end = kt_begin + k_per_split < tiles ? kt_begin + k_per_split : tiles;
  const uint32_t smem = static_cast<uint32_t>(__cvta_generic_to_shared(s8_smem));

  // loading: this thread copies chunk `chunk` of rows crow + kRowsPerPass·i of A and of B
  const int crow = tid >> 2, chunk = tid & 3;
  const int write_slot = s8_slot(crow, chunk);  // rows crow + kRowsPerPass·i share it (kRowsPerPass % 8 == 0)
  int64_t a_base[Tile::kRowsA];                 // x offset of (n, iy0, ix0, channel 0); may lie outside x
  int a_iy0[Tile::kRowsA], a_ix0[Tile::kRowsA];
  const int per_image = g.oh * g.ow;
#pragma unroll
  for (int i = 0; i < Tile::kRowsA; ++i) {
    const int m = m0 + crow + Tile::kRowsPerPass * i;
    a_base[i] = 0;
    a_iy0[i] = kOutside;
    a_ix0[i] = 0;
    if (m < M) {
      const int n = m / per_image, p = m % per_image;
      a_iy0[i] = (p / g.ow) * g.sh - g.ph;
      a_ix0[i] = (p % g.ow) * g.sw - g.pw;
      a_base[i] = ((static_cast<int64_t>(n) * g.h + a_iy0[i]) * g.w + a_ix0[i]) * g.c;
    }
  }
  const int8_t* b_row[Tile::kRowsB];  // nullptr past N
#pragma unroll
  for (int i = 0; i < Tile::kRowsB; ++i) {
    const int n = n0 + crow + Tile::kRowsPerPass * i;
    b_row[i] = n < N ? w + static_cast<int64_t>(n) * K : nullptr;
  }
  // k of this thread's chunk in the next tile to load, as (ky, kx, ch): stepped, never divided, per tile
  int k = kt_begin * kS8BK + chunk * 16;
  const int kwc = g.kw * g.c;
  int ky = k / kwc, kx = (k % kwc) / g.c, ch = k % g.c;
  auto load_tile = [&](int stage) {
    const uint32_t sa = smem + stage * Tile::kStageBytes + write_slot;
    const uint32_t sb = sa + Tile::kBM * kS8BK;
    const bool k_in = k < K;
    const int64_t k_off = (static_cast<int64_t>(ky) * g.w + kx) * g.c + ch;
#pragma unroll
    for (int i = 0; i < Tile::kRowsA; ++i) {
      const bool in = k_in && static_cast<unsigned>(a_iy0[i] + ky) < static_cast<unsigned>(g.h) &&
                      static_cast<unsigned>(a_ix0[i] + kx) < static_cast<unsigned>(g.w);
      cp_async_16(sa + Tile::kRowsPerPass * i * kS8BK, in ? x + a_base[i] + k_off : x, in);
    }
#pragma unroll
    for (int i = 0; i < Tile::kRowsB; ++i) {
      const bool in = k_in && b_row[i];
      cp_async_16(sb + Tile::kRowsPerPass * i * kS8BK, in ? b_row[i] + k : w, in);
    }
    k += kS8BK;
    ch += kS8BK;
    while (ch >= g.c) {
      ch -= g.c;
      if (++kx == g.kw) { kx = 0; ++ky; }
    }
  };

  // reading: ldmatrix.x4 addresses of this lane. A (16 rows × 32 bytes of k per m16 fragment):
  // lanes 0–15 rows 0–15 at chunk 2ks, lanes 16–31 the same rows at chunk 2ks + 1 → a0..a3 of
  // m16n8k32. B (two n8 fragments): lanes 0–7 rows 0–7 chunk 2ks, 8–15 rows 0–7 chunk 2ks + 1,
  // 16–23 rows 8–15 chunk 2ks, 24–31 rows 8–15 chunk 2ks + 1 → b0, b1 of each.
  const int a_row = wm * 64 + (lane & 15), a_hi = lane >> 4;
  const int b_row_lane = wn * 32 + (lane & 7) + ((lane >> 4) << 3), b_hi = (lane >> 3) & 1;
  int a_read[2], b_read[2];
#pragma unroll
  for (int ks = 0; ks < 2; ++ks) {
    a_read[ks] = s8_slot(a_row, 2 * ks + a_hi);  // + 16-row steps keep the slot: (r >> 1) & 3 unchanged
    b_read[ks] = Tile::kBM * kS8BK + s8_slot(b_row_lane, 2 * ks + b_hi);
  }

  int32_t acc[4][4][4];
  zero_tile(acc);
  // tiles kt_begin .. kt_begin + kS8Stages − 2 in flight first; one commit group per tile, empty past the end
#pragma unroll
  for (int s = 0; s < kS8Stages - 1; ++s) {
    if (kt_begin + s < kt_end) load_tile(s);
    cp_async_commit();
  }
  int read_stage = 0, write_stage = kS8Stages - 1;
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    cp_async_wait<kS8Stages - 2>();  // this thread's copies of tile kt have landed ...
    __syncthreads();                 // ... everyone's have, and everyone is done with the stage written next
    if (kt + kS8Stages - 1 < kt_end) load_tile(write_stage);
    cp_async_commit();
    const uint32_t stage = smem + read_stage * Tile::kStageBytes;
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t af[4][4], bfr[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) ldmatrix_x4(af[mt], stage + a_read[ks] + mt * 16 * kS8BK);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t b4[4];
        ldmatrix_x4(b4, stage + b_read[ks] + np * 16 * kS8BK);
        bfr[2 * np][0] = b4[0]; bfr[2 * np][1] = b4[1];
        bfr[2 * np + 1][0] = b4[2]; bfr[2 * np + 1][1] = b4[3];
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) S8Policy::mma(acc[mt][nt], af[mt], bfr[nt]);
    }
    read_stage = read_stage + 1 == kS8Stages ? 0 : read_stage + 1;
    write_stage = write_stage + 1 == kS8Stages ? 0 : write_stage + 1;
  }
  cp_async_wait<0>();  // no copy outlives the block (only empty groups can be pending here)
  if constexpr (whole_tile_epi<Epi>::value)
    epi.tile(acc, m0 + wm * 64, n0 + wn * 32, lane >> 2, lane & 3, M, N, blockIdx.z);
  else
    store_tile(acc, m0 + wm * 64, n0 + wn * 32, lane >> 2, lane & 3, M, N, blockIdx.z, epi);
}

// bf16, both operands reduction-major: C[m][n] = Σ_r A[r][m]·B[r][n] over r in this block's chunk.
// la.chunk(r, m0) / lb.chunk(r, n0) return 8 bf16 (m0..m0+7) of row r; zeros past the ends.
constexpr int kTnBK = 64, kTnRow = kMmaBM + 8;  // bf16 elements; +16 B per row: ldmatrix without conflicts

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

template <class LA, class LB, class Epi>
__global__ void __launch_bounds__(256) mma_tn(int M, int N, int64_t R, int64_t rchunk, LA la, LB lb, Epi epi) {
  __shared__ __align__(16) __nv_bfloat16 As[kTnBK * kTnRow];
  __shared__ __align__(16) __nv_bfloat16 Bs[kTnBK * kTnRow];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp >> 2, wn = warp & 3;
  const int m0 = blockIdx.x * kMmaBM, n0 = blockIdx.y * kMmaBN;
  const int64_t rb = static_cast<int64_t>(blockIdx.z) * rchunk;
  const int64_t re = rb + rchunk < R ? rb + rchunk : R;
  const int crow = tid / 16, ccol = (tid % 16) * 8;  // rows crow + 16 i; 8 columns from ccol
  typename LB::Col cb = lb.col(n0 + ccol, N);
  float acc[4][4][4];
  zero_tile(acc);
  constexpr int kPer = kTnBK / 16;
  uint4 pa[kPer], pb[kPer];
  auto fetch = [&](int64_t r0) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int64_t r = r0 + crow + 16 * i;
      const bool ok = r < re;
      pa[i] = ok ? la.chunk(r, m0 + ccol, M) : make_uint4(0, 0, 0, 0);
      pb[i] = ok ? lb.chunk(cb, r, n0 + ccol, N) : make_uint4(0, 0, 0, 0);
    }
  };
  fetch(rb);
  for (int64_t r0 = rb; r0 < re; r0 += kTnBK) {
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      *reinterpret_cast<uint4*>(&As[(crow + 16 * i) * kTnRow + ccol]) = pa[i];
      *reinterpret_cast<uint4*>(&Bs[(crow + 16 * i) * kTnRow + ccol]) = pb[i];
    }
    __syncthreads();
    if (r0 + kTnBK < re) fetch(r0 + kTnBK);
#pragma unroll
    for (int ks = 0; ks < kTnBK / 16; ++ks) {
      uint32_t af[4][4], bfr[4][2];
      const int i = lane >> 3, rr = lane & 7;
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
        ldmatrix_x4_trans(af[mt], &As[(ks * 16 + (i >> 1) * 8 + rr) * kTnRow + wm * 64 + mt * 16 + (i & 1) * 8]);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t b4[4];
        ldmatrix_x4_trans(b4, &Bs[(ks * 16 + (i & 1) * 8 + rr) * kTnRow + wn * 32 + np * 16 + (i >> 1) * 8]);
        bfr[2 * np][0] = b4[0]; bfr[2 * np][1] = b4[1];
        bfr[2 * np + 1][0] = b4[2]; bfr[2 * np + 1][1] = b4[3];
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) Bf16Policy::mma(acc[mt][nt], af[mt], bfr[nt]);
    }
  }
  store_tile(acc, m0 + wm * 64, n0 + wn * 32, g, t, M, N, blockIdx.z, epi);
}

}  // namespace cuda
}  // namespace tl
