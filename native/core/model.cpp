#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace tl {

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::Input: return "input";
    case OpKind::Conv: return "conv2d";
    case OpKind::Dense: return "dense";
    case OpKind::MaxPool: return "maxPool";
    case OpKind::AvgPool: return "avgPool";
    case OpKind::BatchNorm: return "batchNorm";
    case OpKind::Activation: return "activation";
    case OpKind::Flatten: return "flatten";
    case OpKind::Add: return "add";
  }
  return "?";
}

namespace {
Status shape_error(const NodeSpec& s, const std::string& what) {
  return Status(Code::Shape, "layer \"" + s.name + "\" (" + op_name(s.kind) + "): " + what);
}
int out_dim(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }
}  // namespace

Status Model::build(const ModelSpec& spec, const UpdateConfig& update) {
  spec_ = spec;
  update_ = update;
  if (spec.nodes.empty() || spec.nodes[0].kind != OpKind::Input)
    return Status(Code::Shape, "a model starts with its input node");
  nodes_.clear();
  nodes_.resize(spec.nodes.size());
  for (size_t i = 0; i < spec.nodes.size(); ++i) {
    Node& n = nodes_[i];
    n.spec = spec.nodes[i];
    const NodeSpec& s = n.spec;
    for (int in : s.inputs)
      if (in < 0 || static_cast<size_t>(in) >= i)
        return shape_error(s, "input " + std::to_string(in) + " is not an earlier layer");
    auto need_inputs = [&](size_t k) -> Status {
      if (s.inputs.size() != k) return shape_error(s, "takes " + std::to_string(k) + " input(s), got " + std::to_string(s.inputs.size()));
      return Status::ok();
    };
    const Node* in0 = s.inputs.empty() ? nullptr : &nodes_[s.inputs[0]];
    for (int in : s.inputs) nodes_[in].consumers++;
    switch (s.kind) {
      case OpKind::Input:
        if (i != 0) return shape_error(s, "only the first layer may be the input");
        n.h = spec.h; n.w = spec.w; n.c = spec.c;
        break;
      case OpKind::Conv:
      case OpKind::Dense: {
        TL_TRY(need_inputs(1));
        if (s.out <= 0) return shape_error(s, "needs a positive number of outputs, got " + std::to_string(s.out));
        if (s.kind == OpKind::Dense) {
          n.h = 1; n.w = 1; n.c = s.out;
          if (in0->h != 1 || in0->w != 1) return shape_error(s, "expects a flat input; add a flatten layer before it");
        } else {
          n.h = out_dim(in0->h, s.kh, s.sh, s.ph);
          n.w = out_dim(in0->w, s.kw, s.sw, s.pw);
          n.c = s.out;
          if (n.h <= 0 || n.w <= 0)
            return shape_error(s, "kernel " + std::to_string(s.kh) + "x" + std::to_string(s.kw) + " does not fit its input " +
                                      std::to_string(in0->h) + "x" + std::to_string(in0->w));
        }
        if (s.discrete && (s.levels.n < 0 || s.levels.n > 7))
          return shape_error(s, "weight levels N must be in 0..7, got " + std::to_string(s.levels.n));
        n.nweights = static_cast<int64_t>(s.out) * s.kh * s.kw * in0->c;
        break;
      }
      case OpKind::MaxPool:
      case OpKind::AvgPool:
        TL_TRY(need_inputs(1));
        if (in0->dtype != DType::F32) return shape_error(s, "pools real values; place it before the activation");
        n.h = out_dim(in0->h, s.kh, s.sh, s.ph); n.w = out_dim(in0->w, s.kw, s.sw, s.pw); n.c = in0->c;
        if (n.h <= 0 || n.w <= 0) return shape_error(s, "window does not fit its input");
        break;
      case OpKind::BatchNorm:
        TL_TRY(need_inputs(1));
        if (in0->dtype != DType::F32) return shape_error(s, "normalises real values; place it before the activation");
        n.h = in0->h; n.w = in0->w; n.c = in0->c;
        break;
      case OpKind::Activation:
        TL_TRY(need_inputs(1));
        if (in0->dtype != DType::F32) return shape_error(s, "its input is already discrete");
        n.h = in0->h; n.w = in0->w; n.c = in0->c;
        n.dtype = DType::I8;
        n.scale = s.act.levels.unit();
        break;
      case OpKind::Flatten:
        TL_TRY(need_inputs(1));
        n.h = 1; n.w = 1; n.c = in0->h * in0->w * in0->c;
        n.dtype = in0->dtype; n.scale = in0->scale;
        n.alias = in0->alias >= 0 ? in0->alias : s.inputs[0];
        break;
      case OpKind::Add: {
        TL_TRY(need_inputs(2));
        const Node* in1 = &nodes_[s.inputs[1]];
        if (in0->h != in1->h || in0->w != in1->w || in0->c != in1->c)
          return shape_error(s, "adds tensors of different shapes");
        if (in0->dtype != DType::F32 || in1->dtype != DType::F32) return shape_error(s, "adds real values (before the activation)");
        n.h = in0->h; n.w = in0->w; n.c = in0->c;
        break;
      }
    }
    bool rg = n.nweights > 0 || s.kind == OpKind::BatchNorm;
    for (int in : s.inputs) rg = rg || nodes_[in].requires_grad;
    n.requires_grad = rg;
  }
  const Node& last = nodes_.back();
  if (last.dtype != DType::F32 || last.h != 1 || last.w != 1 || last.c != spec.classes)
    return Status(Code::Shape, "the last layer must give " + std::to_string(spec.classes) + " real-valued class scores, got " +
                                   std::to_string(last.h) + "x" + std::to_string(last.w) + "x" + std::to_string(last.c));

  // Parameters and their optimizer state.
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    const NodeSpec& s = n.spec;
    const uint32_t layer = static_cast<uint32_t>(i);
    if (n.nweights > 0) {
      const std::string what = "weights of layer \"" + s.name + "\"";
      if (s.discrete) {
        TL_TRY(backend_->alloc(n.nweights, what.c_str(), &n.wq));
        TL_TRY(backend_->init_states(n.nweights, n.wq.as<int8_t>(), spec.seed, layer, s.init_spread, s.levels));
        if (update.proposal == Proposal::Adam) {
          TL_TRY(backend_->alloc(n.nweights * sizeof(float), what.c_str(), &n.wm));
          TL_TRY(backend_->alloc(n.nweights * sizeof(float), what.c_str(), &n.wv));
        }
      } else {
        TL_TRY(backend_->alloc(n.nweights * sizeof(float), what.c_str(), &n.wf));
        const Node& in = nodes_[s.inputs[0]];
        const float fan_in = static_cast<float>(s.kh * s.kw * in.c), fan_out = static_cast<float>(s.kh * s.kw * s.out);
        TL_TRY(backend_->init_uniform(n.nweights, n.wf.as<float>(), spec.seed, layer, std::sqrt(6.0f / (fan_in + fan_out))));
        TL_TRY(backend_->alloc(n.nweights * sizeof(float), what.c_str(), &n.wm));
        TL_TRY(backend_->alloc(n.nweights * sizeof(float), what.c_str(), &n.wv));
      }
    }
    if (s.kind == OpKind::BatchNorm) {
      const size_t b = sizeof(float) * n.c;
      for (Buffer* buf : {&n.gamma, &n.beta, &n.rmean, &n.rvar, &n.dgamma, &n.dbeta, &n.gm, &n.gv, &n.bm, &n.bv, &n.mean, &n.invstd})
        TL_TRY(backend_->alloc(b, "batch norm", buf));
      std::vector<float> ones(n.c, 1.0f);
      TL_TRY(backend_->upload(n.gamma.data(), ones.data(), b));
      TL_TRY(backend_->upload(n.rvar.data(), ones.data(), b));
    }
  }
  TL_TRY(backend_->alloc(sizeof(int64_t) * kCounterSlots * nodes_.size(), "metric counters", &counters_));
  for (size_t i = 1; i + 1 < nodes_.size(); ++i)
    nodes_[i].fused_act = nodes_[i].spec.kind == OpKind::BatchNorm && nodes_[i].consumers == 1 &&
                          nodes_[i + 1].spec.kind == OpKind::Activation && nodes_[i + 1].spec.inputs[0] == static_cast<int>(i);
  assign_exact_sums();
  plan_memory();
  std::vector<bool> gw_planned(nodes_.size(), false);
  for (const Planned& p : plan_) gw_planned[p.node] = gw_planned[p.node] || p.use == Use::WeightGradient;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    if (n.nweights == 0 || gw_planned[i]) continue;
    TL_TRY(backend_->alloc(n.nweights * sizeof(float), ("weight gradient of layer \"" + n.spec.name + "\"").c_str(), &n.gw_owned));
    n.gw = Region{n.gw_owned.data(), n.gw_owned.bytes()};
  }
  return Status::ok();
}

