// MAE (issue 18): the random keep (counts, distinctness, the generator), the loss only on hidden patches, the
// decoder's placement of visible tokens and mask tokens, config errors both ways, and the objective as a plug-in
// (its decoder carried, grouped and checkpointed by the generic task; the trunk exported alone; a run resumes
// exactly).
#include "nepa/objective/mae.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "nepa/train/pretrain_task.h"
#include "test_util.h"
#include "train/train_test_util.h"

using namespace nepa;
namespace fs = std::filesystem;

namespace {

Config mae_config() {
  Config c;
  c.model = test::tiny_model_config();  // 16 x 16 pixels, 4 x 4 patches: 16 tokens + CLS
  c.model.use_sincos_pos_embed = true;
  c.model.use_rope = false;
  c.model.is_causal = false;
  c.model.qk_norm = false;
  c.model.layerscale_value = std::nullopt;
  c.data.image_size = 16;
  c.objective.name = "mae";
  c.objective.mae.decoder_depth = 2;
  c.objective.mae.decoder_width = 16;
  c.objective.mae.decoder_heads = 2;
  validate(c);
  return c;
}

}  // namespace

TEST(MaeMask, KeepsIntOfTheVisibleShareDistinctPatchesFromTheGlobalGenerator) {
  torch::manual_seed(3);
  torch::Tensor a = mae_random_keep(5, 49, 0.75);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{5, 12}));  // int(49 x 0.25) = 12, as the release's len_keep
  EXPECT_EQ(a.scalar_type(), torch::kInt64);
  for (int64_t b = 0; b < 5; ++b) {
    std::set<int64_t> ids;
    for (int64_t j = 0; j < 12; ++j) ids.insert(a[b][j].item<int64_t>());
    EXPECT_EQ(ids.size(), 12u);
    EXPECT_GE(*ids.begin(), 0);
    EXPECT_LT(*ids.rbegin(), 49);
  }
  EXPECT_FALSE(torch::equal(a[0], a[1]));  // each image its own mask
  torch::manual_seed(3);
  EXPECT_TRUE(torch::equal(a, mae_random_keep(5, 49, 0.75)));
  EXPECT_THROW(mae_random_keep(2, 16, 0.99), std::invalid_argument);  // keeps none
}

TEST(MaeLoss, OnlyTheHiddenPatchesCountAndTheVisibleTokensLandAtTheirPositions) {
  Config c = mae_config();
  torch::manual_seed(1);
  ViTNepaModel trunk(c.model);
  MaeDecoder decoder(c.objective.mae, c.model);
  torch::Tensor pixels = torch::randn({2, 3, 16, 16});
  torch::Tensor keep = torch::tensor({{5, 0, 9, 14}, {3, 2, 1, 0}}, torch::kInt64);
  MaeLoss out = mae_forward_loss(trunk, decoder, pixels, keep, c.objective.mae);
  EXPECT_EQ(out.pred.sizes(), (std::vector<int64_t>{2, 16, 48}));
  EXPECT_EQ(out.latent.sizes(), (std::vector<int64_t>{2, 5, 32}));  // CLS + 4 visible
  // d loss / d pred is zero on the visible patches, non-zero on every hidden one.
  torch::Tensor g = torch::autograd::grad({out.loss}, {out.pred}, {}, /*retain_graph=*/true)[0];
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t j = 0; j < 16; ++j) {
      bool visible = false;
      for (int64_t i = 0; i < 4; ++i) visible |= keep[b][i].item<int64_t>() == j;
      const double norm = g[b][j].abs().sum().item<double>();
      if (visible) EXPECT_EQ(norm, 0.0) << b << " " << j;
      else EXPECT_GT(norm, 0.0) << b << " " << j;
    }
  // Without decoder blocks each output row sees only its own token: a visible patch's row is a function of the
  // encoder token that came from it, and a hidden patch's row of the mask token and its position alone.
  MaeConfig flat = c.objective.mae;
  flat.decoder_depth = 0;
  torch::manual_seed(2);
  MaeDecoder shallow(flat, c.model);
  torch::Tensor latent = torch::randn({1, 5, 32});
  torch::Tensor ids = torch::tensor({{7, 1, 12, 4}}, torch::kInt64);
  torch::Tensor pred = shallow->forward(latent, ids, 4, 4);
  torch::Tensor moved = latent.clone();
  moved[0][3] += 1.0;  // the encoder token of patch 12
  torch::Tensor pred2 = shallow->forward(moved, ids, 4, 4);
  for (int64_t j = 0; j < 16; ++j) {
    const double d = (pred2[0][j] - pred[0][j]).abs().max().item<double>();
    if (j == 12) EXPECT_GT(d, 0.0);
    else EXPECT_EQ(d, 0.0) << j;
  }
}

