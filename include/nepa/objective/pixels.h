// Pixel targets shared by the objectives that predict pixels (AIM, MAE).
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace nepa {

// The pixels of each patch in raster order, [B, C, H, W] -> [B, N, p * p * C] with the channel fastest (MAE's
// patchify order, models_mae.py: 'nchpwq->nhwpqc').
torch::Tensor patchify(const torch::Tensor& pixels, int64_t patch_size);

// MAE's norm_pix_loss target: each patch minus its mean, over sqrt(unbiased variance + eps).
torch::Tensor normalized_patch_targets(const torch::Tensor& patches, double eps);

}  // namespace nepa
