// The loss of one row (sample), written once for both backends (CpuBackend::loss runs it per row on
// the thread pool, the CUDA backend one row per thread): the rank of the true class, the row's loss
// and its gradient. Products go through mul_rn so that nvcc forms no FMA the CPU does not:
// the squared hinge is bit-identical on both; cross-entropy uses each side's exp/log (within 1e-6).
#pragma once
#include <cmath>
#include <cstdint>

#include "backend.h"
#include "discrete.h"

namespace tl {

// y: the row's c outputs; lab: the true class; inv: the gradient's scale (1/(n·c) for the squared
// hinge's mean over batch × classes, 1/n for cross-entropy); writes dy[0..c), *loss and *rank
// (0 = top-1; ties go to the lower class index).
TL_HD void loss_row(int c, const float* y, int lab, LossKind kind, float inv, float* dy, float* loss, int32_t* rank) {
  int rk = 0;
  for (int j = 0; j < c; ++j) rk += (y[j] > y[lab]) || (j < lab && y[j] == y[lab]);
  *rank = rk;
  if (kind == LossKind::SquaredHinge) {
    double l = 0;
    for (int j = 0; j < c; ++j) {
      const float t = j == lab ? 1.0f : -1.0f;
      const float m = 1.0f - mul_rn(t, y[j]);
      const float h = m > 0.0f ? m : 0.0f;
      l = l + mul_rn(static_cast<double>(h), static_cast<double>(h));
      dy[j] = mul_rn(mul_rn(-2.0f * t, h), inv);
    }
    *loss = static_cast<float>(l / c);
    return;
  }
  float mx = y[0];
  for (int j = 1; j < c; ++j) mx = mx < y[j] ? y[j] : mx;
  double s = 0;
  for (int j = 0; j < c; ++j) s = s + exp(static_cast<double>(y[j] - mx));
  for (int j = 0; j < c; ++j) {
    const double p = exp(static_cast<double>(y[j] - mx)) / s;
    dy[j] = static_cast<float>(mul_rn(p - (j == lab ? 1.0 : 0.0), static_cast<double>(inv)));
  }
  *loss = static_cast<float>(log(s) - static_cast<double>(y[lab] - mx));
}

}  // namespace tl
