// The batch norm's per-channel sums, in one order that both backends follow (DESIGN.md's
// determinism contract: a fixed order, independent of thread counts and launch shapes).
//
// Float terms (Σx and Σ(x − μ)² of a float input, Σdy and Σdy·x̂ of the backward) are summed in
// double: rows are cut into runs of kSumRun rows, each run summed serially in row order starting
// from 0.0, and the runs' sums are combined by the pairwise tree over runs: bottom-up, neighbours
// (2i, 2i+1) added at each level, an odd last node carried up unchanged. Equivalently
// tree(n leaves) = tree(first h) + tree(last n − h) with h the largest power of two below n. The
// tree over aligned blocks of a power-of-two number of leaves, then the same tree over the blocks'
// sums, is the same tree: that is how the GPU splits it over warps and blocks, and the CPU over
// threads, without changing a bit. (The order it replaced, serial 512-row chains combined serially
// in chunk order, left the GPU waiting on one dependent add after another.)
//
// Int16 inputs (exact integer sums q with value q·scale) get exact statistics instead: Σq and Σq²
// in int64 (order-free, so any parallel reduction gives the same bits), then mean and biased
// variance from the integers by bn_moments_from_sums, one expression for both backends.
#pragma once
#include <cstdint>

#include "discrete.h"

namespace tl {

constexpr int64_t kSumRun = 16;  // rows per serial run, the leaves of the pairwise tree

// The exact integer statistics need Σq² ≤ rows·2^30 < 2^63 (and n·Σq² within 128 bits):
// beyond this many rows the float path sums the values instead.
constexpr int64_t kExactMomentRows = int64_t(1) << 32;

// μ = scale·Σq/n and σ² = scale²·(n·Σq² − (Σq)²)/n², the numerator exact in 128 bits (it is n²
// times the integers' biased variance, ≥ 0) and converted to double in two 64-bit halves, each
// conversion rounding to nearest on both backends.
TL_HD void bn_moments_from_sums(int64_t n, int64_t s1, int64_t s2, float scale, double* mean, double* var) {
  const double nd = static_cast<double>(n), s = static_cast<double>(scale);
  *mean = mul_rn(static_cast<double>(s1) / nd, s);
  const __int128 m = static_cast<__int128>(n) * s2 - static_cast<__int128>(s1) * s1;
  const double high = static_cast<double>(static_cast<int64_t>(m >> 32));
  const double low = static_cast<double>(static_cast<uint32_t>(m & 0xffffffffu));
  const double md = mul_rn(high, 4294967296.0) + low;
  *var = mul_rn(md / mul_rn(nd, nd), mul_rn(s, s));
}

}  // namespace tl
