#include "nepa/config/hf_config.h"

#include <gtest/gtest.h>

#include "test_util.h"

using namespace nepa;
using nepa::test::error_of;
using nepa::test::source_path;
using nepa::test::TempDir;

namespace {
std::string official(const std::string& name) { return source_path("tests/data/hf-configs/" + name + ".json"); }
}  // namespace

TEST(HfConfig, ReadsTheOfficialPretrainConfigs) {
  HfModelConfig b = read_hf_config(official("nepa-base-patch14-224"));
  EXPECT_EQ(b.architectures, std::vector<std::string>{"ViTNepaForPreTraining"});
  EXPECT_EQ(b.model.hidden_size, 768);
  EXPECT_EQ(b.model.num_hidden_layers, 12);
  EXPECT_EQ(b.model.num_attention_heads, 12);
  EXPECT_EQ(b.model.intermediate_size, 3072);
  EXPECT_EQ(b.model.patch_size, 14);
  EXPECT_EQ(b.model.image_size, 224);
  EXPECT_TRUE(b.model.qk_norm);
  EXPECT_FALSE(b.model.qk_norm_affine);
  EXPECT_TRUE(b.model.is_causal);
  EXPECT_EQ(b.model.layer_norm_eps, 1e-12);
  ASSERT_TRUE(b.model.layerscale_value);
  EXPECT_EQ(*b.model.layerscale_value, 1e-5);
  ASSERT_TRUE(b.model.pos_embed_rescale);
  EXPECT_EQ(*b.model.pos_embed_rescale, 2.0);
  EXPECT_FALSE(b.model.pos_embed_shift);
  EXPECT_FALSE(b.model.pos_embed_jitter);
  EXPECT_EQ(b.model.rope_theta, 100.0);
  EXPECT_TRUE(b.ignored_keys.empty());

  HfModelConfig l = read_hf_config(official("nepa-large-patch14-224"));
  EXPECT_EQ(l.model.hidden_size, 1024);
  EXPECT_EQ(l.model.num_hidden_layers, 24);
  EXPECT_EQ(l.model.num_attention_heads, 16);
  EXPECT_TRUE(l.model.qk_norm_affine);
}

TEST(HfConfig, ReadsTheOfficialFineTunedConfigs) {
  HfModelConfig s = read_hf_config(official("nepa-base-patch14-224-sft"));
  EXPECT_EQ(s.architectures, std::vector<std::string>{"ViTNepaForImageClassification"});
  EXPECT_FALSE(s.model.is_causal);
  EXPECT_EQ(s.model.drop_path_prob, 0.1);
  EXPECT_TRUE(s.model.qk_norm_affine);
  ASSERT_EQ(s.id2label.size(), 3u);
  EXPECT_EQ(s.id2label[1], "goldfish, Carassius auratus");
}

TEST(HfConfig, WriteThenReadIsIdentity) {
  TempDir d;
  for (const char* name : {"nepa-base-patch14-224", "nepa-large-patch14-224-sft"}) {
    HfModelConfig a = read_hf_config(official(name));
    write_hf_config(a, d.file("config.json"));
    HfModelConfig b = read_hf_config(d.file("config.json"));
    EXPECT_TRUE(a.model == b.model) << name;
    EXPECT_EQ(a.architectures, b.architectures);
    EXPECT_EQ(a.id2label, b.id2label);
  }
  // Ablation fields survive the round trip, and are written only when set.
  HfModelConfig x;
  x.model.use_mask_token = true;
  std::string json = to_hf_config_json(x);
  EXPECT_NE(json.find("\"use_mask_token\": true"), std::string::npos);
  EXPECT_EQ(json.find("use_abs_pos_embed"), std::string::npos);
  EXPECT_NE(json.find("\"model_type\": \"vit_nepa\""), std::string::npos);
  EXPECT_TRUE(parse_hf_config(json).model.use_mask_token);
}

TEST(HfConfig, Errors) {
  EXPECT_EQ(error_of<ConfigError>([] { parse_hf_config("{\"model_type\": \"vit\"}", "c.json"); }),
            "config error: c.json: model_type: expected \"vit_nepa\", got 'vit'");
  EXPECT_EQ(error_of<ConfigError>([] { parse_hf_config("{\"hidden_size\": \"wide\"}", "c.json"); }),
            "config error: c.json: hidden_size: expected an integer, got 'wide'");
  EXPECT_EQ(error_of<ConfigError>([] { parse_hf_config("{\"hidden_size\": 770}", "c.json"); }),
            "config error: c.json: hidden_size: 770 is not divisible by num_attention_heads 12");
  EXPECT_EQ(error_of<ConfigError>([] { parse_hf_config("[1, 2]", "c.json"); }),
            "config error: c.json: expected a JSON object");
  // Strict JSON (transformers reads config.json with Python's json): YAML flow syntax, comments and trailing
  // commas are refused.
  for (const char* not_json : {"{hidden_size: 768}", "{\"hidden_size\": 768,}", "{\"hidden_size\": 768} // c"}) {
    EXPECT_EQ(error_of<ConfigError>([&] { parse_hf_config(not_json, "c.json"); }).rfind("config error: c.json: not valid JSON: ", 0),
              0u) << not_json;
  }
  HfModelConfig odd = parse_hf_config("{\"hidden_size\": 768, \"some_future_key\": 1}", "c.json");
  EXPECT_EQ(odd.ignored_keys, std::vector<std::string>{"some_future_key"});
}