// A ternary conv/dense layer's output is an integer times one scale: with |Σ| ≤ K·qmax_x·qmax_w ≤
// 32767 it is stored exactly as int16 sums (2 bytes, not a 4-byte float) when only batch norms read
// it, directly or through max-pools (which pool the integers: one positive scale, so the same maxima
// and positions). Every reader turns q into q·scale with the product's own float expression, and
// the BN recomputes x̂ from it in the backward instead of keeping a float x̂, so the bits are those
// of the float path. TERNLAB_EXACT_SUMS=0 keeps float outputs (the tests compare the two).
void Model::assign_exact_sums() {
  const char* env = std::getenv("TERNLAB_EXACT_SUMS");
  if (env && std::strcmp(env, "0") == 0) return;
  const int count = static_cast<int>(nodes_.size());
  std::vector<std::vector<int>> readers(count);
  for (int k = 1; k < count; ++k)
    for (int in : nodes_[k].spec.inputs) readers[in].push_back(k);
  auto only_bn = [&](int j) {
    for (int k : readers[j])
      if (nodes_[k].spec.kind != OpKind::BatchNorm) return false;
    return !readers[j].empty();
  };
  for (int j = 1; j + 1 < count; ++j) {
    Node& nd = nodes_[j];
    const NodeSpec& s = nd.spec;
    if ((s.kind != OpKind::Conv && s.kind != OpKind::Dense) || !s.discrete || nd.alias >= 0) continue;
    const int in = s.inputs[0];
    if (in <= 0 || nodes_[in].dtype != DType::I8) continue;
    const Node& src = storage(in);  // the activation whose states the product reads
    const int64_t bound = static_cast<int64_t>(s.kh) * s.kw * nodes_[in].c * src.spec.act.levels.qmax() * s.levels.qmax();
    if (bound > 32767) continue;
    bool ok = !readers[j].empty();
    for (int k : readers[j]) {
      const OpKind kk = nodes_[k].spec.kind;
      ok = ok && (kk == OpKind::BatchNorm || (kk == OpKind::MaxPool && only_bn(k)));
    }
    if (!ok) continue;
    nd.dtype = DType::I16;
    nd.scale = nodes_[in].scale * s.levels.unit();  // conv_forward's x.scale·w.scale: the same float
    for (int k : readers[j])
      if (nodes_[k].spec.kind == OpKind::MaxPool) {
        nodes_[k].dtype = DType::I16;
        nodes_[k].scale = nd.scale;
      }
  }
}

