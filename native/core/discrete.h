// The per-element mathematics of ALGORITHM.md §1, written once as host/device functions: both
// backends call these, so the CPU and the GPU make the same discrete decisions from the same inputs.
#pragma once
#include <cmath>
#include <cstdint>
#include "philox.h"

namespace tl {

// A product that the compiler must not fuse with a neighbouring add into an FMA. nvcc contracts
// a*b+c into one fma by default, the CPU build (ISO C++17, no -mfma) never does; the rounding then
// differs in the last bit. Writing the products of the shared per-element formulas with mul_rn makes
// both backends round identically (CUDA backend, issue 3).
// float or double; both operands of one type (a mixed call does not compile, rather than convert).
template <class T>
TL_HD T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(float)) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// Z_N = { n/2^(N-1) - 1 : n = 0..2^N }. States are stored as the signed integer q = w/unit with
// unit = 2^-max(N-1, 0), so q moves in steps of `qstep` (2 for binary, where Δ = 2; else 1).
struct Levels {
  int n = 1;  // N
  TL_HD float unit() const { return n <= 1 ? 1.0f : 1.0f / static_cast<float>(1 << (n - 1)); }
  TL_HD int qmax() const { return n <= 1 ? 1 : (1 << (n - 1)); }
  TL_HD int qstep() const { return n == 0 ? 2 : 1; }
  TL_HD float delta() const { return n == 0 ? 2.0f : unit(); }
};

// exp and tanh written with plain float operations (every product through mul_rn): the same
// bits on every CPU and on the GPU, and vectorisable, unlike libm's expf/tanhf whose last bit
// differs between implementations. Relative error below 2e-7 (checked against libm in test/dst).
TL_HD float pow2i(int n) {
  const uint32_t bits = static_cast<uint32_t>(n + 127) << 23;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

TL_HD float tl_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = floorf(mul_rn(x, 1.44269504088896341f) + 0.5f);
  // r = x − n·ln2 in two parts (Cody–Waite), |r| ≤ ln2/2
  const float r = (x - mul_rn(n, 0.693359375f)) + mul_rn(n, 2.12194440e-4f);
  // degree-6 Taylor polynomial of e^r on |r| ≤ 0.347, Horner form
  float pz = 1.0f / 720.0f;
  pz = mul_rn(pz, r) + 1.0f / 120.0f;
  pz = mul_rn(pz, r) + 1.0f / 24.0f;
  pz = mul_rn(pz, r) + 1.0f / 6.0f;
  pz = mul_rn(pz, r) + 0.5f;
  pz = mul_rn(pz, r) + 1.0f;
  pz = mul_rn(pz, r) + 1.0f;
  return mul_rn(pz, pow2i(static_cast<int>(n)));
}

// tanh(y) for y ≥ 0: an odd Taylor series near 0 (no cancellation), (1 − e^−2y)/(1 + e^−2y) above.
// Both are computed and one selected, so that a loop over weights has no branch to vectorise around.
TL_HD float tl_tanh_pos(float y) {
  const float y2 = mul_rn(y, y);
  float s = 62.0f / 2835.0f;
  s = mul_rn(s, y2) - 17.0f / 315.0f;
  s = mul_rn(s, y2) + 2.0f / 15.0f;
  s = mul_rn(s, y2) - 1.0f / 3.0f;
  const float near0 = y + mul_rn(mul_rn(s, y2), y);
  const float e = tl_exp(-2.0f * y);
  const float far = (1.0f - e) / (1.0f + e);
  return y < 0.125f ? near0 : far;
}

// ---- activation φ_r and its derivative windows (§1.2) ----
enum class Window : int32_t { Rectangular = 0, Triangular = 1, Gaussian = 2, Logistic = 3 };

struct ActSpec {
  Levels levels;        // activation levels (default ternary)
  float r = 1.0f;       // threshold (released code: 1)
  float a = 0.5f;       // window half-width (released code: 0.5)
  Window window = Window::Rectangular;
};

