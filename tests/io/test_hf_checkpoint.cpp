#include "nepa/io/hf_checkpoint.h"

#include <gtest/gtest.h>

#include "nepa/io/safetensors.h"
#include "test_util.h"

using namespace nepa;
using nepa::test::TempDir;
namespace fs = std::filesystem;

namespace {
ModelConfig tiny() { return nepa::test::tiny_model_config(); }
}  // namespace

TEST(HfCheckpoint, SaveThenLoadStrictIsExact) {
  TempDir d;
  torch::manual_seed(1);
  ViTNepaModel a(tiny());
  save_hf_model(d.file("m"), a, HfModelConfig{tiny(), {}, {}, {}});
  LoadedModel b = load_hf_model(d.file("m"));
  EXPECT_TRUE(b.report.ok());
  EXPECT_TRUE(b.config.model == tiny());
  auto sa = state_dict(*a), sb = state_dict(*b.model);
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [k, v] : sa) EXPECT_TRUE(torch::equal(v, sb.at(k))) << k;
  // The file carries the released layout's prefix.
  auto raw = load_safetensors(d.file("m/model.safetensors"));
  EXPECT_TRUE(raw.count("vit_nepa.embeddings.cls_token"));
  EXPECT_TRUE(raw.count("vit_nepa.encoder.layer.1.attention.attention.q_norm.weight"));
  EXPECT_FALSE(raw.count("embeddings.cls_token"));
}

// Weights that were asked for must load: a folder without model.safetensors, a config.json alone or a missing
// --weights file is an error, never a random backbone.
TEST(HfCheckpoint, MissingWeightsAreAnErrorNotARandomModel) {
  TempDir d;
  ViTNepaModel a(tiny());
  save_hf_model(d.file("m"), a, HfModelConfig{tiny(), {}, {}, {}});
  std::filesystem::remove(d.file("m/model.safetensors"));
  EXPECT_EQ(test::error_of<std::runtime_error>([&] { load_hf_model(d.file("m")); }),
            d.file("m/model.safetensors") + ": no such weights file in the model folder " + d.file("m"));
  EXPECT_NE(test::error_of<std::runtime_error>([&] { load_hf_model(d.file("m/config.json")); })
                .find("m/config.json: a config.json alone has no weights"),
            std::string::npos);
  EXPECT_EQ(test::error_of<std::runtime_error>([&] { load_hf_model(d.file("m"), d.file("nope.safetensors")); }),
            d.file("nope.safetensors") + ": no such weights file");
}

TEST(HfCheckpoint, StrictLoadNamesEveryProblem) {
  TempDir d;
  ViTNepaModel m(tiny());
  auto sd = state_dict(*m, kBackbonePrefix);
  sd.erase("vit_nepa.layernorm.bias");
  sd["vit_nepa.encoder.layer.0.layer_scale.lambda1"] = torch::zeros({7});
  sd["classifier.weight"] = torch::zeros({10, 32});
  save_safetensors(d.file("w.safetensors"), sd);
  std::string msg = nepa::test::error_of<std::runtime_error>([&] { load_backbone_weights(m, d.file("w.safetensors"), true); });
  EXPECT_NE(msg.find("missing keys (1): vit_nepa.layernorm.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected keys (1): classifier.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("shape mismatches (1): vit_nepa.encoder.layer.0.layer_scale.lambda1: file [7] vs model [32]"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find(d.file("w.safetensors")), std::string::npos);
}

TEST(HfCheckpoint, NonStrictLoadsWhatMatchesAndReportsTheRest) {
  TempDir d;
  torch::manual_seed(2);
  ViTNepaModel src(tiny());
  auto sd = state_dict(*src, kBackbonePrefix);
  sd["fc_norm.weight"] = torch::ones({32});  // a classification checkpoint into a backbone
  sd["classifier.weight"] = torch::ones({3, 32});
  save_safetensors(d.file("cls.safetensors"), sd);
  torch::manual_seed(3);
  ViTNepaModel dst(tiny());
  LoadReport r = load_backbone_weights(dst, d.file("cls.safetensors"), false);
  EXPECT_TRUE(r.missing.empty());
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"classifier.weight", "fc_norm.weight"}));
  EXPECT_TRUE(torch::equal(dst->embeddings->cls_token, src->embeddings->cls_token));
}

