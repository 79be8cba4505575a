// Convolution products through cuDNN, opened at run time (dlopen): the CPU/CI machines have no
// cuDNN (so no headers or library to link against) and the GPU machine has cuDNN 9. When the
// library is missing the CUDA backend keeps its own kernels and says why in describe().
//
// Used for the products tensor cores do well and our hand-written kernels do not (yet): the
// backward data and filter products in bf16 with fp32 accumulation (ternary operands are exact in
// bf16), and the float-operand forward products (first and last layer) in fp32 without TF32.
// Algorithms come from cuDNN's heuristics (not from timing), restricted to deterministic ones, so a
// run repeats bit for bit on the same card and cuDNN version.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "../core/backend.h"

namespace tl {
namespace cuda {

enum class ConvProduct : int { ForwardF32 = 0, BackwardDataBf16 = 1, BackwardFilterBf16 = 2, ForwardInt8 = 3 };

class Cudnn {
 public:
  // Loads libcudnn.so.9 (once per process) and makes a handle on `stream`; nullptr and the reason
  // in *why when it cannot. Workspace bytes are added to *in_use (the backend's memory count).
  static std::unique_ptr<Cudnn> open(cudaStream_t stream, std::atomic<size_t>* in_use, std::string* why);
  ~Cudnn();
  std::string version() const;

  // y[n,oh,ow,oc] = conv(x[n,h,w,c], w[oc,kh,kw,c]) in fp32 (FMA math: no TF32).
  Status forward_f32(const ConvGeom& g, const float* x, const float* w, float* y);
  // y = scale · conv(x, w) with int8 x and w, int32 accumulation, float y (cuDNN's INT8_EXT
  // configuration; NHWC, c a multiple of 4). Opt-in (TERNLAB_CUDNN_INT8=1): an experiment against
  // ternlab's own int8 kernels, which stay the default until it is measured and checked exact.
  Status forward_int8(const ConvGeom& g, const int8_t* x, const int8_t* w, float scale, float* y);
  // dx[n,h,w,c] (bf16) from dy[n,oh,ow,oc] (bf16) and w[oc,kh,kw,c] (bf16).
  Status backward_data(const ConvGeom& g, const void* dy, const void* w, void* dx);
  // dw[oc,kh,kw,c] (bf16) from x[n,h,w,c] (bf16) and dy (bf16).
  Status backward_filter(const ConvGeom& g, const void* x, const void* dy, void* dw);
  // The benchmark's survey of a backward product (BackwardDataBf16: a = dy, b = w, out = dx;
  // BackwardFilterBf16: a = x, b = dy, out = dw; all bf16): every algorithm cuDNN can run, timed by
  // its Find call, and the one ternlab's rule picks (*chosen, -1 if none). Never used for the choice.
  struct AlgoTiming {
    int algo;
    float ms;
    bool deterministic;
    size_t workspace;
    int math;
  };
  Status survey(ConvProduct p, const ConvGeom& g, const void* a, const void* b, void* out, std::vector<AlgoTiming>* rows, int* chosen);
  // The two backward products through cuDNN's graph ("backend") API, the API PyTorch's cuDNN path
  // uses. Opt-in (TERNLAB_CUDNN_GRAPH=1: bf16 outputs, a drop-in for the legacy calls; =f32: float
  // outputs, no conversion pass after): on an H200 (session 6) training ran as fast as with the
  // legacy calls, and no cuDNN 9.14 engine offered float outputs (=f32 falls back). The engine: the first in the order of cuDNN's heuristics (mode A) that is
  // deterministic, keeps fp32 accumulation and operands (no reduced-precision or down-converting
  // notes) and builds a plan within the workspace limit, so a run repeats bit for bit on the same
  // card and cuDNN version. *done false (and nothing run) when no engine qualifies: the caller then
  // takes the legacy call. Operands as backward_data / backward_filter; out in float when out_f32.
  Status backward_data_graph(const ConvGeom& g, const void* dy, const void* w, void* dx, bool out_f32, bool* done);
  Status backward_filter_graph(const ConvGeom& g, const void* x, const void* dy, void* dw, bool out_f32, bool* done);
  // The benchmark's survey of the graph API's engines for one product (operands as survey()): each
  // engine the heuristics list, with its notes, timed over 10 runs where it builds a plan; *chosen is
  // the engine the rule above picks (-1 if none).
  struct EngineTiming {
    int64_t engine;
    float ms;  // < 0: no plan (unsupported, or over the workspace limit)
    bool deterministic, reduced_precision, down_convert;
    int64_t workspace;
  };
  // Graph-API products run, and those that found no qualifying engine (the legacy call ran instead).
  int64_t graph_runs() const { return graph_runs_; }
  int64_t graph_fallbacks() const { return graph_fallbacks_; }
  Status survey_graph(ConvProduct p, const ConvGeom& g, bool out_f32, const void* a, const void* b, void* out,
                      std::vector<EngineTiming>* rows, int64_t* chosen);
  // Whether cuDNN has a deterministic algorithm for this product and geometry (else: own kernels).
  bool supports(ConvProduct p, const ConvGeom& g);

  struct Api;  // the resolved entry points (cudnn_conv.cu)

 private:
  struct Plan;
  Cudnn(const Api* api, void* handle, cudaStream_t stream, std::atomic<size_t>* in_use)
      : api_(api), handle_(handle), stream_(stream), in_use_(in_use) {}
  Status plan(ConvProduct p, const ConvGeom& g, Plan** out);
  struct GraphPlan;
  struct GraphOp;
  struct EngineChoice {  // one of the heuristics' engine configurations, with its engine's notes
    void* cfg;
    int64_t engine;
    bool deterministic, reduced_precision, down_convert;
  };
  Status list_engines(GraphOp& op, std::vector<EngineChoice>* out);
  Status graph_op(ConvProduct p, const ConvGeom& g, bool out_f32, GraphOp* op);
  bool build_plan(GraphOp& owner, void* cfg, void** plan, int64_t* ws);
  Status graph_plan(ConvProduct p, const ConvGeom& g, bool out_f32, GraphPlan** out);
  Status graph_run(GraphPlan* gp, const void* x, const void* dy, const void* w, bool* done);
  template <class Call>
  Status run(ConvProduct p, const ConvGeom& g, const char* what, Call call);
  Status workspace(size_t bytes);
  Status check(int status, const char* what) const;

  const Api* api_;
  void* handle_;
  cudaStream_t stream_;
  std::atomic<size_t>* in_use_;
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  std::map<std::tuple<int, int, int, int, int, int, int, int, int, int, int, int>, Plan*> plans_;
  std::map<std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int>, GraphPlan*> graph_plans_;
  int64_t graph_runs_ = 0, graph_fallbacks_ = 0;
};

}  // namespace cuda
}  // namespace tl
