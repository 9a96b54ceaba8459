// AIM (issue 17 §2): the prefix-causal mask, the loss on the predicted patches only, the normalised targets by
// hand, the sin-cos table, the trunk under the mask, the config errors both ways, and the objective as a plug-in
// (its head carried, grouped and checkpointed by the generic task; the trunk exported alone).
#include "nepa/objective/aim.h"

#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <filesystem>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "nepa/train/optim.h"
#include "nepa/train/pretrain_task.h"
#include "test_util.h"
#include "train/train_test_util.h"

using namespace nepa;
namespace fs = std::filesystem;

namespace {

Config aim_config() {
  Config c;
  c.model = test::tiny_model_config();  // 16 x 16 pixels, 4 x 4 patches: 16 tokens
  c.model.use_cls_token = false;
  c.model.use_sincos_pos_embed = true;
  c.model.use_rope = false;
  c.model.is_causal = false;
  c.model.layerscale_value = std::nullopt;  // as AIM's trunk (and so attention visibly shapes every token)
  c.model.qk_norm = false;
  c.data.image_size = 16;
  c.objective.name = "aim";
  c.objective.aim.head_blocks = 2;
  c.objective.aim.head_width = 24;
  validate(c);
  return c;
}

}  // namespace

TEST(AimMask, ShapeAndPrefixCausalSemantics) {
  const int64_t t = 6;
  torch::Tensor s = torch::tensor({0, 1, 3, 5}, torch::kInt64);
  torch::Tensor m = prefix_causal_mask(s, t);
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{4, t, t}));
  ASSERT_EQ(m.scalar_type(), torch::kBool);
  for (int64_t b = 0; b < 4; ++b) {
    const int64_t sb = s[b].item<int64_t>();
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < t; ++j) {
        const bool seen = m[b][i][j].item<bool>();
        if (i < sb)  // a prefix token: the whole prefix, nothing after it
          EXPECT_EQ(seen, j < sb) << b << " " << i << " " << j;
        else  // after the prefix: causal (which includes the prefix)
          EXPECT_EQ(seen, j <= i) << b << " " << i << " " << j;
      }
  }
}

TEST(AimMask, TrunkUnderTheMaskSeesThePrefixBidirectionallyAndTheRestCausally) {
  Config c = aim_config();
  torch::manual_seed(2);
  ViTNepaModel trunk(c.model);
  trunk->eval();
  torch::Tensor x = torch::randn({1, 3, 16, 16});
  const int64_t s = 5;  // tokens 0..4 are the prefix
  ForwardOptions o;
  o.attn_mask = prefix_causal_mask(torch::tensor({s}, torch::kInt64), 16);
  torch::Tensor h = trunk->forward(x, o).last_hidden_state;
  // Perturb patch 3 (row 0, column 3: pixels [0:4, 12:16]), inside the prefix: token 0 sees it (bidirectional
  // prefix), and so do all later tokens.
  torch::Tensor y = x.clone();
  y.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(0, 4), torch::indexing::Slice(12, 16)}, 0.0);
  torch::Tensor hy = trunk->forward(y, o).last_hidden_state;
  EXPECT_GT((hy[0][0] - h[0][0]).abs().max().item<double>(), 1e-6);
  // Perturb patch 9 (row 2, column 1), after the prefix: tokens 0..8 do not change, 9.. do.
  torch::Tensor z = x.clone();
  z.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(8, 12), torch::indexing::Slice(4, 8)}, 0.0);
  torch::Tensor hz = trunk->forward(z, o).last_hidden_state;
  EXPECT_LT((hz[0].narrow(0, 0, 9) - h[0].narrow(0, 0, 9)).abs().max().item<double>(), 1e-6);
  EXPECT_GT((hz[0][9] - h[0][9]).abs().max().item<double>(), 1e-6);
  // The eager path (attention probabilities) applies the same mask.
  o.output_attentions = true;
  NepaOutputs eager = trunk->forward(x, o);
  EXPECT_LT((eager.last_hidden_state - h).abs().max().item<double>(), 1e-5);
  torch::Tensor p = eager.attentions[0][0][0];  // head 0: [T, T]
  EXPECT_GT(p[0][4].item<double>(), 0.0);
  EXPECT_EQ(p[0][5].item<double>(), 0.0);
  EXPECT_EQ(p[7][8].item<double>(), 0.0);
  // Without the mask the trunk is the bidirectional one of its config (downstream, the k-NN, the export).
  EXPECT_GT((trunk->forward(x).last_hidden_state - h).abs().max().item<double>(), 1e-6);
}