TEST(HfCheckpoint, UnprefixedFilesLoadToo) {
  TempDir d;
  ViTNepaModel src(tiny());
  save_safetensors(d.file("bare.safetensors"), state_dict(*src));
  ViTNepaModel dst(tiny());
  EXPECT_TRUE(load_backbone_weights(dst, d.file("bare.safetensors"), true).ok());
  EXPECT_TRUE(torch::equal(dst->layernorm->weight, src->layernorm->weight));
}

TEST(HfCheckpoint, HalfPrecisionFilesAreConvertedOnLoad) {
  TempDir d;
  ViTNepaModel src(tiny());
  auto sd = state_dict(*src, kBackbonePrefix);
  for (auto& [k, v] : sd) v = v.to(torch::kBFloat16);
  save_safetensors(d.file("bf16.safetensors"), sd);
  ViTNepaModel dst(tiny());
  ASSERT_TRUE(load_backbone_weights(dst, d.file("bf16.safetensors"), true).ok());
  EXPECT_EQ(dst->embeddings->cls_token.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(dst->embeddings->cls_token, src->embeddings->cls_token.to(torch::kBFloat16).to(torch::kFloat32)));
}

// A run starting from a backbone folder takes the trunk's architecture from its config.json (an AIM export here:
// no CLS token, sin-cos positions, no RoPE, no QK-Norm, no LayerScale) and keeps its own keys (is_causal,
// drop_path_prob, image_size); a folder without config.json, or a checkpoint file, changes nothing.
TEST(HfCheckpoint, ARunTakesTheTrunkArchitectureOfItsInitFolder) {
  TempDir d;
  ModelConfig aim = tiny();
  aim.use_cls_token = false;
  aim.use_sincos_pos_embed = true;
  aim.use_rope = false;
  aim.qk_norm = false;
  aim.layerscale_value = std::nullopt;
  aim.is_causal = false;
  torch::manual_seed(3);
  ViTNepaModel trunk(aim);
  save_hf_model(d.file("aim"), trunk, HfModelConfig{aim, {}, {}, {}});

  ModelConfig run = tiny();  // a NEPA fine-tuning config
  run.is_causal = false;
  run.drop_path_prob = 0.2;
  run.image_size = 32;
  const auto changed = adopt_backbone_architecture(run, d.file("aim"));
  EXPECT_EQ(changed, (std::vector<std::string>{"model.qk_norm: true -> false", "model.layerscale_value: 1.0e-05 -> null",
                                               "model.use_rope: true -> false", "model.use_cls_token: true -> false",
                                               "model.use_sincos_pos_embed: false -> true"}));
  EXPECT_FALSE(run.use_cls_token);
  EXPECT_TRUE(run.use_sincos_pos_embed);
  EXPECT_FALSE(run.layerscale_value.has_value());
  EXPECT_DOUBLE_EQ(run.drop_path_prob, 0.2);  // the run's own
  EXPECT_EQ(run.image_size, 32);
  // The adopted config builds a model the export loads into strictly.
  ViTNepaModel built(run);
  EXPECT_NO_THROW(load_state_dict(*built, state_dict(*trunk), /*strict=*/true, "aim"));
  EXPECT_TRUE(adopt_backbone_architecture(run, d.file("aim")).empty()) << "already the export's";

  ModelConfig untouched = tiny();
  EXPECT_TRUE(adopt_backbone_architecture(untouched, (fs::path(d.file("aim")) / "model.safetensors").string()).empty());
  fs::create_directories(d.file("bare"));
  EXPECT_TRUE(adopt_backbone_architecture(untouched, d.file("bare")).empty());
  EXPECT_TRUE(untouched == tiny());
}
