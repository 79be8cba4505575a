// The op-level surface: each backend op callable from JS on typed arrays, so that tests check
// every op of every backend against one float64 reference (test/ops.test.ts, test/gpu/).
#include <napi.h>

#include <map>
#include <memory>
#include <mutex>

#include <cstring>

#include "../core/train.h"
#include "../cpu/gemm.h"
#include "convert.h"

namespace tl::napi {
namespace {

std::mutex g_mu;
std::map<std::string, std::unique_ptr<Backend>> g_backends;

Backend& backend_for(Napi::Env env, const Napi::Value& v) {
  const std::string kind = v.IsString() ? v.As<Napi::String>().Utf8Value() : "cpu";
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_backends.find(kind);
  if (it != g_backends.end()) return *it->second;
  std::unique_ptr<Backend> b;
  check(env, make_backend(kind, 0, &b));
  return *(g_backends[kind] = std::move(b));
}

// A device copy of a typed array (its bytes; dtype says int8 or float for the product operands), and back.
struct Dev {
  Buffer buf;
  DType dtype = DType::F32;
};
Dev to_dev(Napi::Env env, Backend& b, const Napi::Value& v) {
  Dev d;
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  const napi_typedarray_type type = t.TypedArrayType();
  d.dtype = type == napi_int8_array ? DType::I8 : type == napi_int16_array ? DType::I16 : DType::F32;
  const size_t bytes = t.ByteLength();
  check(env, b.alloc(bytes, "op input", &d.buf));
  auto* src = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  if (bytes) check(env, b.upload(d.buf.data(), src, bytes));
  return d;
}
Dev dev_zeros(Napi::Env env, Backend& b, size_t bytes) {
  Dev d;
  check(env, b.alloc(bytes, "op output", &d.buf));
  check(env, b.zero(d.buf.data(), d.buf.bytes()));
  return d;
}
template <class Arr, class T>
Arr from_dev(Napi::Env env, Backend& b, const Dev& d, size_t n) {
  Arr a = Arr::New(env, n);
  if (n) check(env, b.download(a.Data(), d.buf.data(), n * sizeof(T)));
  return a;
}
Napi::Float32Array f32(Napi::Env env, Backend& b, const Dev& d, size_t n) { return from_dev<Napi::Float32Array, float>(env, b, d, n); }
Operand operand(const Dev& d, float scale) { return Operand{d.dtype, d.buf.data(), scale}; }
float fnum(const Napi::Value& v, float dflt) { return v.IsNumber() ? v.As<Napi::Number>().FloatValue() : dflt; }
size_t len(const Napi::Value& v) { return v.As<Napi::TypedArray>().ElementLength(); }

Napi::Value ConvForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  ConvGeom g = conv_geom(info[1].As<Napi::Object>());
  Dev x = to_dev(env, b, info[2]), w = to_dev(env, b, info[4]);
  Dev y = dev_zeros(env, b, sizeof(float) * g.rows() * g.oc);
  check(env, b.conv_forward(g, operand(x, fnum(info[3], 1)), operand(w, fnum(info[5], 1)), y.buf.as<float>()));
  return f32(env, b, y, g.rows() * g.oc);
}
// (kind, geom, pixels: Uint8Array, scale, offset, w, w scale): the first layer's product on
// x = pixels·scale + offset, normalised on the device as training does
Napi::Value ConvForwardPixels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  ConvGeom g = conv_geom(info[1].As<Napi::Object>());
  Dev px = to_dev(env, b, info[2]), w = to_dev(env, b, info[5]);
  const Backend::Pixels p{px.buf.as<uint8_t>(), fnum(info[3], 1), fnum(info[4], 0)};
  Dev x = dev_zeros(env, b, sizeof(float) * g.in_elems());
  check(env, b.normalize_u8(g.in_elems(), p.px, p.scale, p.offset, x.buf.as<float>()));
  Dev y = dev_zeros(env, b, sizeof(float) * g.rows() * g.oc);
  check(env, b.conv_forward_pixels(g, Operand{DType::F32, x.buf.data(), 1.0f}, p, operand(w, fnum(info[6], 1)), y.buf.as<float>()));
  return f32(env, b, y, g.rows() * g.oc);
}
Napi::Value ConvBackwardData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  ConvGeom g = conv_geom(info[1].As<Napi::Object>());
  Dev dy = to_dev(env, b, info[2]), w = to_dev(env, b, info[3]);
  Dev dx = dev_zeros(env, b, sizeof(float) * g.in_elems());
  check(env, b.conv_backward_data(g, dy.buf.as<float>(), operand(w, fnum(info[4], 1)), dx.buf.as<float>()));
  return f32(env, b, dx, g.in_elems());
}
Napi::Value ConvBackwardFilter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  ConvGeom g = conv_geom(info[1].As<Napi::Object>());
  Dev x = to_dev(env, b, info[2]), dy = to_dev(env, b, info[4]);
  Dev dw = dev_zeros(env, b, sizeof(float) * g.oc * g.k());
  check(env, b.conv_backward_filter(g, operand(x, fnum(info[3], 1)), dy.buf.as<float>(), dw.buf.as<float>()));
  return f32(env, b, dw, g.oc * g.k());
}
Napi::Value ConvCounters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  ConvGeom g = conv_geom(info[1].As<Napi::Object>());
  Dev x = to_dev(env, b, info[2]), w = to_dev(env, b, info[3]);
  Dev c = dev_zeros(env, b, sizeof(int64_t) * kCounterSlots);
  check(env, b.conv_counters(g, x.buf.as<int8_t>(), w.buf.as<int8_t>(), c.buf.as<int64_t>()));
  int64_t h[kCounterSlots];
  check(env, b.download(h, c.buf.data(), sizeof(h)));
  Napi::Object o = Napi::Object::New(env);
  o.Set("zeroInputs", static_cast<double>(h[kZeroInputs]));
  o.Set("zeroWeights", static_cast<double>(h[kZeroWeights]));
  o.Set("activeMacs", static_cast<double>(h[kActiveMacs]));
  return o;
}
Napi::Value Pool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  PoolGeom g = pool_geom(info[1].As<Napi::Object>());
  const bool is_max = info[3].As<Napi::Boolean>().Value();
  Dev x = to_dev(env, b, info[2]);
  const size_t out = static_cast<size_t>(g.n) * g.oh * g.ow * g.c;
  // an Int16Array input: the max pool of exact int16 sums (the model's path for ternary products)
  const bool i16 = x.dtype == DType::I16;
  if (i16 && !is_max) throw Napi::TypeError::New(env, "pool: int16 input is for the max pool only");
  Dev y = dev_zeros(env, b, (i16 ? sizeof(int16_t) : sizeof(float)) * out), am = dev_zeros(env, b, sizeof(int32_t) * out);
  if (i16) check(env, b.maxpool_forward_i16(g, x.buf.as<int16_t>(), y.buf.as<int16_t>(), am.buf.as<int32_t>()));
  else if (is_max) check(env, b.maxpool_forward(g, x.buf.as<float>(), y.buf.as<float>(), am.buf.as<int32_t>()));
  else check(env, b.avgpool_forward(g, x.buf.as<float>(), y.buf.as<float>()));
  Napi::Object o = Napi::Object::New(env);
  if (i16) o.Set("y", from_dev<Napi::Int16Array, int16_t>(env, b, y, out));
  else o.Set("y", f32(env, b, y, out));
  o.Set("argmax", from_dev<Napi::Int32Array, int32_t>(env, b, am, out));
  return o;
}
Napi::Value NormalizeU8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  Dev px = to_dev(env, b, info[1]);  // Uint8Array
  const size_t n = info[1].As<Napi::TypedArray>().ElementLength();  // the buffer may be rounded up
  Dev y = dev_zeros(env, b, sizeof(float) * n);
  check(env, b.normalize_u8(static_cast<int64_t>(n), px.buf.as<uint8_t>(), fnum(info[2], 1), fnum(info[3], 0), y.buf.as<float>()));
  return f32(env, b, y, n);
}
Napi::Value PoolBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  PoolGeom g = pool_geom(info[1].As<Napi::Object>());
  Dev dy = to_dev(env, b, info[2]);
  const size_t in = static_cast<size_t>(g.n) * g.h * g.w * g.c;
  Dev dx = dev_zeros(env, b, sizeof(float) * in);
  if (info[3].IsTypedArray()) {
    Dev am = to_dev(env, b, info[3]);  // Int32Array argmax
    check(env, b.maxpool_backward(g, dy.buf.as<float>(), am.buf.as<int32_t>(), dx.buf.as<float>()));
  } else {
    check(env, b.avgpool_backward(g, dy.buf.as<float>(), dx.buf.as<float>()));
  }
  return f32(env, b, dx, in);
}
Napi::Value BatchNorm(const Napi::CallbackInfo& info) {
  // (backend, rows, c, x, gamma, beta, runMean, runVar, {train, eps, momentum, scale, act}): x a
  // Float32Array, or an Int16Array of exact sums whose values are x·scale; with act, the fused
  // BN + φ op, returning φ's states q instead of y
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  const int64_t rows = info[1].As<Napi::Number>().Int64Value();
  const int c = info[2].As<Napi::Number>().Int32Value();
  Dev x = to_dev(env, b, info[3]), gamma = to_dev(env, b, info[4]), beta = to_dev(env, b, info[5]);
  Dev rm = to_dev(env, b, info[6]), rv = to_dev(env, b, info[7]);
  Napi::Object o = info[8].As<Napi::Object>();
  const bool train = o.Get("train").ToBoolean().Value();
  const float eps = static_cast<float>(num(o, "eps", 1e-4)), mom = static_cast<float>(num(o, "momentum", 0.1));
  const Operand xo = operand(x, fnum(o.Get("scale"), 1));
  const bool fused = o.Get("act").IsObject();
  const ActSpec act = fused ? act_spec(o.Get("act").As<Napi::Object>()) : ActSpec{};
  Dev y = dev_zeros(env, b, sizeof(float) * rows * c), xhat = dev_zeros(env, b, sizeof(float) * rows * c);
  Dev mean = dev_zeros(env, b, sizeof(float) * c), invstd = dev_zeros(env, b, sizeof(float) * c), q = dev_zeros(env, b, rows * c);
  if (train && fused)
    check(env, b.bn_act_forward_train(rows, c, xo, gamma.buf.as<float>(), beta.buf.as<float>(), eps, mom, rm.buf.as<float>(),
                                      rv.buf.as<float>(), y.buf.as<float>(), xhat.buf.as<float>(), mean.buf.as<float>(),
                                      invstd.buf.as<float>(), act, q.buf.as<int8_t>()));
  else if (train)
    check(env, b.bn_forward_train(rows, c, xo, gamma.buf.as<float>(), beta.buf.as<float>(), eps, mom, rm.buf.as<float>(),
                                  rv.buf.as<float>(), y.buf.as<float>(), xhat.buf.as<float>(), mean.buf.as<float>(),
                                  invstd.buf.as<float>()));
  else if (fused)
    check(env, b.bn_act_forward_infer(rows, c, xo, gamma.buf.as<float>(), beta.buf.as<float>(), rm.buf.as<float>(),
                                      rv.buf.as<float>(), eps, y.buf.as<float>(), act, q.buf.as<int8_t>()));
  else
    check(env, b.bn_forward_infer(rows, c, xo, gamma.buf.as<float>(), beta.buf.as<float>(), rm.buf.as<float>(), rv.buf.as<float>(),
                                  eps, y.buf.as<float>()));
  Napi::Object r = Napi::Object::New(env);
  if (fused) r.Set("q", from_dev<Napi::Int8Array, int8_t>(env, b, q, rows * c));
  else r.Set("y", f32(env, b, y, rows * c));
  r.Set("xhat", f32(env, b, xhat, rows * c));
  r.Set("mean", f32(env, b, mean, c));
  r.Set("invstd", f32(env, b, invstd, c));
  r.Set("runMean", f32(env, b, rm, c));
  r.Set("runVar", f32(env, b, rv, c));
  return r;
}
Napi::Value BatchNormBackward(const Napi::CallbackInfo& info) {
  // (backend, rows, c, dy, xhat, gamma, invstd, {x16, scale, mean, act, beta}): x̂ stored, or (xhat
  // null) recomputed from the int16 input x16·scale, the forward's mean and invstd; with act, dy is
  // φ's gradient dq and the fused φ + BN backward runs (beta: the BN's β)
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  const int64_t rows = info[1].As<Napi::Number>().Int64Value();
  const int c = info[2].As<Napi::Number>().Int32Value();
  Napi::Object o = info.Length() > 7 && info[7].IsObject() ? info[7].As<Napi::Object>() : Napi::Object::New(env);
  const bool recompute = info[4].IsNull() || info[4].IsUndefined();
  Dev dy = to_dev(env, b, info[3]), gamma = to_dev(env, b, info[5]), inv = to_dev(env, b, info[6]);
  Dev xhat = to_dev(env, b, recompute ? o.Get("x16") : info[4]);
  Dev mean = recompute ? to_dev(env, b, o.Get("mean")) : Dev{};
  Dev dx = dev_zeros(env, b, sizeof(float) * rows * c), dg = dev_zeros(env, b, sizeof(float) * c), db = dev_zeros(env, b, sizeof(float) * c);
  XhatSource xs;
  if (recompute) {
    xs.q = xhat.buf.as<int16_t>();
    xs.scale = fnum(o.Get("scale"), 1);
    xs.mean = mean.buf.as<float>();
    xs.invstd = inv.buf.as<float>();
  } else {
    xs.stored = xhat.buf.as<float>();
  }
  if (o.Get("act").IsObject()) {
    Dev beta = to_dev(env, b, o.Get("beta")), scratch = dev_zeros(env, b, sizeof(float) * rows * c);
    check(env, b.act_bn_backward(rows, c, dy.buf.as<float>(), nullptr, xs, gamma.buf.as<float>(), beta.buf.as<float>(),
                                 inv.buf.as<float>(), act_spec(o.Get("act").As<Napi::Object>()), scratch.buf.as<float>(),
                                 dx.buf.as<float>(), dg.buf.as<float>(), db.buf.as<float>()));
  } else {
    check(env, b.bn_backward(rows, c, dy.buf.as<float>(), xs, gamma.buf.as<float>(), inv.buf.as<float>(),
                             dx.buf.as<float>(), dg.buf.as<float>(), db.buf.as<float>()));
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("dx", f32(env, b, dx, rows * c));
  r.Set("dgamma", f32(env, b, dg, c));
  r.Set("dbeta", f32(env, b, db, c));
  return r;
}
Napi::Value Activation(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  Dev x = to_dev(env, b, info[1]);
  const size_t n = len(info[1]);
  ActSpec s = act_spec(info[2].As<Napi::Object>());
  Dev q = dev_zeros(env, b, n);
  check(env, b.act_forward(n, x.buf.as<float>(), s, q.buf.as<int8_t>()));
  return from_dev<Napi::Int8Array, int8_t>(env, b, q, n);
}
Napi::Value ActivationBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  Dev x = to_dev(env, b, info[1]), dq = to_dev(env, b, info[2]);
  const size_t n = len(info[1]);
  ActSpec s = act_spec(info[3].As<Napi::Object>());
  // with a fifth argument (a Float32Array of n), the accumulating form: that array + φ′(x)·dq
  if (info[4].IsTypedArray()) {
    if (len(info[4]) != n) throw Napi::RangeError::New(env, "activationBackward: the gradient to add to has " + std::to_string(len(info[4])) + " elements, not " + std::to_string(n));
    Dev acc = to_dev(env, b, info[4]);
    check(env, b.act_backward_accumulate(n, x.buf.as<float>(), dq.buf.as<float>(), s, acc.buf.as<float>()));
    return f32(env, b, acc, n);
  }
  Dev dx = dev_zeros(env, b, sizeof(float) * n);
  check(env, b.act_backward(n, x.buf.as<float>(), dq.buf.as<float>(), s, dx.buf.as<float>()));
  return f32(env, b, dx, n);
}
Napi::Value Loss(const Napi::CallbackInfo& info) {
  // (backend, n, c, y, labels Int32Array, kind)
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  const int64_t n = info[1].As<Napi::Number>().Int64Value();
  const int c = info[2].As<Napi::Number>().Int32Value();
  Dev y = to_dev(env, b, info[3]);
  Dev labels = to_dev(env, b, info[4]);  // Int32Array
  Dev dy = dev_zeros(env, b, sizeof(float) * n * c), rl = dev_zeros(env, b, sizeof(float) * n), rk = dev_zeros(env, b, sizeof(int32_t) * n);
  check(env, b.loss(n, c, y.buf.as<float>(), labels.buf.as<int32_t>(), static_cast<LossKind>(info[5].As<Napi::Number>().Int32Value()),
                    dy.buf.as<float>(), rl.buf.as<float>(), rk.buf.as<int32_t>()));
  Napi::Object r = Napi::Object::New(env);
  r.Set("dy", f32(env, b, dy, n * c));
  r.Set("rowLoss", f32(env, b, rl, n));
  r.Set("rank", from_dev<Napi::Int32Array, int32_t>(env, b, rk, n));
  return r;
}
Napi::Value DstUpdate(const Napi::CallbackInfo& info) {
  // (backend, q Int8Array, g Float32Array, m|null, v|null, params)
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  const size_t n = len(info[1]);
  Dev q = to_dev(env, b, info[1]), g = to_dev(env, b, info[2]);
  const bool adam = info[3].IsTypedArray();
  Dev m = adam ? to_dev(env, b, info[3]) : Dev(), v = adam ? to_dev(env, b, info[4]) : Dev();
  Napi::Object o = info[5].As<Napi::Object>();
  DstParams p;
  p.levels.n = inum(o, "levels", 1);
  p.proposal = adam ? Proposal::Adam : Proposal::Sgd;
  p.tau = static_cast<Tau>(inum(o, "tau", 0));
  p.m = static_cast<float>(num(o, "m", 3.0));
  p.temperature = static_cast<float>(num(o, "temperature", 1.0));
  p.lr = static_cast<float>(num(o, "lr", 0.1));
  p.seed = static_cast<uint64_t>(num(o, "seed", 0));
  p.step = static_cast<uint32_t>(num(o, "step", 0));
  p.layer = static_cast<uint32_t>(num(o, "layer", 0));
  Dev c = dev_zeros(env, b, sizeof(int64_t) * kCounterSlots);
  check(env, b.dst_update(n, q.buf.as<int8_t>(), g.buf.as<float>(), adam ? m.buf.as<float>() : nullptr,
                          adam ? v.buf.as<float>() : nullptr, p, c.buf.as<int64_t>()));
  int64_t h[kCounterSlots];
  check(env, b.download(h, c.buf.data(), sizeof(h)));
  Napi::Object r = Napi::Object::New(env);
  r.Set("q", from_dev<Napi::Int8Array, int8_t>(env, b, q, n));
  if (adam) {
    r.Set("m", f32(env, b, m, n));
    r.Set("v", f32(env, b, v, n));
  }
  r.Set("flips", static_cast<double>(h[kFlips]));
  return r;
}
Napi::Value InitStates(const Napi::CallbackInfo& info) {
  // (backend, n, seed, layer, spread, levels)
  Napi::Env env = info.Env();
  Backend& b = backend_for(env, info[0]);
  const int64_t n = info[1].As<Napi::Number>().Int64Value();
  Dev q = dev_zeros(env, b, n);
  Levels lv;
  lv.n = info[5].As<Napi::Number>().Int32Value();
  check(env, b.init_states(n, q.buf.as<int8_t>(), static_cast<uint64_t>(info[2].As<Napi::Number>().DoubleValue()),
                           info[3].As<Napi::Number>().Uint32Value(), info[4].As<Napi::Number>().FloatValue(), lv));
  return from_dev<Napi::Int8Array, int8_t>(env, b, q, n);
}
Napi::Value Philox(const Napi::CallbackInfo& info) {
  uint32_t a[6];
  for (int i = 0; i < 6; ++i) a[i] = info[i].As<Napi::Number>().Uint32Value();
  const Philox4 r = philox4x32_10(a[0], a[1], a[2], a[3], a[4], a[5]);
  Napi::Uint32Array out = Napi::Uint32Array::New(info.Env(), 4);
  for (int i = 0; i < 4; ++i) out[i] = r.v[i];
  return out;
}
// augmentSample(image: Uint8Array (h·w·c), h, w, c, seed, step, position, flip, pad[, cutout]) → the
// transformed image, exactly as the training loop stages it.
Napi::Value AugmentSample(const Napi::CallbackInfo& info) {
  Napi::Uint8Array img = info[0].As<Napi::Uint8Array>();
  const int h = info[1].As<Napi::Number>().Int32Value(), w = info[2].As<Napi::Number>().Int32Value(),
            c = info[3].As<Napi::Number>().Int32Value();
  if (static_cast<int64_t>(img.ElementLength()) != static_cast<int64_t>(h) * w * c)
    throw Napi::Error::New(info.Env(), "augmentSample: the image has " + std::to_string(img.ElementLength()) + " bytes, not h·w·c");
  Augment a;
  a.flip = info[7].As<Napi::Boolean>().Value();
  a.pad = info[8].As<Napi::Number>().Int32Value();
  a.cutout = info[9].IsNumber() ? info[9].As<Napi::Number>().Int32Value() : 0;
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), img.ElementLength());
  augment_sample(a, static_cast<uint64_t>(info[4].As<Napi::Number>().DoubleValue()), info[5].As<Napi::Number>().Int64Value(),
                 info[6].As<Napi::Number>().Int32Value(), h, w, c, img.Data(), out.Data());
  return out;
}
Napi::Value SetKernelPath(const Napi::CallbackInfo& info) {
  const std::string p = info[0].As<Napi::String>().Utf8Value();
  KernelPath k = p == "avx512-vnni" ? KernelPath::Avx512Vnni : (p == "avx2" ? KernelPath::Avx2 : KernelPath::Scalar);
  return Napi::Boolean::New(info.Env(), set_kernel_path(k));
}
// Packs int8 states at ceil(log2(levels)) bits: 2 bits per ternary weight (state index q + qmax).
Napi::Value PackStates(const Napi::CallbackInfo& info) {
  Napi::Int8Array q = info[0].As<Napi::Int8Array>();
  Levels lv;
  lv.n = info[1].As<Napi::Number>().Int32Value();
  const int states = 2 * lv.qmax() / lv.qstep() + 1;
  int bits = 1;
  while ((1 << bits) < states) ++bits;
  if (bits == 3 || bits > 4) bits = 8;  // keep codes inside one byte
  const size_t n = q.ElementLength(), per = 8 / bits;
  auto out = Napi::Buffer<uint8_t>::New(info.Env(), (n + per - 1) / per);
  std::memset(out.Data(), 0, out.Length());
  for (size_t i = 0; i < n; ++i) {
    const uint32_t code = static_cast<uint32_t>((q[i] + lv.qmax()) / lv.qstep());
    out.Data()[i / per] |= static_cast<uint8_t>(code << ((i % per) * bits));
  }
  return out;
}
Napi::Value UnpackStates(const Napi::CallbackInfo& info) {
  Napi::Uint8Array p = info[0].As<Napi::Uint8Array>();
  const size_t n = info[1].As<Napi::Number>().Int64Value();
  Levels lv;
  lv.n = info[2].As<Napi::Number>().Int32Value();
  const int states = 2 * lv.qmax() / lv.qstep() + 1;
  int bits = 1;
  while ((1 << bits) < states) ++bits;
  if (bits == 3 || bits > 4) bits = 8;
  const size_t per = 8 / bits;
  if (p.ByteLength() < (n + per - 1) / per)
    throw Napi::Error::New(info.Env(), Status(Code::Checkpoint, "packed weights are " + std::to_string(p.ByteLength()) +
                                                                    " bytes; " + std::to_string(n) + " weights need " +
                                                                    std::to_string((n + per - 1) / per)).formatted());
  Napi::Int8Array out = Napi::Int8Array::New(info.Env(), n);
  const uint32_t mask = (1u << bits) - 1;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t code = (p[i / per] >> ((i % per) * bits)) & (bits == 8 ? 0xFFu : mask);
    if (static_cast<int>(code) >= states)
      throw Napi::Error::New(info.Env(), Status(Code::Checkpoint, "packed weight " + std::to_string(i) + " has code " +
                                                                      std::to_string(code) + ", outside the " + std::to_string(states) +
                                                                      " states of Z_" + std::to_string(lv.n)).formatted());
    out[i] = static_cast<int8_t>(static_cast<int>(code) * lv.qstep() - lv.qmax());
  }
  return out;
}