TEST(AimLoss, OnlyThePatchesAfterThePrefixCount) {
  torch::manual_seed(4);
  const int64_t b = 3, n = 8, px = 5;
  torch::Tensor s = torch::tensor({1, 4, 7}, torch::kInt64);
  torch::Tensor pred = torch::randn({b, n - 1, px}, torch::requires_grad());
  torch::Tensor target = torch::randn({b, n - 1, px});
  torch::Tensor loss = aim_patch_loss(pred, target, s);
  // By hand: rows t with t + 1 >= s, mean over pixels, then over the counted rows.
  double sum = 0;
  int counted = 0;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t t = 0; t < n - 1; ++t)
      if (t + 1 >= s[i].item<int64_t>()) {
        sum += (pred[i][t] - target[i][t]).pow(2).mean().item<double>();
        ++counted;
      }
  EXPECT_NEAR(loss.item<double>(), sum / counted, 1e-6);
  // Perturbing the prediction of a prefix patch (image 1, row 2 predicts patch 3 < s = 4) changes nothing...
  torch::Tensor q = pred.detach().clone();
  q[1][2] += 10.0;
  EXPECT_EQ(aim_patch_loss(q, target, s).item<double>(), loss.item<double>());
  // ... nor does the prediction beyond the prefix of the last image except its only predicted patch (row 6).
  q[2][5] += 10.0;
  EXPECT_EQ(aim_patch_loss(q, target, s).item<double>(), loss.item<double>());
  q[2][6] += 10.0;
  EXPECT_NE(aim_patch_loss(q, target, s).item<double>(), loss.item<double>());
  // And the gradient vanishes exactly on the prefix rows.
  loss.backward();
  EXPECT_EQ(pred.grad()[1].narrow(0, 0, 3).abs().max().item<double>(), 0.0);
  EXPECT_GT(pred.grad()[1][3].abs().max().item<double>(), 0.0);
  EXPECT_EQ(pred.grad()[2].narrow(0, 0, 6).abs().max().item<double>(), 0.0);
}

TEST(AimTargets, PatchOrderAndPerPatchNormalisationByHand) {
  // 2 channels, 4 x 2 pixels, patches of 2: two patches (top, bottom), each 2 * 2 * 2 = 8 values, channel fastest.
  torch::Tensor px = torch::arange(16, torch::kFloat64).reshape({1, 2, 4, 2});  // value = c*8 + y*2 + x
  torch::Tensor p = patchify(px, 2);
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{1, 2, 8}));
  // Patch 1 (rows 2..3), element (y, x, c) at (y * 2 + x) * 2 + c: y = 1, x = 0, c = 1 -> 8 + 3 * 2 + 0 = 14.
  EXPECT_EQ(p[0][1][(1 * 2 + 0) * 2 + 1].item<double>(), 14.0);
  EXPECT_EQ(p[0][0][0].item<double>(), 0.0);
  EXPECT_EQ(p[0][0][1].item<double>(), 8.0);

  torch::Tensor one = torch::tensor({1.0, 2.0, 3.0, 4.0}, torch::kFloat64).reshape({1, 1, 4});
  torch::Tensor t = normalized_patch_targets(one, 1e-6);
  // mean 2.5; unbiased var = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5 / 3.
  const double sd = std::sqrt(5.0 / 3.0 + 1e-6);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(t[0][0][i].item<double>(), (i + 1 - 2.5) / sd, 1e-12);
  // A constant patch becomes zeros (the eps keeps it finite).
  EXPECT_EQ(normalized_patch_targets(torch::full({1, 1, 4}, 3.0), 1e-6).abs().max().item<double>(), 0.0);
}

