#include "nepa/data/mixup.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace nepa {

namespace {

double normal(SampleRng& rng) {
  // Box-Muller; 1 - u keeps the logarithm finite.
  const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double sample_gamma(double shape, SampleRng& rng) {
  if (shape < 1.0) {
    // Gamma(a) = Gamma(a + 1) * U^(1/a).
    const double u = 1.0 - rng.uniform();
    return sample_gamma(shape + 1.0, rng) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x, v;
    do {
      x = normal(rng);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = 1.0 - rng.uniform();
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
  }
}

}  // namespace

double sample_beta(double alpha, SampleRng& rng) {
  if (alpha <= 0) throw std::invalid_argument("sample_beta: alpha must be positive");
  const double a = sample_gamma(alpha, rng), b = sample_gamma(alpha, rng);
  return a / (a + b);
}

MixParams cutmix_box(int height, int width, double lambda, SampleRng& rng) {
  const double ratio = std::sqrt(1.0 - lambda);
  const int cut_h = static_cast<int>(height * ratio), cut_w = static_cast<int>(width * ratio);
  // np.random.randint(0, H): the centre may be any pixel row / column.
  const int cy = static_cast<int>(rng.randint(0, height - 1)), cx = static_cast<int>(rng.randint(0, width - 1));
  MixParams m;
  m.mixed = true;
  m.cutmix = true;
  m.y0 = std::clamp(cy - cut_h / 2, 0, height);
  m.y1 = std::clamp(cy + cut_h / 2, 0, height);
  m.x0 = std::clamp(cx - cut_w / 2, 0, width);
  m.x1 = std::clamp(cx + cut_w / 2, 0, width);
  m.lambda = 1.0 - static_cast<double>((m.y1 - m.y0) * (m.x1 - m.x0)) / static_cast<double>(height * width);
  return m;
}

MixParams draw_mix(const FinetuneConfig& c, int height, int width, SampleRng& rng) {
  MixParams none;
  const bool mixup = c.mixup_alpha > 0, cutmix = c.cutmix_alpha > 0;
  if (!mixup && !cutmix) return none;
  if (rng.uniform() >= c.mixup_prob) return none;
  const bool use_cutmix = mixup && cutmix ? rng.uniform() < c.mixup_switch_prob : cutmix;
  const double lambda = sample_beta(use_cutmix ? c.cutmix_alpha : c.mixup_alpha, rng);
  if (use_cutmix) return cutmix_box(height, width, lambda, rng);
  MixParams m;
  m.mixed = true;
  m.lambda = lambda;
  return m;
}

torch::Tensor smooth_one_hot(const torch::Tensor& labels, int64_t num_classes, double smoothing) {
  const double off = smoothing / static_cast<double>(num_classes), on = 1.0 - smoothing + off;
  torch::Tensor t = torch::full({labels.size(0), num_classes}, off, torch::dtype(torch::kFloat32).device(labels.device()));
  t.scatter_(1, labels.view({-1, 1}).to(torch::kInt64), on);
  return t;
}

torch::Tensor apply_mix(torch::Tensor& images, const torch::Tensor& labels, int64_t num_classes, double smoothing,
                        const MixParams& mix) {
  torch::Tensor targets = smooth_one_hot(labels, num_classes, smoothing);
  if (!mix.mixed) return targets;
  if (images.size(0) % 2 != 0)
    throw std::invalid_argument("mixup/cutmix needs an even batch, got " + std::to_string(images.size(0)) +
                                " (train.micro_batch)");
  torch::NoGradGuard no_grad;
  const torch::Tensor flipped = images.flip(0);
  if (mix.cutmix) {
    using torch::indexing::Slice;
    const auto rows = Slice(mix.y0, mix.y1), cols = Slice(mix.x0, mix.x1);
    images.index_put_({Slice(), Slice(), rows, cols}, flipped.index({Slice(), Slice(), rows, cols}));
  } else {
    images.mul_(mix.lambda).add_(flipped, 1.0 - mix.lambda);
  }
  return targets * mix.lambda + targets.flip(0) * (1.0 - mix.lambda);
}

torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets) {
  return (-targets * torch::log_softmax(logits.to(torch::kFloat32), -1)).sum(-1).mean();
}

}  // namespace nepa
