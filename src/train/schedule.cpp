#include "nepa/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace nepa {

WarmupCosineSchedule::WarmupCosineSchedule(double peak, double min_lr, int64_t warmup_steps, int64_t total_steps,
                                           bool constant)
    : peak_(peak), min_lr_(min_lr), warmup_(warmup_steps), total_(std::max<int64_t>(total_steps, 1)),
      constant_(constant) {}

double WarmupCosineSchedule::lr(int /*group*/, int64_t step) const {
  // Same values as transformers' get_cosine_schedule_with_warmup, which the release's Trainer uses: the first
  // update runs at lr 0 and the peak is reached at step `warmup_`.
  if (step < warmup_) return peak_ * static_cast<double>(step) / static_cast<double>(warmup_);
  if (constant_) return peak_;
  double progress = static_cast<double>(step - warmup_) / static_cast<double>(std::max<int64_t>(total_ - warmup_, 1));
  progress = std::min(progress, 1.0);
  return min_lr_ + 0.5 * (peak_ - min_lr_) * (1.0 + std::cos(M_PI * progress));
}

double scaled_lr(const OptimConfig& optim, int total_batch) {
  return optim.base_lr * total_batch / optim.lr_batch_reference;
}

int64_t total_steps(const ScheduleConfig& schedule, int64_t steps_per_epoch) {
  return schedule.max_steps > 0 ? schedule.max_steps : static_cast<int64_t>(schedule.epochs) * steps_per_epoch;
}

std::unique_ptr<LrSchedule> make_schedule(const Config& config, int64_t steps) {
  // ceil, as transformers' TrainingArguments.get_warmup_steps does for warmup_ratio.
  auto warmup = static_cast<int64_t>(std::ceil(config.schedule.warmup_fraction * static_cast<double>(steps)));
  return std::make_unique<WarmupCosineSchedule>(scaled_lr(config.optim, config.train.total_batch),
                                                config.schedule.min_lr, warmup, steps,
                                                config.schedule.name == "constant");
}

}  // namespace nepa
