// A model: a list of nodes in topological order (each reads earlier nodes), with its forward,
// backward and update written once against the Backend interface. Discrete weights exist only
// as int8 states; nothing here keeps a float copy of them.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend.h"

namespace tl {

enum class OpKind : int32_t { Input = 0, Conv = 1, Dense = 2, MaxPool = 3, AvgPool = 4, BatchNorm = 5, Activation = 6, Flatten = 7, Add = 8 };
const char* op_name(OpKind k);

struct NodeSpec {
  OpKind kind = OpKind::Input;
  std::string name;
  std::vector<int> inputs;
  // conv / dense / pooling geometry
  int out = 0, kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  // conv / dense weights
  bool discrete = true;     // false: a labelled full-precision layer (e.g. ResNet's first conv)
  Levels levels;            // Z_N of the weights
  float init_spread = 1.0f; // U(−s, s) before rounding (§1.1)
  // activation
  ActSpec act;
};

struct ModelSpec {
  int h = 0, w = 0, c = 0, classes = 0;
  std::vector<NodeSpec> nodes;  // nodes[0] is the input
  uint64_t seed = 0;
  float bn_eps = 1e-4f, bn_momentum = 0.1f;
};

struct UpdateConfig {
  Proposal proposal = Proposal::Adam;
  Tau tau = Tau::Tanh;
  float m = 3.0f, temperature = 1.0f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
};

struct NamedTensor {
  std::string name;
  std::string dtype;  // "int8" | "float32" | "int64"
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

struct LayerCounters {
  std::string name;
  int64_t weights = 0, inputs = 0, macs = 0;
  int64_t zero_weights = 0, zero_inputs = 0, active_macs = 0, flips = 0;
  bool integer_input = false;
};

// Where one planned buffer lives: a range of the model's arena (plan_memory), not an allocation.
struct Region {
  void* ptr = nullptr;
  size_t bytes = 0;
  void* data() const { return ptr; }
  template <class T> T* as() const { return static_cast<T*>(ptr); }
};

class Model {
 public:
  Model(std::unique_ptr<Backend> backend) : backend_(std::move(backend)) {}
  Status build(const ModelSpec& spec, const UpdateConfig& update);
  Backend& backend() { return *backend_; }
  const ModelSpec& spec() const { return spec_; }
  const UpdateConfig& update_config() const { return update_; }

  // Forward of n samples already on the device (normalised float input). train: batch statistics.
  // px, when given, holds the same samples as uint8 pixels (x = px·scale + offset): a layer reading
  // the input may use them (Backend::conv_forward_pixels).
  Status forward(const float* x, int n, bool train, const Backend::Pixels* px = nullptr);
  // Loss and its gradient at the output; row losses and true-class ranks to host arrays.
  Status loss(const int32_t* labels_dev, int n, LossKind kind, float* row_loss_host, int32_t* rank_host);
  // The backward pass, each node updated right after its own backward (DST for discrete weights,
  // Adam for the rest). t is the 0-based global step.
  Status backward_update(int n, uint64_t t, float lr);
  Status read_counters(std::vector<LayerCounters>* out);
  // The asynchronous form of loss() + read_counters() for the training pipeline: the loss on labels
  // already on the device, then the row losses, ranks and counters queued for download into host
  // buffers (report_bytes() of them); decode_counters() reads the counters part once it arrived.
  Status loss_queued(const int32_t* labels_dev, int n, LossKind kind, void* report_host);
  size_t report_bytes(int n) const;
  Status queue_counters(void* report_host);  // after backward_update(): the step's counters into the report
  void decode_counters(const int64_t* host_counters, std::vector<LayerCounters>* out) const;
  void decode_report(const void* report_host, int n, double* loss_sum, int64_t* correct, std::vector<LayerCounters>* out) const;

  // Allocates every activation and gradient buffer for batches up to n (forward() calls it).
  Status ensure_capacity(int n);
  // JSON: the arena's plan at the current capacity (each buffer's use, bytes, offset and live
  // steps) and the model's other buffers by category; the bytes add up to what the model holds.
  std::string memory_report_json() const;
  Status get_state(std::vector<NamedTensor>* out);
  Status set_state(const std::vector<NamedTensor>& in);
  std::string summary_json() const;
  int64_t step() const { return step_; }
  void set_step(int64_t s) { step_ = s; }
  int64_t input_elems() const { return static_cast<int64_t>(spec_.h) * spec_.w * spec_.c; }
  int classes() const { return spec_.classes; }

