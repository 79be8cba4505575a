#include "train.h"

#include <chrono>
#include <cstring>

namespace tl {

int64_t steps_per_epoch(int64_t count, int batch) {
  if (batch <= 0 || count <= 0) return 0;
  // As the released code: whole batches only (the remainder of an epoch is dropped), at least one.
  return count >= batch ? count / batch : 1;
}

std::vector<int64_t> epoch_order(uint64_t seed, int epoch, int64_t count, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) order[i] = i;
  if (!shuffle) return order;
  for (int64_t i = count - 1; i > 0; --i) {
    const Philox4 r = philox_draw(seed, static_cast<uint32_t>(epoch), 0xFFFFFFFFu, static_cast<uint32_t>(i), kStreamData);
    const uint64_t x = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    const int64_t j = static_cast<int64_t>(x % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

namespace {
// Gathers a batch of raw pixels and labels on the host, uploads, normalises on the device.
struct BatchLoader {
  Backend& be;
  const DataView& data;
  int64_t elems;
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  Buffer dev_pixels, dev_input;
  BatchLoader(Backend& b, const DataView& d, int64_t per_sample) : be(b), data(d), elems(per_sample) {}
  Status load(const int64_t* idx, int n, int capacity) {
    if (!dev_input.data() || dev_input.bytes() < sizeof(float) * capacity * elems) {
      TL_TRY(be.alloc(static_cast<size_t>(capacity) * elems, "input batch", &dev_pixels));
      TL_TRY(be.alloc(sizeof(float) * capacity * elems, "input batch", &dev_input));
    }
    pixels.resize(static_cast<size_t>(n) * elems);
    labels.resize(n);
    for (int i = 0; i < n; ++i) {
      std::memcpy(pixels.data() + i * elems, data.images + idx[i] * elems, static_cast<size_t>(elems));
      labels[i] = data.labels[idx[i]];
    }
    TL_TRY(be.upload(dev_pixels.data(), pixels.data(), pixels.size()));
    return be.normalize_u8(static_cast<int64_t>(n) * elems, dev_pixels.as<uint8_t>(), data.scale, data.offset,
                           dev_input.as<float>());
  }
};

Status check_labels(const DataView& data, int classes) {
  for (int64_t i = 0; i < data.count; ++i)
    if (data.labels[i] < 0 || data.labels[i] >= classes)
      return Status(Code::Dataset, "label " + std::to_string(data.labels[i]) + " of sample " + std::to_string(i) +
                                       " is outside the model's " + std::to_string(classes) + " classes");
  return Status::ok();
}
}  // namespace

Status train_epoch(Model& model, const DataView& data, const EpochPlan& plan, const std::atomic<bool>& cancel,
                   const std::function<void(StepReport&&)>& on_step, int64_t* steps_done) {
  *steps_done = 0;
  TL_TRY(check_labels(data, model.classes()));
  const int64_t spe = steps_per_epoch(data.count, plan.batch);
  if (plan.end > spe || plan.begin < 0 || plan.begin > plan.end)
    return Status(Code::Option, "epoch slice [" + std::to_string(plan.begin) + ", " + std::to_string(plan.end) +
                                    ") is outside the epoch's " + std::to_string(spe) + " steps");
  if (static_cast<int64_t>(plan.lr.size()) < plan.end)
    return Status(Code::Option, "the learning-rate schedule gives " + std::to_string(plan.lr.size()) + " values for " +
                                    std::to_string(plan.end) + " steps");
  const std::vector<int64_t> order = epoch_order(model.spec().seed, plan.epoch, data.count, plan.shuffle);
  const int n = static_cast<int>(std::min<int64_t>(plan.batch, data.count));
  TL_TRY(model.ensure_capacity(n));
  BatchLoader loader(model.backend(), data, model.input_elems());
  std::vector<float> row_loss(n);
  std::vector<int32_t> rank(n);
  for (int64_t b = plan.begin; b < plan.end; ++b) {
    if (cancel.load()) return Status(Code::Cancelled, "training was cancelled before step " + std::to_string(plan.first_step + b));
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t step = plan.first_step + b;
    TL_TRY(loader.load(order.data() + b * plan.batch, n, n));
    TL_TRY(model.forward(loader.dev_input.as<float>(), n, true));
    TL_TRY(model.loss(loader.labels.data(), n, plan.loss, row_loss.data(), rank.data()));
    TL_TRY(model.backward(n));
    TL_TRY(model.update(static_cast<uint64_t>(step), plan.lr[b]));
    StepReport r;
    TL_TRY(model.read_counters(&r.layers));
    double loss = 0;
    int64_t correct = 0;
    for (int i = 0; i < n; ++i) {
      loss += row_loss[i];
      correct += rank[i] == 0;
    }
    r.step = step;
    r.epoch = plan.epoch;
    r.batch = n;
    r.loss = loss / n;
    r.train_accuracy = static_cast<double>(correct) / n;
    r.learning_rate = plan.lr[b];
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++*steps_done;
    on_step(std::move(r));
  }
  return Status::ok();
}

Status evaluate(Model& model, const DataView& data, int batch, LossKind loss, const std::atomic<bool>& cancel, EvalResult* out) {
  *out = EvalResult();
  TL_TRY(check_labels(data, model.classes()));
  if (data.count == 0) return Status::ok();
  const int cap = static_cast<int>(std::min<int64_t>(batch, data.count));
  TL_TRY(model.ensure_capacity(cap));
  BatchLoader loader(model.backend(), data, model.input_elems());
  std::vector<int64_t> idx(cap);
  std::vector<float> row_loss(cap);
  std::vector<int32_t> rank(cap);
  double total = 0;
  for (int64_t s = 0; s < data.count; s += cap) {
    if (cancel.load()) return Status(Code::Cancelled, "evaluation was cancelled");
    const int n = static_cast<int>(std::min<int64_t>(cap, data.count - s));
    for (int i = 0; i < n; ++i) idx[i] = s + i;
    TL_TRY(loader.load(idx.data(), n, cap));
    TL_TRY(model.forward(loader.dev_input.as<float>(), n, false));
    TL_TRY(model.loss(loader.labels.data(), n, loss, row_loss.data(), rank.data()));
    for (int i = 0; i < n; ++i) {
      total += row_loss[i];
      out->top1 += rank[i] == 0;
      out->top5 += rank[i] < 5;
    }
  }
  out->count = data.count;
  out->loss = total / static_cast<double>(data.count);
  return Status::ok();
}

}  // namespace tl