// The table is made once per grid and kept: a second grid of the same token count (6x4 after 4x6) gets its own
// table, and the first grid's comes back when its images return.
TEST(AimTrunk, SinCosTableFollowsTheGrid) {
  Config c = aim_config();
  ViTNepaModel trunk(c.model);
  trunk->eval();
  torch::NoGradGuard no_grad;
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{16, 24}, {24, 16}, {16, 24}}) {
    const torch::Tensor x = torch::randn({2, c.model.num_channels, h, w});
    const torch::Tensor added = trunk->embeddings->forward(x).embeddings - trunk->embeddings->patch_embeddings->forward(x);
    const torch::Tensor expected =
        sincos_pos_embed_2d(h / 4, w / 4, c.model.hidden_size, torch::TensorOptions()).unsqueeze(0).expand_as(added);
    EXPECT_LE((added - expected).abs().max().item<double>(), 1e-6) << h << "x" << w;
  }
}

TEST(AimTrunk, SinCosTableByHandAndNoClsToken) {
  torch::Tensor e = sincos_pos_embed_2d(2, 3, 8, torch::TensorOptions().dtype(torch::kFloat64));
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{6, 8}));
  // Token 5 = row 1, column 2; w = [1, 10000^(-1/2)] = [1, 0.01].
  const double w[2] = {1.0, 0.01};
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(e[5][i].item<double>(), std::sin(2 * w[i]), 1e-12);
    EXPECT_NEAR(e[5][2 + i].item<double>(), std::cos(2 * w[i]), 1e-12);
    EXPECT_NEAR(e[5][4 + i].item<double>(), std::sin(1 * w[i]), 1e-12);
    EXPECT_NEAR(e[5][6 + i].item<double>(), std::cos(1 * w[i]), 1e-12);
  }
  Config c = aim_config();
  ViTNepaModel trunk(c.model);
  EXPECT_FALSE(trunk->embeddings->cls_token.defined());
  EXPECT_EQ(state_dict(*trunk).count("embeddings.cls_token"), 0u);
  EXPECT_EQ(trunk->forward(torch::randn({2, 3, 16, 16})).last_hidden_state.size(1), 16);
}

TEST(AimConfigKeys, AimKeysInANepaRunAndNepaKeysInAnAimRunAreErrorsNamingTheKey) {
  auto msg = test::error_of<ConfigError>(
      [] { load_config_from_string("objective:\n  aim:\n    head_blocks: 3\n", "nepa.yaml"); });
  EXPECT_NE(msg.find("nepa.yaml: objective.aim.head_blocks: an AIM key, but objective.name is nepa"), std::string::npos)
      << msg;
  const std::string aim = "model:\n  image_size: 16\n  patch_size: 4\n  use_cls_token: false\n  is_causal: false\n"
                          "data:\n  image_size: 16\nobjective:\n  name: aim\n";
  EXPECT_NO_THROW(load_config_from_string(aim, "aim.yaml"));
  msg = test::error_of<ConfigError>([&] { load_config_from_string(aim + "  shift: false\n", "aim.yaml"); });
  EXPECT_NE(msg.find("aim.yaml: objective.shift: a NEPA key that objective aim does not use"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(aim, "aim.yaml", {"objective.mask_ratio=0.5"}); });
  EXPECT_NE(msg.find("objective.mask_ratio: a NEPA key"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(aim + "  aim:\n    head_depth: 2\n", "aim.yaml"); });
  EXPECT_NE(msg.find("aim.yaml: objective.aim.head_depth: unknown key"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(aim, "aim.yaml", {"model.use_cls_token=true"}); });
  EXPECT_NE(msg.find("model.use_cls_token: AIM's trunk has no CLS token"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(aim, "aim.yaml", {"objective.aim.prefix_max=16"}); });
  EXPECT_NE(msg.find("objective.aim.prefix_max: must be in [prefix_min, num_patches - 1 = 15]"), std::string::npos)
      << msg;
  // The effective config lists every key of both objectives with its default, and reloads as it was.
  LoadedConfig loaded = load_config_from_string(aim, "aim.yaml", {"objective.aim.prefix_max=9"});
  const std::string dumped = to_yaml(loaded.config);
  EXPECT_NE(dumped.find("  aim:  #"), std::string::npos);
  LoadedConfig again = load_config_from_string(dumped, "dumped.yaml");
  EXPECT_EQ(to_yaml(again.config), dumped);
  EXPECT_EQ(again.config.objective.aim.prefix_max.value_or(-1), 9);
  // A NEPA run's dump (aim defaults restated) reloads too.
  const std::string nepa = to_yaml(Config{});
  EXPECT_NO_THROW(load_config_from_string(nepa, "nepa_dump.yaml"));
}

