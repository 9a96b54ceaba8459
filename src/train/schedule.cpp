#include "nepa/train/schedule.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace nepa {

WarmupCosineSchedule::WarmupCosineSchedule(double peak, double min_lr, int64_t warmup_steps, int64_t total_steps,
                                           bool constant, double start_lr, int64_t first_step)
    : peak_(peak), min_lr_(min_lr), start_lr_(start_lr), warmup_(warmup_steps),
      total_(std::max<int64_t>(total_steps, 1)), first_step_(first_step), constant_(constant) {}

double WarmupCosineSchedule::lr(int /*group*/, int64_t update) const {
  // With first_step 0 the same values as transformers' get_cosine_schedule_with_warmup, which the NEPA release's
  // Trainer uses: the first update runs at start_lr (0 there) and the peak is reached at step `warmup_`.
  const int64_t step = update + first_step_;
  if (step < warmup_)
    return start_lr_ + (peak_ - start_lr_) * static_cast<double>(step) / static_cast<double>(warmup_);
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

std::string WarmupCosineSchedule::summary() const {
  std::string out = fmt::format("{} warmup", warmup_);
  if (start_lr_ > 0) out += fmt::format(" from {:.3g}", start_lr_);
  out += constant_ ? ", then constant" : fmt::format(", cosine to {:.3g}", min_lr_);
  if (first_step_ > 0) out += fmt::format(" (stepped as I-JEPA's: the first update at step {})", first_step_);
  return out;
}

double weight_decay_at(const OptimConfig& optim, int64_t step, int64_t total_steps) {
  if (!optim.final_weight_decay) return optim.weight_decay;
  const double start = optim.weight_decay, end = *optim.final_weight_decay;
  const double progress = static_cast<double>(step + 1) / static_cast<double>(std::max<int64_t>(total_steps, 1));
  const double wd = end + (start - end) * 0.5 * (1.0 + std::cos(M_PI * progress));
  return end >= start ? std::min(wd, end) : std::max(wd, end);
}

std::unique_ptr<LrSchedule> make_schedule(const Config& config, int64_t steps) {
  const ScheduleConfig& s = config.schedule;
  const bool ijepa = s.name == "ijepa_cosine";
  if (s.name != "cosine" && s.name != "constant" && !ijepa)
    // The llrd and poly schedules belong to the fine-tuning and segmentation tasks, which build them themselves.
    throw ConfigError("config error: schedule.name: " + s.name +
                      " is not a schedule of this task (cosine, ijepa_cosine or constant)");
  // ceil, as transformers' TrainingArguments.get_warmup_steps does for warmup_ratio (I-JEPA's int(warmup * ipe)
  // is the same number whenever warmup_fraction x steps is a whole number of steps, as in its recipes).
  auto warmup = static_cast<int64_t>(std::ceil(s.warmup_fraction * static_cast<double>(steps)));
  return std::make_unique<WarmupCosineSchedule>(scaled_lr(config.optim, config.train.total_batch), s.min_lr, warmup,
                                                steps, s.name == "constant", s.warmup_start_lr, ijepa ? 1 : 0);
}

}  // namespace nepa
