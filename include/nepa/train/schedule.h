// Learning-rate schedules, evaluated per optimizer step (not per epoch) as the release does.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nepa/config/config.h"

namespace nepa {

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  // The learning rate of parameter group `group` for optimizer step `step` (0-based: the first update uses step 0).
  virtual double lr(int group, int64_t step) const = 0;
  // How the lr moves, for the run's start-up line; empty = the config's warmup_fraction and cosine describe it.
  virtual std::string summary() const { return {}; }
};

// Linear warmup from `start_lr` to `peak` over warmup_steps, then a half cosine from `peak` to `min_lr` ending at
// `total_steps` (transformers' get_cosine_schedule_with_warmup when start_lr = min_lr = 0). Every group gets the
// same lr. `first_step` is the count the first update is evaluated at: 0 as transformers (the first update at
// start_lr), 1 as I-JEPA's WarmupCosineSchedule, whose step() advances its counter before computing the lr.
class WarmupCosineSchedule : public LrSchedule {
 public:
  WarmupCosineSchedule(double peak, double min_lr, int64_t warmup_steps, int64_t total_steps, bool constant = false,
                       double start_lr = 0.0, int64_t first_step = 0);
  double lr(int group, int64_t step) const override;
  std::string summary() const override;
  int64_t warmup_steps() const { return warmup_; }

 private:
  double peak_, min_lr_, start_lr_;
  int64_t warmup_, total_, first_step_;
  bool constant_;
};

// The weight decay of the groups that decay at optimizer step `step` (0-based) of `total_steps`: optim.weight_decay,
// or with optim.final_weight_decay I-JEPA's CosineWDSchedule (src/utils/schedulers.py) after step + 1 calls, a half
// cosine from weight_decay to final_weight_decay that never passes the final value.
double weight_decay_at(const OptimConfig& optim, int64_t step, int64_t total_steps);

// lr = base_lr * total_batch / lr_batch_reference.
double scaled_lr(const OptimConfig& optim, int total_batch);

// Steps of a run: schedule.max_steps, or epochs * steps_per_epoch.
int64_t total_steps(const ScheduleConfig& schedule, int64_t steps_per_epoch);

// The pretraining schedule from the config: warmup = ceil(warmup_fraction * total_steps).
std::unique_ptr<LrSchedule> make_schedule(const Config& config, int64_t total_steps);

}  // namespace nepa
