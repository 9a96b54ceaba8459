#include "nepa/train/readback.h"

#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/torch.h>

namespace nepa {

Readback::Readback(const torch::Tensor& values) {
  const torch::Tensor flat = values.detach().reshape(-1).to(torch::kFloat64);
  if (flat.is_cpu()) {
    host_ = flat.clone();
    return;
  }
  const c10::DeviceType type = flat.device().type();
  host_ = torch::empty(flat.sizes(), torch::TensorOptions().dtype(torch::kFloat64).pinned_memory(true));
  host_.copy_(flat, /*non_blocking=*/true);
  event_ = std::make_unique<c10::Event>(type);
  const c10::impl::VirtualGuardImpl impl(type);
  event_->record(impl.getStream(flat.device()));
}

bool Readback::ready() const { return !event_ || event_->query(); }

std::vector<double> Readback::get(const std::function<void(const std::function<bool()>&)>& wait) {
  if (event_) {
    if (wait) wait([this] { return ready(); });
    else event_->synchronize();
  }
  const double* p = host_.data_ptr<double>();
  return std::vector<double>(p, p + host_.numel());
}

}  // namespace nepa
