// The training loop of one epoch (or a slice of one), run on a native worker thread.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "model.h"

namespace tl {

struct DataView {
  const uint8_t* images = nullptr;  // count × h × w × c bytes
  const int32_t* labels = nullptr;
  int64_t count = 0;
  float scale = 2.0f / 255.0f, offset = -1.0f;  // network input = pixel·scale + offset
};

// Training-time augmentation of image batches, drawn from Philox (seed, step, position in the
// batch, stream augment): a function of the step, so identical on every backend and across resume.
// Cutout's fill: the pixel value nearest the middle of the range, whose input 2·128/255 − 1 ≈ 0 is
// what the convolutions' zero padding and a normalised image's mean look like (as in the Cutout paper,
// which zeroes the normalised input).
constexpr uint8_t kCutoutFill = 128;
struct Augment {
  bool flip = false;  // horizontal flip with probability ½
  int pad = 0;        // shift by (dy, dx) uniform in [−pad, pad]², pixels from outside are 0: a random
                      // crop of the image zero-padded by `pad`
  int cutout = 0;     // after flip and crop, a cutout × cutout square set to kCutoutFill, centred on a
                      // pixel drawn uniformly over the image and clipped at its edges (DeVries &
                      // Taylor 2017: the regulariser that helped CIFAR nets generalise)
  bool any() const { return flip || pad > 0 || cutout > 0; }
};
// Writes sample `src` (h × w × c bytes) to dst as transformed for position i of the batch at `step`.
void augment_sample(const Augment& a, uint64_t seed, int64_t step, int i, int h, int w, int c, const uint8_t* src, uint8_t* dst);

struct StepReport {
  int64_t step = 0;
  int epoch = 0;
  double loss = 0, train_accuracy = 0, learning_rate = 0, seconds = 0;
  int batch = 0;
  std::vector<LayerCounters> layers;
};

struct EpochPlan {
  int epoch = 0;
  int batch = 0;
  int64_t first_step = 0;        // global step of this epoch's first batch
  int64_t begin = 0, end = 0;    // batches [begin, end) of this epoch to run (resume can start mid-epoch)
  std::vector<float> lr;         // one value per batch of the epoch (index = batch in epoch)
  LossKind loss = LossKind::SquaredHinge;
  bool shuffle = true;
  Augment augment;               // applied to training batches only
};

int64_t steps_per_epoch(int64_t count, int batch);
// The epoch's data order: a Fisher–Yates permutation drawn from Philox (seed, epoch, stream data).
std::vector<int64_t> epoch_order(uint64_t seed, int epoch, int64_t count, bool shuffle);

Status train_epoch(Model& model, const DataView& data, const EpochPlan& plan, const std::atomic<bool>& cancel,
                   const std::function<void(StepReport&&)>& on_step, int64_t* steps_done);

struct EvalResult {
  double loss = 0;
  int64_t count = 0, top1 = 0, top5 = 0;
};
Status evaluate(Model& model, const DataView& data, int batch, LossKind loss, const std::atomic<bool>& cancel, EvalResult* out);

}  // namespace tl
