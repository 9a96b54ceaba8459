#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "nepa/model/vit_nepa.h"
#include "nepa/train/optim.h"
#include "nepa/train/schedule.h"
#include "test_util.h"

namespace nepa {
namespace {

TEST(Schedule, WarmupThenCosineMatchesTheFormula) {
  const double peak = 1e-3, min_lr = 1e-5;
  WarmupCosineSchedule s(peak, min_lr, /*warmup=*/10, /*total=*/110);
  EXPECT_DOUBLE_EQ(s.lr(0, 0), 0.0);  // transformers' schedule: the first update is at lr 0
  EXPECT_DOUBLE_EQ(s.lr(0, 5), peak * 5 / 10);
  EXPECT_DOUBLE_EQ(s.lr(0, 10), peak);
  for (int64_t step : {10, 35, 60, 85, 109}) {
    double progress = (step - 10) / 100.0;
    EXPECT_NEAR(s.lr(3, step), min_lr + 0.5 * (peak - min_lr) * (1 + std::cos(M_PI * progress)), 1e-15) << step;
  }
  EXPECT_NEAR(s.lr(0, 60), (peak + min_lr) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(s.lr(0, 110), min_lr);
  EXPECT_DOUBLE_EQ(s.lr(0, 500), min_lr);  // past the end it stays at the floor
  for (int64_t step = 11; step < 110; ++step) EXPECT_LT(s.lr(0, step), s.lr(0, step - 1));
}

TEST(Schedule, ConstantAfterWarmup) {
  WarmupCosineSchedule s(2e-3, 0.0, 4, 100, /*constant=*/true);
  EXPECT_DOUBLE_EQ(s.lr(0, 2), 1e-3);
  EXPECT_DOUBLE_EQ(s.lr(0, 50), 2e-3);
  EXPECT_DOUBLE_EQ(s.lr(0, 99), 2e-3);
}

TEST(Schedule, FromConfigScalesLrAndRoundsWarmupUp) {
  Config c;
  c.optim.base_lr = 3e-4;
  c.train.total_batch = 4096;
  c.schedule.warmup_fraction = 0.025;
  EXPECT_DOUBLE_EQ(scaled_lr(c.optim, c.train.total_batch), 3e-4 * 16);
  auto s = make_schedule(c, 1001);  // 25.025 warmup steps -> 26
  EXPECT_DOUBLE_EQ(s->lr(0, 13), 4.8e-3 * 13 / 26);
  EXPECT_DOUBLE_EQ(s->lr(0, 26), 4.8e-3);
  c.schedule.max_steps = 0;
  c.schedule.epochs = 3;
  EXPECT_EQ(total_steps(c.schedule, 312), 936);
  c.schedule.max_steps = 50;
  EXPECT_EQ(total_steps(c.schedule, 312), 50);
}

TEST(Optim, WeightDecayOnMatricesKernelsAndClsTokenOnly) {
  ModelConfig mc = test::tiny_model_config();
  mc.use_mask_token = true;
  mc.use_abs_pos_embed = true;
  mc.qk_norm_bias = true;
  ViTNepaModel model(mc);
  auto groups = decay_groups(*model, 0.05);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "decay");
  EXPECT_DOUBLE_EQ(groups[0].weight_decay, 0.05);
  EXPECT_DOUBLE_EQ(groups[1].weight_decay, 0.0);
  std::set<std::string> decay(groups[0].param_names.begin(), groups[0].param_names.end());
  std::set<std::string> no_decay(groups[1].param_names.begin(), groups[1].param_names.end());

  // Spelled out from NEPA-SPEC §3 by name, independent of the dim rule the code uses.
  std::set<std::string> expected_decay = {"embeddings.cls_token", "embeddings.mask_token",
                                          "embeddings.position_embeddings",
                                          "embeddings.patch_embeddings.projection.weight"};
  for (int i = 0; i < mc.num_hidden_layers; ++i) {
    std::string b = "encoder.layer." + std::to_string(i) + ".";
    for (const char* w : {"attention.attention.query.weight", "attention.attention.key.weight",
                          "attention.attention.value.weight", "attention.output.dense.weight",
                          "intermediate.up_proj.weight", "output.dense.weight"})
      expected_decay.insert(b + w);
  }
  EXPECT_EQ(decay, expected_decay);
  for (const auto& n : no_decay) {
    bool bias = n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
    bool norm = n.find("norm") != std::string::npos;
    bool layer_scale = n.find("layer_scale") != std::string::npos;
    EXPECT_TRUE(bias || norm || layer_scale) << n << " is not decayed but is no bias, norm or LayerScale";
  }
  EXPECT_TRUE(no_decay.count("encoder.layer.0.attention.attention.q_norm.weight"));
  EXPECT_TRUE(no_decay.count("encoder.layer.1.layer_scale.lambda1") || no_decay.count("encoder.layer.1.output.layer_scale.lambda1"));
  EXPECT_TRUE(no_decay.count("layernorm.weight"));
  // Every parameter is in exactly one group.
  EXPECT_EQ(decay.size() + no_decay.size(), model->named_parameters().size());
}

TEST(Optim, FrozenParametersAreLeftOut) {
  ViTNepaModel model(test::tiny_model_config());
  model->embeddings->patch_embeddings->projection->weight.set_requires_grad(false);
  auto groups = decay_groups(*model, 0.05);
  for (const auto& g : groups)
    for (const auto& n : g.param_names) EXPECT_NE(n, "embeddings.patch_embeddings.projection.weight");
}

}  // namespace
}  // namespace nepa
