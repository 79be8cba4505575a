// The float first layer (ResNet's / AlexNet's stem) on the int8 tensor cores: the per-element
// pieces, host/device, so that the CUDA backend (conv_forward_pixels) and a CPU test
// (test/native/stem_emulation.cpp) run the same index map, split and combine.
//
// The layer: y[o] = Σ_taps inside the image x·w[o], x = s·px + o_px (uint8 pixels px, scalar s, o_px),
// zero padding in x, float weights w. Three steps (native/cuda/NOTES.md, "Session 5: the float stem"):
//  1. Centring, as the int8-weight pixels path: Σ x·w = s·Σ (px − 128)·w + (o_px + 128·s)·Σ w, the last
//     sum over the taps inside the image only (the border sum B). px − 128 is exact in int8.
//  2. Space-to-depth: P[n][iy][ox][j] = px[n][iy][ox·sw − pw + kx][ch] − 128, j = kx·c + ch (0 outside
//     the image and for kw·c ≤ j < cp = round_up(kw·c, 16)). The kh × kw conv with stride (sh, sw),
//     pad (ph, pw) over c channels is then the kh × 1 conv over P with stride (sh, 1), pad (ph, 0) and
//     cp channels (packed_geom): the pipelined int8 kernel takes c % 16 == 0, and its zero-fill does
//     the vertical padding. ResNet: 7·3 = 21 → 32 bytes per tap row, K = 224 for 147 real taps (an
//     RGB pixel padded to 16 channels per tap would be K = 784).
//  3. Float weights as a 24-bit fixed-point number per output channel: e = exponent(max|w[o]|) is
//     the power of two with max|w[o]|·2^−e ≤ 127 (> 63.5), N = rint(w·2^(16−e)) (|N| ≤ 127·2^16)
//     and N = d0·2^16 + d1·2^8 + d2 with balanced base-256 digits d_i in [−128, 127] (split). The
//     product runs once per digit (three exact int8 products), the integer sums are combined exactly
//     (int32, then int64) and rounded to float once (combine). The only approximation is w ≈
//     N·2^(e−16): |w − N·2^(e−16)| ≤ 2^(e−17) < max|w[o]|·2^−17/63.5 ≈ 1.2e−7·max|w[o]|. A power of two
//     (not max/127) makes w·2^(16−e) and the final scaling exact, so the bound is the whole story.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../core/backend.h"
#include "../core/discrete.h"

