// bf16 autocast over a scope, as torch.autocast(device_type, torch.bfloat16) in Python: the training loop wraps
// the forward pass and the loss in it (the objectives compute their loss in fp32 themselves), and the benchmarks
// wrap exactly the same code in it.
#pragma once

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>

namespace nepa {

// Scopes nest (an evaluation that opens its own inside the loop's): each puts back the state it found.
class AutocastScope {
 public:
  AutocastScope(bool enabled, c10::DeviceType device) : enabled_(enabled), device_(device) {
    if (!enabled_) return;
    was_enabled_ = at::autocast::is_autocast_enabled(device_);
    was_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_dtype(device_, was_dtype_);
    at::autocast::set_autocast_enabled(device_, was_enabled_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  c10::DeviceType device_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

}  // namespace nepa