// Activation memory, planned once per graph:
// - x̂ of a batch norm is written over its input's output when nothing else reads that output: the
//   input is a conv/dense/pooling node whose only consumer is the BN (their backward passes read
//   their own inputs or argmax, never their outputs), so the float buffer serves both. In-place is
//   safe: every backend reads x[i] before it writes x̂[i] and nothing but statistics in between.
// - Every other batch-sized buffer (outputs, owned x̂, max-pool argmax, output gradients, the room a
//   second gradient is accumulated from) and the weight gradients are ranges of one arena, live over
//   an interval of one timeline: the forward of node i is step i, the loss step `count`, the
//   backward of node i (and its update, right after it) step 2·count − i. A buffer is live from the step
//   that writes it to the last step that reads it, and buffers that are never live at the same step
//   may take the same bytes (ensure_capacity places them). Every op's inputs and outputs are live at
//   its step, so no op ever sees two of its operands overlap, and a buffer keeps its contents from
//   its write to its last read.
// - Who reads an output in backward: a conv/dense its input (x of the weight gradient), an
//   activation its input (φ′ of it; fused with its BN, x̂ and, where the backend keeps it, y), a BN
//   its x̂, a max-pool its argmax (never its input or output), the loss the last output; avg-pool,
//   add and flatten read nothing. So an output no backward op reads (a conv's read only by the
//   max-pool after it) is dead after its last forward reader and its bytes hold gradients later,
//   and an activation frees its bytes once its consumer's backward has read it.
// - A node's gradient is written first by its highest-numbered consumer (the loss, for the last
//   node) and read last by the node itself. A consumer that is not the first to write it writes
//   into its step's scratch and accumulates from there, so a scratch is live for one step only.
//   Which consumer comes first depends on which gradients flow, so every consumer but the highest
//   gets a scratch (and a batch norm whose input takes no gradient: its dx goes there).
// - A layer's weight gradient is written by its backward (every backend overwrites it: it is never
//   zeroed between steps) and read by the layer's update at the same step (backward_update). A layer
//   no gradient reaches (no path to the loss) never writes it and updates with zeros, so it keeps a
//   buffer of its own.
void Model::plan_memory() {
  const int count = static_cast<int>(nodes_.size());
  for (int i = 1; i < count; ++i) {
    Node& nd = nodes_[i];
    nd.xhat_in_place = nd.xhat_recomputed = false;
    if (nd.spec.kind != OpKind::BatchNorm) continue;
    const int in = nd.spec.inputs[0];
    const Node& src = nodes_[in];
    const OpKind k = src.spec.kind;
    nd.xhat_recomputed = src.dtype == DType::I16;  // from exact int16 sums: no x̂ buffer at all
    nd.xhat_in_place = in > 0 && src.alias < 0 && src.consumers == 1 && src.dtype == DType::F32 &&
                       (k == OpKind::Conv || k == OpKind::Dense || k == OpKind::MaxPool || k == OpKind::AvgPool);
  }
  const char* unshared = std::getenv("TERNLAB_MEMORY_UNSHARED");  // tests: the plan without sharing
  share_ = !(unshared && *unshared && std::strcmp(unshared, "0") != 0);
  auto st_of = [&](int i) { return nodes_[i].alias >= 0 ? nodes_[i].alias : i; };
  // an activation fused with the BN before it runs in the BN's op, forward and backward alike
  auto fused_into_bn = [&](int k) { return nodes_[k].spec.kind == OpKind::Activation && nodes_[k - 1].fused_act; };
  auto fwd = [&](int k) { return fused_into_bn(k) ? k - 1 : k; };
  auto bwd = [&](int k) { return 2 * count - k; };
  auto bn_bwd = [&](int k) { return bwd(nodes_[k].fused_act ? k + 1 : k); };  // the step a BN's backward runs at
  const int out_node = st_of(count - 1);

  // the last step reading each output
  std::vector<int> out_to(count, -1);
  for (int k = 1; k < count; ++k) {
    const Node& nd = nodes_[k];
    if (nd.spec.kind == OpKind::Flatten) continue;  // its consumers read its input's buffers
    for (int in : nd.spec.inputs) {
      const int st = st_of(in);
      if (st == 0) continue;
      int t = fwd(k);
      if (nd.spec.kind == OpKind::Conv || nd.spec.kind == OpKind::Dense || nd.spec.kind == OpKind::Activation) t = bwd(k);
      // x̂ in place over this output, or recomputed from it (int16 sums): read by the BN's backward
      if (nd.spec.kind == OpKind::BatchNorm && (nd.xhat_in_place || nd.xhat_recomputed)) t = bn_bwd(k);
      out_to[st] = std::max(out_to[st], t);
    }
  }
  if (out_node > 0) out_to[out_node] = std::max(out_to[out_node], count);  // the loss

  plan_.clear();
  auto plan = [&](int node, Use use, int64_t per_sample_bytes, int from, int to) {
    Planned p;
    p.node = node; p.use = use; p.per_sample = per_sample_bytes; p.from = from; p.to = std::max(from, to);
    plan_.push_back(p);
  };
  for (int j = 1; j < count; ++j) {
    const Node& nd = nodes_[j];
    if (nd.alias >= 0) continue;
    const int64_t elems = per_sample(nd);
    // a BN fused with its φ on a backend that keeps y in registers has no output buffer
    if (!(nd.fused_act && backend_->fuses_bn_act()))
      plan(j, Use::Output, elems * dtype_bytes(nd.dtype), fwd(j), out_to[j]);
    if (nd.spec.kind == OpKind::BatchNorm && !nd.xhat_in_place && !nd.xhat_recomputed)
      plan(j, Use::Xhat, elems * sizeof(float), j, bn_bwd(j));
    if (nd.spec.kind == OpKind::MaxPool) plan(j, Use::Argmax, elems * sizeof(int32_t), j, bwd(j));
  }

  // gradients: written first at their highest consumer's step, read last at their own
  std::vector<int> last(count, -1);
  std::vector<std::vector<int>> writes(count);  // the steps that write each node's gradient
  for (int k = 1; k < count; ++k) {
    const Node& nd = nodes_[k];
    if (nd.spec.kind == OpKind::Flatten) continue;  // passes its gradient through: see its consumers
    // a BN fused with its activation gets its input's gradient written at the activation's step
    const int at = nd.fused_act ? k + 1 : k;
    for (int in : nd.spec.inputs) {
      if (in <= 0) continue;
      const int st = st_of(in);
      last[st] = std::max(last[st], at);
      // the fused activation hands its BN the gradient as dy_scratch, not through grad_target
      if (nodes_[in].requires_grad && !fused_into_bn(k)) writes[st].push_back(at);
    }
  }
  if (out_node > 0) {
    last[out_node] = count;  // the loss writes it before the backward pass
    writes[out_node].push_back(count);
  }
  // A BN fused with its φ whose input has no other reader computes that input's gradient in place
  // over φ's (Backend::act_bn_backward allows dq, dy_scratch and dx to be one buffer), and its own
  // gradient (dy_scratch) is that buffer too: one buffer, live from φ's gradient's first write to the
  // BN input's backward, where there were three. The input's single reader writes its gradient
  // fresh, never accumulated. Off without sharing, so the tests compare the two.
  std::vector<int> grad_to(count, -1);
  std::vector<bool> grad_elsewhere(count, false);
  for (int k = 1; k + 1 < count; ++k) {
    Node& bn = nodes_[k];
    bn.grad_in_place = false;
    if (!share_ || !bn.fused_act) continue;
    const int in = bn.spec.inputs[0];
    if (in <= 0 || st_of(in) != in || !nodes_[in].requires_grad || nodes_[in].consumers != 1 || last[k + 1] < 0) continue;
    bn.grad_in_place = true;
    grad_elsewhere[k] = grad_elsewhere[in] = true;
    grad_to[k + 1] = bwd(in);
  }
  // An add hands its gradient unchanged to each input. Where the first input has no other reader
  // (ResNet: the block's last BN), that input's gradient is the add's own buffer: one buffer, live
  // from the add's gradient's first write to the input's backward, and one copy of dy fewer per add
  // and step. The input's single reader writes it fresh (the add's backward sees dx == dy). Off
  // without sharing, so the tests compare the two.
  std::vector<int> grad_from(count, -1);
  for (int k = 1; k < count; ++k) {
    Node& add = nodes_[k];
    add.grad_to_first_input = false;
    if (!share_ || add.spec.kind != OpKind::Add || add.alias >= 0 || last[k] < 0 || grad_elsewhere[k]) continue;
    const int in = add.spec.inputs[0];
    if (in <= 0 || in == add.spec.inputs[1] || st_of(in) != in || !nodes_[in].requires_grad || nodes_[in].consumers != 1 ||
        grad_elsewhere[in])
      continue;
    add.grad_to_first_input = true;
    grad_elsewhere[k] = true;
    grad_from[in] = bwd(last[k]);
  }
  for (int j = 1; j < count; ++j) {
    const Node& nd = nodes_[j];
    if (nd.alias < 0 && (nd.requires_grad || j == out_node) && last[j] >= 0 && !grad_elsewhere[j]) {
      const int from = grad_from[j] >= 0 ? std::min(grad_from[j], bwd(last[j])) : bwd(last[j]);
      plan(j, Use::Gradient, per_sample(nd) * sizeof(float), from, std::max(bwd(j), grad_to[j]));
    }
  }
  // scratch: floats per sample each backward step needs
  std::vector<int64_t> scratch(count + 1, 0);
  for (int j = 1; j < count; ++j) {
    std::sort(writes[j].begin(), writes[j].end(), std::greater<int>());
    for (size_t w = 1; w < writes[j].size(); ++w) {
      const int at = writes[j][w];
      if (adds_in_place(at, j)) continue;  // no scratch: φ adds its gradient straight into j's
      scratch[at] = std::max(scratch[at], per_sample(nodes_[j]));
    }
  }
  for (int k = 1; k < count; ++k) {
    const Node& nd = nodes_[k];
    if (nd.spec.kind != OpKind::BatchNorm) continue;
    const int in = nd.spec.inputs[0];
    if (!(in > 0 && nodes_[in].requires_grad)) {
      const int at = nd.fused_act ? k + 1 : k;
      scratch[at] = std::max(scratch[at], per_sample(nd));
    }
  }
  for (int k = 1; k < count; ++k)
    if (scratch[k] > 0) plan(k, Use::Scratch, scratch[k] * sizeof(float), bwd(k), bwd(k));
  // weight gradients of the layers the loss's gradient reaches
  std::vector<bool> reached(count, false);
  reached[count - 1] = true;
  for (int k = count - 1; k >= 1; --k)
    if (reached[k])
      for (int in : nodes_[k].spec.inputs) reached[in] = true;
  for (int j = 1; j < count; ++j)
    if (nodes_[j].nweights > 0 && reached[j]) {
      plan(j, Use::WeightGradient, 0, bwd(j), bwd(j));  // read by the layer's update at its backward step
      plan_.back().fixed = nodes_[j].nweights * sizeof(float);
    }
}