namespace tl {
namespace stem {

// Real taps (kh·kw·c) at most: the middle combine v1·256 + v2 must fit int32 with |px − 128| ≤ 128
// and |d_i| ≤ 128: K·128·128·257 < 2^31 for K ≤ 510 (ResNet 147, AlexNet's 11×11×3 363).
constexpr int kMaxTaps = 510;
// Packed row width kw·c at most (before rounding up to 16): beyond it the packing's redundancy
// (each pixel copied ≈ kw/sw times) stops paying.
constexpr int kMaxRow = 64;
// exponent() of a channel with a NaN or an infinity: its outputs are NaN (as the float product's)
constexpr int kNonFinite = 1 << 20;

TL_HD int packed_width(const ConvGeom& g) { return (g.kw * g.c + 15) / 16 * 16; }
TL_HD bool applies(const ConvGeom& g) {
  return g.c >= 1 && g.kw * g.c <= kMaxRow && static_cast<int64_t>(g.kh) * g.kw * g.c <= kMaxTaps && g.sh >= 1 && g.sw >= 1;
}
// The geometry the int8 kernel sees: a kh × 1 conv over P (n, h, ow, cp), output (oh, ow) unchanged.
TL_HD ConvGeom packed_geom(const ConvGeom& g) {
  ConvGeom p = g;
  p.w = g.ow;
  p.c = packed_width(g);
  p.kw = 1;
  p.sw = 1;
  p.pw = 0;
  return p;
}
// P[n][iy][ox][j]: the centred pixel under tap column kx = j / c, channel j % c, or 0 (outside the
// image horizontally, or padding j ≥ kw·c). Rows iy are the image's own: no vertical padding is stored.
// No division: in NHWC the kw·c bytes under an output's taps are one contiguous run of the image row,
// from byte (ox·sw − pw)·c, and (ix0 + kx)·c + ch lies in [0, w·c) exactly when column ix0 + kx does.
TL_HD int8_t pack_value(const uint8_t* px, const ConvGeom& g, int64_t n, int iy, int ox, int j) {
  if (j >= g.kw * g.c) return 0;
  const int at = (ox * g.sw - g.pw) * g.c + j;  // byte in the image row
  if (at < 0 || at >= g.w * g.c) return 0;
  return static_cast<int8_t>(static_cast<int>(px[(n * g.h + iy) * g.w * g.c + at]) - 128);
}

// e with maxabs·2^−e ≤ 127 and, for maxabs > 0, > 63.5 (frexp: maxabs = f·2^E, f in [0.5, 1), so
// maxabs·2^−(E−7) = 128·f in [64, 128); one more halving when it is above 127). All-zero: 0.
TL_HD int exponent(float maxabs) {
  if (!(maxabs <= 3.40282347e38f)) return kNonFinite;  // NaN or infinite
  if (maxabs == 0.0f) return 0;
  int E = 0;
  frexpf(maxabs, &E);
  int e = E - 7;
  if (ldexpf(maxabs, -e) > 127.0f) ++e;
  return e;
}
// N = rint(w·2^(16−e)): ldexpf is exact (|w·2^(16−e)| ≤ 127·2^16 < 2^24; only weights below
// 2^−149+e−16 lose bits, and they round to 0 either way), rintf rounds half to even on host and device.
TL_HD int32_t fixed(float w, int e) {
  if (e == kNonFinite) return 0;
  return static_cast<int32_t>(rintf(ldexpf(w, 16 - e)));
}
// Balanced base-256 digits of N: N = d[0]·2^16 + d[1]·2^8 + d[2], each in [−128, 127]. With
// |N| ≤ 127·2^16: |N1| = |(N − d2)/256| ≤ 32512 and |d0| = |(N1 − d1)/256| ≤ 127.
TL_HD void split(int32_t N, int8_t* d) {
  const int32_t d2 = ((N + 128) & 255) - 128;
  const int32_t n1 = (N - d2) / 256;  // exact: N − d2 is a multiple of 256
  const int32_t d1 = ((n1 + 128) & 255) - 128;
  d[0] = static_cast<int8_t>((n1 - d1) / 256);
  d[1] = static_cast<int8_t>(d1);
  d[2] = static_cast<int8_t>(d2);
}
// The border sum of output (oy, ox), channel o: Σ N over the taps inside the image (int64: ≤ K·127·2^16).
TL_HD int64_t border_sum(const ConvGeom& g, const float* w, int e, int o, int oy, int ox) {
  int64_t s = 0;
  for_taps_inside(g, oy, ox, [&](int ky, int kx, int, int) {
    const float* wt = w + ((static_cast<int64_t>(o) * g.kh + ky) * g.kw + kx) * g.c;
    for (int c = 0; c < g.c; ++c) s += fixed(wt[c], e);
  });
  return s;
}
// The three products' sums v_i = Σ (px − 128)·d_i, combined: the middle one as int32 (low = v1·256
// + v2, |low| ≤ K·128·128·257 < 2^31), then T = v0·2^16 + low = Σ (px − 128)·N exactly (int64).
TL_HD int32_t combine_low(int32_t v1, int32_t v2) { return v1 * 256 + v2; }
// y = (s·T + o2·B)·2^(e−16), o2 = fma(128, s, o_px) (host: one rounding). T and B each rounded to
// float once, two products and a sum rounded, the power of two exact (ldexpf; only a subnormal
// result rounds). mul_rn keeps nvcc from fusing a product into an FMA: host and device round alike.
TL_HD float combine(int32_t v0, int32_t low, int64_t border, float s, float o2, int e) {
  if (e == kNonFinite) {
    const uint32_t bits = 0x7fc00000u;  // quiet NaN
    float nan;
    memcpy(&nan, &bits, sizeof nan);
    return nan;
  }
  const int64_t T = static_cast<int64_t>(v0) * 65536 + low;
  const float t = static_cast<float>(T), b = static_cast<float>(border);
  return ldexpf(mul_rn(s, t) + mul_rn(o2, b), e - 16);
}

// The single-product variant (TERNLAB_STEM=grouped): the three digit planes as interleaved weight
// rows, so that one thread of s8_conv_pipelined holds all three sums of its outputs. A warp's 32
// columns are four n8 tiles; a thread holds columns 2t, 2t + 1 of each (the m16n8 fragment). Columns
// [32·q, 32·q + 32) carry channels 8q .. 8q + 7: n8 tile d = digit d of those 8 channels (d = 0, 1, 2),
// tile 3 zero (a quarter of the MACs unused). Rows: grouped_columns(oc) = 32·ceil(oc / 8).
TL_HD int grouped_columns(int oc) { return (oc + 7) / 8 * 32; }
TL_HD int grouped_row(int o, int digit) { return (o / 8) * 32 + digit * 8 + o % 8; }
// the inverse of grouped_row: the channel and digit of weight row `row` (digit 3: a zero row)
TL_HD void grouped_source(int row, int* o, int* digit) {
  *digit = (row % 32) / 8;
  *o = (row / 32) * 8 + row % 8;
}
// the channel of fragment column 2t + b in every n8 tile of the warp whose first column is n_warp (a multiple of 32)
TL_HD int grouped_channel(int n_warp, int t, int b) { return n_warp / 4 + 2 * t + b; }

}  // namespace stem
}  // namespace tl
