#include "nepa/model/rope.h"

#include <torch/torch.h>

#include <cmath>

namespace nepa {

torch::Tensor rope_2d_coords(int64_t h, int64_t w, const torch::Device& device, std::optional<int64_t> grid) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  // Normalised over the grid: (i + 0.5) / n * 2 - 1; at a G-grid's spacing the same times n / G.
  const double hs = grid ? static_cast<double>(*grid) : static_cast<double>(h);
  const double ws = grid ? static_cast<double>(*grid) : static_cast<double>(w);
  torch::Tensor ys = (torch::arange(0.5, static_cast<double>(h), 1.0, opts) * 2.0 - static_cast<double>(h)) / hs;
  torch::Tensor xs = (torch::arange(0.5, static_cast<double>(w), 1.0, opts) * 2.0 - static_cast<double>(w)) / ws;
  auto mesh = torch::meshgrid({ys, xs}, "ij");
  return torch::stack({mesh[0].reshape(-1), mesh[1].reshape(-1)}, -1);
}

std::pair<torch::Tensor, torch::Tensor> rope_2d_from_coords(const torch::Tensor& coords, int64_t head_dim,
                                                            double theta) {
  auto opts = coords.options().dtype(torch::kFloat32);
  // inv_freq = 1 / theta ** arange(0, 1, 4/d): d/4 frequencies per axis.
  torch::Tensor exponents = torch::arange(0, head_dim / 4, opts) * (4.0 / static_cast<double>(head_dim));
  torch::Tensor inv_freq = 1.0 / torch::pow(theta, exponents);
  torch::Tensor angles = 2.0 * M_PI * coords.to(torch::kFloat32).unsqueeze(-1) * inv_freq.view({1, 1, -1});
  angles = angles.flatten(1, 2).repeat({1, 2});  // [N, d/2] -> tiled twice -> [N, d]
  return {angles.cos(), angles.sin()};
}

std::pair<torch::Tensor, torch::Tensor> rope_2d(int64_t h, int64_t w, int64_t head_dim, double theta,
                                                const torch::Device& device, const RopeAugment* augment,
                                                std::optional<int64_t> grid) {
  torch::Tensor coords = rope_2d_coords(h, w, device, grid);
  if (augment) {
    auto opts = coords.options();
    if (augment->shift) coords = coords + torch::empty({1, 2}, opts).uniform_(-*augment->shift, *augment->shift);
    if (augment->jitter) {
      double m = std::log(*augment->jitter);
      coords = coords * torch::empty({1, 2}, opts).uniform_(-m, m).exp();
    }
    if (augment->rescale) {
      double m = std::log(*augment->rescale);
      coords = coords * torch::empty({1}, opts).uniform_(-m, m).exp();
    }
  }
  return rope_2d_from_coords(coords, head_dim, theta);
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  torch::Tensor xf = x.to(torch::kFloat32);
  int64_t half = xf.size(-1) / 2;
  torch::Tensor rotated = torch::cat({-xf.narrow(-1, half, half), xf.narrow(-1, 0, half)}, -1);
  return xf * cos + rotated * sin;
}

}  // namespace nepa