TEST(MaeConfigKeys, MaeKeysElsewhereAndOtherKeysInAnMaeRunAreErrorsNamingTheKey) {
  auto msg = test::error_of<ConfigError>(
      [] { load_config_from_string("objective:\n  mae:\n    decoder_width: 64\n", "nepa.yaml"); });
  EXPECT_NE(msg.find("nepa.yaml: objective.mae.decoder_width: an MAE key, but objective.name is nepa"),
            std::string::npos)
      << msg;
  const std::string mae = "model:\n  image_size: 16\n  patch_size: 4\n  is_causal: false\n"
                          "data:\n  image_size: 16\nobjective:\n  name: mae\n";
  EXPECT_NO_THROW(load_config_from_string(mae, "mae.yaml"));
  msg = test::error_of<ConfigError>([&] { load_config_from_string(mae + "  stop_grad: false\n", "mae.yaml"); });
  EXPECT_NE(msg.find("mae.yaml: objective.stop_grad: a NEPA key that objective mae does not use"), std::string::npos)
      << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(mae + "  aim:\n    head_blocks: 1\n", "mae.yaml"); });
  EXPECT_NE(msg.find("objective.aim.head_blocks: an AIM key, but objective.name is mae"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(mae, "mae.yaml", {"model.is_causal=true"}); });
  EXPECT_NE(msg.find("model.is_causal: MAE's encoder is bidirectional"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(mae, "mae.yaml", {"objective.mae.mask_ratio=0.97"}); });
  EXPECT_NE(msg.find("objective.mae.mask_ratio: keeps int(16 x (1 - ratio)) = 0 patches"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(mae, "mae.yaml", {"objective.mae.decoder_heads=3"}); });
  EXPECT_NE(msg.find("objective.mae.decoder_heads: must divide decoder_width 512"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(mae, "mae.yaml", {"objective.name=mea"}); });
  EXPECT_NE(msg.find("unknown objective"), std::string::npos) << msg;
  // Every objective's keys are in the dump with their defaults, and it reloads as it was.
  LoadedConfig loaded = load_config_from_string(mae, "mae.yaml", {"objective.mae.decoder_depth=3"});
  const std::string dumped = to_yaml(loaded.config);
  EXPECT_NE(dumped.find("  mae:  #"), std::string::npos);
  LoadedConfig again = load_config_from_string(dumped, "dumped.yaml");
  EXPECT_EQ(to_yaml(again.config), dumped);
  EXPECT_EQ(again.config.objective.mae.decoder_depth, 3);
}

TEST(MaeObjective, DecoderIsCarriedGroupedAndCheckpointedAndTheTrunkExportedAlone) {
  Config c = mae_config();
  torch::manual_seed(0);
  ViTNepaModel trunk(c.model);
  PretrainTask task(c, trunk, nullptr, nullptr, torch::kCPU);
  auto names = task.module().named_parameters();
  EXPECT_TRUE(names.contains("mae_decoder.decoder_embed.weight"));
  EXPECT_TRUE(names.contains("mae_decoder.mask_token"));
  EXPECT_TRUE(names.contains("mae_decoder.decoder_blocks.1.attention.attention.query.bias"));
  EXPECT_TRUE(names.contains("mae_decoder.decoder_pred.weight"));
  size_t decoder_params = 0, grouped = 0;
  for (const auto& p : names) decoder_params += p.key().rfind("mae_decoder.", 0) == 0;
  for (const auto& g : task.param_groups())
    for (const auto& n : g.param_names) grouped += n.rfind("mae_decoder.", 0) == 0;
  EXPECT_EQ(grouped, decoder_params);

  torch::manual_seed(5);
  Batch batch;
  batch.images = torch::randn({4, 3, 16, 16});
  StepOutput out = task.forward(batch);
  out.loss.backward();
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  auto params = task.module().named_parameters();
  EXPECT_GT(params["mae_decoder.mask_token"].grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(params["embeddings.cls_token"].grad().abs().sum().item<double>(), 0.0);

  test::TempDir dir;
  task.export_final(dir.file("final"));
  auto tensors = load_safetensors((fs::path(dir.file("final")) / "model.safetensors").string());
  for (const auto& [k, v] : tensors) EXPECT_EQ(k.find("decoder"), std::string::npos) << k;
  EXPECT_EQ(tensors.count("vit_nepa.embeddings.cls_token"), 1u);
  LoadedModel back = load_hf_model(dir.file("final"), "", /*strict=*/true);
  EXPECT_TRUE(back.config.model.use_sincos_pos_embed);
  EXPECT_FALSE(back.config.model.is_causal);
}

// An MAE run stopped by SIGTERM after step 3 and resumed in a fresh task: the masks (drawn per image on the CPU
// generator), drop path and the crops replay, so every per-step loss, the encoder, the decoder and the exports
// equal an uninterrupted run's.
TEST(MaeObjective, ARunResumesExactly) {
  test::TempDir dir;
  Config c = test::tiny_train_config(dir.file("ref"));
  const Config m = mae_config();
  c.model = m.model;
  c.model.drop_path_prob = 0.1;
  c.objective = m.objective;
  c.schedule.max_steps = 10;
  validate(c);
  const std::string checkpoint = test::expect_resumes_exactly(c, dir.file("stopped"), "mae_decoder.decoder_pred.weight");
  auto ckpt = load_safetensors(checkpoint);
  EXPECT_TRUE(ckpt.count("model.mae_decoder.mask_token")) << "no decoder in " << checkpoint;
}