// Thresholds sit at r·(z_j + z_{j+1}) between neighbouring levels z_j < z_{j+1}: ±r for ternary,
// 0 for binary. Ties go away from zero (x ≥ t → up for t > 0, x ≤ t → down for t < 0), as the
// released code's round(hardsig(…)) does; for t = 0 (binary), x ≥ 0 → +1.
TL_HD int8_t act_forward(float x, const ActSpec& s) {
  const int qmax = s.levels.qmax(), qstep = s.levels.qstep();
  const float unit = s.levels.unit();
  int q = -qmax;
  for (int lo = -qmax; lo < qmax; lo += qstep) {
    const float t = s.r * unit * static_cast<float>(2 * lo + qstep);
    const bool up = t > 0.0f ? (x >= t) : (t < 0.0f ? (x > t) : (x >= 0.0f));
    if (up) q = lo + qstep;
  }
  return static_cast<int8_t>(q);
}

// ∂φ/∂x (§1.2): the window of the chosen shape around the nearest jump, scaled by the jump height.
// For ternary this is ALGORITHM.md's form in |x| − r exactly (e.g. σ'((|x| − r)/a)/a): the window
// of the other jump does not add its tail. Exponentials are tl_exp, so the CPU and the GPU agree
// to the bit.
TL_HD float act_derivative(float x, const ActSpec& s) {
  const int qmax = s.levels.qmax(), qstep = s.levels.qstep();
  const float unit = s.levels.unit();
  const float height = unit * static_cast<float>(qstep);
  const float a = s.a;
  float az = 3.402823466e38f;  // distance to the nearest jump
  for (int lo = -qmax; lo < qmax; lo += qstep) {
    const float t = mul_rn(s.r * unit, static_cast<float>(2 * lo + qstep));
    const float z = x - t;
    const float d = z < 0 ? -z : z;
    az = d < az ? d : az;
  }
  float w = 0.0f;
  switch (s.window) {
    case Window::Rectangular: w = az <= a ? 1.0f / (2.0f * a) : 0.0f; break;
    case Window::Triangular: w = az <= a ? (a - az) / mul_rn(a, a) : 0.0f; break;
    case Window::Gaussian:
      w = tl_exp(-mul_rn(az, az) / mul_rn(mul_rn(2.0f, a), a)) / mul_rn(2.5066282746310002f, a);
      break;
    case Window::Logistic: {
      const float e = tl_exp(-az / a);
      w = e / mul_rn(1.0f + e, 1.0f + e) / a;
      break;
    }
  }
  return mul_rn(height, w);
}

// ---- DST (§1.3) ----
enum class Proposal : int32_t { Adam = 0, Sgd = 1 };
enum class Tau : int32_t { Tanh = 0, Linear = 1, Logistic = 2 };

struct DstParams {
  Levels levels;
  Proposal proposal = Proposal::Adam;
  Tau tau = Tau::Tanh;
  float m = 3.0f;             // tanh steepness (released code: 3)
  float temperature = 1.0f;   // logistic τ
  float lr = 0.0f;            // η (sgd) or α_t (adam, already bias-corrected)
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  uint64_t seed = 0;
  uint32_t step = 0;          // Philox counter word
  uint32_t layer = 0;
};

template <Tau kTau>
TL_HD float dst_tau_k(float x /* |ν|/Δ in [0,1) */, const DstParams& p) {
  if (kTau == Tau::Tanh) return tl_tanh_pos(mul_rn(p.m, x));
  if (kTau == Tau::Linear) return x;
  return 1.0f / (1.0f + tl_exp(-(x - 0.5f) / p.temperature));
}

TL_HD float dst_tau(float x, const DstParams& p) {
  switch (p.tau) {
    case Tau::Tanh: return dst_tau_k<Tau::Tanh>(x, p);
    case Tau::Linear: return dst_tau_k<Tau::Linear>(x, p);
    default: return dst_tau_k<Tau::Logistic>(x, p);
  }
}

// The level constants of a DST, computed once per tensor.
struct DstConsts {
  float unit, delta;
  int qmax, qstep;
};
TL_HD DstConsts dst_consts(const Levels& lv) { return DstConsts{lv.unit(), lv.delta(), lv.qmax(), lv.qstep()}; }

