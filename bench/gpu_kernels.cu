// Kernel-level timings of the CUDA backend, one program: the forward int8 products (TOPS), the bf16
// backward products (TFLOP/s), batch norm, and the fused DST update (GB/s) against a device-to-device
// copy. Built by `node dist/bench/gpu.js` with nvcc on the GPU machine (or by hand:
//   nvcc -std=c++17 -O3 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80 \
//        bench/gpu_kernels.cu native/cuda/cudnn_conv.cu -ldl -o build/gpu_kernels)
// Prints one JSON object per line (read by bench/gpu.ts) and nothing else on stdout. The int8
// forward runs twice per shape, the pipelined kernel against the previous one (bit for bit, and
// timed side by side); a difference is printed as MISMATCH on stderr and the exit status is 2.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../native/cuda/cuda_backend.cu"

using namespace tl;

static void die(const Status& s) {
  if (!s.is_ok()) {
    std::fprintf(stderr, "%s\n", s.formatted().c_str());
    std::exit(1);
  }
}

// Median of `reps` timings of f (each synchronised), after 3 warm-up calls.
static double time_ms(Backend& b, int reps, const std::function<Status()>& f) {
  for (int i = 0; i < 3; ++i) die(f());
  die(b.synchronize());
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    die(f());
    die(b.synchronize());
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Per-call time of `reps` calls queued back to back (one synchronisation), median of 5 such runs:
// for kernels of tens of microseconds, where a synchronisation per call would weigh in.
static double time_queued_ms(Backend& b, int reps, const std::function<Status()>& f) {
  for (int i = 0; i < 3; ++i) die(f());
  die(b.synchronize());
  std::vector<double> t;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) die(f());
    die(b.synchronize());
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// cudaMemset on the legacy stream, finished before the backend's (non-blocking) stream goes on
static void fill_bytes(void* p, int byte, size_t bytes) {
  if (cudaMemset(p, byte, bytes) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
    std::fprintf(stderr, "cudaMemset of %zu bytes failed\n", bytes);
    std::exit(1);
  }
}

// The int8 forward of the pipelined kernel (default) against the previous one (TERNLAB_INT8_FORWARD=v1)
// on one shape: both outputs (float and int16 sums) compared bit for bit, each buffer first filled
// with a different byte so that an element one kernel leaves unwritten differs too; then both timed
// in the same way, alternately. Returns false on a mismatch (said on stderr, loudly).
static bool compare_int8_forward(Backend& b, const char* name, const ConvGeom& g, const int8_t* x, const int8_t* w) {
  const int64_t n = g.rows() * g.oc;
  Buffer yv1, yv2, qv1, qv2;
  die(b.alloc(4 * n, "y v1", &yv1));
  die(b.alloc(4 * n, "y v2", &yv2));
  die(b.alloc(2 * n, "int16 v1", &qv1));
  die(b.alloc(2 * n, "int16 v2", &qv2));
  auto fwd = [&](const char* version, Buffer& y, Buffer& q, int fill) {
    if (version) setenv("TERNLAB_INT8_FORWARD", version, 1);
    fill_bytes(y.data(), fill, 4 * n);
    fill_bytes(q.data(), fill, 2 * n);
    die(b.conv_forward(g, Operand{DType::I8, x, 1.0f}, Operand{DType::I8, w, 1.0f}, y.as<float>()));
    die(b.conv_forward_i16(g, Operand{DType::I8, x, 1.0f}, Operand{DType::I8, w, 1.0f}, q.as<int16_t>()));
    die(b.synchronize());
    unsetenv("TERNLAB_INT8_FORWARD");
  };
  fwd("v1", yv1, qv1, 0xff);
  fwd(nullptr, yv2, qv2, 0x00);
  std::vector<float> a(n), c(n);
  std::vector<int16_t> qa(n), qc(n);
  die(b.download(a.data(), yv1.data(), 4 * n));
  die(b.download(c.data(), yv2.data(), 4 * n));
  die(b.download(qa.data(), qv1.data(), 2 * n));
  die(b.download(qc.data(), qv2.data(), 2 * n));
  int64_t bad = 0, first = -1, bad16 = 0, first16 = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::memcmp(&a[i], &c[i], 4)) { if (first < 0) first = i; ++bad; }
    if (qa[i] != qc[i]) { if (first16 < 0) first16 = i; ++bad16; }
  }
  if (bad) std::fprintf(stderr, "MISMATCH int8 forward (float) %s: %lld of %lld differ; first at %lld: v1 %.1f vs v2 %.1f\n", name,
                        static_cast<long long>(bad), static_cast<long long>(n), static_cast<long long>(first), a[first], c[first]);
  if (bad16) std::fprintf(stderr, "MISMATCH int8 forward (int16) %s: %lld of %lld differ; first at %lld: v1 %d vs v2 %d\n", name,
                          static_cast<long long>(bad16), static_cast<long long>(n), static_cast<long long>(first16), qa[first16], qc[first16]);
  const double flop = 2.0 * g.macs();
  const int reps = std::max(3, std::min(200, static_cast<int>(2e12 / flop)));
  auto timed = [&](const char* version) {
    if (version) setenv("TERNLAB_INT8_FORWARD", version, 1);
    const double ms = time_queued_ms(b, reps, [&] {
      return b.conv_forward(g, Operand{DType::I8, x, 1.0f}, Operand{DType::I8, w, 1.0f}, yv2.as<float>());
    });
    unsetenv("TERNLAB_INT8_FORWARD");
    return ms;
  };
  double v1 = 1e30, v2 = 1e30;
  for (int round = 0; round < 2; ++round) {  // alternately, best of two: clocks and other tenants drift
    v1 = std::min(v1, timed("v1"));
    v2 = std::min(v2, timed(nullptr));
  }
  std::printf("{\"kind\":\"int8 forward v1 vs v2\",\"shape\":\"%s\",\"ms_v1\":%.4f,\"ms_v2\":%.4f,\"TOPS_v1\":%.1f,\"TOPS_v2\":%.1f,"
              "\"speedup\":%.3f,\"identical\":%s}\n",
              name, v1, v2, flop / v1 / 1e9, flop / v2 / 1e9, v1 / v2, bad || bad16 ? "false" : "true");
  return !bad && !bad16;
}

