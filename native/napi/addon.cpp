// N-API bindings: the Model handle, the training and evaluation workers, and module set-up.
// Only conversions and threading live here; the arithmetic is in native/core and the backends.
#include <napi.h>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>

#include "../core/train.h"
#include "../cpu/gemm.h"
#include "convert.h"

namespace tl::napi {

ActSpec act_spec(const Napi::Object& o) {
  ActSpec s;
  s.levels.n = inum(o, "levels", 1);
  s.r = static_cast<float>(num(o, "r", 1.0));
  s.a = static_cast<float>(num(o, "a", 0.5));
  s.window = static_cast<Window>(inum(o, "window", 0));
  return s;
}

ConvGeom conv_geom(const Napi::Object& o) {
  ConvGeom g;
  g.n = inum(o, "n", 1); g.h = inum(o, "h", 1); g.w = inum(o, "w", 1); g.c = inum(o, "c", 1);
  g.oc = inum(o, "oc", 1); g.kh = inum(o, "kh", 1); g.kw = inum(o, "kw", 1);
  g.sh = inum(o, "sh", 1); g.sw = inum(o, "sw", 1); g.ph = inum(o, "ph", 0); g.pw = inum(o, "pw", 0);
  g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
  return g;
}

PoolGeom pool_geom(const Napi::Object& o) {
  PoolGeom g;
  g.n = inum(o, "n", 1); g.h = inum(o, "h", 1); g.w = inum(o, "w", 1); g.c = inum(o, "c", 1);
  g.kh = inum(o, "kh", 2); g.kw = inum(o, "kw", 2); g.sh = inum(o, "sh", 2); g.sw = inum(o, "sw", 2);
  g.ph = inum(o, "ph", 0); g.pw = inum(o, "pw", 0);
  g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
  return g;
}

Status make_backend(const std::string& kind, int threads, std::unique_ptr<Backend>* out) {
  if (kind == "cpu") return make_cpu_backend(threads, out);
  if (kind == "cuda") return make_cuda_backend(0, out);
  return Status(Code::Option, "backend \"" + kind + "\" is unknown; use \"cpu\" or \"cuda\"");
}

void register_ops(Napi::Env env, Napi::Object exports);  // ops.cpp

Napi::Object InitModule(Napi::Env env, Napi::Object exports);

namespace {

DataView data_view(const Napi::Object& o) {
  DataView d;
  auto images = o.Get("images").As<Napi::Uint8Array>();
  auto labels = o.Get("labels").As<Napi::Int32Array>();
  d.images = images.Data();
  d.labels = labels.Data();
  d.count = static_cast<int64_t>(num(o, "count", static_cast<double>(labels.ElementLength())));
  d.scale = static_cast<float>(num(o, "scale", 2.0 / 255.0));
  d.offset = static_cast<float>(num(o, "offset", -1.0));
  return d;
}

Napi::Object counters_to_js(Napi::Env env, const LayerCounters& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", c.name);
  o.Set("weights", static_cast<double>(c.weights));
  o.Set("inputs", static_cast<double>(c.inputs));
  o.Set("macs", static_cast<double>(c.macs));
  o.Set("zeroWeights", static_cast<double>(c.zero_weights));
  o.Set("zeroInputs", static_cast<double>(c.zero_inputs));
  o.Set("activeMacs", static_cast<double>(c.active_macs));
  o.Set("flips", static_cast<double>(c.flips));
  o.Set("integerInput", c.integer_input);
  return o;
}

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("summary", &ModelWrap::Summary), InstanceMethod("train", &ModelWrap::Train),
                        InstanceMethod("evaluate", &ModelWrap::Evaluate), InstanceMethod("cancel", &ModelWrap::Cancel),
                        InstanceMethod("getState", &ModelWrap::GetState), InstanceMethod("setState", &ModelWrap::SetState),
                        InstanceMethod("getStep", &ModelWrap::GetStep), InstanceMethod("setStep", &ModelWrap::SetStep),
                        InstanceMethod("memoryInUse", &ModelWrap::MemoryInUse),
                        InstanceMethod("memoryReport", &ModelWrap::MemoryReport),
                        InstanceMethod("ensureCapacity", &ModelWrap::EnsureCapacity)});
  }

  ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    Napi::Env env = info.Env();
    Napi::Object spec = info[0].As<Napi::Object>();
    Napi::Object upd = info[1].As<Napi::Object>();
    Napi::Object be = info[2].As<Napi::Object>();
    std::unique_ptr<Backend> backend;
    check(env, make_backend(be.Get("kind").As<Napi::String>().Utf8Value(), inum(be, "threads", 0), &backend));
    ModelSpec ms;
    ms.h = inum(spec, "h", 0); ms.w = inum(spec, "w", 0); ms.c = inum(spec, "c", 0);
    ms.classes = inum(spec, "classes", 0);
    ms.seed = static_cast<uint64_t>(num(spec, "seed", 0));
    ms.bn_eps = static_cast<float>(num(spec, "bnEps", 1e-4));
    ms.bn_momentum = static_cast<float>(num(spec, "bnMomentum", 0.1));
    Napi::Array nodes = spec.Get("nodes").As<Napi::Array>();
    for (uint32_t i = 0; i < nodes.Length(); ++i) {
      Napi::Object n = nodes.Get(i).As<Napi::Object>();
      NodeSpec s;
      s.kind = static_cast<OpKind>(inum(n, "kind", 0));
      s.name = n.Get("name").As<Napi::String>().Utf8Value();
      Napi::Array ins = n.Get("inputs").As<Napi::Array>();
      for (uint32_t k = 0; k < ins.Length(); ++k) s.inputs.push_back(ins.Get(k).As<Napi::Number>().Int32Value());
      s.out = inum(n, "out", 0);
      s.kh = inum(n, "kh", 1); s.kw = inum(n, "kw", 1); s.sh = inum(n, "sh", 1); s.sw = inum(n, "sw", 1);
      s.ph = inum(n, "ph", 0); s.pw = inum(n, "pw", 0);
      s.discrete = n.Get("discrete").IsBoolean() ? n.Get("discrete").As<Napi::Boolean>().Value() : true;
      s.levels.n = inum(n, "levels", 1);
      s.init_spread = static_cast<float>(num(n, "initSpread", 1.0));
      if (n.Get("act").IsObject()) s.act = act_spec(n.Get("act").As<Napi::Object>());
      ms.nodes.push_back(std::move(s));
    }
    UpdateConfig uc;
    uc.proposal = static_cast<Proposal>(inum(upd, "proposal", 0));
    uc.tau = static_cast<Tau>(inum(upd, "tau", 0));
    uc.m = static_cast<float>(num(upd, "m", 3.0));
    uc.temperature = static_cast<float>(num(upd, "temperature", 1.0));
    uc.beta1 = static_cast<float>(num(upd, "beta1", 0.9));
    uc.beta2 = static_cast<float>(num(upd, "beta2", 0.999));
    uc.eps = static_cast<float>(num(upd, "eps", 1e-8));
    model_ = std::make_unique<Model>(std::move(backend));
    check(env, model_->build(ms, uc));
  }

  Model& model() { return *model_; }
  std::atomic<bool> cancel_{false};
  std::atomic<bool> busy_{false};

 private:
  void require_idle(Napi::Env env) {
    if (busy_.load())
      throw option_error(env, "the model is busy with another training or evaluation; await it (or cancel it) first");
  }
  Napi::Value Summary(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), model_->summary_json()); }
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    cancel_ = true;
    return info.Env().Undefined();
  }
  Napi::Value GetStep(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(model_->step())); }
  Napi::Value SetStep(const Napi::CallbackInfo& info) {
    require_idle(info.Env());
    model_->set_step(static_cast<int64_t>(info[0].As<Napi::Number>().DoubleValue()));
    return info.Env().Undefined();
  }
  Napi::Value MemoryInUse(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(model_->backend().bytes_in_use()));
  }
  Napi::Value MemoryReport(const Napi::CallbackInfo& info) {
    require_idle(info.Env());  // a run may be re-planning the arena on its worker thread
    return Napi::String::New(info.Env(), model_->memory_report_json());
  }
  // The buffers for a batch, without computing anything (train and evaluate allocate the same).
  Napi::Value EnsureCapacity(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    require_idle(env);
    const double n = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
    if (!(n >= 1 && n <= 1 << 30 && n == static_cast<int>(n)))
      throw option_error(env, "ensureCapacity: the batch must be a positive integer, got " + info[0].ToString().Utf8Value());
    check(env, model_->ensure_capacity(static_cast<int>(n)));
    return env.Undefined();
  }
  Napi::Value GetState(const Napi::CallbackInfo& info);
  Napi::Value SetState(const Napi::CallbackInfo& info);
  Napi::Value Train(const Napi::CallbackInfo& info);
  Napi::Value Evaluate(const Napi::CallbackInfo& info);

  std::unique_ptr<Model> model_;
};