// The plain float32 loop a user would write for y = x·wᵀ (one thread, k innermost): the baseline
// `npm run bench` prints beside the integer kernels.
Napi::Value PlainFloatProduct(const Napi::CallbackInfo& info) {
  const int64_t M = info[0].As<Napi::Number>().Int64Value(), N = info[1].As<Napi::Number>().Int64Value(),
                K = info[2].As<Napi::Number>().Int64Value();
  Napi::Float32Array x = info[3].As<Napi::Float32Array>(), w = info[4].As<Napi::Float32Array>();
  Napi::Float32Array y = Napi::Float32Array::New(info.Env(), M * N);
  const float* xp = x.Data();
  const float* wp = w.Data();
  float* yp = y.Data();
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += xp[i * K + k] * wp[j * K + k];
      yp[i * N + j] = s;
    }
  return y;
}

}  // namespace

void register_ops(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("convForward", Napi::Function::New(env, ConvForward));
  ops.Set("convForwardPixels", Napi::Function::New(env, ConvForwardPixels));
  ops.Set("convBackwardData", Napi::Function::New(env, ConvBackwardData));
  ops.Set("convBackwardFilter", Napi::Function::New(env, ConvBackwardFilter));
  ops.Set("convCounters", Napi::Function::New(env, ConvCounters));
  ops.Set("pool", Napi::Function::New(env, Pool));
  ops.Set("normalizeU8", Napi::Function::New(env, NormalizeU8));
  ops.Set("poolBackward", Napi::Function::New(env, PoolBackward));
  ops.Set("batchNorm", Napi::Function::New(env, BatchNorm));
  ops.Set("batchNormBackward", Napi::Function::New(env, BatchNormBackward));
  ops.Set("activation", Napi::Function::New(env, Activation));
  ops.Set("activationBackward", Napi::Function::New(env, ActivationBackward));
  ops.Set("loss", Napi::Function::New(env, Loss));
  ops.Set("dstUpdate", Napi::Function::New(env, DstUpdate));
  ops.Set("initStates", Napi::Function::New(env, InitStates));
  ops.Set("plainFloatProduct", Napi::Function::New(env, PlainFloatProduct));
  exports.Set("ops", ops);
  exports.Set("philox", Napi::Function::New(env, Philox));
  exports.Set("augmentSample", Napi::Function::New(env, AugmentSample));
  exports.Set("setKernelPath", Napi::Function::New(env, SetKernelPath));
  exports.Set("packStates", Napi::Function::New(env, PackStates));
  exports.Set("unpackStates", Napi::Function::New(env, UnpackStates));
}

}  // namespace tl::napi
