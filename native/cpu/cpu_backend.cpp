// The CPU backend: every op of backend.h on a thread pool. Products go through im2col + the GEMMs
// of gemm.cpp in fixed-size row chunks (never dependent on the thread count); reductions combine
// fixed-size chunk partials in chunk order.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/backend.h"
#include "../core/loss.h"
#include "../core/reduce.h"
#include "gemm.h"
#include "thread_pool.h"

namespace tl {
namespace {

constexpr int64_t kRowChunk = 4096;         // rows of im2col per product chunk
constexpr int64_t kBlockRuns = 64;          // pairwise-tree leaves per parallel task (a power of two)
constexpr int64_t kMomentBlockRows = 4096;  // rows per parallel task of the exact int16 moments

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

constexpr int64_t kDstBlock = 1024;  // a multiple of 4 (one Philox call per four weights)

// The per-weight DST of one block, compiled for AVX-512, AVX2 and the baseline (chosen by cpuid).
// The rule's options are template parameters so that the loop body has no branch left.
template <bool kAdam, Tau kTau>
inline int64_t dst_block_impl(int64_t len, int8_t* q, const float* g, float* m, float* v, const float* u, const DstParams& pp) {
  const DstParams p = pp;  // a local copy: stores to m and v cannot alias it, so the loop vectorises
  const DstConsts c = dst_consts(p.levels);
  int64_t flips = 0;
  for (int64_t i = 0; i < len; ++i) {
    const float dw = kAdam ? adam_proposal(g[i], m + i, v + i, p) : -p.lr * g[i];
    const int8_t nq = dst_transition_k<kTau>(q[i], dw, u[i], p, c);
    flips += nq != q[i];
    q[i] = nq;
  }
  return flips;
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
int64_t dst_block(int64_t len, int8_t* q, const float* g, float* m, float* v, const float* u, const DstParams& p) {
  const bool adam = m != nullptr;
  switch (p.tau) {
    case Tau::Tanh: return adam ? dst_block_impl<true, Tau::Tanh>(len, q, g, m, v, u, p) : dst_block_impl<false, Tau::Tanh>(len, q, g, m, v, u, p);
    case Tau::Linear: return adam ? dst_block_impl<true, Tau::Linear>(len, q, g, m, v, u, p) : dst_block_impl<false, Tau::Linear>(len, q, g, m, v, u, p);
    default: return adam ? dst_block_impl<true, Tau::Logistic>(len, q, g, m, v, u, p) : dst_block_impl<false, Tau::Logistic>(len, q, g, m, v, u, p);
  }
}

// core/reduce.h's pairwise tree over c-wide leaves pushed left to right: a binary counter of the
// complete subtrees' sums (equal-sized neighbours merge at once); total() adds the rest from the right.
class PairwiseColumns {
 public:
  explicit PairwiseColumns(int c) : c_(c) {}
  void push(const double* leaf) {
    sums_.insert(sums_.end(), leaf, leaf + c_);
    leaves_.push_back(1);
    while (leaves_.size() >= 2 && leaves_[leaves_.size() - 1] == leaves_[leaves_.size() - 2]) merge_top();
  }
  void total(double* out) {
    while (leaves_.size() >= 2) merge_top();
    if (leaves_.empty()) std::fill(out, out + c_, 0.0);
    else std::copy(sums_.begin(), sums_.end(), out);
    sums_.clear();
    leaves_.clear();
  }

 private:
  void merge_top() {
    const size_t n = leaves_.size();
    double* left = sums_.data() + (n - 2) * c_;
    const double* right = left + c_;
    for (int ch = 0; ch < c_; ++ch) left[ch] += right[ch];
    sums_.resize((n - 1) * c_);
    leaves_[n - 2] += leaves_[n - 1];
    leaves_.pop_back();
  }
  int c_;
  std::vector<double> sums_;
  std::vector<int64_t> leaves_;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : pool_(threads) {}
  std::string name() const override { return "cpu"; }
  std::string describe() const override {
    return "cpu (" + std::to_string(pool_.size()) + " threads, " + kernel_path_name(current_kernel_path()) + ")";
  }
  int threads() const { return pool_.size(); }

  // ---- memory
  Status alloc(size_t bytes, const char* what, Buffer* out) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = rounded ? std::aligned_alloc(64, rounded) : nullptr;
    if (rounded && !p)
      return Status(Code::Oom, std::string("cpu: allocating ") + std::to_string(bytes) + " bytes for " + what +
                                   " failed with " + std::to_string(in_use_.load()) +
                                   " bytes in use by ternlab. Use a smaller batch size or model.");
    if (p) std::memset(p, 0, rounded);
    in_use_ += rounded;
    *out = Buffer(this, p, rounded);
    return Status::ok();
  }
  void release(void* p, size_t bytes) override {
    in_use_ -= bytes;
    std::free(p);
  }
  Status upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); return Status::ok(); }
  Status download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); return Status::ok(); }
  Status zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); return Status::ok(); }
  Status copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); return Status::ok(); }
  Status synchronize() override { return Status::ok(); }
  size_t bytes_in_use() const override { return in_use_.load(); }

  Status normalize_u8(int64_t n, const uint8_t* src, float scale, float offset, float* dst) override {
    pool_.parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dst[i] = static_cast<float>(src[i]) * scale + offset;
    });
    return Status::ok();
  }

  // ---- products
  Status conv_forward(const ConvGeom& g, Operand x, Operand w, float* y) override {
    const int64_t K = g.k(), rows = g.rows();
    if (x.dtype == DType::I8 && w.dtype == DType::I8) {
      const float scale = x.scale * w.scale;
      return int8_product(g, x, w, [&](int64_t r0, int64_t b, int64_t e, const int32_t* a) {
        float* yo = y + r0 * g.oc;
        for (int64_t i = b; i < e; ++i) yo[i] = static_cast<float>(a[i]) * scale;
      });
    }
    // A float operand: float GEMM of im2col(x)[rows, K] by Wᵀ[K, oc].
    std::vector<float> wt = weights_transposed(g, w);
    std::vector<float> cols;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowChunk) {
      const int64_t rc = std::min(kRowChunk, rows - r0);
      const float* a = im2col_f(g, x, r0, rc, &cols);
      sgemm(pool_, rc, g.oc, K, a, K, wt.data(), g.oc, y + r0 * g.oc, g.oc, false);
    }
    return Status::ok();
  }
  Status conv_forward_i16(const ConvGeom& g, Operand x, Operand w, int16_t* y) override {
    return int8_product(g, x, w, [&](int64_t r0, int64_t b, int64_t e, const int32_t* a) {
      int16_t* yo = y + r0 * g.oc;
      for (int64_t i = b; i < e; ++i) yo[i] = static_cast<int16_t>(a[i]);
    });
  }
  // The exact int8 × int8 product in row chunks; store(r0, b, e, acc) writes elements [b, e) of
  // the chunk starting at row r0 from its int32 sums.
  template <class Store>
  Status int8_product(const ConvGeom& g, Operand x, Operand w, Store store) {
    const int64_t K = g.k(), rows = g.rows();
    const int64_t Kp = round_up(K, 64);
    std::vector<int8_t> wp(static_cast<size_t>(g.oc * Kp), 0);
    std::vector<int32_t> colsum(g.oc, 0);
    const int8_t* ws = static_cast<const int8_t*>(w.ptr);
    for (int o = 0; o < g.oc; ++o) {
      int32_t s = 0;
      for (int64_t k = 0; k < K; ++k) { wp[o * Kp + k] = ws[o * K + k]; s += ws[o * K + k]; }
      colsum[o] = s;
    }
    std::vector<uint8_t> cols;
    std::vector<int32_t> acc;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowChunk) {
      const int64_t rc = std::min(kRowChunk, rows - r0);
      cols.resize(static_cast<size_t>(rc * Kp));
      acc.resize(static_cast<size_t>(rc * g.oc));
      im2col_u8(g, static_cast<const int8_t*>(x.ptr), r0, rc, Kp, cols.data());
      igemm(pool_, rc, g.oc, Kp, cols.data(), wp.data(), colsum.data(), acc.data(), g.oc);
      const int32_t* a = acc.data();
      pool_.parallel_for(rc * g.oc, 1 << 14, [&](int64_t b, int64_t e) { store(r0, b, e, a); });
    }
    return Status::ok();
  }

  Status conv_backward_data(const ConvGeom& g, const float* dy, Operand w, float* dx) override {
    const int64_t K = g.k();
    std::vector<float> wf = weights_float(g, w);  // [oc][K]
    if (is_pointwise(g)) {
      sgemm(pool_, g.rows(), K, g.oc, dy, g.oc, wf.data(), K, dx, K, false);
      return Status::ok();
    }
    std::memset(dx, 0, sizeof(float) * g.in_elems());
    const int64_t per_image = static_cast<int64_t>(g.oh) * g.ow;
    const int64_t images = std::max<int64_t>(1, kRowChunk / per_image);
    std::vector<float> dcols;
    for (int64_t n0 = 0; n0 < g.n; n0 += images) {
      const int64_t nc = std::min<int64_t>(images, g.n - n0), rc = nc * per_image;
      dcols.resize(static_cast<size_t>(rc * K));
      sgemm(pool_, rc, K, g.oc, dy + n0 * per_image * g.oc, g.oc, wf.data(), K, dcols.data(), K, false);
      col2im(g, dcols.data(), n0, nc, dx);
    }
    return Status::ok();
  }

  Status conv_backward_filter(const ConvGeom& g, Operand x, const float* dy, float* dw) override {
    const int64_t K = g.k(), rows = g.rows();
    std::vector<float> dyt, cols;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowChunk) {
      const int64_t rc = std::min(kRowChunk, rows - r0);
      dyt.resize(static_cast<size_t>(g.oc * rc));
      const float* d = dy + r0 * g.oc;
      pool_.parallel_for(g.oc, 1, [&](int64_t o0, int64_t o1) {
        for (int64_t o = o0; o < o1; ++o)
          for (int64_t r = 0; r < rc; ++r) dyt[o * rc + r] = d[r * g.oc + o];
      });
      const float* a = im2col_f(g, x, r0, rc, &cols);
      sgemm(pool_, g.oc, K, rc, dyt.data(), rc, a, K, dw, K, r0 > 0);
    }
    return Status::ok();
  }

  Status conv_counters(const ConvGeom& g, const int8_t* x, const int8_t* w, int64_t* counters) override {
    const int64_t K = g.k();
    int64_t zero_w = 0;
    std::vector<int64_t> nz_w(static_cast<size_t>(K), 0);
    for (int o = 0; o < g.oc; ++o)
      for (int64_t k = 0; k < K; ++k) {
        if (w[o * K + k] != 0) ++nz_w[k];
        else ++zero_w;
      }
    // nz_x[k]: output positions whose im2col entry k is a nonzero activation. Integer sums are
    // exact, so per-thread partials combine in any order without breaking determinism.
    const int T = pool_.size();
    std::vector<std::vector<int64_t>> nz_x(T, std::vector<int64_t>(static_cast<size_t>(K), 0));
    std::vector<int64_t> zero_x(T, 0);
    std::atomic<int> slot{0};
    pool_.parallel_for(g.n, 1, [&](int64_t n0, int64_t n1) {
      const int s = slot++;
      auto& nz = nz_x[s];
      int64_t zx = 0;
      for (int64_t n = n0; n < n1; ++n) {
        const int8_t* xi = x + n * g.h * g.w * g.c;
        for (int64_t i = 0; i < static_cast<int64_t>(g.h) * g.w * g.c; ++i) zx += xi[i] == 0;
        for (int oy = 0; oy < g.oh; ++oy)
          for (int ox = 0; ox < g.ow; ++ox)
            for_window(g, oy, ox, [&](int64_t iy, int64_t ix, int ky, int kx) {
              const int8_t* px = xi + (iy * g.w + ix) * g.c;
              int64_t* nzk = nz.data() + (static_cast<int64_t>(ky) * g.kw + kx) * g.c;
              for (int c = 0; c < g.c; ++c) nzk[c] += px[c] != 0;
            });
      }
      zero_x[s] = zx;
    });
    int64_t active = 0, zx = 0;
    for (int s = 0; s < T; ++s) {
      zx += zero_x[s];
      for (int64_t k = 0; k < K; ++k) active += nz_x[s][k] * nz_w[k];
    }
    counters[kZeroInputs] += zx;
    counters[kZeroWeights] += zero_w;
    counters[kActiveMacs] += active;
    return Status::ok();
  }

  // ---- pooling
  Status maxpool_forward(const PoolGeom& g, const float* x, float* y, int32_t* argmax) override {
    return maxpool(g, x, y, argmax, -std::numeric_limits<float>::infinity());
  }
  Status maxpool_forward_i16(const PoolGeom& g, const int16_t* x, int16_t* y, int32_t* argmax) override {
    return maxpool(g, x, y, argmax, std::numeric_limits<int16_t>::min());
  }
  template <class T>
  Status maxpool(const PoolGeom& g, const T* x, T* y, int32_t* argmax, T empty) {
    // Channels innermost (NHWC): each window position updates a contiguous row of c maxima.
    pool_.parallel_for(static_cast<int64_t>(g.n) * g.oh, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / g.oh, oy = t % g.oh;
        for (int ox = 0; ox < g.ow; ++ox) {
          const int64_t o = ((n * g.oh + oy) * g.ow + ox) * g.c;
          T* yo = y + o;
          int32_t* ao = argmax + o;
          bool first = true;
          for_window(g, oy, ox, [&](int64_t iy, int64_t ix) {
            const int64_t base = ((n * g.h + iy) * g.w + ix) * g.c;
            const T* xi = x + base;
            if (first) {
              for (int c = 0; c < g.c; ++c) { yo[c] = xi[c]; ao[c] = static_cast<int32_t>(base + c); }
              first = false;
            } else {
              for (int c = 0; c < g.c; ++c) {  // selects, not branches: vectorises
                const bool gt = xi[c] > yo[c];
                yo[c] = gt ? xi[c] : yo[c];
                ao[c] = gt ? static_cast<int32_t>(base + c) : ao[c];
              }
            }
          });
          if (first)
            for (int c = 0; c < g.c; ++c) { yo[c] = empty; ao[c] = -1; }
        }
      }
    });
    return Status::ok();
  }
  Status maxpool_backward(const PoolGeom& g, const float* dy, const int32_t* argmax, float* dx) override {
    const int64_t in_img = static_cast<int64_t>(g.h) * g.w * g.c, out_img = static_cast<int64_t>(g.oh) * g.ow * g.c;
    pool_.parallel_for(g.n, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) {
        std::memset(dx + n * in_img, 0, sizeof(float) * in_img);
        for (int64_t o = n * out_img; o < (n + 1) * out_img; ++o)
          if (argmax[o] >= 0) dx[argmax[o]] += dy[o];
      }
    });
    return Status::ok();
  }
  Status avgpool_forward(const PoolGeom& g, const float* x, float* y) override {
    pool_.parallel_for(static_cast<int64_t>(g.n) * g.oh, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / g.oh, oy = t % g.oh;
        for (int ox = 0; ox < g.ow; ++ox)
          for (int c = 0; c < g.c; ++c) {
            double s = 0;
            int cnt = 0;
            for_window(g, oy, ox, [&](int64_t iy, int64_t ix) { s += x[((n * g.h + iy) * g.w + ix) * g.c + c]; ++cnt; });
            y[((n * g.oh + oy) * g.ow + ox) * g.c + c] = cnt ? static_cast<float>(s / cnt) : 0.0f;
          }
      }
    });
    return Status::ok();
  }
  Status avgpool_backward(const PoolGeom& g, const float* dy, float* dx) override {
    const int64_t in_img = static_cast<int64_t>(g.h) * g.w * g.c;
    pool_.parallel_for(g.n, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) {
        std::memset(dx + n * in_img, 0, sizeof(float) * in_img);
        for (int oy = 0; oy < g.oh; ++oy)
          for (int ox = 0; ox < g.ow; ++ox) {
            int cnt = 0;
            for_window(g, oy, ox, [&](int64_t, int64_t) { ++cnt; });
            if (!cnt) continue;
            for (int c = 0; c < g.c; ++c) {
              const float d = dy[((n * g.oh + oy) * g.ow + ox) * g.c + c] / static_cast<float>(cnt);
              for_window(g, oy, ox, [&](int64_t iy, int64_t ix) { dx[((n * g.h + iy) * g.w + ix) * g.c + c] += d; });
            }
          }
      }
    });
    return Status::ok();
  }

  // ---- batch norm
  // ---- batch norm + φ fused: y = γ·x̂ + β lives in a register, never in memory; the same float
  // expressions as the unfused ops (bn_forward_train, act_forward, act_backward), so the same bits.
  bool fuses_bn_act() const override { return true; }
  // φ and φ′ per element, with the form chosen once outside the loops: the released code's case
  // (ternary, rectangular window with a < r) in expressions the compiler vectorises, else the
  // shared definitions. Both give the same bits: ||x| − r| ≤ a is |x ∓ r| ≤ a exactly.
  template <class F>
  static void with_phi(const ActSpec& s, F f) {
    if (s.levels.n == 1) {
      const float r = s.r;
      f([r](float y) { return static_cast<int8_t>(y >= r ? 1 : (y > -r ? 0 : -1)); });
    } else {
      f([&s](float y) { return tl::act_forward(y, s); });
    }
  }
  template <class F>
  static void with_phi_grad(const ActSpec& s, F f) {
    if (s.window == Window::Rectangular && s.levels.n == 1 && s.a < s.r) {
      const float h = 1.0f / (2.0f * s.a), r = s.r, a = s.a;
      f([h, r, a](float y, float dq) { return std::fabs(std::fabs(y) - r) <= a ? dq * h : 0.0f; });
    } else {
      f([&s](float y, float dq) { return dq * act_derivative(y, s); });
    }
  }
  // x's values as the product stored them: F32 as they are, I16 as q·scale (the same float). The
  // reader is chosen once, outside the loops, like φ's form.
  template <class F>
  static void with_input(Operand x, F f) {
    if (x.dtype == DType::I16) {
      const int16_t* q = static_cast<const int16_t*>(x.ptr);
      const float scale = x.scale;
      f([q, scale](int64_t i) { return i16_value(q[i], scale); });
    } else {
      const float* v = static_cast<const float*>(x.ptr);
      f([v](int64_t i) { return v[i]; });
    }
  }
  template <class F>
  static void with_xhat(const XhatSource& xs, F f) {
    if (xs.stored) {
      const float* h = xs.stored;
      f([h](int64_t i, int) { return h[i]; });
    } else {
      f([&xs](int64_t i, int ch) { return xs.recompute(i, ch); });
    }
  }
  Status bn_act_forward_train(int64_t rows, int c, Operand x, const float* gamma, const float* beta, float eps,
                              float momentum, float* run_mean, float* run_var, float* y, float* xhat, float* mean,
                              float* invstd, const ActSpec& act, int8_t* q) override {
    bn_statistics(rows, c, x, eps, momentum, run_mean, run_var, invstd, mean);
    with_input(x, [&](auto xv) {
      with_phi(act, [&](auto phi) { bn_apply(rows, c, xv, mean, invstd, gamma, beta, xhat, [&](int64_t i, float v) { q[i] = phi(v); }); });
    });
    return Status::ok();
  }
  Status bn_act_forward_infer(int64_t rows, int c, Operand x, const float* gamma, const float* beta,
                              const float* run_mean, const float* run_var, float eps, float* y, const ActSpec& act,
                              int8_t* q) override {
    with_phi(act, [&](auto phi) { bn_infer(rows, c, x, gamma, beta, run_mean, run_var, eps, [&](int64_t i, float v) { q[i] = phi(v); }); });
    return Status::ok();
  }
  Status act_bn_backward(int64_t rows, int c, const float* dq, const float* y, const XhatSource& xhat, const float* gamma,
                         const float* beta, const float* invstd, const ActSpec& act, float* dy_scratch, float* dx,
                         float* dgamma, float* dbeta) override {
    with_xhat(xhat, [&](auto xh) {
      with_phi_grad(act, [&](auto dphi) {
        pool_.parallel_for(rows, 256, [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r)
            for (int ch = 0; ch < c; ++ch) {
              const int64_t i = r * c + ch;
              dy_scratch[i] = dphi(gamma[ch] * xh(i, ch) + beta[ch], dq[i]);
            }
        });
      });
    });
    return bn_backward(rows, c, dy_scratch, xhat, gamma, invstd, dx, dgamma, dbeta);
  }
  // Batch mean and biased variance per channel in core/reduce.h's order: exact from the integers
  // for int16 sums, else double sums of the values (Σx, then Σ(x − μ)²) by the pairwise tree.
  void bn_moments(int64_t rows, int c, Operand x, std::vector<double>* mean, std::vector<double>* var) {
    if (x.dtype == DType::I16 && rows <= kExactMomentRows) {
      const int16_t* q = static_cast<const int16_t*>(x.ptr);
      const int64_t blocks = (rows + kMomentBlockRows - 1) / kMomentBlockRows;
      std::vector<int64_t> part(static_cast<size_t>(blocks * 2 * c), 0);  // Σq, Σq² per block: exact, any order
      pool_.parallel_for(blocks, 1, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          int64_t* s1 = part.data() + k * 2 * c;
          int64_t* s2 = s1 + c;
          const int64_t r1 = std::min(rows, (k + 1) * kMomentBlockRows);
          for (int64_t r = k * kMomentBlockRows; r < r1; ++r)
            for (int ch = 0; ch < c; ++ch) {
              const int32_t v = q[r * c + ch];
              s1[ch] += v;
              s2[ch] += v * v;
            }
        }
      });
      mean->assign(c, 0.0);
      var->assign(c, 0.0);
      for (int ch = 0; ch < c; ++ch) {
        int64_t s1 = 0, s2 = 0;
        for (int64_t k = 0; k < blocks; ++k) {
          s1 += part[k * 2 * c + ch];
          s2 += part[k * 2 * c + c + ch];
        }
        bn_moments_from_sums(rows, s1, s2, x.scale, &(*mean)[ch], &(*var)[ch]);
      }
      return;
    }
    with_input(x, [&](auto xv) {
      *mean = column_sums(rows, c, [&](int64_t r, int ch) { return static_cast<double>(xv(r * c + ch)); });
      for (auto& m : *mean) m /= static_cast<double>(rows);
      const std::vector<double>& mu = *mean;
      *var = column_sums(rows, c, [&](int64_t r, int ch) {
        const double d = xv(r * c + ch) - mu[ch];
        return d * d;
      });
      for (auto& v : *var) v /= static_cast<double>(rows);
    });
  }
  // batch statistics, running statistics, μ and 1/σ in float
  void bn_statistics(int64_t rows, int c, Operand x, float eps, float momentum, float* run_mean, float* run_var,
                     float* invstd, float* mf) {
    std::vector<double> mean, var;
    bn_moments(rows, c, x, &mean, &var);
    for (int ch = 0; ch < c; ++ch) {
      mf[ch] = static_cast<float>(mean[ch]);
      invstd[ch] = static_cast<float>(1.0 / std::sqrt(var[ch] + eps));
      run_mean[ch] = (1.0f - momentum) * run_mean[ch] + momentum * mf[ch];
      run_var[ch] = (1.0f - momentum) * run_var[ch] + momentum * static_cast<float>(var[ch]);
    }
  }
  // x̂ = (x − μ)/σ (stored unless xhat is null) and y = γ·x̂ + β, handed to `out(i, y)` (stored, or
  // turned into φ's states)
  template <class X, class Out>
  void bn_apply(int64_t rows, int c, X xv, const float* mf, const float* isf, const float* gamma, const float* beta,
                float* xhat, Out out) {
    pool_.parallel_for(rows, 256, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        for (int ch = 0; ch < c; ++ch) {
          const float h = (xv(r * c + ch) - mf[ch]) * isf[ch];
          if (xhat) xhat[r * c + ch] = h;
          out(r * c + ch, gamma[ch] * h + beta[ch]);
        }
    });
  }
  static void bn_infer_coefficients(int c, const float* gamma, const float* beta, const float* run_mean, const float* run_var,
                                    float eps, float* sc, float* sh) {
    for (int ch = 0; ch < c; ++ch) {
      sc[ch] = gamma[ch] / std::sqrt(run_var[ch] + eps);
      sh[ch] = beta[ch] - run_mean[ch] * sc[ch];
    }
  }

  Status bn_forward_train(int64_t rows, int c, Operand x, const float* gamma, const float* beta, float eps,
                          float momentum, float* run_mean, float* run_var, float* y, float* xhat, float* mean,
                          float* invstd) override {
    bn_statistics(rows, c, x, eps, momentum, run_mean, run_var, invstd, mean);
    with_input(x, [&](auto xv) { bn_apply(rows, c, xv, mean, invstd, gamma, beta, xhat, [&](int64_t i, float v) { y[i] = v; }); });
    return Status::ok();
  }
  Status bn_forward_infer(int64_t rows, int c, Operand x, const float* gamma, const float* beta,
                          const float* run_mean, const float* run_var, float eps, float* y) override {
    bn_infer(rows, c, x, gamma, beta, run_mean, run_var, eps, [&](int64_t i, float v) { y[i] = v; });
    return Status::ok();
  }
  // evaluation: x·σ⁻¹γ + (β − μσ⁻¹γ) from the running statistics, handed to `out(i, y)`
  template <class Out>
  void bn_infer(int64_t rows, int c, Operand x, const float* gamma, const float* beta, const float* run_mean, const float* run_var,
                float eps, Out out) {
    std::vector<float> sc(c), sh(c);
    bn_infer_coefficients(c, gamma, beta, run_mean, run_var, eps, sc.data(), sh.data());
    with_input(x, [&](auto xv) {
      pool_.parallel_for(rows, 256, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r)
          for (int ch = 0; ch < c; ++ch) out(r * c + ch, xv(r * c + ch) * sc[ch] + sh[ch]);
      });
    });
  }
  Status bn_backward(int64_t rows, int c, const float* dy, const XhatSource& xhat, const float* gamma, const float* invstd,
                     float* dx, float* dgamma, float* dbeta) override {
    with_xhat(xhat, [&](auto xh) {
      std::vector<double> db = column_sums(rows, c, [&](int64_t r, int ch) { return static_cast<double>(dy[r * c + ch]); });
      std::vector<double> dg =
          column_sums(rows, c, [&](int64_t r, int ch) { return static_cast<double>(dy[r * c + ch]) * xh(r * c + ch, ch); });
      std::vector<float> k1(c), k2(c), k3(c);
      for (int ch = 0; ch < c; ++ch) {
        dgamma[ch] = static_cast<float>(dg[ch]);
        dbeta[ch] = static_cast<float>(db[ch]);
        k1[ch] = gamma[ch] * invstd[ch];
        k2[ch] = static_cast<float>(db[ch] / rows);
        k3[ch] = static_cast<float>(dg[ch] / rows);
      }
      pool_.parallel_for(rows, 256, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r)
          for (int ch = 0; ch < c; ++ch) {
            const int64_t i = r * c + ch;
            dx[i] = k1[ch] * (dy[i] - k2[ch] - xh(i, ch) * k3[ch]);
          }
      });
    });
    return Status::ok();
  }

  // ---- activation
  Status act_forward(int64_t n, const float* x, const ActSpec& s, int8_t* q) override {
    with_phi(s, [&](auto phi) {
      pool_.parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) q[i] = phi(x[i]);
      });
    });
    return Status::ok();
  }
  Status act_backward(int64_t n, const float* x, const float* dq, const ActSpec& s, float* dx) override {
    with_phi_grad(s, [&](auto dphi) {
      pool_.parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) dx[i] = dphi(x[i], dq[i]);
      });
    });
    return Status::ok();
  }

  Status act_backward_accumulate(int64_t n, const float* x, const float* dq, const ActSpec& s, float* dx) override {
    with_phi_grad(s, [&](auto dphi) {
      pool_.parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) dx[i] += dphi(x[i], dq[i]);
      });
    });
    return Status::ok();
  }

  Status add(int64_t n, const float* a, const float* b, float* y) override {
    pool_.parallel_for(n, 1 << 14, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = a[i] + b[i];
    });
    return Status::ok();
  }
  Status accumulate(int64_t n, const float* src, float* dst) override {
    pool_.parallel_for(n, 1 << 14, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) dst[i] += src[i];
    });
    return Status::ok();
  }

  Status loss(int64_t n, int c, const float* y, const int32_t* labels, LossKind kind, float* dy, float* row_loss,
              int32_t* rank) override {
    const float inv = kind == LossKind::SquaredHinge ? 1.0f / (static_cast<float>(n) * c) : 1.0f / static_cast<float>(n);
    pool_.parallel_for(n, 16, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) loss_row(c, y + r * c, labels[r], kind, inv, dy + r * c, row_loss + r, rank + r);
    });
    return Status::ok();
  }

  // ---- updates
  Status dst_update(int64_t n, int8_t* q, const float* g, float* m, float* v, const DstParams& p,
                    int64_t* counters) override {
    std::atomic<int64_t> flips{0};
    // Tasks cover whole blocks of kDstBlock weights: the draws of a block come first (one Philox
    // call per four weights, dst_uniform's layout), then a branch-free loop the compiler vectorises.
    const int64_t blocks = (n + kDstBlock - 1) / kDstBlock;
    pool_.parallel_for(blocks, 1, [&](int64_t bb, int64_t be) {
      alignas(64) float u[kDstBlock];
      int64_t f = 0;
      for (int64_t blk = bb; blk < be; ++blk) {
        const int64_t i0 = blk * kDstBlock, len = std::min<int64_t>(kDstBlock, n - i0);
        for (int64_t j = 0; j < len; j += 4) {
          const Philox4 r = philox_draw(p.seed, p.step, p.layer, static_cast<uint32_t>((i0 + j) >> 2), kStreamDst);
          for (int k = 0; k < 4; ++k) u[j + k] = uniform24(r.v[k]);
        }
        f += dst_block(len, q + i0, g + i0, m ? m + i0 : nullptr, v ? v + i0 : nullptr, u, p);
      }
      flips += f;
    });
    counters[kFlips] += flips.load();
    return Status::ok();
  }
  Status adam_update(int64_t n, float* p, const float* g, float* m, float* v, const AdamParams& a) override {
    pool_.parallel_for(n, 1 << 12, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) adam_update_one(p + i, g[i], m + i, v + i, a);
    });
    return Status::ok();
  }
  Status init_states(int64_t n, int8_t* q, uint64_t seed, uint32_t layer, float spread, const Levels& lv) override {
    pool_.parallel_for(n, 1 << 12, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) q[i] = init_state(seed, layer, static_cast<uint32_t>(i), spread, lv);
    });
    return Status::ok();
  }
  Status init_uniform(int64_t n, float* p, uint64_t seed, uint32_t layer, float limit) override {
    pool_.parallel_for(n, 1 << 12, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        p[i] = (2.0f * uniform24(philox_draw(seed, 0, layer, static_cast<uint32_t>(i), kStreamInit).v[0]) - 1.0f) * limit;
    });
    return Status::ok();
  }
  Status count_zeros(int64_t n, const int8_t* q, int64_t* counters) override {
    int64_t z = 0;
    for (int64_t i = 0; i < n; ++i) z += q[i] == 0;
    counters[kZeroWeights] += z;
    return Status::ok();
  }

 private:
  static bool is_pointwise(const ConvGeom& g) {
    return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  }

  // The in-image positions of output pixel (oy, ox)'s window (core/backend.h's for_taps_inside, the
  // CUDA kernels' walk), for pooling and convolution geometries alike; f takes (iy, ix) or
  // (iy, ix, ky, kx), as 64-bit positions for the callers' index arithmetic.
  template <class G, class F>
  static void for_window(const G& g, int64_t oy, int64_t ox, F f) {
    for_taps_inside(g, static_cast<int>(oy), static_cast<int>(ox), [&](int ky, int kx, int iy, int ix) {
      if constexpr (std::is_invocable_v<F, int64_t, int64_t>) f(int64_t{iy}, int64_t{ix});
      else f(int64_t{iy}, int64_t{ix}, ky, kx);
    });
  }


  // Per-channel sums over rows in core/reduce.h's order: runs of kSumRun rows in row order, the
  // pairwise tree over the runs. Blocks of kBlockRuns runs (a power of two: the same tree) in parallel.
  template <class F>
  std::vector<double> column_sums(int64_t rows, int c, F value) {
    const int64_t block_rows = kBlockRuns * kSumRun, blocks = (rows + block_rows - 1) / block_rows;
    std::vector<double> part(static_cast<size_t>(blocks * c), 0.0);
    pool_.parallel_for(blocks, 1, [&](int64_t b, int64_t e) {
      PairwiseColumns tree(c);
      std::vector<double> leaf(c);
      for (int64_t k = b; k < e; ++k) {
        const int64_t r_end = std::min(rows, (k + 1) * block_rows);
        for (int64_t r0 = k * block_rows; r0 < r_end; r0 += kSumRun) {
          std::fill(leaf.begin(), leaf.end(), 0.0);
          for (int64_t r = r0; r < std::min(r_end, r0 + kSumRun); ++r)
            for (int ch = 0; ch < c; ++ch) leaf[ch] += value(r, ch);
          tree.push(leaf.data());
        }
        tree.total(part.data() + k * c);
      }
    });
    PairwiseColumns tree(c);
    for (int64_t k = 0; k < blocks; ++k) tree.push(part.data() + k * c);
    std::vector<double> out(c, 0.0);
    tree.total(out.data());
    return out;
  }

  // Rows [r0, r0+rc) of im2col(x), `stride` elements apart (the first K filled, the rest `pad`).
  // Each window row is walked in runs of in-image pixels, which are contiguous in NHWC; a run is
  // handed to copy(dst, offset of its first element in x, length); padding pixels get `pad`.
  template <class T, class Copy>
  void im2col_rows(const ConvGeom& g, int64_t r0, int64_t rc, int64_t stride, T* out, T pad, Copy copy) {
    const int64_t per_image = static_cast<int64_t>(g.oh) * g.ow, K = g.k();
    const int64_t span = static_cast<int64_t>(g.kw) * g.c;
    pool_.parallel_for(rc, 64, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t row = r0 + r, n = row / per_image, oy = (row % per_image) / g.ow, ox = row % g.ow;
        T* dst = out + r * stride;
        const int64_t ix0 = ox * g.sw - g.pw;
        const bool inside_x = ix0 >= 0 && ix0 + g.kw <= g.w;
        for (int ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.ph + ky;
          T* drow = dst + ky * span;
          if (iy < 0 || iy >= g.h) {
            std::fill(drow, drow + span, pad);
            continue;
          }
          const int64_t row_off = ((n * g.h + iy) * g.w) * g.c;
          for (int64_t kx0 = 0; kx0 < g.kw;) {
            int64_t kx1 = kx0;
            if (inside_x) kx1 = g.kw;
            else {
              const int64_t ix = ix0 + kx0;
              if (ix < 0 || ix >= g.w) {
                std::fill(drow + kx0 * g.c, drow + (kx0 + 1) * g.c, pad);
                ++kx0;
                continue;
              }
              while (kx1 < g.kw && ix0 + kx1 >= 0 && ix0 + kx1 < g.w) ++kx1;
            }
            copy(drow + kx0 * g.c, row_off + (ix0 + kx0) * g.c, (kx1 - kx0) * g.c);
            kx0 = kx1;
          }
        }
        std::fill(dst + K, dst + stride, pad);
      }
    });
  }

  // Rows [r0, r0+rc) of im2col(x) as u8 (s8 + 128: a zero activation and padding are 128).
  void im2col_u8(const ConvGeom& g, const int8_t* x, int64_t r0, int64_t rc, int64_t Kp, uint8_t* cols) {
    im2col_rows<uint8_t>(g, r0, rc, Kp, cols, 128, [&](uint8_t* d, int64_t off, int64_t len) {
      const int8_t* s = x + off;
      for (int64_t k = 0; k < len; ++k) d[k] = static_cast<uint8_t>(s[k] + 128);
    });
  }

  // Rows [r0, r0+rc) of im2col(x) as float values (int8 operands scaled). Pointwise convs with a
  // float input return the input itself.
  const float* im2col_f(const ConvGeom& g, Operand x, int64_t r0, int64_t rc, std::vector<float>* cols) {
    const int64_t K = g.k();
    if (is_pointwise(g) && x.dtype == DType::F32) return static_cast<const float*>(x.ptr) + r0 * K;
    cols->resize(static_cast<size_t>(rc * K));
    im2col_rows<float>(g, r0, rc, K, cols->data(), 0.0f, [&](float* d, int64_t off, int64_t len) {
      if (x.dtype == DType::F32) {
        std::memcpy(d, static_cast<const float*>(x.ptr) + off, sizeof(float) * len);
      } else {
        const int8_t* src = static_cast<const int8_t*>(x.ptr) + off;
        for (int64_t k = 0; k < len; ++k) d[k] = static_cast<float>(src[k]) * x.scale;
      }
    });
    return cols->data();
  }

  // dx += col2im(dcols) for images [n0, n0+nc); one task per image, so no two tasks touch one pixel.
  void col2im(const ConvGeom& g, const float* dcols, int64_t n0, int64_t nc, float* dx) {
    const int64_t per_image = static_cast<int64_t>(g.oh) * g.ow, K = g.k();
    pool_.parallel_for(nc, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t n = n0 + i;
        for (int64_t p = 0; p < per_image; ++p) {
          const int64_t oy = p / g.ow, ox = p % g.ow;
          const float* src = dcols + (i * per_image + p) * K;
          for_window(g, oy, ox, [&](int64_t iy, int64_t ix, int ky, int kx) {
            float* d = dx + ((n * g.h + iy) * g.w + ix) * g.c;
            const float* s = src + (static_cast<int64_t>(ky) * g.kw + kx) * g.c;
            for (int c = 0; c < g.c; ++c) d[c] += s[c];
          });
        }
      }
    });
  }

  static std::vector<float> weights_float(const ConvGeom& g, Operand w) {
    const int64_t n = g.oc * g.k();
    std::vector<float> out(static_cast<size_t>(n));
    if (w.dtype == DType::F32) {
      std::memcpy(out.data(), w.ptr, sizeof(float) * n);
    } else {
      const int8_t* q = static_cast<const int8_t*>(w.ptr);
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * w.scale;
    }
    return out;
  }
  static std::vector<float> weights_transposed(const ConvGeom& g, Operand w) {
    const int64_t K = g.k();
    std::vector<float> wf = weights_float(g, w), out(static_cast<size_t>(K * g.oc));
    for (int o = 0; o < g.oc; ++o)
      for (int64_t k = 0; k < K; ++k) out[k * g.oc + o] = wf[o * K + k];
    return out;
  }

  ThreadPool pool_;
  std::atomic<size_t> in_use_{0};
};

}  // namespace

Status make_cpu_backend(int threads, std::unique_ptr<Backend>* out) {
  if (threads <= 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  *out = std::make_unique<CpuBackend>(threads);
  return Status::ok();
}

}  // namespace tl
