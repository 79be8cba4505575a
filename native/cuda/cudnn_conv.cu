// cuDNN 9's convolution API, declared by hand and resolved with dlsym: only the calls, enum values
// and structs used here, copied from cuDNN 9.14's cudnn_graph.h / cudnn_ops.h / cudnn_cnn.h (the
// build machines have no cuDNN headers; enums are C ints, structs laid out as there).
#include "cudnn_conv.cuh"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace tl {
namespace cuda {
namespace {

// cudnn_graph.h / cudnn_ops.h values
constexpr int kSuccess = 0;
constexpr int kDataFloat = 0, kDataInt8 = 3, kDataInt32 = 4, kDataBf16 = 9;
constexpr int kNhwc = 1;
constexpr int kCrossCorrelation = 1;
constexpr int kDefaultMath = 0, kTensorOpMath = 1, kFmaMath = 3;
constexpr int kDeterministic = 1;
constexpr size_t kMaxWorkspace = size_t(512) << 20;

struct AlgoPerf {  // cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t (same layout)
  int algo;
  int status;
  float time;
  size_t memory;
  int determinism;
  int math_type;
  int reserved[3];
};

using H = void*;  // handles and descriptors are opaque pointers
}  // namespace

struct Cudnn::Api {
  size_t (*GetVersion)();
  const char* (*GetErrorString)(int);
  int (*Create)(H*);
  int (*Destroy)(H);
  int (*SetStream)(H, cudaStream_t);
  int (*CreateTensorDescriptor)(H*);
  int (*SetTensor4dDescriptor)(H, int format, int dtype, int n, int c, int h, int w);
  int (*DestroyTensorDescriptor)(H);
  int (*CreateFilterDescriptor)(H*);
  int (*SetFilter4dDescriptor)(H, int dtype, int format, int k, int c, int h, int w);
  int (*DestroyFilterDescriptor)(H);
  int (*CreateConvolutionDescriptor)(H*);
  int (*SetConvolution2dDescriptor)(H, int ph, int pw, int sh, int sw, int dh, int dw, int mode, int compute);
  int (*SetConvolutionMathType)(H, int);
  int (*DestroyConvolutionDescriptor)(H);
  int (*GetConvolution2dForwardOutputDim)(H conv, H x, H w, int* n, int* c, int* h, int* wd);
  int (*GetConvolutionForwardAlgorithm_v7)(H, H x, H w, H conv, H y, int req, int* got, AlgoPerf*);
  int (*GetConvolutionForwardWorkspaceSize)(H, H x, H w, H conv, H y, int algo, size_t*);
  int (*ConvolutionForward)(H, const void* alpha, H xd, const void* x, H wd, const void* w, H conv, int algo, void* ws,
                            size_t wsb, const void* beta, H yd, void* y);
  int (*GetConvolutionBackwardDataAlgorithm_v7)(H, H w, H dy, H conv, H dx, int req, int* got, AlgoPerf*);
  int (*GetConvolutionBackwardDataWorkspaceSize)(H, H w, H dy, H conv, H dx, int algo, size_t*);
  int (*ConvolutionBackwardData)(H, const void* alpha, H wd, const void* w, H dyd, const void* dy, H conv, int algo, void* ws,
                                 size_t wsb, const void* beta, H dxd, void* dx);
  int (*GetConvolutionBackwardFilterAlgorithm_v7)(H, H x, H dy, H conv, H dw, int req, int* got, AlgoPerf*);
  int (*GetConvolutionBackwardFilterWorkspaceSize)(H, H x, H dy, H conv, H dw, int algo, size_t*);
  int (*ConvolutionBackwardFilter)(H, const void* alpha, H xd, const void* x, H dyd, const void* dy, H conv, int algo, void* ws,
                                   size_t wsb, const void* beta, H dwd, void* dw);
  // optional (the benchmark's survey only; null when the library lacks them)
  int (*FindConvolutionBackwardDataAlgorithmEx)(H, H wd, const void* w, H dyd, const void* dy, H conv, H dxd, void* dx, int req,
                                                int* got, AlgoPerf*, void* ws, size_t wsb);
  int (*FindConvolutionBackwardFilterAlgorithmEx)(H, H xd, const void* x, H dyd, const void* dy, H conv, H dwd, void* dw, int req,
                                                  int* got, AlgoPerf*, void* ws, size_t wsb);
};

struct Cudnn::Plan {
  bool ok = false;  // false: no deterministic cuDNN algorithm for it (the backend's own kernels run)
  H x = nullptr, y = nullptr, w = nullptr, conv = nullptr;
  int algo = 0;
  int math = 0;
  size_t ws = 0;
};

namespace {
// The API is loaded once per process; the result (or the reason it failed) is kept.
std::once_flag g_once;
Cudnn::Api g_api;
std::string g_why;
bool g_ok = false;

template <class F>
bool sym(void* lib, const char* name, F* f) {
  *f = reinterpret_cast<F>(dlsym(lib, name));
  if (!*f) g_why = std::string("libcudnn.so.9 has no ") + name;
  return *f != nullptr;
}

const Cudnn::Api* load_api(std::string* why) {
  std::call_once(g_once, [] {
    void* lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      g_why = std::string("cannot open libcudnn.so.9 (") + (e ? e : "unknown error") + ")";
      return;
    }
    Cudnn::Api& a = g_api;
#define TL_SYM(name) sym(lib, "cudnn" #name, &a.name)
    g_ok = TL_SYM(GetVersion) && TL_SYM(GetErrorString) && TL_SYM(Create) && TL_SYM(Destroy) && TL_SYM(SetStream) &&
           TL_SYM(CreateTensorDescriptor) && TL_SYM(SetTensor4dDescriptor) && TL_SYM(DestroyTensorDescriptor) &&
           TL_SYM(CreateFilterDescriptor) && TL_SYM(SetFilter4dDescriptor) && TL_SYM(DestroyFilterDescriptor) &&
           TL_SYM(CreateConvolutionDescriptor) && TL_SYM(SetConvolution2dDescriptor) && TL_SYM(SetConvolutionMathType) &&
           TL_SYM(DestroyConvolutionDescriptor) && TL_SYM(GetConvolution2dForwardOutputDim) &&
           TL_SYM(GetConvolutionForwardAlgorithm_v7) && TL_SYM(GetConvolutionForwardWorkspaceSize) && TL_SYM(ConvolutionForward) &&
           TL_SYM(GetConvolutionBackwardDataAlgorithm_v7) && TL_SYM(GetConvolutionBackwardDataWorkspaceSize) &&
           TL_SYM(ConvolutionBackwardData) && TL_SYM(GetConvolutionBackwardFilterAlgorithm_v7) &&
           TL_SYM(GetConvolutionBackwardFilterWorkspaceSize) && TL_SYM(ConvolutionBackwardFilter);
#undef TL_SYM
    a.FindConvolutionBackwardDataAlgorithmEx = reinterpret_cast<decltype(a.FindConvolutionBackwardDataAlgorithmEx)>(
        dlsym(lib, "cudnnFindConvolutionBackwardDataAlgorithmEx"));
    a.FindConvolutionBackwardFilterAlgorithmEx = reinterpret_cast<decltype(a.FindConvolutionBackwardFilterAlgorithmEx)>(
        dlsym(lib, "cudnnFindConvolutionBackwardFilterAlgorithmEx"));
    if (g_ok && a.GetVersion() / 10000 != 9) {
      g_ok = false;
      g_why = "libcudnn.so.9 reports version " + std::to_string(a.GetVersion()) + " (ternlab declares cuDNN 9's API)";
    }
  });
  if (!g_ok) *why = g_why;
  return g_ok ? &g_api : nullptr;
}
}  // namespace