Status Model::ensure_capacity(int n) {
  if (n <= capacity_) return Status::ok();
  // Nothing in the arena outlives a step, so the old one goes before the new one comes: the peak is
  // the new plan's alone, and after a failure the next call plans again.
  capacity_ = 0;
  arena_.reset();
  for (auto& nd : nodes_) {
    nd.out = Region(); nd.xhat_owned = Region(); nd.argmax = Region();
    nd.grad = nd.scratch = nd.xhat = nullptr;
    if (!nd.gw_owned.data()) nd.gw = Region();
  }
  // Greedy by size, best fit: the largest buffers first, each into the smallest gap between the
  // buffers already placed that are live at one of its steps. Other orders fit some graphs better
  // (the weight gradients last, or the longest-lived buffers first), so three are tried and the
  // smallest arena kept. Offsets are multiples of 256, the alignment a separate allocation gets
  // from every backend.
  constexpr size_t kAlign = 256;
  for (auto& p : plan_) p.bytes = (static_cast<size_t>(p.per_sample) * n + p.fixed + kAlign - 1) / kAlign * kAlign;
  // order 0: largest first; 1: the same with the weight gradients last; 2: longest-lived first
  auto place = [&](int variant, std::vector<size_t>* offsets) {
    std::vector<size_t> order(plan_.size());
    for (size_t a = 0; a < order.size(); ++a) order[a] = a;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const Planned &p = plan_[a], &q = plan_[b];
      const bool pw = variant == 1 && p.use == Use::WeightGradient, qw = variant == 1 && q.use == Use::WeightGradient;
      if (pw != qw) return qw;
      if (variant == 2 && p.to - p.from != q.to - q.from) return p.to - p.from > q.to - q.from;
      if (p.bytes != q.bytes) return p.bytes > q.bytes;
      return p.from != q.from ? p.from < q.from : a < b;
    });
    offsets->assign(plan_.size(), 0);
    std::vector<size_t> placed;  // by offset
    size_t total = 0;
    for (size_t a : order) {
      const Planned& p = plan_[a];
      size_t at = SIZE_MAX, best_gap = SIZE_MAX, end = 0;
      for (size_t b : placed) {
        const Planned& q = plan_[b];
        const size_t qo = (*offsets)[b];
        if (share_ && (q.to < p.from || p.to < q.from)) continue;  // never live at the same step
        if (qo >= end && qo - end >= p.bytes && qo - end < best_gap) {
          at = end;
          best_gap = qo - end;
        }
        end = std::max(end, qo + q.bytes);
      }
      (*offsets)[a] = at != SIZE_MAX ? at : end;
      placed.insert(std::upper_bound(placed.begin(), placed.end(), (*offsets)[a],
                                     [&](size_t off, size_t b) { return off < (*offsets)[b]; }),
                    a);
      total = std::max(total, (*offsets)[a] + p.bytes);
    }
    return total;
  };
  std::vector<size_t> offsets, other;
  size_t total = place(0, &offsets);
  for (int variant = 1; variant < 3; ++variant) {
    const size_t t = place(variant, &other);
    if (t < total) {
      total = t;
      offsets.swap(other);
    }
  }
  for (size_t a = 0; a < plan_.size(); ++a) plan_[a].offset = offsets[a];
  TL_TRY(backend_->alloc(total, ("activations and gradients at batch " + std::to_string(n)).c_str(), &arena_));
  auto* base = arena_.as<uint8_t>();
  for (const Planned& p : plan_) {
    Node& nd = nodes_[p.node];
    void* at = base + p.offset;
    switch (p.use) {
      case Use::Output: nd.out = Region{at, p.bytes}; break;
      case Use::Xhat: nd.xhat_owned = Region{at, p.bytes}; break;
      case Use::Argmax: nd.argmax = Region{at, p.bytes}; break;
      case Use::Gradient: nd.grad = static_cast<float*>(at); break;
      case Use::Scratch: nd.scratch = static_cast<float*>(at); break;
      case Use::WeightGradient: nd.gw = Region{at, p.bytes}; break;
    }
  }
  for (size_t i = 1; i < nodes_.size(); ++i) {
    Node& nd = nodes_[i];
    if (nd.spec.kind == OpKind::BatchNorm)
      nd.xhat = nd.xhat_in_place ? storage(nd.spec.inputs[0]).out.as<float>() : nd.xhat_owned.as<float>();
    if (nd.grad_in_place) nd.grad = nodes_[nd.spec.inputs[0]].grad = nodes_[i + 1].grad;  // see plan_memory
    if (nd.grad_to_first_input) nd.grad = nodes_[nd.spec.inputs[0]].grad;  // see plan_memory
  }
  TL_TRY(backend_->alloc(sizeof(float) * n, "per-sample loss", &row_loss_));
  TL_TRY(backend_->alloc(sizeof(int32_t) * n, "per-sample rank", &rank_));
  capacity_ = n;
  return Status::ok();
}

Operand Model::operand_of(int i) {
  if (i == 0 || nodes_[i].alias == 0) return Operand{DType::F32, input_, 1.0f};
  Node& s = storage(i);
  return Operand{nodes_[i].dtype, s.out.data(), nodes_[i].scale};
}

ConvGeom Model::conv_geom(int i, int n) const {
  const Node& nd = nodes_[i];
  const Node& in = nodes_[nd.spec.inputs[0]];
  ConvGeom g;
  g.n = n; g.h = in.h; g.w = in.w; g.c = in.c;
  g.oc = nd.spec.out; g.kh = nd.spec.kh; g.kw = nd.spec.kw; g.sh = nd.spec.sh; g.sw = nd.spec.sw;
  g.ph = nd.spec.ph; g.pw = nd.spec.pw; g.oh = nd.h; g.ow = nd.w;
  return g;
}

PoolGeom Model::pool_geom(int i, int n) const {
  const Node& nd = nodes_[i];
  const Node& in = nodes_[nd.spec.inputs[0]];
  PoolGeom g;
  g.n = n; g.h = in.h; g.w = in.w; g.c = in.c;
  g.kh = nd.spec.kh; g.kw = nd.spec.kw; g.sh = nd.spec.sh; g.sw = nd.spec.sw; g.ph = nd.spec.ph; g.pw = nd.spec.pw;
  g.oh = nd.h; g.ow = nd.w;
  return g;
}

