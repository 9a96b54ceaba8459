#include "nepa/config/config.h"
#include "nepa/config/fingerprint.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

using namespace nepa;
using nepa::test::error_of;
using nepa::test::TempDir;

TEST(Config, AnEmptyDocumentGivesDefaults) {
  Config c = load_config_from_string("", "empty").config;
  EXPECT_EQ(c.model.hidden_size, 768);
  EXPECT_EQ(c.model.num_hidden_layers, 12);
  EXPECT_TRUE(c.objective.shift);
  EXPECT_TRUE(c.objective.stop_grad);
  EXPECT_DOUBLE_EQ(c.objective.mask_ratio, 0.0);
  ASSERT_TRUE(c.model.pos_embed_rescale.has_value());
  EXPECT_DOUBLE_EQ(*c.model.pos_embed_rescale, 2.0);
  EXPECT_FALSE(c.model.pos_embed_shift.has_value());
}

TEST(Config, BaseInheritanceDeepMergesRelativeToTheFile) {
  TempDir d;
  d.write("models/base.yaml", "model:\n  hidden_size: 64\n  num_attention_heads: 4\n  intermediate_size: 256\n"
                              "optim:\n  betas: [0.9, 0.99]\n");
  d.write("models/mid.yaml", "base: base.yaml\nmodel:\n  num_hidden_layers: 3\n");
  std::string top = d.write("exp/top.yaml",
                            "base: ../models/mid.yaml\nmodel:\n  intermediate_size: 128\ntrain:\n  seed: 7\n");
  LoadedConfig lc = load_config(top);
  const Config& c = lc.config;
  EXPECT_EQ(c.model.hidden_size, 64);         // from base
  EXPECT_EQ(c.model.num_attention_heads, 4);  // from base
  EXPECT_EQ(c.model.num_hidden_layers, 3);    // from mid
  EXPECT_EQ(c.model.intermediate_size, 128);  // top overrides base
  EXPECT_EQ(c.train.seed, 7);
  EXPECT_EQ(c.optim.betas, (std::vector<double>{0.9, 0.99}));
  EXPECT_EQ(c.model.patch_size, 14);  // untouched default
  EXPECT_NE(lc.origins.at("model.hidden_size").find("base.yaml"), std::string::npos);
  EXPECT_NE(lc.origins.at("model.intermediate_size").find("top.yaml"), std::string::npos);
}

TEST(Config, OverridesApplyInOrderWithTypeChecking) {
  TempDir d;
  std::string f = d.write("a.yaml", "model:\n  num_hidden_layers: 4\n");
  Config c = load_config(f, {"model.num_hidden_layers=6", "model.num_hidden_layers=8", "objective.shift=false",
                             "model.pos_embed_rescale=null", "data.mean=[0.1, 0.2, 0.3]", "train.device=cuda:1"})
                 .config;
  EXPECT_EQ(c.model.num_hidden_layers, 8);
  EXPECT_FALSE(c.objective.shift);
  EXPECT_FALSE(c.model.pos_embed_rescale.has_value());
  EXPECT_EQ(c.data.mean, (std::vector<double>{0.1, 0.2, 0.3}));
  EXPECT_EQ(c.train.device, "cuda:1");

  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f, {"model.num_hidden_layers=abc"}); }),
            "config error: --set model.num_hidden_layers=abc: model.num_hidden_layers: expected an integer, got 'abc'");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f, {"model.num_hidden_layers=6.5"}); }),
            "config error: --set model.num_hidden_layers=6.5: model.num_hidden_layers: expected an integer, got '6.5'");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f, {"model.depth=6"}); }),
            "config error: --set model.depth=6: model.depth: unknown key");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f, {"nonsense"}); }),
            "config error: --set nonsense: expected section.key=value");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f, {"objective.shift=maybe"}); }),
            "config error: --set objective.shift=maybe: objective.shift: expected true or false, got 'maybe'");
}

