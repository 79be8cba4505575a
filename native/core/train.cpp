#include "train.h"

#include <chrono>
#include <algorithm>
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
Status check_labels(const DataView& data, int classes) {
  for (int64_t i = 0; i < data.count; ++i)
    if (data.labels[i] < 0 || data.labels[i] >= classes)
      return Status(Code::Dataset, "label " + std::to_string(data.labels[i]) + " of sample " + std::to_string(i) +
                                       " is outside the model's " + std::to_string(classes) + " classes");
  return Status::ok();
}
}  // namespace

// The host side of a step, pipelined (issue 3): while step b computes, the host gathers batch b+1
// into pinned memory and uploads it on the copy queue, then reads step b−1's report (losses,
// ranks, counters) that came back asynchronously. Two slots alternate. The device-side order of
// operations is the same as a plain loop, so results are identical. Evaluation uses it too, one
// slot, one batch at a time (its last batch may be short).
void augment_sample(const Augment& a, uint64_t seed, int64_t step, int i, int h, int w, int c, const uint8_t* src, uint8_t* dst) {
  const Philox4 r = philox_draw(seed, static_cast<uint32_t>(step), 0, static_cast<uint32_t>(i), kStreamAugment);
  const bool flip = a.flip && (r.v[0] & 1u);
  const uint32_t span = static_cast<uint32_t>(2 * a.pad + 1);
  const int dy = a.pad > 0 ? static_cast<int>(r.v[1] % span) - a.pad : 0;
  const int dx = a.pad > 0 ? static_cast<int>(r.v[2] % span) - a.pad : 0;
  // output (y, x) shows input (y + dy, x + dx) of the (flipped) image; outside: 0. Row by row: the
  // columns x0 ≤ x < x1 that fall inside the image are one run (one copy when not flipped; a
  // pixel-by-pixel copy of 1-channel images was the loader's bottleneck on MNIST).
  const size_t cs = static_cast<size_t>(c);
  const int x0 = std::max(0, -dx), x1 = std::min(w, w - dx);
  for (int y = 0; y < h; ++y) {
    uint8_t* row = dst + static_cast<int64_t>(y) * w * c;
    const int sy = y + dy;
    if (sy < 0 || sy >= h || x0 >= x1) {
      std::memset(row, 0, static_cast<size_t>(w) * cs);
      continue;
    }
    std::memset(row, 0, static_cast<size_t>(x0) * cs);
    std::memset(row + static_cast<int64_t>(x1) * c, 0, static_cast<size_t>(w - x1) * cs);
    const uint8_t* srow = src + static_cast<int64_t>(sy) * w * c;
    if (!flip) {
      std::memcpy(row + static_cast<int64_t>(x0) * c, srow + static_cast<int64_t>(x0 + dx) * c, static_cast<size_t>(x1 - x0) * cs);
    } else {
      for (int x = x0; x < x1; ++x) std::memcpy(row + static_cast<int64_t>(x) * c, srow + static_cast<int64_t>(w - 1 - (x + dx)) * c, cs);
    }
  }
  if (a.cutout > 0) {
    // the centre from the draw's fourth word (unused by flip and crop, so their draws are unchanged):
    // its low and high 16 bits, modulo the height and width
    const int cy = static_cast<int>((r.v[3] & 0xffffu) % static_cast<uint32_t>(h));
    const int cx = static_cast<int>((r.v[3] >> 16) % static_cast<uint32_t>(w));
    const int ya = std::max(0, cy - a.cutout / 2), yb = std::min(h, cy - a.cutout / 2 + a.cutout);
    const int xa = std::max(0, cx - a.cutout / 2), xb = std::min(w, cx - a.cutout / 2 + a.cutout);
    for (int y = ya; y < yb; ++y)
      if (xa < xb) std::memset(dst + (static_cast<int64_t>(y) * w + xa) * c, kCutoutFill, static_cast<size_t>(xb - xa) * cs);
  }
}

namespace {
struct StepPipeline {
  Backend& be;
  const DataView& data;
  const int64_t elems;  // bytes of one sample
  const int n;
  HostBuffer staging[2], report[2];  // pixels then labels | the step's report
  Buffer dev_batch[2], dev_input;
  StepPipeline(Backend& b, const DataView& d, int64_t per_sample, int batch) : be(b), data(d), elems(per_sample), n(batch) {}