 private:
  struct Node {
    NodeSpec spec;
    int h = 0, w = 0, c = 0;  // output shape per sample
    DType dtype = DType::F32;
    float scale = 1.0f;        // value of one int8 output unit
    int alias = -1;            // flatten: the node whose buffers it shares
    bool requires_grad = false;
    int consumers = 0;
    Region out;
    float* grad = nullptr;  // this node's output gradient (a region of the arena)
    float* scratch = nullptr;  // room for a gradient to accumulate from, during this node's backward step
    // weights
    int64_t nweights = 0;
    Buffer wq, wf, wm, wv;
    // the weight gradient: a range of the arena from this layer's backward to the update, or its own
    // buffer (gw_owned, zeros forever) for a layer no gradient reaches
    Region gw;
    Buffer gw_owned;
    // batch norm
    Buffer gamma, beta, rmean, rvar, dgamma, dbeta, gm, gv, bm, bv, invstd;
    Buffer mean;              // the last training batch's μ (float), for x̂ recomputed from int16 sums
    Region xhat_owned;        // x̂, unless it is written over the input's output (xhat_in_place)
    float* xhat = nullptr;
    bool xhat_in_place = false;
    bool xhat_recomputed = false;  // the input is exact int16 sums: x̂ recomputed from them (xhat_source)
    Region argmax;
    bool grad_written = false;
    // batch norm whose only consumer is the next node, an activation: one fused op each way in training
    bool fused_act = false;
    // fused BN whose input's gradient, its own and its φ's share one buffer (plan_memory)
    bool grad_in_place = false;
    // add whose gradient is its first input's too (plan_memory): its backward copies dy to the
    // second input only
    bool grad_to_first_input = false;
    // this step's output gradient handed over in bf16, in a backend buffer (Backend::takes_bf16_dy:
    // a conv's, by the op that produces it; Backend::gives_bf16_dx: an activation's, by the product
    // that reads its states), or null: the float gradient in grad
    void* grad_bf16 = nullptr;
  };
  int64_t per_sample(const Node& n) const { return static_cast<int64_t>(n.h) * n.w * n.c; }
  Node& storage(int i) { return nodes_[nodes_[i].alias >= 0 ? nodes_[i].alias : i]; }
  Operand operand_of(int i);
  Status backward_node(int i, int n);
  Status update_node(int i, uint64_t t, float lr, float lr_t);
  XhatSource xhat_source(int bn);
  ConvGeom conv_geom(int i, int n) const;
  PoolGeom pool_geom(int i, int n) const;
  bool adds_in_place(int step, int input) const;
  Status grad_target(int step, int input, float** target, bool* accumulate_after);
  Status finish_grad(int step, int input, int64_t elems, bool accumulate_after);
  bool hands_bf16_dy(int conv, int step, int n);
  bool hands_bf16_dx(int conv, int n, Operand w);
  Status bf16_dy_for(int conv, int n, void** out);

  std::unique_ptr<Backend> backend_;
  ModelSpec spec_;
  UpdateConfig update_;
  std::vector<Node> nodes_;
  // One buffer of the plan: which node's, what for, its bytes per sample and the steps it is live
  // over (plan_memory's timeline), then its place in the arena (ensure_capacity).
  enum class Use : int { Output, Xhat, Argmax, Gradient, Scratch, WeightGradient };
  struct Planned {
    int node = 0;
    Use use = Use::Output;
    int64_t per_sample = 0, fixed = 0;  // bytes: per_sample · batch + fixed
    int from = 0, to = 0;    // live over steps [from, to]
    size_t offset = 0, bytes = 0;
  };
  std::vector<Planned> plan_;
  bool share_ = true;  // false: every planned buffer gets its own bytes (TERNLAB_MEMORY_UNSHARED)
  Buffer arena_;       // every planned buffer, placed so that buffers live at the same step never overlap
  void assign_exact_sums();
  void plan_memory();
  int capacity_ = 0;
  const float* input_ = nullptr;
  Backend::Pixels pixels_{};  // the current forward's (px null: none)
  int batch_ = 0;
  Buffer counters_, row_loss_, rank_;
  int64_t step_ = 0;
};

}  // namespace tl