Napi::Value ModelWrap::GetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_idle(env);
  std::vector<NamedTensor> ts;
  check(env, model_->get_state(&ts));
  Napi::Array out = Napi::Array::New(env, ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", ts[i].name);
    o.Set("dtype", ts[i].dtype);
    Napi::Array shape = Napi::Array::New(env, ts[i].shape.size());
    for (size_t k = 0; k < ts[i].shape.size(); ++k) shape.Set(static_cast<uint32_t>(k), static_cast<double>(ts[i].shape[k]));
    o.Set("shape", shape);
    o.Set("data", Napi::Buffer<uint8_t>::Copy(env, ts[i].bytes.data(), ts[i].bytes.size()));
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

Napi::Value ModelWrap::SetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_idle(env);
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<NamedTensor> ts;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    NamedTensor t;
    t.name = o.Get("name").As<Napi::String>().Utf8Value();
    t.dtype = o.Get("dtype").As<Napi::String>().Utf8Value();
    Napi::Uint8Array data = o.Get("data").As<Napi::Uint8Array>();
    t.bytes.assign(data.Data(), data.Data() + data.ByteLength());
    ts.push_back(std::move(t));
  }
  check(env, model_->set_state(ts));
  return env.Undefined();
}

// Step reports cross to JS through one thread-safe function; while a call is pending, further
// reports queue up and arrive together, so a fast training never floods the event loop.
struct ReportQueue {
  std::mutex mu;
  std::deque<StepReport> rows;
  bool pending = false;
};