static void fill_ternary(Backend& b, int8_t* p, int64_t n, uint32_t layer) { die(b.init_states(n, p, 7, layer, 1.0f, Levels{})); }
static void fill_float(Backend& b, float* p, int64_t n, uint32_t layer) { die(b.init_uniform(n, p, 7, layer, 1.0f)); }

// Every algorithm cuDNN offers for the two bf16 backward products of one shape, timed by cuDNN's Find
// on the same operands ternlab passes it (x and w ternary, dy the float gradient, all in bf16), and
// the one ternlab's rule (heuristic order, first deterministic) picks: is a fixed better rule there?
static void survey_cudnn(Backend& b, const char* name, const ConvGeom& g, const int8_t* x, const int8_t* w, const float* dy) {
  static std::unique_ptr<tl::cuda::Cudnn> dnn;
  static std::atomic<size_t> in_use{0};
  static cudaStream_t stream = nullptr;
  if (!dnn) {
    std::string why;
    if (cudaStreamCreate(&stream) != cudaSuccess) return;
    dnn = tl::cuda::Cudnn::open(stream, &in_use, &why);
    if (!dnn) { std::fprintf(stderr, "cuDNN survey skipped: %s\n", why.c_str()); return; }
  }
  Buffer xb, wb, dyb, dxb, dwb;
  die(b.alloc(2 * g.in_elems(), "survey x", &xb));
  die(b.alloc(2 * g.oc * g.k(), "survey w", &wb));
  die(b.alloc(2 * g.rows() * g.oc, "survey dy", &dyb));
  die(b.alloc(2 * g.in_elems(), "survey dx", &dxb));
  die(b.alloc(2 * g.oc * g.k(), "survey dw", &dwb));
  die(b.synchronize());
  using tl::cuda::grid_for;
  tl::cuda::k_i8_to_bf16<<<grid_for(g.in_elems()), tl::cuda::kThreads, 0, stream>>>(g.in_elems(), x, xb.as<__nv_bfloat16>());
  tl::cuda::k_i8_to_bf16<<<grid_for(g.oc * g.k()), tl::cuda::kThreads, 0, stream>>>(g.oc * g.k(), w, wb.as<__nv_bfloat16>());
  tl::cuda::k_f32_to_bf16<<<grid_for(g.rows() * g.oc), tl::cuda::kThreads, 0, stream>>>(g.rows() * g.oc, dy, dyb.as<__nv_bfloat16>());
  cudaStreamSynchronize(stream);
  for (const bool data : {true, false}) {
    std::vector<tl::cuda::Cudnn::AlgoTiming> rows;
    int chosen = -1;
    const Status st = data ? dnn->survey(tl::cuda::ConvProduct::BackwardDataBf16, g, dyb.data(), wb.data(), dxb.data(), &rows, &chosen)
                           : dnn->survey(tl::cuda::ConvProduct::BackwardFilterBf16, g, xb.data(), dyb.data(), dwb.data(), &rows, &chosen);
    cudaStreamSynchronize(stream);
    if (!st.is_ok()) { std::fprintf(stderr, "cuDNN survey of %s failed: %s\n", name, st.formatted().c_str()); continue; }
    std::string list;
    for (const auto& r : rows) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s{\"algo\":%d,\"ms\":%.4f,\"deterministic\":%s,\"workspace_MB\":%.1f,\"math\":%d}", list.empty() ? "" : ",",
                    r.algo, r.ms, r.deterministic ? "true" : "false", r.workspace / 1e6, r.math);
      list += buf;
    }
    std::printf("{\"kind\":\"cudnn survey\",\"op\":\"%s\",\"shape\":\"%s\",\"chosen\":%d,\"algos\":[%s]}\n",
                data ? "backward data" : "backward filter", name, chosen, list.c_str());
    // the graph API's engines for the same product, bf16 and float outputs
    for (const bool f32 : {false, true}) {
      Buffer out32;
      if (f32) die(b.alloc(4 * (data ? g.in_elems() : g.oc * g.k()), "survey float output", &out32));
      void* out = f32 ? out32.data() : (data ? dxb.data() : dwb.data());
      std::vector<tl::cuda::Cudnn::EngineTiming> engines;
      int64_t pick = -1;
      const Status sg = data ? dnn->survey_graph(tl::cuda::ConvProduct::BackwardDataBf16, g, f32, dyb.data(), wb.data(), out, &engines, &pick)
                             : dnn->survey_graph(tl::cuda::ConvProduct::BackwardFilterBf16, g, f32, xb.data(), dyb.data(), out, &engines, &pick);
      cudaStreamSynchronize(stream);
      if (!sg.is_ok()) { std::fprintf(stderr, "cuDNN graph survey of %s failed: %s\n", name, sg.formatted().c_str()); continue; }
      std::string el;
      for (const auto& e : engines) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "%s{\"engine\":%lld,\"ms\":%.4f,\"deterministic\":%s,\"reduced\":%s,\"down_convert\":%s,\"workspace_MB\":%.1f}",
                      el.empty() ? "" : ",", static_cast<long long>(e.engine), e.ms, e.deterministic ? "true" : "false",
                      e.reduced_precision ? "true" : "false", e.down_convert ? "true" : "false", e.workspace / 1e6);
        el += buf;
      }
      std::printf("{\"kind\":\"cudnn graph survey\",\"op\":\"%s\",\"output\":\"%s\",\"shape\":\"%s\",\"chosen\":%lld,\"engines\":[%s]}\n",
                  data ? "backward data" : "backward filter", f32 ? "f32" : "bf16", name, static_cast<long long>(pick), el.c_str());
    }
  }
}