TEST(Config, UnknownKeysAndSectionsNameTheFile) {
  TempDir d;
  std::string f = d.write("bad.yaml", "model:\n  hidden_size: 64\n  num_attention_heads: 4\n  depth: 3\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f); }), "config error: " + f + ": model.depth: unknown key");
  std::string g = d.write("bad2.yaml", "modle:\n  hidden_size: 64\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(g); }), "config error: " + g + ": modle: unknown section");
  std::string h = d.write("bad3.yaml", "model: 5\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(h); }),
            "config error: " + h + ": model: expected a mapping of keys, got '5'");
}

TEST(Config, WrongTypesAreReported) {
  TempDir d;
  std::string f = d.write("t.yaml", "model:\n  qk_norm: 3\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f); }),
            "config error: " + f + ": model.qk_norm: expected true or false, got '3'");
  std::string g = d.write("t2.yaml", "data:\n  mean: 0.5\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(g); }),
            "config error: " + g + ": data.mean: expected a list of numbers, got '0.5'");
  std::string h = d.write("t3.yaml", "optim:\n  base_lr: fast\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(h); }),
            "config error: " + h + ": optim.base_lr: expected a number, got 'fast'");
  std::string i = d.write("t4.yaml", "train:\n  device: [cpu]\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(i); }),
            "config error: " + i + ": train.device: expected a string, got a list");
}

TEST(Config, ImpossibleValuesNameKeyAndFile) {
  TempDir d;
  std::string base = d.write("base.yaml", "model:\n  hidden_size: 100\n");
  std::string top = d.write("top.yaml", "base: base.yaml\nmodel:\n  num_attention_heads: 12\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(top); }),
            "config error: " + base + ": model.hidden_size: 100 is not divisible by num_attention_heads 12");
  std::string p = d.write("p.yaml", "model:\n  image_size: 225\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(p); }),
            "config error: " + p + ": model.image_size: 225 is not divisible by patch_size 14");
  std::string r = d.write("r.yaml", "model:\n  hidden_size: 96\n  num_attention_heads: 16\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(r); }),
            "config error: " + r + ": model.num_attention_heads: 2-D RoPE needs head_dim divisible by 4, got head_dim 6");
  std::string m = d.write("m.yaml", "objective:\n  mask_ratio: 0.4\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(m); }),
            "config error: " + m + ": objective.mask_ratio: masking needs model.use_mask_token: true");
  std::string b = d.write("b.yaml", "train:\n  total_batch: 100\n  micro_batch: 64\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(b); }),
            "config error: " + b + ": train.total_batch: 100 is not a positive multiple of train.micro_batch 64");
  std::string dev = d.write("dev.yaml", "train:\n  device: gpu\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(dev); }),
            "config error: " + dev + ": train.device: expected cpu, cuda or cuda:N, got 'gpu'");
  std::string wd = d.write("wd.yaml", "optim:\n  weight_decay: 0\n  final_weight_decay: 0.4\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(wd); }),
            "config error: " + wd +
                ": optim.final_weight_decay: needs optim.weight_decay > 0 (the value the ramp starts from)");
  std::string sl = d.write("sl.yaml", "schedule:\n  name: llrd_cosine\n  warmup_start_lr: 1.0e-4\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(sl); }),
            "config error: " + sl +
                ": schedule.warmup_start_lr: is read by the cosine and ijepa_cosine schedules only, not by llrd_cosine");
  std::string pr = d.write("pr.yaml", "model:\n  num_prompt_token: 4\n");
  EXPECT_NE(error_of<ConfigError>([&] { load_config(pr); }).find("model.num_prompt_token: prompt tokens are not supported"),
            std::string::npos);
}

TEST(Config, FileProblems) {
  TempDir d;
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(d.file("missing.yaml")); }),
            "config error: " + d.file("missing.yaml") + ": no such file");
  // A directory reads as an empty stream and an empty file sets nothing: either would train the defaults (a
  // ViT-B at batch 4096) instead of what was meant.
  d.write("configs/x.yaml", "model:\n  hidden_size: 64\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(d.file("configs")); }),
            "config error: " + d.file("configs") + ": not a regular file (a directory); a config is one YAML file");
  for (const char* text : {"", "# only a comment\n", "\n\n"}) {
    const std::string e = d.write("empty.yaml", text);
    EXPECT_EQ(error_of<ConfigError>([&] { load_config(e); }),
              "config error: " + e + ": the file sets nothing (empty or only comments)");
  }
  const std::string eb = d.write("empty_base.yaml", "base: empty.yaml\nmodel:\n  hidden_size: 64\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(eb); }),
            "config error: " + d.file("empty.yaml") + ": the file sets nothing (empty or only comments)");
  std::string a = d.write("a.yaml", "base: b.yaml\n");
  d.write("b.yaml", "base: a.yaml\n");
  EXPECT_NE(error_of<ConfigError>([&] { load_config(a); }).find("base: inheritance cycle"), std::string::npos);
  std::string c = d.write("c.yaml", "base: nowhere.yaml\n");
  EXPECT_NE(error_of<ConfigError>([&] { load_config(c); }).find("c.yaml: base: file not found"), std::string::npos);
  std::string s = d.write("s.yaml", "model:\n  hidden_size: [1, 2\n");
  EXPECT_NE(error_of<ConfigError>([&] { load_config(s); }).find("s.yaml: YAML syntax error at line"), std::string::npos);
}