std::unique_ptr<Cudnn> Cudnn::open(cudaStream_t stream, std::atomic<size_t>* in_use, std::string* why) {
  const Api* api = load_api(why);
  if (!api) return nullptr;
  H h = nullptr;
  int st = api->Create(&h);
  if (st != kSuccess) {
    *why = std::string("cudnnCreate failed: ") + api->GetErrorString(st);
    return nullptr;
  }
  api->SetStream(h, stream);
  return std::unique_ptr<Cudnn>(new Cudnn(api, h, stream, in_use));
}

Cudnn::~Cudnn() {
  for (auto& kv : plans_) {
    Plan* p = kv.second;
    if (p->x) api_->DestroyTensorDescriptor(p->x);
    if (p->y) api_->DestroyTensorDescriptor(p->y);
    if (p->w) api_->DestroyFilterDescriptor(p->w);
    if (p->conv) api_->DestroyConvolutionDescriptor(p->conv);
    delete p;
  }
  if (ws_) {
    cudaStreamSynchronize(stream_);
    cudaFree(ws_);
    *in_use_ -= ws_bytes_;
  }
  api_->Destroy(handle_);
}

std::string Cudnn::version() const {
  const size_t v = api_->GetVersion();
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

Status Cudnn::check(int status, const char* what) const {
  if (status == kSuccess) return Status::ok();
  return Status(Code::Cuda, std::string("cudnn: ") + what + " failed: " + api_->GetErrorString(status));
}

Status Cudnn::workspace(size_t bytes) {
  if (bytes <= ws_bytes_) return Status::ok();
  if (ws_) {
    cudaStreamSynchronize(stream_);
    cudaFree(ws_);
    *in_use_ -= ws_bytes_;
    ws_ = nullptr;
    ws_bytes_ = 0;
  }
  cudaError_t e = cudaMalloc(&ws_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    ws_ = nullptr;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return Status(Code::Oom, "cuda: allocating " + std::to_string(bytes) + " bytes of cuDNN workspace failed with " +
                                 std::to_string(in_use_->load()) + " bytes in use by ternlab and " + std::to_string(free_b) +
                                 " bytes free. Use a smaller batch size or model.");
  }
  ws_bytes_ = bytes;
  *in_use_ += bytes;
  return Status::ok();
}

#define TL_CUDNN(call, what) TL_TRY(check((call), what))

Status Cudnn::plan(ConvProduct p, const ConvGeom& g, Plan** out) {
  const auto key = std::make_tuple(static_cast<int>(p), g.n, g.h, g.w, g.c, g.oc, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw);
  auto it = plans_.find(key);
  if (it != plans_.end()) {
    *out = it->second;
    return Status::ok();
  }
  auto* pl = new Plan();
  plans_[key] = pl;
  *out = pl;
  const bool f32 = p == ConvProduct::ForwardF32, i8 = p == ConvProduct::ForwardInt8;
  const int dt = f32 ? kDataFloat : (i8 ? kDataInt8 : kDataBf16);
  if (i8 && g.c % 4 != 0) return Status::ok();  // cuDNN's int8 NHWC needs c % 4 == 0: own kernels
  const Api& a = *api_;
  TL_CUDNN(a.CreateTensorDescriptor(&pl->x), "cudnnCreateTensorDescriptor");
  TL_CUDNN(a.CreateTensorDescriptor(&pl->y), "cudnnCreateTensorDescriptor");
  TL_CUDNN(a.CreateFilterDescriptor(&pl->w), "cudnnCreateFilterDescriptor");
  TL_CUDNN(a.CreateConvolutionDescriptor(&pl->conv), "cudnnCreateConvolutionDescriptor");
  TL_CUDNN(a.SetTensor4dDescriptor(pl->x, kNhwc, dt, g.n, g.c, g.h, g.w), "cudnnSetTensor4dDescriptor (input)");
  TL_CUDNN(a.SetTensor4dDescriptor(pl->y, kNhwc, i8 ? kDataFloat : dt, g.n, g.oc, g.oh, g.ow), "cudnnSetTensor4dDescriptor (output)");
  // our conv weights are [oc][kh][kw][c]: cuDNN's KRSC, i.e. the NHWC filter format
  TL_CUDNN(a.SetFilter4dDescriptor(pl->w, dt, kNhwc, g.oc, g.c, g.kh, g.kw), "cudnnSetFilter4dDescriptor");
  TL_CUDNN(a.SetConvolution2dDescriptor(pl->conv, g.ph, g.pw, g.sh, g.sw, 1, 1, kCrossCorrelation, i8 ? kDataInt32 : kDataFloat),
           "cudnnSetConvolution2dDescriptor");
  TL_CUDNN(a.SetConvolutionMathType(pl->conv, f32 ? kFmaMath : kTensorOpMath), "cudnnSetConvolutionMathType");
  int n = 0, c = 0, oh = 0, ow = 0;
  TL_CUDNN(a.GetConvolution2dForwardOutputDim(pl->conv, pl->x, pl->w, &n, &c, &oh, &ow), "cudnnGetConvolution2dForwardOutputDim");
  if (n != g.n || c != g.oc || oh != g.oh || ow != g.ow) return Status::ok();  // another output rule: own kernels
  AlgoPerf perf[16];
  int got = 0;
  if (p == ConvProduct::ForwardF32 || i8)
    TL_CUDNN(a.GetConvolutionForwardAlgorithm_v7(handle_, pl->x, pl->w, pl->conv, pl->y, 16, &got, perf), "cudnnGetConvolutionForwardAlgorithm_v7");
  else if (p == ConvProduct::BackwardDataBf16)
    TL_CUDNN(a.GetConvolutionBackwardDataAlgorithm_v7(handle_, pl->w, pl->y, pl->conv, pl->x, 16, &got, perf),
             "cudnnGetConvolutionBackwardDataAlgorithm_v7");
  else
    TL_CUDNN(a.GetConvolutionBackwardFilterAlgorithm_v7(handle_, pl->x, pl->y, pl->conv, pl->w, 16, &got, perf),
             "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
  // The heuristics' order, first that is deterministic, fits the workspace limit and (fp32) runs on
  // the FMA units: TF32 would round the operands to 10 bits. TERNLAB_CUDNN_ALGO_DATA / _FILTER = k
  // put algorithm k first for the backward products (a fixed rule, for the benchmark to compare
  // against the heuristics; a choice by timing would break DESIGN.md's run-to-run determinism).
  const char* force = p == ConvProduct::BackwardDataBf16 ? std::getenv("TERNLAB_CUDNN_ALGO_DATA")
                      : p == ConvProduct::BackwardFilterBf16 ? std::getenv("TERNLAB_CUDNN_ALGO_FILTER") : nullptr;
  if (force && *force) {
    const int k = std::atoi(force);
    std::stable_partition(perf, perf + got, [k](const AlgoPerf& q) { return q.algo == k; });
  }
  for (int i = 0; i < got; ++i) {
    const AlgoPerf& q = perf[i];
    if (q.status != kSuccess || q.determinism != kDeterministic || q.memory > kMaxWorkspace) continue;
    if (f32 && q.math_type != kFmaMath && q.math_type != kDefaultMath) continue;
    TL_CUDNN(a.SetConvolutionMathType(pl->conv, f32 ? kFmaMath : q.math_type), "cudnnSetConvolutionMathType");
    size_t ws = 0;
    int st;
    if (p == ConvProduct::ForwardF32 || i8)
      st = a.GetConvolutionForwardWorkspaceSize(handle_, pl->x, pl->w, pl->conv, pl->y, q.algo, &ws);
    else if (p == ConvProduct::BackwardDataBf16)
      st = a.GetConvolutionBackwardDataWorkspaceSize(handle_, pl->w, pl->y, pl->conv, pl->x, q.algo, &ws);
    else
      st = a.GetConvolutionBackwardFilterWorkspaceSize(handle_, pl->x, pl->y, pl->conv, pl->w, q.algo, &ws);
    if (st != kSuccess || ws > kMaxWorkspace) continue;
    pl->algo = q.algo;
    pl->math = f32 ? kFmaMath : q.math_type;
    pl->ws = ws;
    pl->ok = true;
    break;
  }
  return Status::ok();
}

bool Cudnn::supports(ConvProduct p, const ConvGeom& g) {
  Plan* pl = nullptr;
  return plan(p, g, &pl).is_ok() && pl->ok;
}

// One product: its plan (cached), the workspace, then the call with α = 1, β = 0.
template <class Call>
Status Cudnn::run(ConvProduct p, const ConvGeom& g, const char* what, Call call) {
  Plan* pl;
  TL_TRY(plan(p, g, &pl));
  if (!pl->ok) return Status(Code::Internal, std::string("cudnn: ") + what + " has no deterministic algorithm for this shape");
  TL_TRY(workspace(pl->ws));
  const float one = 1.0f, zero = 0.0f;
  return check(call(*pl, &one, &zero), what);
}

Status Cudnn::survey(ConvProduct p, const ConvGeom& g, const void* a, const void* b, void* out, std::vector<AlgoTiming>* rows,
                     int* chosen) {
  rows->clear();
  *chosen = -1;
  const bool data = p == ConvProduct::BackwardDataBf16;
  if (!data && p != ConvProduct::BackwardFilterBf16) return Status(Code::Internal, "cudnn: survey covers the backward products only");
  if (!(data ? api_->FindConvolutionBackwardDataAlgorithmEx : api_->FindConvolutionBackwardFilterAlgorithmEx))
    return Status(Code::Internal, "cudnn: this libcudnn has no cudnnFindConvolutionBackward*AlgorithmEx");
  Plan* pl;
  TL_TRY(plan(p, g, &pl));
  if (pl->ok) *chosen = pl->algo;
  if (!pl->x) return Status::ok();  // no descriptors: cuDNN cannot express this geometry
  TL_TRY(workspace(kMaxWorkspace));
  AlgoPerf perf[16];
  int got = 0;
  TL_CUDNN(api_->SetConvolutionMathType(pl->conv, kTensorOpMath), "cudnnSetConvolutionMathType");
  const int st = data ? api_->FindConvolutionBackwardDataAlgorithmEx(handle_, pl->w, b, pl->y, a, pl->conv, pl->x, out, 16, &got, perf,
                                                                    ws_, ws_bytes_)
                      : api_->FindConvolutionBackwardFilterAlgorithmEx(handle_, pl->x, a, pl->y, b, pl->conv, pl->w, out, 16, &got, perf,
                                                                      ws_, ws_bytes_);
  TL_CUDNN(api_->SetConvolutionMathType(pl->conv, pl->math), "cudnnSetConvolutionMathType");
  TL_CUDNN(st, data ? "cudnnFindConvolutionBackwardDataAlgorithmEx" : "cudnnFindConvolutionBackwardFilterAlgorithmEx");
  for (int i = 0; i < got; ++i)
    if (perf[i].status == kSuccess)
      rows->push_back(AlgoTiming{perf[i].algo, perf[i].time, perf[i].determinism == kDeterministic, perf[i].memory, perf[i].math_type});
  return Status::ok();
}

Status Cudnn::forward_f32(const ConvGeom& g, const float* x, const float* w, float* y) {
  return run(ConvProduct::ForwardF32, g, "cudnnConvolutionForward (fp32)", [&](const Plan& p, const float* one, const float* zero) {
    return api_->ConvolutionForward(handle_, one, p.x, x, p.w, w, p.conv, p.algo, ws_, p.ws, zero, p.y, y);
  });
}

Status Cudnn::forward_int8(const ConvGeom& g, const int8_t* x, const int8_t* w, float scale, float* y) {
  return run(ConvProduct::ForwardInt8, g, "cudnnConvolutionForward (int8)", [&](const Plan& p, const float*, const float* zero) {
    // α = the states' scale: y = float(Σ x·w)·scale, the int32 sum converted exactly (|Σ| < 2²⁴)
    return api_->ConvolutionForward(handle_, &scale, p.x, x, p.w, w, p.conv, p.algo, ws_, p.ws, zero, p.y, y);
  });
}

Status Cudnn::backward_data(const ConvGeom& g, const void* dy, const void* w, void* dx) {
  return run(ConvProduct::BackwardDataBf16, g, "cudnnConvolutionBackwardData (bf16)", [&](const Plan& p, const float* one, const float* zero) {
    return api_->ConvolutionBackwardData(handle_, one, p.w, w, p.y, dy, p.conv, p.algo, ws_, p.ws, zero, p.x, dx);
  });
}

Status Cudnn::backward_filter(const ConvGeom& g, const void* x, const void* dy, void* dw) {
  return run(ConvProduct::BackwardFilterBf16, g, "cudnnConvolutionBackwardFilter (bf16)", [&](const Plan& p, const float* one, const float* zero) {
    return api_->ConvolutionBackwardFilter(handle_, one, p.x, x, p.y, dy, p.conv, p.algo, ws_, p.ws, zero, p.w, dw);
  });
}

}  // namespace cuda
}  // namespace tl
