// A step's few figures (loss, metrics, gradient norm, flags) brought to the host without stalling the device.
// The copy is queued on the device's stream behind the step's work, into page-locked memory, and an event marks
// its end; the loop looks at it one step later, once the next step's forward and backward are queued, so the
// device always has work while the host waits. On the CPU the figures are simply copied.
#pragma once

#include <c10/core/Event.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <vector>

namespace nepa {

class Readback {
 public:
  // Starts copying `values` (a 1-D tensor, any dtype; read back as doubles).
  explicit Readback(const torch::Tensor& values);
  // The copy is complete (always, on the CPU). Never blocks.
  bool ready() const;
  // The values. Waits for the copy first: through `wait` when given (it must return once its predicate holds,
  // e.g. Comm::poll_until, which watches the other ranks meanwhile), else by blocking on the event.
  std::vector<double> get(const std::function<void(const std::function<bool()>&)>& wait = {});

 private:
  torch::Tensor host_;
  std::unique_ptr<c10::Event> event_;  // null on the CPU
};

}  // namespace nepa