// One weight's transition given its proposal ΔW (in weight units) and a uniform draw u ∈ [0,1).
template <Tau kTau>
TL_HD int8_t dst_transition_k(int8_t q, float dw, float u, const DstParams& p, const DstConsts& c) {
  const float w = static_cast<float>(q) * c.unit;
  // Boundary: ΔW ← clip(ΔW, −1 − w, 1 − w).
  float lo = -1.0f - w, hi = 1.0f - w;
  dw = dw < lo ? lo : (dw > hi ? hi : dw);
  // Branch-free from here on (so the CPU loop vectorises): ΔW = 0 gives sign 0, hence no move.
  const int sign = dw < 0.0f ? -1 : (dw > 0.0f ? 1 : 0);
  const float x = (dw < 0 ? -dw : dw) / c.delta;
  const float kappa = floorf(x);
  const float frac = x - kappa;
  const int jump = static_cast<int>(kappa) + (u < dst_tau_k<kTau>(frac, p) ? 1 : 0);
  int nq = static_cast<int>(q) + sign * jump * c.qstep;
  nq = nq < -c.qmax ? -c.qmax : (nq > c.qmax ? c.qmax : nq);
  return static_cast<int8_t>(nq);
}

TL_HD int8_t dst_transition(int8_t q, float dw, float u, const DstParams& p) {
  const DstConsts c = dst_consts(p.levels);
  switch (p.tau) {
    case Tau::Tanh: return dst_transition_k<Tau::Tanh>(q, dw, u, p, c);
    case Tau::Linear: return dst_transition_k<Tau::Linear>(q, dw, u, p, c);
    default: return dst_transition_k<Tau::Logistic>(q, dw, u, p, c);
  }
}

// The Adam proposal (Lasagne's form): moments updated in place, ΔW = −α_t·m/(√v + ε).
TL_HD float adam_proposal(float g, float* m, float* v, const DstParams& p) {
  const float mm = mul_rn(p.beta1, *m) + mul_rn(1.0f - p.beta1, g);
  const float vv = mul_rn(p.beta2, *v) + mul_rn(mul_rn(1.0f - p.beta2, g), g);
  *m = mm;
  *v = vv;
  return -p.lr * mm / (sqrtf(vv) + p.eps);
}

// The DST draw of a weight: one Philox call serves four consecutive weights (element/4 is the
// counter, element%4 the output word), which quarters the cost of the generator.
TL_HD float dst_uniform(uint32_t element, const DstParams& p) {
  return uniform24(philox_draw(p.seed, p.step, p.layer, element >> 2, kStreamDst).v[element & 3u]);
}

TL_HD int8_t dst_update_with_draw(int8_t q, float g, float* m, float* v, float u, const DstParams& p) {
  const float dw = p.proposal == Proposal::Adam ? adam_proposal(g, m, v, p) : -p.lr * g;
  return dst_transition(q, dw, u, p);
}

TL_HD int8_t dst_update_one(int8_t q, float g, float* m, float* v, uint32_t element, const DstParams& p) {
  return dst_update_with_draw(q, g, m, v, dst_uniform(element, p), p);
}

// Full-precision parameters (BN γ, β; float weight layers) by Lasagne's Adam.
struct AdamParams {
  float lr_t = 0.0f;  // α_t = η·√(1−β2^t)/(1−β1^t)
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
};

TL_HD void adam_update_one(float* p, float g, float* m, float* v, const AdamParams& a) {
  const float mm = mul_rn(a.beta1, *m) + mul_rn(1.0f - a.beta1, g);
  const float vv = mul_rn(a.beta2, *v) + mul_rn(mul_rn(1.0f - a.beta2, g), g);
  *m = mm;
  *v = vv;
  *p -= a.lr_t * mm / (sqrtf(vv) + a.eps);
}

// Initial state (§1.1): u ~ U(−s, s), clipped to [−1, 1], rounded to the nearest state.
TL_HD int8_t init_state(uint64_t seed, uint32_t layer, uint32_t element, float spread, const Levels& lv) {
  const float u = uniform24(philox_draw(seed, 0, layer, element, kStreamInit).v[0]);
  float w = mul_rn(2.0f * u - 1.0f, spread);
  w = w < -1.0f ? -1.0f : (w > 1.0f ? 1.0f : w);
  if (lv.n == 0) return w >= 0.0f ? 1 : -1;
  const float unit = lv.unit();
  return static_cast<int8_t>(roundf(w / unit));
}

}  // namespace tl