  size_t pixel_bytes() const { return static_cast<size_t>(n) * elems; }
  size_t batch_bytes() const { return pixel_bytes() + sizeof(int32_t) * n; }
  Status init(size_t report_bytes) {
    for (int s = 0; s < 2; ++s) {
      TL_TRY(staging[s].alloc(&be, batch_bytes(), "batch staging"));
      TL_TRY(report[s].alloc(&be, report_bytes, "step report"));
      TL_TRY(be.alloc(batch_bytes(), "input batch", &dev_batch[s]));
    }
    return be.alloc(sizeof(float) * n * elems, "input batch", &dev_input);
  }
  // Gathers the samples idx[0..count) of global step `step` into slot s (augmented as `aug` says)
  // and starts their upload.
  Status stage(int s, const int64_t* idx, int count, int64_t step, const Augment& aug, uint64_t seed, int h, int w, int c) {
    TL_TRY(be.host_wait_upload(s));  // the slot's previous upload has left the staging buffer
    uint8_t* px = staging[s].as<uint8_t>();
    int32_t* lab = host_labels(s);
    for (int i = 0; i < count; ++i) {
      if (aug.any()) augment_sample(aug, seed, step, i, h, w, c, data.images + idx[i] * elems, px + i * elems);
      else std::memcpy(px + i * elems, data.images + idx[i] * elems, static_cast<size_t>(elems));
      lab[i] = data.labels[idx[i]];
    }
    return be.upload_async(dev_batch[s].data(), px, batch_bytes(), s);
  }
  // Queued on the compute stream: wait for slot s's upload, then normalise its `count` samples.
  Status input(int s, int count) {
    TL_TRY(be.wait_upload(s));
    return be.normalize_u8(static_cast<int64_t>(count) * elems, dev_batch[s].as<uint8_t>(), data.scale, data.offset,
                           dev_input.as<float>());
  }
  Backend::Pixels pixels(int s) const { return Backend::Pixels{dev_batch[s].as<uint8_t>(), data.scale, data.offset}; }
  const int32_t* labels(int s) const { return reinterpret_cast<const int32_t*>(dev_batch[s].as<uint8_t>() + pixel_bytes()); }
  int32_t* host_labels(int s) const { return reinterpret_cast<int32_t*>(staging[s].as<uint8_t>() + pixel_bytes()); }
};
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
  if (plan.begin == plan.end) return Status::ok();
  const std::vector<int64_t> order = epoch_order(model.spec().seed, plan.epoch, data.count, plan.shuffle);
  const int n = static_cast<int>(std::min<int64_t>(plan.batch, data.count));
  TL_TRY(model.ensure_capacity(n));
  Backend& be = model.backend();
  StepPipeline pipe(be, data, model.input_elems(), n);
  TL_TRY(pipe.init(model.report_bytes(n)));
  auto t_last = std::chrono::steady_clock::now();
  // Step b's report, once its slot's mark has been reached.
  auto finish = [&](int64_t b) -> Status {
    const int s = static_cast<int>(b & 1);
    TL_TRY(be.host_wait(s));
    StepReport r;
    double loss = 0;
    int64_t correct = 0;
    model.decode_report(pipe.report[s].as<void>(), n, &loss, &correct, &r.layers);
    const auto now = std::chrono::steady_clock::now();
    r.step = plan.first_step + b;
    r.epoch = plan.epoch;
    r.batch = n;
    r.loss = loss / n;
    r.train_accuracy = static_cast<double>(correct) / n;
    r.learning_rate = plan.lr[b];
    r.seconds = std::chrono::duration<double>(now - t_last).count();  // time between reports: the step rate
    t_last = now;
    ++*steps_done;
    on_step(std::move(r));
    return Status::ok();
  };
  const ModelSpec& ms = model.spec();
  auto stage = [&](int64_t b) {
    return pipe.stage(static_cast<int>(b & 1), order.data() + b * plan.batch, n, plan.first_step + b, plan.augment, ms.seed, ms.h,
                      ms.w, ms.c);
  };
  TL_TRY(stage(plan.begin));
  for (int64_t b = plan.begin; b < plan.end; ++b) {
    if (cancel.load()) {
      if (b > plan.begin) TL_TRY(finish(b - 1));
      return Status(Code::Cancelled, "training was cancelled before step " + std::to_string(plan.first_step + b));
    }
    const int s = static_cast<int>(b & 1);
    const int64_t step = plan.first_step + b;
    TL_TRY(pipe.input(s, n));
    const Backend::Pixels px = pipe.pixels(s);
    TL_TRY(model.forward(pipe.dev_input.as<float>(), n, true, &px));
    TL_TRY(model.loss_queued(pipe.labels(s), n, plan.loss, pipe.report[s].as<void>()));
    TL_TRY(model.backward_update(n, static_cast<uint64_t>(step), plan.lr[b]));
    TL_TRY(model.queue_counters(pipe.report[s].as<void>()));
    TL_TRY(be.mark(s));
    if (b + 1 < plan.end) TL_TRY(stage(b + 1));
    if (b > plan.begin) TL_TRY(finish(b - 1));
  }
  return finish(plan.end - 1);
}

Status evaluate(Model& model, const DataView& data, int batch, LossKind loss, const std::atomic<bool>& cancel, EvalResult* out) {
  *out = EvalResult();
  TL_TRY(check_labels(data, model.classes()));
  if (data.count == 0) return Status::ok();
  const int cap = static_cast<int>(std::min<int64_t>(batch, data.count));
  TL_TRY(model.ensure_capacity(cap));
  Backend& be = model.backend();
  StepPipeline pipe(be, data, model.input_elems(), cap);
  TL_TRY(pipe.init(0));
  const ModelSpec& ms = model.spec();
  std::vector<int64_t> idx(cap);
  std::vector<float> row_loss(cap);
  std::vector<int32_t> rank(cap);
  double total = 0;
  for (int64_t s = 0; s < data.count; s += cap) {
    if (cancel.load()) return Status(Code::Cancelled, "evaluation was cancelled");
    const int n = static_cast<int>(std::min<int64_t>(cap, data.count - s));
    for (int i = 0; i < n; ++i) idx[i] = s + i;
    TL_TRY(pipe.stage(0, idx.data(), n, 0, Augment(), ms.seed, ms.h, ms.w, ms.c));
    TL_TRY(pipe.input(0, n));
    const Backend::Pixels px = pipe.pixels(0);
    TL_TRY(model.forward(pipe.dev_input.as<float>(), n, false, &px));
    TL_TRY(model.loss(pipe.labels(0), n, loss, row_loss.data(), rank.data()));  // labels came with the batch
    TL_TRY(be.mark(0));  // the next batch's upload waits for this one's reads of the slot
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