int main(int argc, char** argv) {
  std::unique_ptr<Backend> be;
  die(make_cuda_backend(0, &be));
  Backend& b = *be;
  std::printf("{\"kind\":\"device\",\"describe\":\"%s\"}\n", b.describe().c_str());
  const int batch = argc > 1 ? std::atoi(argv[1]) : 256;

  // device-to-device copy: the memory-bandwidth ceiling
  {
    const size_t bytes = size_t(2) << 30;
    Buffer s, d;
    die(b.alloc(bytes, "copy source", &s));
    die(b.alloc(bytes, "copy target", &d));
    const double ms = time_ms(b, 10, [&] { return b.copy(d.data(), s.data(), bytes); });
    std::printf("{\"kind\":\"copy\",\"bytes\":%zu,\"ms\":%.4f,\"GBps\":%.1f}\n", bytes, ms, 2.0 * bytes / ms / 1e6);
  }

  // int8 products: a square GEMM and the CIFAR-10 net's layers at the batch size
  struct Shape { const char* name; ConvGeom g; };
  auto conv = [&](const char* name, int n, int hw, int c, int oc, int k, int pad) {
    ConvGeom g;
    g.n = n; g.h = hw; g.w = hw; g.c = c; g.oc = oc; g.kh = k; g.kw = k; g.ph = pad; g.pw = pad;
    g.oh = hw + 2 * pad - k + 1; g.ow = g.oh;
    return Shape{name, g};
  };
  std::vector<Shape> shapes = {
      conv("gemm 8192^3", 8192, 1, 8192, 8192, 1, 0),
      conv("cifar conv2 128->128 32x32", batch, 32, 128, 128, 3, 1),
      conv("cifar conv3 128->256 16x16", batch, 16, 128, 256, 3, 1),
      conv("cifar conv4 256->256 16x16", batch, 16, 256, 256, 3, 1),
      conv("cifar conv5 256->512 8x8", batch, 8, 256, 512, 3, 1),
      conv("cifar conv6 512->512 8x8", batch, 8, 512, 512, 3, 1),
      conv("cifar fc7 8192->1024", batch, 1, 8192, 1024, 1, 0),
      conv("resnet s1 64->64 56x56", batch, 56, 64, 64, 3, 1),
      conv("resnet s4 512->512 7x7", batch, 7, 512, 512, 3, 1),
  };
  bool identical = true;
  for (auto& s : shapes) {
    const ConvGeom& g = s.g;
    Buffer x, w, y, dx, dw;
    die(b.alloc(g.in_elems(), "x", &x));
    die(b.alloc(g.oc * g.k(), "w", &w));
    fill_ternary(b, x.as<int8_t>(), g.in_elems(), 1);
    fill_ternary(b, w.as<int8_t>(), g.oc * g.k(), 2);
    identical = compare_int8_forward(b, s.name, g, x.as<int8_t>(), w.as<int8_t>()) && identical;
    die(b.alloc(4 * g.rows() * g.oc, "y", &y));
    const double flop = 2.0 * g.macs();
    const bool big = flop > 1e12;
    const double fwd = time_ms(b, big ? 10 : 30, [&] {
      return b.conv_forward(g, Operand{DType::I8, x.data(), 1.0f}, Operand{DType::I8, w.data(), 1.0f}, y.as<float>());
    });
    std::printf("{\"kind\":\"product\",\"op\":\"forward int8\",\"shape\":\"%s\",\"ms\":%.4f,\"TOPS\":%.1f}\n", s.name, fwd, flop / fwd / 1e9);
    if (g.n == 8192 && g.h == 1) continue;
    die(b.alloc(4 * g.in_elems(), "dx", &dx));
    die(b.alloc(4 * g.oc * g.k(), "dw", &dw));
    fill_float(b, y.as<float>(), g.rows() * g.oc, 3);
    for (const char* mode : {"fast", "exact"}) {
      setenv("TERNLAB_CUDA_MATH", mode, 1);
      const double bd = time_ms(b, 20, [&] { return b.conv_backward_data(g, y.as<float>(), Operand{DType::I8, w.data(), 1.0f}, dx.as<float>()); });
      const double bf = time_ms(b, 20, [&] { return b.conv_backward_filter(g, Operand{DType::I8, x.data(), 1.0f}, y.as<float>(), dw.as<float>()); });
      std::printf("{\"kind\":\"product\",\"op\":\"backward data %s\",\"shape\":\"%s\",\"ms\":%.4f,\"TOPS\":%.1f}\n", mode, s.name, bd, flop / bd / 1e9);
      std::printf("{\"kind\":\"product\",\"op\":\"backward filter %s\",\"shape\":\"%s\",\"ms\":%.4f,\"TOPS\":%.1f}\n", mode, s.name, bf, flop / bf / 1e9);
    }
    unsetenv("TERNLAB_CUDA_MATH");
    survey_cudnn(b, s.name, g, x.as<int8_t>(), w.as<int8_t>(), y.as<float>());
    // batch norm and activation on this layer's output
    const int64_t rows = g.rows();
    const int c = g.oc;
    Buffer gamma, beta, rm, rv, xh, mu, is, out, dg, dbb, y16;
    for (Buffer* p : {&gamma, &beta, &rm, &rv, &mu, &is, &dg, &dbb}) die(b.alloc(4 * c, "bn", p));
    die(b.alloc(4 * rows * c, "xhat", &xh));
    die(b.alloc(4 * rows * c, "bn out", &out));
    const double bnf = time_ms(b, 20, [&] {
      return b.bn_forward_train(rows, c, f32_operand(y.as<float>()), gamma.as<float>(), beta.as<float>(), 1e-4f, 0.1f, rm.as<float>(),
                                rv.as<float>(), out.as<float>(), xh.as<float>(), mu.as<float>(), is.as<float>());
    });
    XhatSource stored;
    stored.stored = xh.as<float>();
    const double bnb = time_ms(b, 20, [&] {
      return b.bn_backward(rows, c, y.as<float>(), stored, gamma.as<float>(), is.as<float>(), out.as<float>(), dg.as<float>(), dbb.as<float>());
    });
    // the same on the layer's exact int16 sums: no x̂ stored, recomputed in the backward
    die(b.alloc(2 * rows * c, "int16 sums", &y16));
    die(b.zero(y16.data(), 2 * rows * c));
    const double bnf16 = time_ms(b, 20, [&] {
      return b.bn_forward_train(rows, c, Operand{DType::I16, y16.data(), 1.0f}, gamma.as<float>(), beta.as<float>(), 1e-4f, 0.1f,
                                rm.as<float>(), rv.as<float>(), out.as<float>(), nullptr, mu.as<float>(), is.as<float>());
    });
    XhatSource recomputed;
    recomputed.q = y16.as<int16_t>();
    recomputed.mean = mu.as<float>();
    recomputed.invstd = is.as<float>();
    const double bnb16 = time_ms(b, 20, [&] {
      return b.bn_backward(rows, c, y.as<float>(), recomputed, gamma.as<float>(), is.as<float>(), out.as<float>(), dg.as<float>(),
                           dbb.as<float>());
    });
    ActSpec as;
    Buffer q;
    die(b.alloc(rows * c, "act out", &q));
    const double act = time_ms(b, 20, [&] { return b.act_forward(rows * c, out.as<float>(), as, q.as<int8_t>()); });
    // BN + φ fused on the int16 sums, as the nets run it: states out, φ's gradient in (dy's buffer
    // stands in for it), x̂ recomputed
    const double bnaf16 = time_ms(b, 20, [&] {
      return b.bn_act_forward_train(rows, c, Operand{DType::I16, y16.data(), 1.0f}, gamma.as<float>(), beta.as<float>(), 1e-4f, 0.1f,
                                    rm.as<float>(), rv.as<float>(), nullptr, nullptr, mu.as<float>(), is.as<float>(), as, q.as<int8_t>());
    });
    const double abnb16 = time_ms(b, 20, [&] {
      return b.act_bn_backward(rows, c, y.as<float>(), nullptr, recomputed, gamma.as<float>(), beta.as<float>(), is.as<float>(), as,
                               xh.as<float>(), out.as<float>(), dg.as<float>(), dbb.as<float>());
    });
    std::printf("{\"kind\":\"elementwise\",\"shape\":\"%s\",\"bn_forward_ms\":%.4f,\"bn_backward_ms\":%.4f,\"bn_forward_i16_ms\":%.4f,"
                "\"bn_backward_i16_ms\":%.4f,\"bn_act_forward_i16_ms\":%.4f,\"act_bn_backward_i16_ms\":%.4f,\"act_forward_ms\":%.4f,\"tensor_MB\":%.1f}\n",
                s.name, bnf, bnb, bnf16, bnb16, bnaf16, abnb16, act, 4.0 * rows * c / 1e6);
  }

  // ResNet's float stem (7×7 stride 2 pad 3, 3 → 64, 224² pixels) on the pixels: three int8 products
  // over space-to-depth packed pixels (native/cuda/stem.h) against the float product of the
  // normalised input (cuDNN fp32, TERNLAB_STEM=fp32); the chunking of the batch swept (images per
  // pass, TERNLAB_STEM_CHUNK); the two outputs' normwise difference. TOPS counts the layer's MACs.
  {
    ConvGeom g;
    g.n = batch; g.h = 224; g.w = 224; g.c = 3; g.oc = 64; g.kh = 7; g.kw = 7; g.sh = 2; g.sw = 2; g.ph = 3; g.pw = 3;
    g.oh = 112; g.ow = 112;
    Buffer px, x, w, y, yf;
    die(b.alloc(g.in_elems(), "stem pixels", &px));
    die(b.alloc(4 * g.in_elems(), "stem x", &x));
    die(b.alloc(4 * g.oc * g.k(), "stem w", &w));
    die(b.alloc(4 * g.rows() * g.oc, "stem y", &y));
    die(b.alloc(4 * g.rows() * g.oc, "stem y fp32", &yf));
    fill_ternary(b, reinterpret_cast<int8_t*>(px.data()), g.in_elems(), 6);  // bytes 0, 1, 255: fine as pixels
    fill_float(b, w.as<float>(), g.oc * g.k(), 7);
    const Backend::Pixels pix{px.as<uint8_t>(), 1.0f / (255 * 0.226f), -0.449f / 0.226f};
    die(b.normalize_u8(g.in_elems(), pix.px, pix.scale, pix.offset, x.as<float>()));
    const Operand wo{DType::F32, w.data(), 1.0f};
    const double flop = 2.0 * g.macs();
    // the int8 stem is opt-in (TERNLAB_STEM=int8) until it has run on a GPU
    auto stem = [&](float* out) { return b.conv_forward_pixels(g, f32_operand(x.as<float>()), pix, wo, out); };
    setenv("TERNLAB_STEM", "fp32", 1);
    const double ms_f = time_ms(b, 10, [&] { return stem(yf.as<float>()); });
    setenv("TERNLAB_STEM", "int8", 1);
    const double ms_i = time_ms(b, 10, [&] { return stem(y.as<float>()); });
    setenv("TERNLAB_STEM", "grouped", 1);
    const double ms_g = time_ms(b, 10, [&] { return stem(yf.as<float>()); });
    setenv("TERNLAB_STEM", "int8", 1);
    // the grouped product's output (yf) against the three products' (y), bit for bit
    std::vector<float> a(g.rows() * g.oc), f(a.size());
    die(stem(y.as<float>()));
    die(b.download(a.data(), y.data(), 4 * a.size()));
    die(b.download(f.data(), yf.data(), 4 * f.size()));
    die(b.synchronize());
    const bool grouped_same = std::memcmp(a.data(), f.data(), 4 * a.size()) == 0;
    if (!grouped_same) std::fprintf(stderr, "MISMATCH: the grouped stem product differs from the three products\n");
    setenv("TERNLAB_STEM", "fp32", 1);
    die(stem(yf.as<float>()));  // the fp32 output again, for the difference below
    setenv("TERNLAB_STEM", "int8", 1);
    std::printf("{\"kind\":\"product\",\"op\":\"stem fp32 (cuDNN)\",\"shape\":\"resnet stem 3->64 224x224 7x7/2\",\"ms\":%.4f,\"TOPS\":%.1f}\n", ms_f, flop / ms_f / 1e9);
    std::printf("{\"kind\":\"product\",\"op\":\"stem int8 x3 digits\",\"shape\":\"resnet stem 3->64 224x224 7x7/2\",\"ms\":%.4f,\"TOPS\":%.1f}\n", ms_i, flop / ms_i / 1e9);
    std::printf("{\"kind\":\"product\",\"op\":\"stem int8 grouped\",\"shape\":\"resnet stem 3->64 224x224 7x7/2\",\"ms\":%.4f,\"TOPS\":%.1f}\n", ms_g, flop / ms_g / 1e9);
    std::string sweep;
    for (int chunk : {1, 2, 4, 5, 8, 10, 16, 32, batch}) {
      setenv("TERNLAB_STEM_CHUNK", std::to_string(chunk).c_str(), 1);
      const double ms = time_ms(b, 5, [&] { return stem(y.as<float>()); });
      sweep += (sweep.empty() ? "" : ",") + std::string("\"") + std::to_string(chunk) + "\":" + std::to_string(ms);
    }
    unsetenv("TERNLAB_STEM_CHUNK");
    die(stem(y.as<float>()));
    die(b.download(a.data(), y.data(), 4 * a.size()));
    die(b.download(f.data(), yf.data(), 4 * f.size()));
    die(b.synchronize());
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) { num += (double(a[i]) - f[i]) * (double(a[i]) - f[i]); den += double(f[i]) * f[i]; }
    std::printf("{\"kind\":\"stem\",\"ms_fp32\":%.4f,\"ms_int8\":%.4f,\"ms_grouped\":%.4f,\"grouped_identical\":%s,\"rel_diff\":%.3e,"
                "\"ms_by_chunk\":{%s}}\n", ms_f, ms_i, ms_g, grouped_same ? "true" : "false", std::sqrt(num / std::max(den, 1e-30)), sweep.c_str());
    identical = grouped_same && identical;
    unsetenv("TERNLAB_STEM");
  }

  // fused DST update (Adam proposal, Philox draw, flip count): bytes = q r/w + g + m r/w + v r/w
  {
    const int64_t n = int64_t(1) << 26;
    Buffer q, g, m, v, cnt;
    die(b.alloc(n, "q", &q));
    die(b.alloc(4 * n, "g", &g));
    die(b.alloc(4 * n, "m", &m));
    die(b.alloc(4 * n, "v", &v));
    die(b.alloc(64, "counters", &cnt));
    fill_ternary(b, q.as<int8_t>(), n, 4);
    fill_float(b, g.as<float>(), n, 5);
    DstParams p;
    p.lr = 0.01f;
    p.seed = 1;
    int step = 0;
    const double ms = time_ms(b, 20, [&] {
      p.step = step++;
      return b.dst_update(n, q.as<int8_t>(), g.as<float>(), m.as<float>(), v.as<float>(), p, cnt.as<int64_t>());
    });
    const double bytes = 22.0 * n;
    std::printf("{\"kind\":\"dst\",\"weights\":%lld,\"ms\":%.4f,\"GBps\":%.1f}\n", static_cast<long long>(n), ms, bytes / ms / 1e6);
  }
  if (!identical) {
    std::fprintf(stderr, "MISMATCH: the pipelined int8 forward differs from the previous kernel on some shape (see above)\n");
    return 2;
  }
  return 0;
}