TEST(AimObjective, HeadIsCarriedGroupedAndCheckpointedAndTheTrunkExportedAlone) {
  Config c = aim_config();
  torch::manual_seed(0);
  ViTNepaModel trunk(c.model);
  PretrainTask task(c, trunk, nullptr, nullptr, torch::kCPU);
  auto names = task.module().named_parameters();
  EXPECT_TRUE(names.contains("aim_head.proj.weight"));
  EXPECT_TRUE(names.contains("aim_head.blocks.1.fc2.weight"));
  EXPECT_TRUE(names.contains("embeddings.patch_embeddings.projection.weight"));
  EXPECT_FALSE(names.contains("aim_head.proj.bias"));  // no biases in the head
  size_t grouped = 0;
  for (const auto& g : task.param_groups())
    for (const auto& n : g.param_names) grouped += n.rfind("aim_head.", 0) == 0;
  EXPECT_EQ(grouped, 1u + 2u * 4u + 2u + 1u);  // proj, 2 x (norm weight and bias, fc1, fc2), norm, out

  torch::manual_seed(5);
  Batch batch;
  batch.images = torch::randn({4, 3, 16, 16});
  StepOutput out = task.forward(batch);
  out.loss.backward();
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  auto head_params = task.module().named_parameters();
  EXPECT_GT(head_params["aim_head.out.weight"].grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(head_params["encoder.layer.0.attention.attention.query.weight"].grad().abs().sum().item<double>(), 0.0);

  test::TempDir dir;
  task.export_final(dir.file("final"));
  auto tensors = load_safetensors((fs::path(dir.file("final")) / "model.safetensors").string());
  for (const auto& [k, v] : tensors) EXPECT_EQ(k.find("aim_head"), std::string::npos) << k;
  EXPECT_EQ(tensors.count("vit_nepa.embeddings.cls_token"), 0u);
  LoadedModel back = load_hf_model(dir.file("final"), "", /*strict=*/true);
  EXPECT_FALSE(back.config.model.use_cls_token);
  EXPECT_TRUE(back.config.model.use_sincos_pos_embed);
  EXPECT_FALSE(back.config.model.is_causal);
}

// An AIM run stopped by SIGTERM after step 3 and resumed in a fresh task: the prefix lengths (drawn per image on
// the CPU generator), drop-path and the crops replay, so every per-step loss, the trunk, the pixel head and the
// EMA of both equal an uninterrupted run's exactly.
TEST(AimObjective, ARunResumesExactly) {
  test::TempDir dir;
  Config c = test::tiny_train_config(dir.file("ref"));
  const Config a = aim_config();
  c.model = a.model;
  c.model.drop_path_prob = 0.1;
  c.objective = a.objective;
  c.schedule.max_steps = 10;  // 64 images / 8 = 8 steps per epoch: the resumed part crosses an epoch
  validate(c);
  const std::string checkpoint = test::expect_resumes_exactly(c, dir.file("stopped"), "aim_head.out.weight");
  // The head's EMA is in the checkpoint (the export carries the trunk only).
  auto ckpt = load_safetensors(checkpoint);
  EXPECT_TRUE(ckpt.count("extra.ema.aim_head.out.weight")) << "no EMA of the head in " << checkpoint;
}
