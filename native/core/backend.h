// The op set a backend implements (DESIGN.md: "the training step is written once"). The model and
// the training step in native/core call only this interface; native/cpu and native/cuda implement
// it and nothing else. All pointers are device pointers of the backend (host memory for the CPU).
// Tensors are NHWC; conv weights are [oc][kh][kw][c]; dense weights are [out][in].
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include "discrete.h"
#include "status.h"

namespace tl {

class Backend;

// Device memory owned by RAII: released by the backend that allocated it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend* b, void* p, size_t bytes) : backend_(b), ptr_(p), bytes_(bytes) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  ~Buffer() { reset(); }
  void reset();
  void* data() const { return ptr_; }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  Backend* backend_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// I16: the exact integer sums of an int8 × int8 product (a ternary conv's output is an integer
// times one scale, |Σ| ≤ K·qmax²), kept in 2 bytes instead of a 4-byte float: value = q·scale with
// the product's own float expression, so every reader sees the float the product would have stored.
enum class DType : int32_t { F32 = 0, I8 = 1, I16 = 2 };

// One operand: float values, or int8 states / int16 sums whose value is scale·q.
struct Operand {
  DType dtype = DType::F32;
  const void* ptr = nullptr;
  float scale = 1.0f;
};
inline size_t dtype_bytes(DType t) { return t == DType::I8 ? 1 : t == DType::I16 ? 2 : 4; }
inline Operand f32_operand(const float* p) { return Operand{DType::F32, p, 1.0f}; }
// The value of element i of an F32 or I16 operand, the expression the product's store uses.
TL_HD float i16_value(int16_t q, float scale) { return mul_rn(static_cast<float>(q), scale); }

// x̂ = (q·scale − μ)·σ⁻¹ of an int16 sum q: the BN forward's float expression, recomputed in its backward
TL_HD float xhat_of(int16_t q, float scale, float mean, float invstd) {
  return mul_rn(i16_value(q, scale) - mean, invstd);
}
// x̂ of a batch norm in the backward pass: stored by the forward, or recomputed from its exact
// int16 input as (q·scale − μ)·σ⁻¹, the forward's float expression, so the same bits.
struct XhatSource {
  const float* stored = nullptr;
  const int16_t* q = nullptr;
  float scale = 1.0f;
  const float* mean = nullptr;
  const float* invstd = nullptr;
  TL_HD float recompute(int64_t i, int ch) const { return xhat_of(q[i], scale, mean[ch], invstd[ch]); }
};

struct ConvGeom {
  int n = 0, h = 0, w = 0, c = 0;      // input
  int oc = 0, kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  int oh = 0, ow = 0;                  // output
  int64_t rows() const { return static_cast<int64_t>(n) * oh * ow; }
  int64_t k() const { return static_cast<int64_t>(kh) * kw * c; }
  int64_t in_elems() const { return static_cast<int64_t>(n) * h * w * c; }
  int64_t macs() const { return rows() * k() * oc; }
};

struct PoolGeom {
  int n = 0, h = 0, w = 0, c = 0, kh = 2, kw = 2, sh = 2, sw = 2, ph = 0, pw = 0, oh = 0, ow = 0;
};
// f(ky, kx, iy, ix) for the taps of output (oy, ox) that lie inside the input, ky then kx ascending
// (the CPU's order); G is a PoolGeom or a ConvGeom. Host and device (the CUDA kernels, stem.h).
template <class G, class F>
TL_HD void for_taps_inside(const G& g, int oy, int ox, F f) {
  for (int ky = 0; ky < g.kh; ++ky) {
    const int iy = oy * g.sh - g.ph + ky;
    if (iy < 0 || iy >= g.h) continue;
    for (int kx = 0; kx < g.kw; ++kx) {
      const int ix = ox * g.sw - g.pw + kx;
      if (ix >= 0 && ix < g.w) f(ky, kx, iy, ix);
    }
  }
}

enum class LossKind : int32_t { SquaredHinge = 0, CrossEntropy = 1 };

// Counter slots a backend adds into (int64, device memory), read back once per step.
enum CounterSlot : int { kZeroInputs = 0, kZeroWeights = 1, kActiveMacs = 2, kFlips = 3, kCounterSlots = 4 };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual std::string describe() const = 0;  // e.g. "cpu (2 threads, avx512-vnni)"