Status Model::forward(const float* x, int n, bool train, const Backend::Pixels* px) {
  TL_TRY(ensure_capacity(n));
  input_ = x;
  pixels_ = px ? *px : Backend::Pixels{};
  batch_ = n;
  TL_TRY(backend_->zero(counters_.data(), counters_.bytes()));
  int64_t* counters = counters_.as<int64_t>();
  for (size_t i = 1; i < nodes_.size(); ++i) {
    Node& nd = nodes_[i];
    const NodeSpec& s = nd.spec;
    const int in = s.inputs.empty() ? -1 : s.inputs[0];
    switch (s.kind) {
      case OpKind::Conv:
      case OpKind::Dense: {
        const ConvGeom g = conv_geom(static_cast<int>(i), n);
        Operand w = s.discrete ? Operand{DType::I8, nd.wq.data(), s.levels.unit()} : Operand{DType::F32, nd.wf.data(), 1.0f};
        Operand xin = operand_of(in);
        if (nd.dtype == DType::I16) TL_TRY(backend_->conv_forward_i16(g, xin, w, nd.out.as<int16_t>()));
        else if (in == 0 && pixels_.px) TL_TRY(backend_->conv_forward_pixels(g, xin, pixels_, w, nd.out.as<float>()));
        else TL_TRY(backend_->conv_forward(g, xin, w, nd.out.as<float>()));
        if (train && s.discrete) {
          int64_t* c = counters + i * kCounterSlots;
          if (xin.dtype == DType::I8) TL_TRY(backend_->conv_counters(g, static_cast<const int8_t*>(xin.ptr), nd.wq.as<int8_t>(), c));
          else TL_TRY(backend_->count_zeros(nd.nweights, nd.wq.as<int8_t>(), c));
        }
        break;
      }
      case OpKind::MaxPool:
        if (nd.dtype == DType::I16)
          TL_TRY(backend_->maxpool_forward_i16(pool_geom(static_cast<int>(i), n), static_cast<const int16_t*>(operand_of(in).ptr),
                                               nd.out.as<int16_t>(), nd.argmax.as<int32_t>()));
        else
          TL_TRY(backend_->maxpool_forward(pool_geom(static_cast<int>(i), n), static_cast<const float*>(operand_of(in).ptr),
                                           nd.out.as<float>(), nd.argmax.as<int32_t>()));
        break;
      case OpKind::AvgPool:
        TL_TRY(backend_->avgpool_forward(pool_geom(static_cast<int>(i), n), static_cast<const float*>(operand_of(in).ptr),
                                         nd.out.as<float>()));
        break;
      case OpKind::BatchNorm: {
        const int64_t rows = static_cast<int64_t>(n) * nd.h * nd.w;
        const Operand xi = operand_of(in);  // F32, or exact I16 sums (then no x̂ is kept: nd.xhat is null)
        if (train && nd.fused_act) {
          Node& act = nodes_[i + 1];
          TL_TRY(backend_->bn_act_forward_train(rows, nd.c, xi, nd.gamma.as<float>(), nd.beta.as<float>(), spec_.bn_eps,
                                                spec_.bn_momentum, nd.rmean.as<float>(), nd.rvar.as<float>(), nd.out.as<float>(),
                                                nd.xhat, nd.mean.as<float>(), nd.invstd.as<float>(), act.spec.act,
                                                act.out.as<int8_t>()));
          ++i;  // the activation is done
        } else if (nd.fused_act) {
          Node& act = nodes_[i + 1];
          TL_TRY(backend_->bn_act_forward_infer(rows, nd.c, xi, nd.gamma.as<float>(), nd.beta.as<float>(), nd.rmean.as<float>(),
                                                nd.rvar.as<float>(), spec_.bn_eps, nd.out.as<float>(), act.spec.act,
                                                act.out.as<int8_t>()));
          ++i;
        } else if (train)
          TL_TRY(backend_->bn_forward_train(rows, nd.c, xi, nd.gamma.as<float>(), nd.beta.as<float>(), spec_.bn_eps,
                                            spec_.bn_momentum, nd.rmean.as<float>(), nd.rvar.as<float>(), nd.out.as<float>(),
                                            nd.xhat, nd.mean.as<float>(), nd.invstd.as<float>()));
        else
          TL_TRY(backend_->bn_forward_infer(rows, nd.c, xi, nd.gamma.as<float>(), nd.beta.as<float>(), nd.rmean.as<float>(),
                                            nd.rvar.as<float>(), spec_.bn_eps, nd.out.as<float>()));
        break;
      }
      case OpKind::Activation:
        TL_TRY(backend_->act_forward(static_cast<int64_t>(n) * per_sample(nd), static_cast<const float*>(operand_of(in).ptr), s.act,
                                     nd.out.as<int8_t>()));
        break;
      case OpKind::Add:
        TL_TRY(backend_->add(static_cast<int64_t>(n) * per_sample(nd), static_cast<const float*>(operand_of(in).ptr),
                             static_cast<const float*>(operand_of(s.inputs[1]).ptr), nd.out.as<float>()));
        break;
      case OpKind::Flatten:
      case OpKind::Input:
        break;
    }
  }
  return Status::ok();
}

Status Model::loss(const int32_t* labels_dev, int n, LossKind kind, float* row_loss_host, int32_t* rank_host) {
  Node& last = storage(static_cast<int>(nodes_.size()) - 1);
  TL_TRY(backend_->loss(n, spec_.classes, last.out.as<float>(), labels_dev, kind, last.grad,
                        row_loss_.as<float>(), rank_.as<int32_t>()));
  TL_TRY(backend_->download(row_loss_host, row_loss_.data(), sizeof(float) * n));
  TL_TRY(backend_->download(rank_host, rank_.data(), sizeof(int32_t) * n));
  return Status::ok();
}

// Whether the backward step of node `step` adds its gradient for node `input` straight into
// input's gradient when one is written already (an activation not fused with a batch norm:
// Backend::act_backward_accumulate), so the step needs no scratch for it.
bool Model::adds_in_place(int step, int input) const {
  if (step <= 0 || step >= static_cast<int>(nodes_.size())) return false;
  const Node& nd = nodes_[step];
  if (nd.spec.kind != OpKind::Activation || nd.spec.inputs.empty()) return false;
  const int in = nd.spec.inputs[0];
  auto st = [&](int i) { return nodes_[i].alias >= 0 ? nodes_[i].alias : i; };
  return in > 0 && st(in) == st(input) && !nodes_[in].fused_act;
}

// Where the gradient for `input` goes at backward step `step`: its own grad buffer the first time in
// this backward pass; when another consumer already wrote it, the step's scratch (then accumulated),
// or nothing (*target null) where the step adds into that gradient itself (adds_in_place).
Status Model::grad_target(int step, int input, float** target, bool* accumulate_after) {
  Node& st = storage(input);
  if (!st.grad_written) {
    *target = st.grad;
    *accumulate_after = false;
  } else if (adds_in_place(step, input)) {
    *target = nullptr;
    *accumulate_after = true;
  } else {
    *target = nodes_[step].scratch;
    *accumulate_after = true;
    if (!*target)
      return Status(Code::Internal, "layer \"" + nodes_[step].spec.name + "\": the memory plan gave its backward step no scratch");
  }
  return Status::ok();
}

Status Model::finish_grad(int step, int input, int64_t elems, bool accumulate_after) {
  Node& st = storage(input);
  if (accumulate_after) TL_TRY(backend_->accumulate(elems, nodes_[step].scratch, st.grad));
  st.grad_written = true;
  return Status::ok();
}

// Whether the output gradient of conv/dense node c, written at backward step `step`, is handed
// over in bf16 (Backend::takes_bf16_dy): c's only reader writes it there, fresh, and c's backward is
// the next step with any work (only the BN fused into the activation at `step` lies between them),
// so no other product runs while the backend's buffer holds it.
bool Model::hands_bf16_dy(int c, int step, int n) {
  if (c <= 0) return false;
  const Node& cn = nodes_[c];
  if ((cn.spec.kind != OpKind::Conv && cn.spec.kind != OpKind::Dense) || cn.alias >= 0 || cn.consumers != 1 ||
      !cn.requires_grad || cn.grad_written)
    return false;
  for (int j = c + 1; j < step; ++j)
    if (!(j == step - 1 && nodes_[j].fused_act && nodes_[step].spec.kind == OpKind::Activation)) return false;
  return backend_->takes_bf16_dy(conv_geom(c, n));
}

// Whether conv/dense node c leaves its input's gradient in bf16 for the reader (Backend::gives_bf16_dx):
// c's input is (through a flatten) the states of an activation fused with its BN and read by c
// alone, whose gradient c writes fresh, and that activation's backward is the next step with work.
bool Model::hands_bf16_dx(int c, int n, Operand w) {
  const int in = nodes_[c].spec.inputs.empty() ? -1 : nodes_[c].spec.inputs[0];
  if (in <= 0 || !nodes_[in].requires_grad || nodes_[in].consumers != 1) return false;
  const int a = nodes_[in].alias >= 0 ? nodes_[in].alias : in;  // a flatten shares its input's buffers
  const Node& act = nodes_[a];
  if (act.spec.kind != OpKind::Activation || act.consumers != 1 || act.grad_written || act.spec.inputs.empty()) return false;
  const int bn = act.spec.inputs[0];
  if (bn <= 0 || !nodes_[bn].fused_act) return false;
  for (int j = a + 1; j < c; ++j)
    if (nodes_[j].spec.kind != OpKind::Flatten) return false;
  if (w.dtype == DType::I8 && w.scale != 1.0f) return false;  // (the float dx is the bf16 one times the scale)
  return backend_->gives_bf16_dx(conv_geom(c, n));
}

