// 2-D rotary position embedding of NEPA-SPEC §1 (the DINOv3-style axial RoPE the release uses).
#pragma once

#include <torch/types.h>

#include <optional>

namespace nepa {

// Training-time coordinate augmentations; each is off when unset. Applied in the order shift, jitter, rescale.
struct RopeAugment {
  std::optional<double> shift;    // add one U(-s, s) pair (dy, dx)
  std::optional<double> jitter;   // multiply y and x by separate factors exp(U(-ln j, ln j))
  std::optional<double> rescale;  // multiply all coordinates by one factor exp(U(-ln r, ln r))
};

// Patch-centre coordinates of an h x w grid, shape [h*w, 2] as (y, x), row-major, float32: in [-1, 1] over the
// grid (the release's arithmetic), or, with `grid` G, at the spacing of a G x G grid (spanning +-h/G, +-w/G), so
// that a backbone pretrained on G x G patches sees the same neighbour distances on a larger image.
torch::Tensor rope_2d_coords(int64_t h, int64_t w, const torch::Device& device,
                             std::optional<int64_t> grid = std::nullopt);

// cos and sin tables [h*w, head_dim] in float32. With `augment`, draws the random factors once (shared by
// the whole batch) from the global generator.
std::pair<torch::Tensor, torch::Tensor> rope_2d(int64_t h, int64_t w, int64_t head_dim, double theta,
                                                const torch::Device& device, const RopeAugment* augment = nullptr,
                                                std::optional<int64_t> grid = std::nullopt);

// Same from explicit coordinates [N, 2] (tests check relative-offset invariance with it).
std::pair<torch::Tensor, torch::Tensor> rope_2d_from_coords(const torch::Tensor& coords, int64_t head_dim, double theta);

// x' = x*cos + rotate_half(x)*sin over the last dim, computed in float32; x is [..., N, head_dim].
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace nepa
