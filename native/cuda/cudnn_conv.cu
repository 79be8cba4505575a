// cuDNN 9's convolution API, declared by hand and resolved with dlsym: only the calls, enum values
// and structs used here, copied from cuDNN 9.14's cudnn_graph.h / cudnn_ops.h / cudnn_cnn.h (the
// build machines have no cuDNN headers; enums are C ints, structs laid out as there).
#include "cudnn_conv.cuh"

#include <dlfcn.h>

#include <algorithm>
#include <array>
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

// cudnn_graph.h: the graph API's descriptor types, attribute types and names, and notes (cuDNN 9)
namespace graph {
constexpr int kConvolution = 1, kEngine = 2, kEngineCfg = 3, kEngineHeur = 4, kExecutionPlan = 5, kOpBwdFilter = 11,
              kOpBwdData = 12, kOperationGraph = 15, kVariantPack = 16, kTensor = 17;
constexpr int tHandle = 0, tDataType = 1, tInt64 = 3, tFloat = 4, tVoidPtr = 6, tConvMode = 7, tHeurMode = 8,
              tNumericalNote = 11, tDescriptor = 15;
constexpr int aConvCompType = 100, aConvMode = 101, aConvDilations = 102, aConvStrides = 103, aConvPost = 104,
              aConvPre = 105, aConvDims = 106;
constexpr int aHeurMode = 200, aHeurGraph = 201, aHeurResults = 202, aCfgEngine = 300;
constexpr int aPlanHandle = 400, aPlanCfg = 401, aPlanWorkspace = 402;
constexpr int aDataAlpha = 706, aDataBeta = 707, aDataConv = 708, aDataW = 709, aDataDx = 710, aDataDy = 711;
constexpr int aFilterAlpha = 712, aFilterBeta = 713, aFilterConv = 714, aFilterDw = 715, aFilterX = 716, aFilterDy = 717;
constexpr int aGraphHandle = 800, aGraphOps = 801;
constexpr int aTensorAlignment = 900, aTensorType = 901, aTensorDims = 902, aTensorStrides = 903, aTensorUid = 906;
constexpr int aPackUids = 1000, aPackPointers = 1001, aPackWorkspace = 1003;
constexpr int aEngineIndex = 1301, aEngineNotes = 1303;
constexpr int kHeurModeA = 3;
constexpr int kNoteDownConvert = 1, kNoteReducedPrecision = 2, kNoteNondeterministic = 4;
constexpr int64_t kUidX = 1, kUidDy = 2, kUidW = 3;
}  // namespace graph

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
  // the graph ("backend") API: optional (null when the library lacks them; the legacy calls serve)
  int (*BackendCreateDescriptor)(int type, H*);
  int (*BackendDestroyDescriptor)(H);
  int (*BackendSetAttribute)(H, int name, int type, int64_t count, const void* elements);
  int (*BackendGetAttribute)(H, int name, int type, int64_t requested, int64_t* count, void* elements);
  int (*BackendFinalize)(H);
  int (*BackendExecute)(H handle, H plan, H variant_pack);
  // optional (the benchmark's survey only; null when the library lacks them)
  int (*FindConvolutionBackwardDataAlgorithmEx)(H, H wd, const void* w, H dyd, const void* dy, H conv, H dxd, void* dx, int req,
                                                int* got, AlgoPerf*, void* ws, size_t wsb);
  int (*FindConvolutionBackwardFilterAlgorithmEx)(H, H xd, const void* x, H dyd, const void* dy, H conv, H dwd, void* dw, int req,
                                                  int* got, AlgoPerf*, void* ws, size_t wsb);
};