// The backend's buffer for conv c's handed-over gradient, noted on c for its backward.
Status Model::bf16_dy_for(int c, int n, void** out) {
  TL_TRY(backend_->bf16_dy(static_cast<int64_t>(n) * per_sample(nodes_[c]), out));
  nodes_[c].grad_bf16 = *out;
  return Status::ok();
}

// x̂ of batch norm i for its backward: stored by the forward, or recomputed from its exact int16 input.
XhatSource Model::xhat_source(int i) {
  Node& nd = nodes_[i];
  XhatSource xs;
  if (nd.xhat_recomputed) {
    const Operand x = operand_of(nd.spec.inputs[0]);
    xs.q = static_cast<const int16_t*>(x.ptr);
    xs.scale = x.scale;
    xs.mean = nd.mean.as<float>();
    xs.invstd = nd.invstd.as<float>();
  } else {
    xs.stored = nd.xhat;
  }
  return xs;
}

// The backward pass with each node's update right after its own backward: a layer's weight
// gradient is then read at the step that writes it and its bytes serve the next layer (the memory
// plan counts on it). No node's backward reads a weight of a node after it, and every update draws
// from Philox by (step, layer), so the order gives the bits of updating after the whole pass.
Status Model::backward_update(int n, uint64_t t, float lr) {
  const double t1 = static_cast<double>(t) + 1.0;
  const float lr_t = static_cast<float>(lr * std::sqrt(1.0 - std::pow(update_.beta2, t1)) / (1.0 - std::pow(update_.beta1, t1)));
  for (auto& nd : nodes_) {
    nd.grad_written = false;
    nd.grad_bf16 = nullptr;
  }
  storage(static_cast<int>(nodes_.size()) - 1).grad_written = true;  // written by loss()
  for (size_t ii = nodes_.size() - 1; ii >= 1; --ii) {
    TL_TRY(backward_node(static_cast<int>(ii), n));
    TL_TRY(update_node(static_cast<int>(ii), t, lr, lr_t));
  }
  step_ = static_cast<int64_t>(t) + 1;
  return Status::ok();
}

Status Model::backward_node(int i, int n) {
  Node& nd = nodes_[i];
  const NodeSpec& s = nd.spec;
  if (s.kind == OpKind::Flatten) return Status::ok();  // shares its input's buffers
  Node& st = storage(i);
  if (!st.grad_written) return Status::ok();  // nothing flows back through this node
  const float* dy = st.grad;
  const int in = s.inputs.empty() ? -1 : s.inputs[0];
  const bool in_grad = in > 0 && nodes_[in].requires_grad;
  const int64_t in_elems = in > 0 ? static_cast<int64_t>(n) * per_sample(nodes_[in]) : 0;
  float* dx = nullptr;
  bool acc = false;
  if (in_grad) TL_TRY(grad_target(i, in, &dx, &acc));
  switch (s.kind) {
    case OpKind::Conv:
    case OpKind::Dense: {
      const ConvGeom g = conv_geom(i, n);
      Operand w = s.discrete ? Operand{DType::I8, nd.wq.data(), s.levels.unit()} : Operand{DType::F32, nd.wf.data(), 1.0f};
      const bool give_dx = in_grad && dx && hands_bf16_dx(i, n, w);
      if (nd.grad_bf16 || give_dx) {
        void* hdx = nullptr;
        TL_TRY(backend_->conv_backward_bf16(g, operand_of(in), dy, nd.grad_bf16, w, nd.gw.as<float>(), in_grad ? dx : nullptr,
                                            give_dx ? &hdx : nullptr));
        nd.grad_bf16 = nullptr;
        if (give_dx) storage(in).grad_bf16 = hdx;
      } else {
        TL_TRY(backend_->conv_backward(g, operand_of(in), dy, w, nd.gw.as<float>(), in_grad ? dx : nullptr));
      }
      break;
    }
    case OpKind::MaxPool:
      if (in_grad && hands_bf16_dy(in, i, n)) {
        void* h;
        TL_TRY(bf16_dy_for(in, n, &h));
        TL_TRY(backend_->maxpool_backward_bf16(pool_geom(i, n), dy, nd.argmax.as<int32_t>(), h));
      } else if (in_grad) {
        TL_TRY(backend_->maxpool_backward(pool_geom(i, n), dy, nd.argmax.as<int32_t>(), dx));
      }
      break;
    case OpKind::AvgPool:
      if (in_grad) TL_TRY(backend_->avgpool_backward(pool_geom(i, n), dy, dx));
      break;
    case OpKind::BatchNorm: {
      const int64_t rows = static_cast<int64_t>(n) * nd.h * nd.w;
      if (in_grad && hands_bf16_dy(in, i, n)) {
        void* h;
        TL_TRY(bf16_dy_for(in, n, &h));
        TL_TRY(backend_->bn_backward_bf16(rows, nd.c, dy, xhat_source(i), nd.gamma.as<float>(), nd.invstd.as<float>(), h,
                                          nd.dgamma.as<float>(), nd.dbeta.as<float>()));
        break;
      }
      float* target = in_grad ? dx : nd.scratch;
      if (!target) return Status(Code::Internal, "layer \"" + s.name + "\": the memory plan gave its backward step no scratch");
      TL_TRY(backend_->bn_backward(rows, nd.c, dy, xhat_source(i), nd.gamma.as<float>(), nd.invstd.as<float>(), target,
                                   nd.dgamma.as<float>(), nd.dbeta.as<float>()));
      break;
    }
    case OpKind::Activation:
      if (in_grad && nodes_[in].fused_act) {
        // φ's and the batch norm's backward in one op, straight into the BN input's gradient
        Node& bn = nodes_[in];
        const int bin = bn.spec.inputs[0];
        const bool bin_grad = bin > 0 && nodes_[bin].requires_grad;
        const int64_t rows = static_cast<int64_t>(n) * bn.h * bn.w;
        // φ's gradient may come in bf16 from the product reading its states (nd.grad_bf16), and the
        // BN input's gradient may go in bf16 to the product that produced it (hands_bf16_dy)
        void* hdy = nullptr;
        float* bdx = nd.scratch;
        bool bacc = false;
        if (bin_grad && hands_bf16_dy(bin, i, n)) TL_TRY(bf16_dy_for(bin, n, &hdy));
        else if (bin_grad) TL_TRY(grad_target(i, bin, &bdx, &bacc));
        if (!hdy && !bdx) return Status(Code::Internal, "layer \"" + s.name + "\": the memory plan gave its backward step no scratch");
        if (nd.grad_bf16 || hdy)
          TL_TRY(backend_->act_bn_backward_bf16(rows, bn.c, nd.grad_bf16 ? nullptr : dy, nd.grad_bf16, bn.out.as<float>(),
                                                xhat_source(in), bn.gamma.as<float>(), bn.beta.as<float>(), bn.invstd.as<float>(),
                                                s.act, hdy ? nullptr : bdx, hdy, bn.dgamma.as<float>(), bn.dbeta.as<float>()));
        else
          TL_TRY(backend_->act_bn_backward(rows, bn.c, dy, bn.out.as<float>(), xhat_source(in), bn.gamma.as<float>(),
                                           bn.beta.as<float>(), bn.invstd.as<float>(), s.act, bn.grad, bdx,
                                           bn.dgamma.as<float>(), bn.dbeta.as<float>()));
        nd.grad_bf16 = nullptr;
        if (bin_grad) TL_TRY(finish_grad(i, bin, in_elems, bacc));
        return Status::ok();  // the BN node's gradient is never marked written, so its backward is skipped
      }
      if (in_grad && acc) {
        // the input's gradient exists already (a residual stream that an add reads too): add this
        // one to it in one pass (the same bits as into scratch, then accumulate)
        TL_TRY(backend_->act_backward_accumulate(in_elems, static_cast<const float*>(operand_of(in).ptr), dy, s.act, storage(in).grad));
        return finish_grad(i, in, in_elems, false);
      }
      if (in_grad)
        TL_TRY(backend_->act_backward(in_elems, static_cast<const float*>(operand_of(in).ptr), dy, s.act, dx));
      break;
    case OpKind::Add: {
      // dx is dy itself where the plan gave the first input the add's gradient buffer
      if (in_grad && dx != dy) TL_TRY(backend_->copy(dx, dy, sizeof(float) * in_elems));
      if (in_grad) TL_TRY(finish_grad(i, in, in_elems, acc));
      const int in1 = s.inputs[1];
      if (in1 > 0 && nodes_[in1].requires_grad) {
        float* dx1;
        bool acc1;
        TL_TRY(grad_target(i, in1, &dx1, &acc1));
        TL_TRY(backend_->copy(dx1, dy, sizeof(float) * in_elems));
        TL_TRY(finish_grad(i, in1, in_elems, acc1));
      }
      return Status::ok();
    }
    default:
      break;
  }
  if (in_grad) TL_TRY(finish_grad(i, in, in_elems, acc));
  return Status::ok();
}