class TrainWorker : public Napi::AsyncWorker {
 public:
  TrainWorker(Napi::Env env, ModelWrap* wrap, Napi::Object self, Napi::Object data, EpochPlan plan, Napi::Function on_steps)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), wrap_(wrap), plan_(std::move(plan)),
        queue_(std::make_shared<ReportQueue>()) {
    self_ref_ = Napi::Persistent(self);
    data_ref_ = Napi::Persistent(data);
    view_ = data_view(data);
    tsfn_ = Napi::ThreadSafeFunction::New(env, on_steps, "ternlab-train-progress", 0, 1);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    status_ = train_epoch(wrap_->model(), view_, plan_, wrap_->cancel_, [this](StepReport&& r) { post(std::move(r)); }, &steps_);
  }
  void OnOK() override { finish(); }
  void OnError(const Napi::Error& e) override { finish(); }

 private:
  void post(StepReport&& r) {
    auto q = queue_;
    bool call = false;
    {
      std::lock_guard<std::mutex> lock(q->mu);
      q->rows.push_back(std::move(r));
      if (!q->pending) q->pending = call = true;
    }
    if (!call) return;
    tsfn_.BlockingCall([q](Napi::Env env, Napi::Function fn) { deliver(env, fn, q); });
  }
  static void deliver(Napi::Env env, Napi::Function fn, const std::shared_ptr<ReportQueue>& q) {
    std::deque<StepReport> rows;
    {
      std::lock_guard<std::mutex> lock(q->mu);
      rows.swap(q->rows);
      q->pending = false;
    }
    if (rows.empty()) return;
    Napi::Array arr = Napi::Array::New(env, rows.size());
    uint32_t i = 0;
    for (auto& r : rows) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("step", static_cast<double>(r.step));
      o.Set("epoch", r.epoch);
      o.Set("loss", r.loss);
      o.Set("trainAccuracy", r.train_accuracy);
      o.Set("learningRate", r.learning_rate);
      o.Set("seconds", r.seconds);
      o.Set("batch", r.batch);
      Napi::Array layers = Napi::Array::New(env, r.layers.size());
      for (size_t k = 0; k < r.layers.size(); ++k) layers.Set(static_cast<uint32_t>(k), counters_to_js(env, r.layers[k]));
      o.Set("layers", layers);
      arr.Set(i++, o);
    }
    fn.Call({arr});
  }
  void finish() {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    // Deliver what is still queued before settling, so every step reaches JS before the promise.
    Napi::Function fn = tsfn_callback();
    if (!fn.IsEmpty()) deliver(env, fn, queue_);
    tsfn_.Release();
    wrap_->busy_ = false;
    wrap_->cancel_ = false;
    if (status_.is_ok() || status_.code() == Code::Cancelled) {
      Napi::Object res = Napi::Object::New(env);
      res.Set("steps", static_cast<double>(steps_));
      res.Set("cancelled", status_.code() == Code::Cancelled);
      deferred_.Resolve(res);
    } else {
      deferred_.Reject(Napi::Error::New(env, status_.formatted()).Value());
    }
  }
  Napi::Function tsfn_callback() { return on_steps_ref_.IsEmpty() ? Napi::Function() : on_steps_ref_.Value(); }

 public:
  Napi::FunctionReference on_steps_ref_;

 private:
  Napi::Promise::Deferred deferred_;
  ModelWrap* wrap_;
  EpochPlan plan_;
  DataView view_;
  Napi::ObjectReference self_ref_, data_ref_;
  Napi::ThreadSafeFunction tsfn_;
  std::shared_ptr<ReportQueue> queue_;
  Status status_;
  int64_t steps_ = 0;
};