// yaml-cpp keeps both entries of a repeated key; the merge would let the second win.
TEST(Config, DuplicateKeysAreRefusedWithBothLines) {
  TempDir d;
  const std::string f = d.write("dup.yaml", "train:\n  total_batch: 64\nmodel:\n  hidden_size: 64\n"
                                            "train:\n  total_batch: 128\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f); }),
            "config error: " + f + ": train: duplicate key (lines 1 and 5)");
  const std::string g = d.write("dup2.yaml", "model:\n  hidden_size: 64\n  num_hidden_layers: 2\n  hidden_size: 32\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(g); }),
            "config error: " + g + ": model.hidden_size: duplicate key (lines 2 and 4)");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config_from_string("optim:\n  betas: [0.9, 0.95]\noptim: {}\n", "s"); }),
            "config error: s: optim: duplicate key (lines 1 and 3)");
}

// The message names the file or --set that holds the offending text.
TEST(Config, ErrorsNameTheSourceOfTheOffendingText) {
  TempDir d;
  const std::string f = d.write("f.yaml", "model:\n  hidden_size: 64\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f, {"nosuch.key=1"}); }),
            "config error: --set nosuch.key=1: nosuch: unknown section");
  const std::string t = d.write("t.yaml", "train: 5\n");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(t, {"train.output_dir=runs/x"}); }),
            "config error: " + t + ": train: expected a mapping of keys, got '5' (--set train.output_dir=runs/x sets a "
            "key in it)");
  EXPECT_EQ(error_of<ConfigError>([&] { load_config(f, {"train.x={a: 1, a: 2}"}); }),
            "config error: --set train.x={a: 1, a: 2}: train.x.a: duplicate key (lines 1 and 1)");
}

// The fingerprint lists the settings that differ from the defaults, nested sections included, whatever their
// spelling in the files; a config at its defaults has an empty one.
TEST(Config, FingerprintListsTheSettingsThatDifferFromTheDefaults) {
  EXPECT_EQ(config_fingerprint(Config{}), "");
  Config a = load_config_from_string("model:\n  hidden_size: 384\n  is_causal: false\n  use_cls_token: false\n"
                                     "objective:\n  ijepa:\n    min_keep: 3\n  name: ijepa\n  mae: {}\ntrain:\n  ema: false\n")
                 .config;
  EXPECT_EQ(config_fingerprint(a), "model.hidden_size: 384\nmodel.use_cls_token: false\nmodel.is_causal: false\n"
                                   "objective.name: \"ijepa\"\nobjective.ijepa.min_keep: 3\ntrain.ema: false\n");
  Config b = Config{};
  b.objective.ijepa.min_keep = 3;
  b.objective.name = "ijepa";
  b.model.hidden_size = 384;
  b.model.is_causal = false;
  b.model.use_cls_token = false;
  b.train.ema = false;
  b.optim.weight_decay = Config{}.optim.weight_decay;  // restating a default adds nothing
  EXPECT_EQ(config_fingerprint(b), config_fingerprint(a));
}

TEST(Config, EffectiveConfigRoundTripsExactly) {
  TempDir d;
  std::string f = d.write("x.yaml", "model:\n  pos_embed_shift: 0.25\n  layerscale_value: null\n"
                                    "optim:\n  base_lr: 0.0001234567890123\n  betas: [0.9, 0.95]\n"
                                    "train:\n  output_dir: \"runs/with \\\"quotes\\\"\"\n");
  Config c = load_config(f).config;
  EXPECT_EQ(c.train.output_dir, "runs/with \"quotes\"");
  std::string once = to_yaml(c);
  save_config(c, d.file("effective.yaml"));
  Config again = load_config(d.file("effective.yaml")).config;
  EXPECT_EQ(to_yaml(again), once);
  EXPECT_EQ(again.optim.base_lr, c.optim.base_lr);  // bit-identical
  EXPECT_FALSE(again.model.layerscale_value.has_value());
  ASSERT_TRUE(again.model.pos_embed_shift.has_value());
  EXPECT_EQ(*again.model.pos_embed_shift, 0.25);
  EXPECT_TRUE(again.model == c.model);
  // Every key is documented in the dump.
  EXPECT_NE(once.find("  hidden_size: 768  # token width D\n"), std::string::npos);
}