// DST for a discrete layer's weights, Adam for the rest (full-precision weights, BN's γ and β).
Status Model::update_node(int i, uint64_t t, float lr, float lr_t) {
  AdamParams adam;
  adam.lr_t = lr_t; adam.beta1 = update_.beta1; adam.beta2 = update_.beta2; adam.eps = update_.eps;
  int64_t* counters = counters_.as<int64_t>();
  Node& nd = nodes_[i];
  if (nd.nweights > 0) {
    if (nd.spec.discrete) {
      DstParams p;
      p.levels = nd.spec.levels;
      p.proposal = update_.proposal;
      p.tau = update_.tau;
      p.m = update_.m;
      p.temperature = update_.temperature;
      p.lr = update_.proposal == Proposal::Adam ? lr_t : lr;
      p.beta1 = update_.beta1; p.beta2 = update_.beta2; p.eps = update_.eps;
      p.seed = spec_.seed;
      p.step = static_cast<uint32_t>(t);
      p.layer = static_cast<uint32_t>(i);
      TL_TRY(backend_->dst_update(nd.nweights, nd.wq.as<int8_t>(), nd.gw.as<float>(), nd.wm.as<float>(), nd.wv.as<float>(), p,
                                  counters + i * kCounterSlots));
    } else {
      TL_TRY(backend_->adam_update(nd.nweights, nd.wf.as<float>(), nd.gw.as<float>(), nd.wm.as<float>(), nd.wv.as<float>(), adam));
    }
  }
  if (nd.spec.kind == OpKind::BatchNorm) {
    TL_TRY(backend_->adam_update(nd.c, nd.gamma.as<float>(), nd.dgamma.as<float>(), nd.gm.as<float>(), nd.gv.as<float>(), adam));
    TL_TRY(backend_->adam_update(nd.c, nd.beta.as<float>(), nd.dbeta.as<float>(), nd.bm.as<float>(), nd.bv.as<float>(), adam));
  }
  return Status::ok();
}

// report layout: counters (int64, kCounterSlots per node) | row losses (float × n) | ranks (int32 × n)
size_t Model::report_bytes(int n) const {
  return sizeof(int64_t) * kCounterSlots * nodes_.size() + (sizeof(float) + sizeof(int32_t)) * static_cast<size_t>(n);
}

Status Model::loss_queued(const int32_t* labels_dev, int n, LossKind kind, void* report_host) {
  Node& last = storage(static_cast<int>(nodes_.size()) - 1);
  TL_TRY(backend_->loss(n, spec_.classes, last.out.as<float>(), labels_dev, kind, last.grad,
                        row_loss_.as<float>(), rank_.as<int32_t>()));
  auto* h = static_cast<uint8_t*>(report_host);
  const size_t cb = sizeof(int64_t) * kCounterSlots * nodes_.size();
  TL_TRY(backend_->download_async(h + cb, row_loss_.data(), sizeof(float) * n));
  TL_TRY(backend_->download_async(h + cb + sizeof(float) * n, rank_.data(), sizeof(int32_t) * n));
  return Status::ok();
}

void Model::decode_report(const void* report_host, int n, double* loss_sum, int64_t* correct,
                          std::vector<LayerCounters>* out) const {
  const auto* h = static_cast<const uint8_t*>(report_host);
  const size_t cb = sizeof(int64_t) * kCounterSlots * nodes_.size();
  const auto* row_loss = reinterpret_cast<const float*>(h + cb);
  const auto* rank = reinterpret_cast<const int32_t*>(h + cb + sizeof(float) * n);
  *loss_sum = 0;
  *correct = 0;
  for (int i = 0; i < n; ++i) {  // in row order, as before: the same double sum
    *loss_sum += row_loss[i];
    *correct += rank[i] == 0;
  }
  decode_counters(reinterpret_cast<const int64_t*>(h), out);
}

Status Model::queue_counters(void* report_host) {
  return backend_->download_async(report_host, counters_.data(), sizeof(int64_t) * kCounterSlots * nodes_.size());
}

Status Model::read_counters(std::vector<LayerCounters>* out) {
  std::vector<int64_t> host(kCounterSlots * nodes_.size());
  TL_TRY(backend_->download(host.data(), counters_.data(), sizeof(int64_t) * host.size()));
  decode_counters(host.data(), out);
  return Status::ok();
}

void Model::decode_counters(const int64_t* host_counters, std::vector<LayerCounters>* out) const {
  const int64_t* host0 = host_counters;
  out->clear();
  for (size_t i = 1; i < nodes_.size(); ++i) {
    const Node& nd = nodes_[i];
    if (nd.nweights == 0 || !nd.spec.discrete) continue;
    LayerCounters c;
    c.name = nd.spec.name;
    c.weights = nd.nweights;
    const int in = nd.spec.inputs[0];
    c.integer_input = nodes_[in].dtype == DType::I8;
    c.inputs = static_cast<int64_t>(batch_) * per_sample(nodes_[in]);
    c.macs = conv_geom(static_cast<int>(i), batch_).macs();
    const int64_t* h = host0 + i * kCounterSlots;
    c.zero_inputs = h[kZeroInputs];
    c.zero_weights = h[kZeroWeights];
    c.active_macs = h[kActiveMacs];
    c.flips = h[kFlips];
    out->push_back(c);
  }
}

namespace {
void put(std::vector<NamedTensor>* out, const std::string& name, const char* dtype, std::vector<int64_t> shape,
         Backend& b, const Buffer& buf, size_t bytes) {
  NamedTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(bytes);
  if (bytes) (void)b.download(t.bytes.data(), buf.data(), bytes);
  out->push_back(std::move(t));
}
}  // namespace

