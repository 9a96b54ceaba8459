// The release's recipe around the model, against fixtures from tests/reference/make_recipe_fixtures.py:
// gradient clipping equal to torch.nn.utils.clip_grad_norm_ on the same tensors, AdamW equal to
// torch.optim.AdamW(fused=True), and both layer-wise lr
// schedules equal to the release's schedulers.py (as LambdaLR applies them) at every step of every group; I-JEPA's
// lr and weight-decay schedules (schedule.name ijepa_cosine, optim.final_weight_decay) at every step.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nepa/io/safetensors.h"
#include "nepa/train/llrd.h"
#include "nepa/train/optim.h"
#include "nepa/train/schedule.h"
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

// The optimizer: torch.optim.AdamW(fused=True) on the same parameters, gradients and per-group lrs, step by step.
TEST(RecipeParity, AdamWEqualsPyTorchFused) {
  auto f = fixture("adamw.safetensors");
  const std::vector<std::vector<int>> members = {{0, 2}, {1, 3}};  // ADAMW_GROUPS of the fixture script
  std::vector<torch::Tensor> params;
  for (int i = 0; f.count("init." + std::to_string(i)); ++i)
    params.push_back(f.at("init." + std::to_string(i)).clone().requires_grad_());
  ASSERT_EQ(params.size(), 4u);
  std::vector<ParamGroup> groups = {{"decay", {"p0", "p2"}, {params[0], params[2]}, 0.05, 1.0},
                                    {"no_decay", {"p1", "p3"}, {params[1], params[3]}, 0.0, 1.0}};
  OptimConfig oc;
  oc.betas = {0.9, 0.95};
  oc.eps = 1e-8;
  AdamW opt(groups, oc);
  double worst = 0.0;
  for (int step = 0; f.count(fmt::format("lr.{}.0", step)); ++step) {
    for (size_t g = 0; g < 2; ++g) opt.set_lr(g, f.at(fmt::format("lr.{}.{}", step, g)).item<double>());
    for (size_t i = 0; i < params.size(); ++i) {
      const auto it = f.find(fmt::format("grad.{}.{}", step, i));
      if (it == f.end()) params[i].mutable_grad().reset();  // skipped this step, as PyTorch skips grad None
      else params[i].mutable_grad() = it->second.clone();
    }
    opt.step();
    for (size_t i = 0; i < params.size(); ++i) {
      const torch::Tensor expected = f.at(fmt::format("out.{}.{}", step, i));
      // Relative to the parameter's scale: the kernels are the same, so only fp32 rounding may differ.
      const double d = test::max_abs_diff(params[i], expected) / expected.abs().max().item<double>();
      worst = std::max(worst, d);
      EXPECT_LE(d, 1e-6) << "step " << step << " param " << i;
    }
    // The weights really moved: a test that passes on a no-op optimizer would be worthless.
    EXPECT_GT(test::max_abs_diff(params[0], f.at("init.0")), 1e-4);
  }
  for (size_t g = 0; g < 2; ++g)
    for (size_t k = 0; k < 2; ++k) {
      const int i = members[g][k];
      const AdamW::ParamState* st = opt.state(g, k);
      ASSERT_NE(st, nullptr);
      EXPECT_EQ(static_cast<double>(st->steps), f.at("steps." + std::to_string(i)).item<double>()) << i;
      EXPECT_EQ(st->step.item<double>(), f.at("steps." + std::to_string(i)).item<double>()) << i;
      EXPECT_LE(test::max_abs_diff(st->exp_avg, f.at("exp_avg." + std::to_string(i))), 1e-7) << i;
      EXPECT_LE(test::max_abs_diff(st->exp_avg_sq, f.at("exp_avg_sq." + std::to_string(i))), 1e-9) << i;
    }
  std::cout << "AdamW vs torch.optim.AdamW(fused=True): max relative |d param| " << worst << "\n";
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

TEST(RecipeParity, IjepaScheduleEqualsTheRelease) {
  auto f = fixture("ijepa_sched.safetensors");
  for (const std::string name : {"vith14", "short_warmup"}) {
    SCOPED_TRACE(name);
    const torch::Tensor spec = f.at(name + ".spec"), lr = f.at(name + ".lr"), wd = f.at(name + ".wd");
    const auto total = static_cast<int64_t>(spec[0].item<double>());
    Config c;
    c.schedule.name = "ijepa_cosine";
    c.schedule.warmup_fraction = spec[1].item<double>() / static_cast<double>(total);
    c.schedule.warmup_start_lr = spec[2].item<double>();
    c.optim.base_lr = spec[3].item<double>();
    c.optim.lr_batch_reference = c.train.total_batch = 256;  // the release's lr is absolute
    c.schedule.min_lr = spec[4].item<double>();
    c.optim.weight_decay = spec[5].item<double>();
    c.optim.final_weight_decay = spec[6].item<double>();
    auto s = make_schedule(c, total);
    double worst_lr = 0.0, worst_wd = 0.0;
    for (int64_t step = 0; step < total; ++step) {
      const double d_lr = std::abs(s->lr(0, step) - lr[step].item<double>());
      const double d_wd = std::abs(weight_decay_at(c.optim, step, total) - wd[step].item<double>());
      worst_lr = std::max(worst_lr, d_lr);
      worst_wd = std::max(worst_wd, d_wd);
      ASSERT_LE(d_lr, 1e-15) << "lr at step " << step;
      ASSERT_LE(d_wd, 1e-15) << "wd at step " << step;
    }
    std::cout << name << ": " << total << " steps, max |d lr| " << worst_lr << ", max |d wd| " << worst_wd << "\n";
  }
}

}  // namespace
}  // namespace nepa
