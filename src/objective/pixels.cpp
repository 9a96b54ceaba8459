#include "nepa/objective/pixels.h"

#include <torch/torch.h>

#include <stdexcept>
#include <string>

namespace nepa {

torch::Tensor patchify(const torch::Tensor& pixels, int64_t patch_size) {
  if (pixels.dim() != 4 || patch_size <= 0 || pixels.size(2) % patch_size || pixels.size(3) % patch_size)
    throw std::invalid_argument("patchify: pixels " + c10::str(pixels.sizes()) + " do not tile into patches of " +
                                std::to_string(patch_size));
  const int64_t b = pixels.size(0), c = pixels.size(1), gh = pixels.size(2) / patch_size,
                gw = pixels.size(3) / patch_size;
  // [B, C, gh, p, gw, q] -> [B, gh, gw, p, q, C]
  return pixels.reshape({b, c, gh, patch_size, gw, patch_size})
      .permute({0, 2, 4, 3, 5, 1})
      .reshape({b, gh * gw, patch_size * patch_size * c});
}

torch::Tensor normalized_patch_targets(const torch::Tensor& patches, double eps) {
  torch::Tensor mean = patches.mean(-1, /*keepdim=*/true);
  torch::Tensor var = patches.var(-1, /*unbiased=*/true, /*keepdim=*/true);
  return (patches - mean) / (var + eps).sqrt();
}

}  // namespace nepa