Status Model::get_state(std::vector<NamedTensor>* out) {
  out->clear();
  TL_TRY(backend_->synchronize());
  for (size_t i = 1; i < nodes_.size(); ++i) {
    Node& nd = nodes_[i];
    const std::string& nm = nd.spec.name;
    if (nd.nweights > 0) {
      const Node& in = nodes_[nd.spec.inputs[0]];
      std::vector<int64_t> shape = {nd.spec.out, nd.spec.kh, nd.spec.kw, in.c};
      if (nd.spec.discrete) put(out, nm + ".weight", "int8", shape, *backend_, nd.wq, nd.nweights);
      else put(out, nm + ".weight", "float32", shape, *backend_, nd.wf, nd.nweights * 4);
      if (nd.wm.data()) {
        put(out, nm + ".weight.adam_m", "float32", shape, *backend_, nd.wm, nd.nweights * 4);
        put(out, nm + ".weight.adam_v", "float32", shape, *backend_, nd.wv, nd.nweights * 4);
      }
    }
    if (nd.spec.kind == OpKind::BatchNorm) {
      const std::vector<int64_t> shape = {nd.c};
      const size_t b = sizeof(float) * nd.c;
      put(out, nm + ".gamma", "float32", shape, *backend_, nd.gamma, b);
      put(out, nm + ".beta", "float32", shape, *backend_, nd.beta, b);
      put(out, nm + ".running_mean", "float32", shape, *backend_, nd.rmean, b);
      put(out, nm + ".running_var", "float32", shape, *backend_, nd.rvar, b);
      put(out, nm + ".gamma.adam_m", "float32", shape, *backend_, nd.gm, b);
      put(out, nm + ".gamma.adam_v", "float32", shape, *backend_, nd.gv, b);
      put(out, nm + ".beta.adam_m", "float32", shape, *backend_, nd.bm, b);
      put(out, nm + ".beta.adam_v", "float32", shape, *backend_, nd.bv, b);
    }
  }
  return Status::ok();
}

Status Model::set_state(const std::vector<NamedTensor>& in) {
  std::vector<NamedTensor> mine;
  TL_TRY(get_state(&mine));
  auto find = [&](const std::string& name) -> const NamedTensor* {
    for (auto& t : in)
      if (t.name == name) return &t;
    return nullptr;
  };
  // Validate everything before writing anything, so a bad checkpoint leaves the model untouched.
  for (auto& t : mine) {
    const NamedTensor* src = find(t.name);
    if (!src) return Status(Code::Checkpoint, "tensor \"" + t.name + "\" is missing (the checkpoint is of another model or options)");
    if (src->dtype != t.dtype || src->bytes.size() != t.bytes.size())
      return Status(Code::Checkpoint, "tensor \"" + t.name + "\" is " + src->dtype + " of " + std::to_string(src->bytes.size()) +
                                          " bytes; this model needs " + t.dtype + " of " + std::to_string(t.bytes.size()) + " bytes");
  }
  for (size_t i = 1; i < nodes_.size(); ++i) {
    Node& nd = nodes_[i];
    const std::string& nm = nd.spec.name;
    auto load = [&](const std::string& name, Buffer& buf) -> Status {
      const NamedTensor* src = find(name);
      return backend_->upload(buf.data(), src->bytes.data(), src->bytes.size());
    };
    if (nd.nweights > 0) {
      TL_TRY(load(nm + ".weight", nd.spec.discrete ? nd.wq : nd.wf));
      if (nd.wm.data()) {
        TL_TRY(load(nm + ".weight.adam_m", nd.wm));
        TL_TRY(load(nm + ".weight.adam_v", nd.wv));
      }
    }
    if (nd.spec.kind == OpKind::BatchNorm) {
      TL_TRY(load(nm + ".gamma", nd.gamma)); TL_TRY(load(nm + ".beta", nd.beta));
      TL_TRY(load(nm + ".running_mean", nd.rmean)); TL_TRY(load(nm + ".running_var", nd.rvar));
      TL_TRY(load(nm + ".gamma.adam_m", nd.gm)); TL_TRY(load(nm + ".gamma.adam_v", nd.gv));
      TL_TRY(load(nm + ".beta.adam_m", nd.bm)); TL_TRY(load(nm + ".beta.adam_v", nd.bv));
    }
  }
  return Status::ok();
}

std::string Model::memory_report_json() const {
  static const char* const uses[] = {"output", "xhat", "argmax", "gradient", "scratch", "weightGradient"};
  size_t weights = 0, weight_grads = 0, optimizer = 0, bn = 0;
  for (const Node& nd : nodes_) {
    weights += nd.wq.bytes() + nd.wf.bytes();
    weight_grads += nd.gw_owned.bytes();
    optimizer += nd.wm.bytes() + nd.wv.bytes() + nd.gm.bytes() + nd.gv.bytes() + nd.bm.bytes() + nd.bv.bytes();
    for (const Buffer* b : {&nd.gamma, &nd.beta, &nd.rmean, &nd.rvar, &nd.dgamma, &nd.dbeta, &nd.mean, &nd.invstd}) bn += b->bytes();
  }
  const size_t other = counters_.bytes() + row_loss_.bytes() + rank_.bytes();
  std::ostringstream o;
  o << "{\"batch\":" << capacity_ << ",\"shared\":" << (share_ ? "true" : "false") << ",\"steps\":" << 2 * nodes_.size()
    << ",\"arena\":" << arena_.bytes() << ",\"weights\":" << weights << ",\"weightGradients\":" << weight_grads
    << ",\"optimizer\":" << optimizer << ",\"batchNorm\":" << bn << ",\"other\":" << other << ",\"buffers\":[";
  for (size_t k = 0; k < plan_.size(); ++k) {
    const Planned& p = plan_[k];
    o << (k ? "," : "") << "{\"node\":" << p.node << ",\"layer\":\"" << nodes_[p.node].spec.name << "\",\"use\":\""
      << uses[static_cast<int>(p.use)] << "\",\"from\":" << p.from << ",\"to\":" << p.to << ",\"offset\":" << p.offset
      << ",\"bytes\":" << (capacity_ ? p.bytes : 0) << "}";
  }
  o << "]}";
  return o.str();
}

std::string Model::summary_json() const {
  std::ostringstream o;
  o << "{\"backend\":\"" << backend_->describe() << "\",\"layers\":[";
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& nd = nodes_[i];
    if (i) o << ",";
    o << "{\"name\":\"" << nd.spec.name << "\",\"kind\":\"" << op_name(nd.spec.kind) << "\",\"inputs\":[";
    for (size_t k = 0; k < nd.spec.inputs.size(); ++k) o << (k ? "," : "") << nd.spec.inputs[k];
    o << "],\"shape\":[" << nd.h << "," << nd.w << "," << nd.c << "],\"dtype\":\"" << (nd.dtype == DType::I8 ? "int8" : nd.dtype == DType::I16 ? "int16" : "float32")
      << "\",\"weights\":" << nd.nweights << ",\"discrete\":" << (nd.nweights > 0 && nd.spec.discrete ? "true" : "false")
      << ",\"levels\":" << nd.spec.levels.n << ",\"bytesPerWeight\":" << (nd.nweights == 0 ? 0 : (nd.spec.discrete ? 1 : 4))
      << ",\"optimizerBytesPerWeight\":" << (nd.wm.data() ? 8 : 0) << ",\"params\":"
      << (nd.spec.kind == OpKind::BatchNorm ? 2 * nd.c : 0) << "}";
  }
  o << "]}";
  return o.str();
}

}  // namespace tl
