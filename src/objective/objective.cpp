#include "nepa/objective/objective.h"

#include <torch/torch.h>

#include <stdexcept>

#include "nepa/objective/aim.h"
#include "nepa/objective/ijepa.h"
#include "nepa/objective/mae.h"
#include "nepa/objective/nepa_loss.h"

namespace nepa {

torch::Tensor host_to_device(const torch::Tensor& host, const torch::Device& device) {
  if (!device.is_cuda() || host.is_cuda()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

std::unique_ptr<Objective> make_objective(const Config& config) {
  switch (objective_kind(config.objective.name)) {
    case ObjectiveKind::kNepa:
      return std::make_unique<NepaObjective>(config.objective, config.model);
    case ObjectiveKind::kAim:
      return std::make_unique<AimObjective>(config.objective.aim, config.model);
    case ObjectiveKind::kMae:
      return std::make_unique<MaeObjective>(config.objective.mae, config.model);
    case ObjectiveKind::kIjepa:
      return std::make_unique<IjepaObjective>(config.objective.ijepa, config.model);
  }
  throw std::logic_error("make_objective: ObjectiveKind without a case");  // unreachable: the switch is exhaustive
}

}  // namespace nepa