TEST(Config, ShippedConfigsLoad) {
  namespace fs = std::filesystem;
  int n = 0;
  for (const auto& e : fs::recursive_directory_iterator(nepa::test::source_path("configs"))) {
    // Sweep files are not experiment configs: the sweep_files_dry_run test checks them and their stages.
    if (e.path().extension() != ".yaml" || e.path().parent_path().filename() == "sweeps") continue;
    EXPECT_NO_THROW(load_config(e.path().string())) << e.path();
    ++n;
  }
  EXPECT_GE(n, 5);
  Config vitb = load_config(nepa::test::source_path("configs/pretrain/vitb.yaml")).config;
  EXPECT_EQ(vitb.train.total_batch, 4096);
  EXPECT_EQ(vitb.optim.betas, (std::vector<double>{0.9, 0.95}));
  EXPECT_DOUBLE_EQ(vitb.schedule.warmup_fraction, 0.025);
  Config vitl = load_config(nepa::test::source_path("configs/pretrain/vitl.yaml")).config;
  EXPECT_EQ(vitl.model.hidden_size, 1024);
  EXPECT_TRUE(vitl.model.qk_norm_affine);
  EXPECT_EQ(vitl.train.total_batch, 4096);  // inherited from vitb.yaml
  // AIM at ViT-B: the release's trunk switches over NEPA-B's recipe, which it inherits.
  Config aim = load_config(nepa::test::source_path("configs/pretrain/aim_vitb.yaml")).config;
  EXPECT_EQ(aim.objective.name, "aim");
  EXPECT_FALSE(aim.model.use_cls_token);
  EXPECT_TRUE(aim.model.use_sincos_pos_embed);
  EXPECT_FALSE(aim.model.use_rope);
  EXPECT_EQ(aim.model.hidden_size, 768);
  EXPECT_EQ(aim.objective.aim.head_blocks, 6);
  EXPECT_EQ(aim.objective.aim.head_width, 1024);
  EXPECT_EQ(aim.data.mean, (std::vector<double>{0.485, 0.456, 0.406}));
  EXPECT_EQ(aim.train.total_batch, 4096);
  EXPECT_DOUBLE_EQ(aim.optim.base_lr, vitb.optim.base_lr);
  // MAE-B/16: the release's recipe over NEPA-B's file.
  Config mae = load_config(nepa::test::source_path("configs/pretrain/mae_vitb.yaml")).config;
  EXPECT_EQ(mae.objective.name, "mae");
  EXPECT_EQ(mae.model.patch_size, 16);
  EXPECT_EQ(mae.objective.mae.decoder_width, 512);
  EXPECT_EQ(mae.objective.mae.decoder_depth, 8);
  EXPECT_DOUBLE_EQ(mae.optim.base_lr, 1.5e-4);
  EXPECT_DOUBLE_EQ(mae.optim.grad_clip, 0.0);
  EXPECT_EQ(mae.data.crop_scale, (std::vector<double>{0.2, 1.0}));
  EXPECT_FALSE(mae.train.ema);
  EXPECT_EQ(mae.objective.backbone_init, "xavier");
  EXPECT_EQ(mae.train.total_batch, 4096);
  // I-JEPA-B/14: the release's ViT-H/14 recipe, its absolute lr 1e-3 at batch 2048 as a base lr.
  Config ijepa = load_config(nepa::test::source_path("configs/pretrain/ijepa_vitb.yaml")).config;
  EXPECT_EQ(ijepa.objective.name, "ijepa");
  EXPECT_FALSE(ijepa.model.use_cls_token);
  EXPECT_EQ(ijepa.objective.ijepa.predictor_width, 384);
  EXPECT_DOUBLE_EQ(ijepa.optim.base_lr * ijepa.train.total_batch / ijepa.optim.lr_batch_reference, 1e-3);
  EXPECT_DOUBLE_EQ(ijepa.data.hflip_prob, 0.0);
  // Its schedulers: warmup from start_lr 2e-4, weight decay 0.04 -> 0.4.
  EXPECT_EQ(ijepa.schedule.name, "ijepa_cosine");
  EXPECT_EQ(ijepa.objective.backbone_init, "depth_scaled");
  EXPECT_DOUBLE_EQ(ijepa.schedule.warmup_start_lr, 2e-4);
  EXPECT_DOUBLE_EQ(ijepa.optim.weight_decay, 0.04);
  EXPECT_EQ(ijepa.optim.final_weight_decay, std::optional<double>(0.4));
}