  // memory
  virtual Status alloc(size_t bytes, const char* what, Buffer* out) = 0;
  virtual void release(void* p, size_t bytes) = 0;
  virtual Status upload(void* dst, const void* src, size_t bytes) = 0;
  virtual Status download(void* dst, const void* src, size_t bytes) = 0;
  virtual Status zero(void* dst, size_t bytes) = 0;
  virtual Status copy(void* dst, const void* src, size_t bytes) = 0;
  virtual Status synchronize() = 0;
  virtual size_t bytes_in_use() const = 0;

  // Host staging and asynchronous transfers, for the training loop's pipeline (train.cpp): batch
  // b+1 is gathered and uploaded while step b computes, and step b's metrics are read back while
  // step b+1 is queued. Slots 0 and 1 alternate between steps. The defaults (plain host memory,
  // copies done at once, no waiting) are right for a backend whose "device" is the host.
  virtual Status host_alloc(size_t bytes, const char* what, void** p) {
    *p = bytes ? std::malloc(bytes) : nullptr;
    if (bytes && !*p) return Status(Code::Oom, "allocating " + std::to_string(bytes) + " bytes of host memory for " + what + " failed");
    return Status::ok();
  }
  virtual void host_free(void* p) { std::free(p); }
  // Upload on a copy queue that runs beside the computation; src must stay untouched until
  // host_wait_upload(slot) returns. wait_upload(slot) makes the ops queued after it wait for it.
  virtual Status upload_async(void* dst, const void* src, size_t bytes, int slot) { return upload(dst, src, bytes); }
  virtual Status wait_upload(int slot) { return Status::ok(); }
  virtual Status host_wait_upload(int slot) { return Status::ok(); }
  // Download queued behind the ops before it (dst: from host_alloc); valid after host_wait(slot)
  // for a mark(slot) queued after it.
  virtual Status download_async(void* dst, const void* src, size_t bytes) { return download(dst, src, bytes); }
  virtual Status mark(int slot) { return Status::ok(); }
  virtual Status host_wait(int slot) { return Status::ok(); }

  // data: dst = src·scale + offset (uint8 pixels to the float network input)
  virtual Status normalize_u8(int64_t n, const uint8_t* src, float scale, float offset, float* dst) = 0;

  // products. Both operands int8 ⇒ exact integer arithmetic (s8·s8 → s32), scaled once at the end.
  virtual Status conv_forward(const ConvGeom& g, Operand x, Operand w, float* y) = 0;
  virtual Status conv_backward_data(const ConvGeom& g, const float* dy, Operand w, float* dx) = 0;
  virtual Status conv_backward_filter(const ConvGeom& g, Operand x, const float* dy, float* dw) = 0;
  // Both backward products of one layer (dx may be null: no gradient flows to the input). A backend
  // may share work between the two (the CUDA one converts dy once).
  virtual Status conv_backward(const ConvGeom& g, Operand x, const float* dy, Operand w, float* dw, float* dx) {
    TL_TRY(conv_backward_filter(g, x, dy, dw));
    return dx ? conv_backward_data(g, dy, w, dx) : Status::ok();
  }
  // The first layer's product on the network input x = px·scale + offset (px: the batch's uint8
  // pixels, on the device). By default the float product of x; a backend may instead use that the
  // pixels are small integers (the CUDA one: an exact int8 product for int8 weights).
  struct Pixels {
    const uint8_t* px = nullptr;
    float scale = 1.0f, offset = 0.0f;
  };
  virtual Status conv_forward_pixels(const ConvGeom& g, Operand x, const Pixels& px, Operand w, float* y) {
    return conv_forward(g, x, w, y);
  }
  // An int8 × int8 product stored as its exact int16 sums (the caller guarantees K·qmax_x·qmax_w
  // fits in int16); the value is the sum times x.scale·w.scale (DType::I16).
  virtual Status conv_forward_i16(const ConvGeom& g, Operand x, Operand w, int16_t* y) = 0;
  // Gated-XNOR counters of an int8×int8 product: zero inputs, zero weights, active MACs (exact).
  virtual Status conv_counters(const ConvGeom& g, const int8_t* x, const int8_t* w, int64_t* counters) = 0;

  // pooling
  virtual Status maxpool_forward(const PoolGeom& g, const float* x, float* y, int32_t* argmax) = 0;
  // the same on exact int16 sums (one positive scale: the maxima and their positions are those of the floats)
  virtual Status maxpool_forward_i16(const PoolGeom& g, const int16_t* x, int16_t* y, int32_t* argmax) = 0;
  virtual Status maxpool_backward(const PoolGeom& g, const float* dy, const int32_t* argmax, float* dx) = 0;
  virtual Status avgpool_forward(const PoolGeom& g, const float* x, float* y) = 0;
  virtual Status avgpool_backward(const PoolGeom& g, const float* dy, float* dx) = 0;

