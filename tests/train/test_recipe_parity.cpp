// The release's recipe around the model, against fixtures from tests/reference/make_recipe_fixtures.py:
// gradient clipping equal to torch.nn.utils.clip_grad_norm_ on the same tensors, and both layer-wise lr
// schedules equal to the release's schedulers.py (as LambdaLR applies them) at every step of every group.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nepa/io/safetensors.h"
#include "nepa/train/llrd.h"
#include "nepa/train/optim.h"
#include "test_util.h"

namespace nepa {
namespace {

std::map<std::string, torch::Tensor> fixture(const std::string& name) {
  return load_safetensors(std::string(NEPA_FIXTURE_DIR) + "/recipes/" + name);
}

TEST(RecipeParity, ClipGradNormEqualsPyTorch) {
  auto f = fixture("clip.safetensors");
  for (const std::string c : {"clipped", "unclipped"}) {
    SCOPED_TRACE(c);
    std::vector<torch::Tensor> params;
    for (int i = 0; f.count("in." + std::to_string(i)); ++i) {
      const torch::Tensor g = f.at("in." + std::to_string(i));
      params.push_back(torch::zeros_like(g).requires_grad_());
      params.back().mutable_grad() = g.clone();
    }
    params.push_back(torch::zeros({3}).requires_grad_());  // no gradient: skipped, as PyTorch skips it
    const torch::Tensor total = clip_grad_norm(params, f.at(c + ".max_norm").item<double>());
    EXPECT_NEAR(total.item<double>(), f.at(c + ".total").item<double>(), 1e-6 * f.at(c + ".total").item<double>());
    double worst = 0.0;
    for (size_t i = 0; i + 1 < params.size(); ++i)
      worst = std::max(worst, test::max_abs_diff(params[i].grad(), f.at(c + ".out." + std::to_string(i))));
    std::cout << c << ": total norm " << total.item<double>() << ", max |d grad| " << worst << "\n";
    EXPECT_LE(worst, 1e-6);
    EXPECT_FALSE(params.back().grad().defined());
  }
  // The clipped case really clipped: its total norm exceeds the maximum, and the result has the maximum's norm.
  EXPECT_GT(f.at("clipped.total").item<double>(), f.at("clipped.max_norm").item<double>());
}

TEST(RecipeParity, LayerwiseScheduleEqualsTheRelease) {
  auto f = fixture("llrd.safetensors");
  const torch::Tensor scale = f.at("scale"), is_head = f.at("is_head");
  std::vector<LlrdSpec> specs;
  for (int64_t g = 0; g < scale.size(0); ++g) {
    const bool head = is_head[g].item<int64_t>() != 0;
    // The release's scale-0 groups outside blocks (fc_norm) run at the base lr with factor 1: depth -1 here.
    const bool block_or_embed = !head && g < 13;
    specs.push_back({block_or_embed ? static_cast<int>(scale[g].item<int64_t>()) : -1, head, ""});
  }
  for (const std::string name : {"warmup_b", "warmup_ties", "warmup_none", "cosine_fixed", "cosine_ramp"}) {
    SCOPED_TRACE(name);
    const torch::Tensor spec = f.at(name + ".spec"), expected = f.at(name + ".lr");
    const int64_t total = spec[0].item<int64_t>();
    Config c;
    c.schedule.name = spec[4].item<double>() > 0 ? "llrd_cosine" : "llrd_cosine_warmup";
    c.schedule.warmup_fraction = spec[1].item<double>();
    c.optim.base_lr = f.at("base_lr").item<double>();
    c.optim.lr_batch_reference = c.train.total_batch = 256;
    c.finetune.head_lr = f.at("head_lr").item<double>();
    c.finetune.llrd = spec[2].item<double>();
    if (spec[3].item<double>() >= 0) c.finetune.llrd_end = spec[3].item<double>();
    auto s = make_llrd_schedule(c, specs, total);
    double worst = 0.0;
    for (int g = 0; g < static_cast<int>(specs.size()); ++g)
      for (int64_t step = 0; step < total; ++step) {
        const double want = expected[g][step].item<double>();
        const double d = std::abs(s->lr(g, step) - want);
        worst = std::max(worst, d);
        ASSERT_LE(d, 1e-12 + 1e-12 * want) << "group " << g << " step " << step;
      }
    std::cout << name << ": " << specs.size() << " groups x " << total << " steps, max |d lr| " << worst << "\n";
  }
}

}  // namespace
}  // namespace nepa