Napi::Value ModelWrap::Train(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_idle(env);
  Napi::Object data = info[0].As<Napi::Object>();
  Napi::Object p = info[1].As<Napi::Object>();
  Napi::Function on_steps = info[2].As<Napi::Function>();
  EpochPlan plan;
  plan.epoch = inum(p, "epoch", 0);
  plan.batch = inum(p, "batch", 100);
  plan.first_step = static_cast<int64_t>(num(p, "firstStep", 0));
  plan.begin = static_cast<int64_t>(num(p, "begin", 0));
  plan.end = static_cast<int64_t>(num(p, "end", 0));
  plan.loss = static_cast<LossKind>(inum(p, "loss", 0));
  plan.shuffle = p.Get("shuffle").IsBoolean() ? p.Get("shuffle").As<Napi::Boolean>().Value() : true;
  plan.augment.flip = p.Get("augmentFlip").IsBoolean() && p.Get("augmentFlip").As<Napi::Boolean>().Value();
  plan.augment.pad = inum(p, "augmentPad", 0);
  if (plan.augment.pad < 0) check(env, Status(Code::Option, "augmentPad must be ≥ 0, got " + std::to_string(plan.augment.pad)));
  plan.augment.cutout = inum(p, "augmentCutout", 0);
  if (plan.augment.cutout < 0) check(env, Status(Code::Option, "augmentCutout must be ≥ 0, got " + std::to_string(plan.augment.cutout)));
  Napi::Float32Array lr = p.Get("lr").As<Napi::Float32Array>();
  plan.lr.assign(lr.Data(), lr.Data() + lr.ElementLength());
  busy_ = true;
  cancel_ = false;  // a cancel that arrived while idle belongs to no run (TS keeps its own flag)
  auto* w = new TrainWorker(env, this, Value(), data, std::move(plan), on_steps);
  w->on_steps_ref_ = Napi::Persistent(on_steps);
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

class EvalWorker : public Napi::AsyncWorker {
 public:
  EvalWorker(Napi::Env env, ModelWrap* wrap, Napi::Object self, Napi::Object data, int batch, LossKind loss)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), wrap_(wrap), batch_(batch), loss_(loss) {
    self_ref_ = Napi::Persistent(self);
    data_ref_ = Napi::Persistent(data);
    view_ = data_view(data);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override { status_ = evaluate(wrap_->model(), view_, batch_, loss_, wrap_->cancel_, &result_); }
  void OnOK() override {
    Napi::Env env = Env();
    wrap_->busy_ = false;
    wrap_->cancel_ = false;
    if (!status_.is_ok()) {
      deferred_.Reject(Napi::Error::New(env, status_.formatted()).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", result_.loss);
    o.Set("count", static_cast<double>(result_.count));
    o.Set("top1", static_cast<double>(result_.top1));
    o.Set("top5", static_cast<double>(result_.top5));
    deferred_.Resolve(o);
  }

 private:
  Napi::Promise::Deferred deferred_;
  ModelWrap* wrap_;
  int batch_;
  LossKind loss_;
  DataView view_;
  Napi::ObjectReference self_ref_, data_ref_;
  Status status_;
  EvalResult result_;
};

Napi::Value ModelWrap::Evaluate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_idle(env);
  busy_ = true;
  cancel_ = false;
  auto* w = new EvalWorker(env, this, Value(), info[0].As<Napi::Object>(), info[1].As<Napi::Number>().Int32Value(),
                           static_cast<LossKind>(info[2].As<Napi::Number>().Int32Value()));
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cuda", cuda_compiled());
  o.Set("kernelPath", kernel_path_name(current_kernel_path()));
  o.Set("bestKernelPath", kernel_path_name(best_kernel_path()));
  o.Set("hardwareThreads", static_cast<double>(std::thread::hardware_concurrency()));
  return o;
}

}  // namespace

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeModel", ModelWrap::Init(env));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  register_ops(env, exports);
  return exports;
}

}  // namespace tl::napi

static Napi::Object TernlabInit(Napi::Env env, Napi::Object exports) { return tl::napi::InitModule(env, exports); }
NODE_API_MODULE(ternlab, TernlabInit)