  // batch norm over rows × channels (rows = n·h·w); biased batch variance, EMA running stats.
  // x: F32, or I16 sums (then xhat may be null: the backward recomputes it from x, mean and invstd).
  // mean, invstd: the batch's float μ and σ⁻¹ per channel, as x̂ = (x − μ)·σ⁻¹ uses them.
  virtual Status bn_forward_train(int64_t rows, int c, Operand x, const float* gamma, const float* beta,
                                  float eps, float momentum, float* run_mean, float* run_var, float* y,
                                  float* xhat, float* mean, float* invstd) = 0;
  virtual Status bn_forward_infer(int64_t rows, int c, Operand x, const float* gamma, const float* beta,
                                  const float* run_mean, const float* run_var, float eps, float* y) = 0;
  virtual Status bn_backward(int64_t rows, int c, const float* dy, const XhatSource& xhat, const float* gamma,
                             const float* invstd, float* dx, float* dgamma, float* dbeta) = 0;

  // Batch norm followed by φ (the usual pair), as one op each way. y is the BN output: the defaults
  // write it (forward) and read it (backward); a backend may instead recompute y = γ·x̂ + β from x̂
  // with the same float expression, which gives the same bits. dy_scratch (backward): room for
  // the BN output's gradient, which the defaults pass between the two unfused ops (the CUDA
  // backend recomputes it where it reads it instead and leaves dy_scratch alone).
  virtual Status bn_act_forward_train(int64_t rows, int c, Operand x, const float* gamma, const float* beta, float eps,
                                      float momentum, float* run_mean, float* run_var, float* y, float* xhat, float* mean,
                                      float* invstd, const ActSpec& act, int8_t* q) {
    TL_TRY(bn_forward_train(rows, c, x, gamma, beta, eps, momentum, run_mean, run_var, y, xhat, mean, invstd));
    return act_forward(rows * c, y, act, q);
  }
  // Evaluation: batch norm with the running statistics, then φ.
  virtual Status bn_act_forward_infer(int64_t rows, int c, Operand x, const float* gamma, const float* beta,
                                      const float* run_mean, const float* run_var, float eps, float* y, const ActSpec& act,
                                      int8_t* q) {
    TL_TRY(bn_forward_infer(rows, c, x, gamma, beta, run_mean, run_var, eps, y));
    return act_forward(rows * c, y, act, q);
  }
  // True when the three ops above never touch y (then the model allocates no BN output for them).
  virtual bool fuses_bn_act() const { return false; }
  // dq, dy_scratch and dx may be one buffer (the model computes in place where it can): every
  // backend writes element i only after its last read of element i of the others.
  virtual Status act_bn_backward(int64_t rows, int c, const float* dq, const float* y, const XhatSource& xhat, const float* gamma,
                                 const float* beta, const float* invstd, const ActSpec& act, float* dy_scratch, float* dx,
                                 float* dgamma, float* dbeta) {
    TL_TRY(act_backward(rows * c, y, dq, act, dy_scratch));
    return bn_backward(rows, c, dy_scratch, xhat, gamma, invstd, dx, dgamma, dbeta);
  }