// One product's operation graph (tensors, convolution, operation), the descriptors owned.
struct Cudnn::GraphOp {
  const Api* api = nullptr;
  std::vector<H> owned;
  H graph = nullptr;
  ~GraphOp() {
    for (auto it = owned.rbegin(); it != owned.rend(); ++it) api->BackendDestroyDescriptor(*it);
  }
  int make(int type, H* out) {
    const int st = api->BackendCreateDescriptor(type, out);
    if (st == 0) owned.push_back(*out);
    return st;
  }
};
struct Cudnn::GraphPlan {
  GraphOp op;
  H plan = nullptr;  // owned by op
  int64_t ws = 0, engine = -1;
  bool ok = false;
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
#define TL_OPTIONAL(name) a.name = reinterpret_cast<decltype(a.name)>(dlsym(lib, "cudnn" #name))
    TL_OPTIONAL(BackendCreateDescriptor);
    TL_OPTIONAL(BackendDestroyDescriptor);
    TL_OPTIONAL(BackendSetAttribute);
    TL_OPTIONAL(BackendGetAttribute);
    TL_OPTIONAL(BackendFinalize);
    TL_OPTIONAL(BackendExecute);
#undef TL_OPTIONAL
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
  for (auto& kv : graph_plans_) delete kv.second;  // its descriptors, before the handle goes
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

// ---- the graph API (see cudnn_conv.cuh)
// Every call below returns a cudnnStatus_t; a failure while building means "this engine (or this
// product) is not available", never a broken state: the descriptors made so far are owned and freed.
#define TL_GRAPH(call)            \
  do {                            \
    const int st_ = (call);       \
    if (st_ != kSuccess) return check(st_, #call); \
  } while (0)

Status Cudnn::graph_op(ConvProduct p, const ConvGeom& g, bool out_f32, GraphOp* op) {
  using namespace graph;
  const Api& a = *api_;
  op->api = api_;
  const bool data = p == ConvProduct::BackwardDataBf16;
  // NCHW-ordered dimensions with NHWC strides (ternlab's layout); the filter as KCRS with KRSC strides
  auto tensor = [&](int64_t uid, int dtype, std::array<int64_t, 4> dims, H* out) -> Status {
    const std::array<int64_t, 4> strides = {dims[1] * dims[2] * dims[3], 1, dims[3] * dims[1], dims[1]};
    const int64_t align = 16;
    TL_GRAPH(op->make(kTensor, out));
    TL_GRAPH(a.BackendSetAttribute(*out, aTensorType, tDataType, 1, &dtype));
    TL_GRAPH(a.BackendSetAttribute(*out, aTensorDims, tInt64, 4, dims.data()));
    TL_GRAPH(a.BackendSetAttribute(*out, aTensorStrides, tInt64, 4, strides.data()));
    TL_GRAPH(a.BackendSetAttribute(*out, aTensorUid, tInt64, 1, &uid));
    TL_GRAPH(a.BackendSetAttribute(*out, aTensorAlignment, tInt64, 1, &align));
    TL_GRAPH(a.BackendFinalize(*out));
    return Status::ok();
  };
  H x, dy, w, conv, o;
  const int out_type = out_f32 ? kDataFloat : kDataBf16;
  TL_TRY(tensor(kUidX, data ? out_type : kDataBf16, {g.n, g.c, g.h, g.w}, &x));
  TL_TRY(tensor(kUidDy, kDataBf16, {g.n, g.oc, g.oh, g.ow}, &dy));
  TL_TRY(tensor(kUidW, data ? kDataBf16 : out_type, {g.oc, g.c, g.kh, g.kw}, &w));
  const int comp = kDataFloat, mode = kCrossCorrelation;
  const int64_t dims = 2, dil[2] = {1, 1}, str[2] = {g.sh, g.sw}, pad[2] = {g.ph, g.pw};
  TL_GRAPH(op->make(kConvolution, &conv));
  TL_GRAPH(a.BackendSetAttribute(conv, aConvCompType, tDataType, 1, &comp));
  TL_GRAPH(a.BackendSetAttribute(conv, aConvMode, tConvMode, 1, &mode));
  TL_GRAPH(a.BackendSetAttribute(conv, aConvDims, tInt64, 1, &dims));
  TL_GRAPH(a.BackendSetAttribute(conv, aConvDilations, tInt64, 2, dil));
  TL_GRAPH(a.BackendSetAttribute(conv, aConvStrides, tInt64, 2, str));
  TL_GRAPH(a.BackendSetAttribute(conv, aConvPre, tInt64, 2, pad));
  TL_GRAPH(a.BackendSetAttribute(conv, aConvPost, tInt64, 2, pad));
  TL_GRAPH(a.BackendFinalize(conv));
  const float one = 1.0f, zero = 0.0f;
  TL_GRAPH(op->make(data ? kOpBwdData : kOpBwdFilter, &o));
  TL_GRAPH(a.BackendSetAttribute(o, data ? aDataAlpha : aFilterAlpha, tFloat, 1, &one));
  TL_GRAPH(a.BackendSetAttribute(o, data ? aDataBeta : aFilterBeta, tFloat, 1, &zero));
  TL_GRAPH(a.BackendSetAttribute(o, data ? aDataConv : aFilterConv, tDescriptor, 1, &conv));
  TL_GRAPH(a.BackendSetAttribute(o, data ? aDataDy : aFilterDy, tDescriptor, 1, &dy));
  if (data) {
    TL_GRAPH(a.BackendSetAttribute(o, aDataW, tDescriptor, 1, &w));
    TL_GRAPH(a.BackendSetAttribute(o, aDataDx, tDescriptor, 1, &x));
  } else {
    TL_GRAPH(a.BackendSetAttribute(o, aFilterX, tDescriptor, 1, &x));
    TL_GRAPH(a.BackendSetAttribute(o, aFilterDw, tDescriptor, 1, &w));
  }
  TL_GRAPH(a.BackendFinalize(o));
  TL_GRAPH(op->make(kOperationGraph, &op->graph));
  TL_GRAPH(a.BackendSetAttribute(op->graph, aGraphHandle, tHandle, 1, &handle_));
  TL_GRAPH(a.BackendSetAttribute(op->graph, aGraphOps, tDescriptor, 1, &o));
  TL_GRAPH(a.BackendFinalize(op->graph));
  return Status::ok();
}

// The heuristics' (mode A) engine configurations for an operation graph, in their order, with each
// engine's notes; the descriptors are made by (and owned by) op.
Status Cudnn::list_engines(GraphOp& op, std::vector<EngineChoice>* out) {
  using namespace graph;
  const Api& a = *api_;
  H heur;
  const int mode = kHeurModeA;
  TL_GRAPH(op.make(kEngineHeur, &heur));
  TL_GRAPH(a.BackendSetAttribute(heur, aHeurGraph, tDescriptor, 1, &op.graph));
  TL_GRAPH(a.BackendSetAttribute(heur, aHeurMode, tHeurMode, 1, &mode));
  TL_GRAPH(a.BackendFinalize(heur));
  int64_t count = 0;
  TL_GRAPH(a.BackendGetAttribute(heur, aHeurResults, tDescriptor, 0, &count, nullptr));
  std::vector<H> cfgs(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (auto& c : cfgs) TL_GRAPH(op.make(kEngineCfg, &c));
  int64_t got = 0;
  if (count > 0) TL_GRAPH(a.BackendGetAttribute(heur, aHeurResults, tDescriptor, count, &got, cfgs.data()));
  for (int64_t i = 0; i < std::min<int64_t>(got, count); ++i) {
    H engine;
    int64_t n = 0, index = -1;
    TL_GRAPH(op.make(kEngine, &engine));
    if (a.BackendGetAttribute(cfgs[i], aCfgEngine, tDescriptor, 1, &n, &engine) != kSuccess) continue;
    a.BackendGetAttribute(engine, aEngineIndex, tInt64, 1, &n, &index);
    int notes[32];
    int64_t nn = 0;
    if (a.BackendGetAttribute(engine, aEngineNotes, tNumericalNote, 32, &nn, notes) != kSuccess) nn = 0;
    EngineChoice e{cfgs[i], index, true, false, false};
    for (int64_t k = 0; k < std::min<int64_t>(nn, 32); ++k) {
      if (notes[k] == kNoteNondeterministic) e.deterministic = false;
      if (notes[k] == kNoteReducedPrecision) e.reduced_precision = true;
      if (notes[k] == kNoteDownConvert) e.down_convert = true;
    }
    out->push_back(e);
  }
  return Status::ok();
}

// An execution plan of engine configuration cfg, made by (and owned by) owner, with its workspace
// size: false where cuDNN cannot build it or it needs more than kMaxWorkspace.
bool Cudnn::build_plan(GraphOp& owner, void* cfg, void** plan, int64_t* ws) {
  using namespace graph;
  int64_t n = 0;
  return owner.make(kExecutionPlan, plan) == kSuccess && api_->BackendSetAttribute(*plan, aPlanHandle, tHandle, 1, &handle_) == kSuccess &&
         api_->BackendSetAttribute(*plan, aPlanCfg, tDescriptor, 1, &cfg) == kSuccess && api_->BackendFinalize(*plan) == kSuccess &&
         api_->BackendGetAttribute(*plan, aPlanWorkspace, tInt64, 1, &n, ws) == kSuccess && *ws >= 0 &&
         static_cast<size_t>(*ws) <= kMaxWorkspace;
}

Status Cudnn::graph_plan(ConvProduct p, const ConvGeom& g, bool out_f32, GraphPlan** out) {
  const auto key = std::make_tuple(static_cast<int>(p), out_f32 ? 1 : 0, g.n, g.h, g.w, g.c, g.oc, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw);
  auto it = graph_plans_.find(key);
  if (it != graph_plans_.end()) {
    *out = it->second;
    return Status::ok();
  }
  auto* gp = new GraphPlan();
  graph_plans_[key] = gp;
  *out = gp;
  if (!api_->BackendCreateDescriptor || !api_->BackendExecute) return Status::ok();
  if (!graph_op(p, g, out_f32, &gp->op).is_ok()) return Status::ok();  // not expressible: legacy calls
  std::vector<EngineChoice> engines;
  if (!list_engines(gp->op, &engines).is_ok()) return Status::ok();
  for (const EngineChoice& e : engines) {
    if (!e.deterministic || e.reduced_precision || e.down_convert) continue;
    H plan;
    int64_t ws = 0;
    if (!build_plan(gp->op, e.cfg, &plan, &ws)) continue;
    gp->plan = plan;
    gp->ws = ws;
    gp->engine = e.engine;
    gp->ok = true;
    break;
  }
  return Status::ok();
}

Status Cudnn::graph_run(GraphPlan* gp, const void* x, const void* dy, const void* w, bool* done) {
  using namespace graph;
  *done = false;
  if (!gp->ok) {
    graph_fallbacks_++;
    return Status::ok();
  }
  TL_TRY(workspace(static_cast<size_t>(gp->ws)));
  const Api& a = *api_;
  H pack;
  TL_GRAPH(a.BackendCreateDescriptor(kVariantPack, &pack));
  const int64_t uids[3] = {kUidX, kUidDy, kUidW};
  void* ptrs[3] = {const_cast<void*>(x), const_cast<void*>(dy), const_cast<void*>(w)};
  void* ws = ws_;
  int st = a.BackendSetAttribute(pack, aPackUids, tInt64, 3, uids);
  if (st == kSuccess) st = a.BackendSetAttribute(pack, aPackPointers, tVoidPtr, 3, ptrs);
  if (st == kSuccess) st = a.BackendSetAttribute(pack, aPackWorkspace, tVoidPtr, 1, &ws);
  if (st == kSuccess) st = a.BackendFinalize(pack);
  if (st == kSuccess) st = a.BackendExecute(handle_, gp->plan, pack);
  a.BackendDestroyDescriptor(pack);
  TL_TRY(check(st, "cudnnBackendExecute (backward product)"));
  graph_runs_++;
  *done = true;
  return Status::ok();
}

Status Cudnn::backward_data_graph(const ConvGeom& g, const void* dy, const void* w, void* dx, bool out_f32, bool* done) {
  GraphPlan* gp;
  TL_TRY(graph_plan(ConvProduct::BackwardDataBf16, g, out_f32, &gp));
  return graph_run(gp, dx, dy, w, done);
}

Status Cudnn::backward_filter_graph(const ConvGeom& g, const void* x, const void* dy, void* dw, bool out_f32, bool* done) {
  GraphPlan* gp;
  TL_TRY(graph_plan(ConvProduct::BackwardFilterBf16, g, out_f32, &gp));
  return graph_run(gp, x, dy, dw, done);
}

Status Cudnn::survey_graph(ConvProduct p, const ConvGeom& g, bool out_f32, const void* a, const void* b, void* out,
                           std::vector<EngineTiming>* rows, int64_t* chosen) {
  using namespace graph;
  rows->clear();
  *chosen = -1;
  if (!api_->BackendCreateDescriptor || !api_->BackendExecute) return Status(Code::Internal, "cudnn: this libcudnn has no graph API");
  GraphPlan* gp;
  TL_TRY(graph_plan(p, g, out_f32, &gp));
  if (gp->ok) *chosen = gp->engine;
  GraphOp op;
  TL_TRY(graph_op(p, g, out_f32, &op));
  std::vector<EngineChoice> engines;
  TL_TRY(list_engines(op, &engines));
  const bool data = p == ConvProduct::BackwardDataBf16;
  const void* x = data ? out : a;
  const void* dy = data ? a : b;
  const void* w = data ? b : out;
  cudaEvent_t t0, t1;
  cudaEventCreate(&t0);
  cudaEventCreate(&t1);
  for (const EngineChoice& e : engines) {
    EngineTiming r{e.engine, -1.0f, e.deterministic, e.reduced_precision, e.down_convert, 0};
    GraphPlan one;
    one.op.api = api_;
    H plan;
    if (build_plan(one.op, e.cfg, &plan, &r.workspace)) {
      one.plan = plan;
      one.ws = r.workspace;
      one.ok = true;
      bool done = false;
      Status st = graph_run(&one, x, dy, w, &done);  // warm-up (and the first-call costs)
      if (st.is_ok() && done) {
        cudaEventRecord(t0, stream_);
        bool all = true;
        for (int i = 0; i < 10 && all; ++i) all = graph_run(&one, x, dy, w, &done).is_ok();
        cudaEventRecord(t1, stream_);
        cudaEventSynchronize(t1);
        float ms = 0;
        cudaEventElapsedTime(&ms, t0, t1);
        if (all) r.ms = ms / 10;
      }
      cudaGetLastError();
    }
    rows->push_back(r);
  }
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
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