  // ---- a product's gradients handed over in bf16 (the CUDA backend with fast maths on cuDNN)
  // The backward products round dy to bf16 and produce dx in bf16. Where they would anyway:
  // - dy (takes_bf16_dy): the op that produces dy may write it in bf16 straight into the backend's
  //   buffer bf16_dy (elems bf16 values), and the product reads it there (conv_backward_bf16 with
  //   dy_bf16): the same bits as a float dy, one conversion pass and half of dy's bytes saved;
  // - dx (gives_bf16_dx; weights of scale 1): the product leaves dx in bf16 in a backend buffer
  //   (conv_backward_bf16 with dx_bf16, dx still given) for the op that reads it next
  //   (act_bn_backward_bf16 with dq_bf16), instead of a conversion pass to float.
  // Both on by default on CUDA; TERNLAB_CUDA_BF16_DY=0 / TERNLAB_CUDA_BF16_DX=0 turn them off.
  // The model runs producer and reader one after the other (the buffers are the products'
  // scratch: no other product may run between them). Backends whose takes_bf16_dy and
  // gives_bf16_dx are false need none of the rest.
  virtual bool takes_bf16_dy(const ConvGeom&) { return false; }
  virtual bool gives_bf16_dx(const ConvGeom&) { return false; }
  virtual Status bf16_dy(int64_t elems, void** out) { return no_bf16("bf16_dy"); }
  virtual Status maxpool_backward_bf16(const PoolGeom&, const float*, const int32_t*, void*) { return no_bf16("maxpool_backward_bf16"); }
  virtual Status bn_backward_bf16(int64_t, int, const float*, const XhatSource&, const float*, const float*, void*, float*, float*) {
    return no_bf16("bn_backward_bf16");
  }
  // the fused φ + BN backward with dq in bf16 (dq_bf16, else the float dq) and/or dx in bf16
  // (dx_bf16, else the float dx)
  virtual Status act_bn_backward_bf16(int64_t, int, const float*, const void*, const float*, const XhatSource&, const float*,
                                      const float*, const float*, const ActSpec&, float*, void*, float*, float*) {
    return no_bf16("act_bn_backward_bf16");
  }
  // conv_backward with dy in bf16 (dy_bf16, else the float dy) and/or dx left in bf16 (dx_bf16: its
  // place returned there; dx itself is then not written)
  virtual Status conv_backward_bf16(const ConvGeom&, Operand, const float*, const void*, Operand, float*, float*, void**) {
    return no_bf16("conv_backward_bf16");
  }
  static Status no_bf16(const char* op) {
    return Status(Code::Internal, std::string(op) + ": this backend hands no gradients over in bf16");
  }

  // activation φ_r (float → int8 states) and its windowed straight-through derivative
  virtual Status act_forward(int64_t n, const float* x, const ActSpec& s, int8_t* q) = 0;
  virtual Status act_backward(int64_t n, const float* x, const float* dq, const ActSpec& s, float* dx) = 0;
  // dx += φ′(x)·dq: the gradient of an activation whose input has one already (ResNet's residual
  // stream, read by φ and by the next add), in one pass instead of act_backward into scratch and
  // accumulate; the same roundings (the product, then the sum), so the same bits.
  virtual Status act_backward_accumulate(int64_t n, const float* x, const float* dq, const ActSpec& s, float* dx) = 0;

  // elementwise
  virtual Status add(int64_t n, const float* a, const float* b, float* y) = 0;
  virtual Status accumulate(int64_t n, const float* src, float* dst) = 0;  // dst += src

  // loss over n rows × c classes: dy, per-row loss and the rank of the true class (0 = top-1)
  virtual Status loss(int64_t n, int c, const float* y, const int32_t* labels, LossKind kind, float* dy,
                      float* row_loss, int32_t* rank) = 0;

  // updates
  virtual Status dst_update(int64_t n, int8_t* q, const float* g, float* m, float* v, const DstParams& p,
                            int64_t* counters) = 0;
  virtual Status adam_update(int64_t n, float* p, const float* g, float* m, float* v, const AdamParams& a) = 0;
  virtual Status init_states(int64_t n, int8_t* q, uint64_t seed, uint32_t layer, float spread, const Levels& lv) = 0;
  virtual Status init_uniform(int64_t n, float* p, uint64_t seed, uint32_t layer, float limit) = 0;
  // counts zero states of q into counters[kZeroWeights]
  virtual Status count_zeros(int64_t n, const int8_t* q, int64_t* counters) = 0;
};

inline Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    backend_ = o.backend_; ptr_ = o.ptr_; bytes_ = o.bytes_;
    o.backend_ = nullptr; o.ptr_ = nullptr; o.bytes_ = 0;
  }
  return *this;
}
inline void Buffer::reset() {
  if (ptr_ && backend_) backend_->release(ptr_, bytes_);
  backend_ = nullptr; ptr_ = nullptr; bytes_ = 0;
}

// Host memory from Backend::host_alloc (pinned where the backend has a device), freed by it.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { if (p_) backend_->host_free(p_); }
  Status alloc(Backend* b, size_t bytes, const char* what) {
    if (p_) backend_->host_free(p_);
    p_ = nullptr;
    backend_ = b;
    return b->host_alloc(bytes, what, &p_);
  }
  template <class T> T* as() const { return static_cast<T*>(p_); }

 private:
  Backend* backend_ = nullptr;
  void* p_ = nullptr;
};

// Factories (implemented by each backend's translation unit).
Status make_cpu_backend(int threads, std::unique_ptr<Backend>* out);
// Present only when compiled with CUDA; otherwise returns E_BACKEND explaining why.
Status make_cuda_backend(int device, std::unique_ptr<Backend>* out);
bool cuda_compiled();

}  // namespace tl
