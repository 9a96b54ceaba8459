#include "nepa/model/vit_nepa.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <set>

#include "nepa/config/hf_config.h"
#include "test_util.h"

using namespace nepa;
using nepa::test::max_abs_diff;

namespace {
ModelConfig tiny(bool causal = true) {
  ModelConfig c = nepa::test::tiny_model_config();
  c.layerscale_value = 0.5;  // large enough that the blocks visibly matter
  c.is_causal = causal;
  return c;
}
void copy_params(torch::nn::Module& dst, const torch::nn::Module& src) {
  torch::NoGradGuard g;
  auto from = src.named_parameters();
  for (auto& item : dst.named_parameters()) item.value().copy_(from[item.key()]);
}
torch::Tensor pixels(int64_t b = 2, int64_t h = 16, int64_t w = 16) {
  return torch::rand({b, 3, h, w}, torch::TensorOptions().dtype(torch::kFloat32)) * 2 - 1;
}
}  // namespace

TEST(Model, ParameterCountsOfTheReleasedConfigs) {
  // Counted by hand from NEPA-SPEC §1/§7: B = 85,527,552; L = 302,967,808 (no pooler weights).
  auto base = read_hf_config(nepa::test::source_path("tests/data/hf-configs/nepa-base-patch14-224.json"));
  EXPECT_EQ(count_parameters(*ViTNepaModel(base.model)), 85527552);
  auto large = read_hf_config(nepa::test::source_path("tests/data/hf-configs/nepa-large-patch14-224.json"));
  EXPECT_EQ(count_parameters(*ViTNepaModel(large.model)), 302967808);
  // The shipped YAML describes the same model.
  auto yaml = load_config(nepa::test::source_path("configs/pretrain/vitb.yaml")).config;
  EXPECT_TRUE(yaml.model == base.model);
}

TEST(Model, ParameterNamesAreTheHuggingFaceNames) {
  ModelConfig c = tiny();
  c.num_hidden_layers = 1;
  c.use_gated_mlp = true;
  ViTNepaModel m(c);
  std::set<std::string> names;
  for (const auto& p : m->named_parameters()) names.insert(p.key());
  std::set<std::string> expected = {
      "embeddings.cls_token",
      "embeddings.patch_embeddings.projection.weight",
      "embeddings.patch_embeddings.projection.bias",
      "encoder.layer.0.layernorm_before.weight",
      "encoder.layer.0.layernorm_before.bias",
      "encoder.layer.0.attention.attention.query.weight",
      "encoder.layer.0.attention.attention.query.bias",
      "encoder.layer.0.attention.attention.key.weight",
      "encoder.layer.0.attention.attention.key.bias",
      "encoder.layer.0.attention.attention.value.weight",
      "encoder.layer.0.attention.attention.value.bias",
      "encoder.layer.0.attention.attention.q_norm.weight",
      "encoder.layer.0.attention.attention.k_norm.weight",
      "encoder.layer.0.attention.output.dense.weight",
      "encoder.layer.0.attention.output.dense.bias",
      "encoder.layer.0.layer_scale.lambda1",
      "encoder.layer.0.layernorm_after.weight",
      "encoder.layer.0.layernorm_after.bias",
      "encoder.layer.0.intermediate.up_proj.weight",
      "encoder.layer.0.intermediate.up_proj.bias",
      "encoder.layer.0.intermediate.gate_proj.weight",
      "encoder.layer.0.intermediate.gate_proj.bias",
      "encoder.layer.0.output.dense.weight",
      "encoder.layer.0.output.dense.bias",
      "encoder.layer.0.output.layer_scale.lambda1",
      "layernorm.weight",
      "layernorm.bias",
  };
  EXPECT_EQ(names, expected);

  c.qk_norm_affine = false;
  c.layerscale_value.reset();
  c.use_mask_token = true;
  c.use_abs_pos_embed = true;
  ViTNepaModel m2(c);
  std::set<std::string> names2;
  for (const auto& p : m2->named_parameters()) names2.insert(p.key());
  EXPECT_FALSE(names2.count("encoder.layer.0.attention.attention.q_norm.weight"));
  EXPECT_FALSE(names2.count("encoder.layer.0.layer_scale.lambda1"));
  EXPECT_FALSE(names2.count("encoder.layer.0.output.layer_scale.lambda1"));
  EXPECT_TRUE(names2.count("embeddings.mask_token"));
  EXPECT_TRUE(names2.count("embeddings.position_embeddings"));
}

// Pooled readouts (k-NN, probes, the fine-tuning head) average the patch tokens: behind the CLS token when the
// model has one, the whole sequence when it has none (AIM's trunk), where dropping token 0 would lose a patch.
TEST(Model, PatchTokensAreTheGridWithOrWithoutCls) {
  for (const bool cls : {true, false}) {
    ModelConfig c = test::tiny_model_config();
    c.use_cls_token = cls;
    ViTNepaModel m(c);
    m->eval();
    const int64_t n = (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
    const torch::Tensor h = m->forward(torch::randn({2, c.num_channels, c.image_size, c.image_size})).last_hidden_state;
    ASSERT_EQ(h.size(1), n + (cls ? 1 : 0)) << "cls " << cls;
    const torch::Tensor p = m->patch_tokens(h);
    ASSERT_EQ(p.size(1), n) << "cls " << cls;
    EXPECT_TRUE(torch::equal(p, h.narrow(1, h.size(1) - n, n))) << "cls " << cls;
  }
}

TEST(Model, InitialisationFollowsTheSpec) {
  ModelConfig c = tiny();
  c.hidden_size = 256;
  c.num_attention_heads = 4;
  c.intermediate_size = 1024;
  c.layerscale_value = 1e-5;
  torch::manual_seed(0);
  ViTNepaModel m(c);
  auto& q = m->encoder->layer->at<NepaLayerImpl>(0).attention->attention->query;
  EXPECT_NEAR(q->weight.std().item<double>(), 0.02, 0.001);
  EXPECT_EQ(q->bias.abs().max().item<double>(), 0.0);
  EXPECT_NEAR(m->embeddings->cls_token.std().item<double>(), 0.02, 0.005);
  EXPECT_TRUE(torch::allclose(m->encoder->layer->at<NepaLayerImpl>(1).layer_scale->lambda1, torch::full({256}, 1e-5)));
  EXPECT_TRUE(torch::equal(m->layernorm->weight, torch::ones({256})));
  EXPECT_LE(m->embeddings->patch_embeddings->projection->weight.abs().max().item<double>(), 2.0);
}

// objective.backbone_init: depth_scaled (I-JEPA's fix_init_weight) is hf with block i's attention output and fc2 divided by sqrt(2 i); xavier (MAE's) puts every linear weight and
// the patch projection (as a linear layer of fan-in C p p) uniform within +-sqrt(6 / (fan_in + fan_out)), the
// biases at zero, the CLS token normal with std 0.02.
TEST(Model, ReleaseInitialisationsOfMaeAndIjepa) {
  ModelConfig c = tiny();
  c.hidden_size = 128;
  c.num_attention_heads = 4;
  c.intermediate_size = 512;
  c.num_hidden_layers = 3;
  ViTNepaModel hf(c), scaled(c), xavier(c);
  torch::manual_seed(5);
  hf->init_weights(BackboneInit::kHf);
  torch::manual_seed(5);
  scaled->init_weights(BackboneInit::kDepthScaled);
  auto h = hf->named_parameters(), s = scaled->named_parameters();
  for (const auto& p : h) {
    double d = 1.0;
    for (int i = 0; i < 3; ++i)
      if (p.key() == "encoder.layer." + std::to_string(i) + ".attention.output.dense.weight" ||
          p.key() == "encoder.layer." + std::to_string(i) + ".output.dense.weight")
        d = std::sqrt(2.0 * (i + 1));
    EXPECT_TRUE(torch::allclose(s[p.key()], p.value() / d, 0.0, 0.0)) << p.key() << " / " << d;
  }

  torch::manual_seed(6);
  xavier->init_weights(BackboneInit::kXavier);
  int linears = 0;
  for (const auto& m : xavier->named_modules()) {
    torch::Tensor w;
    if (auto* lin = m.value()->as<torch::nn::Linear>()) {
      w = lin->weight;
      if (lin->bias.defined()) {
        EXPECT_EQ(lin->bias.abs().max().item<double>(), 0.0) << m.key();
      }
    } else if (auto* conv = m.value()->as<torch::nn::Conv2d>()) {
      w = conv->weight.view({conv->weight.size(0), -1});
    } else {
      continue;
    }
    ++linears;
    const double bound = std::sqrt(6.0 / static_cast<double>(w.size(0) + w.size(1)));
    EXPECT_LE(w.abs().max().item<double>(), bound) << m.key();
    EXPECT_GT(w.abs().max().item<double>(), 0.95 * bound) << m.key();
    EXPECT_NEAR(w.std().item<double>(), bound / std::sqrt(3.0), 0.1 * bound / std::sqrt(3.0)) << m.key();
  }
  EXPECT_EQ(linears, 1 + 3 * 6);  // the patch projection; q, k, v, attention output, fc1, fc2 per block
  EXPECT_NEAR(xavier->embeddings->cls_token.std().item<double>(), 0.02, 0.006);
}

TEST(Model, CausalityAndBidirectionality) {
  torch::manual_seed(3);
  ViTNepaModel m(tiny(true));
  m->eval();
  torch::NoGradGuard g;
  torch::Tensor x = pixels();
  const int64_t k = 5;  // change patch k (row 1, col 1) -> token k+1
  torch::Tensor y = x.clone();
  y.index({torch::indexing::Slice(), torch::indexing::Slice(), torch::indexing::Slice(4, 8),
           torch::indexing::Slice(4, 8)}) += 0.5;
  auto a = m->forward(x).last_hidden_state, b = m->forward(y).last_hidden_state;
  EXPECT_EQ(max_abs_diff(a.narrow(1, 0, k + 1), b.narrow(1, 0, k + 1)), 0.0);  // tokens <= k: CLS, patches < k
  EXPECT_GT(max_abs_diff(a.narrow(1, k + 1, 1), b.narrow(1, k + 1, 1)), 1e-4);
  EXPECT_GT(max_abs_diff(a.narrow(1, a.size(1) - 1, 1), b.narrow(1, a.size(1) - 1, 1)), 1e-4);

  m->set_causal(false);
  auto c = m->forward(x).last_hidden_state, d = m->forward(y).last_hidden_state;
  EXPECT_GT(max_abs_diff(c.narrow(1, 0, 1), d.narrow(1, 0, 1)), 1e-4);  // CLS now sees patch k
}

TEST(Model, SdpaAndEagerAttentionAgree) {
  for (bool causal : {true, false}) {
    torch::manual_seed(4);
    ViTNepaModel m(tiny(causal));
    m->eval();
    torch::NoGradGuard g;
    torch::Tensor x = pixels();
    ForwardOptions eager;
    eager.output_attentions = true;
    eager.output_hidden_states = true;
    auto fast = m->forward(x);
    auto slow = m->forward(x, eager);
    EXPECT_LT(max_abs_diff(fast.last_hidden_state, slow.last_hidden_state), 1e-5);
    ASSERT_EQ(slow.attentions.size(), 2u);
    ASSERT_EQ(slow.hidden_states.size(), 3u);
    EXPECT_TRUE(torch::equal(slow.hidden_states[0], slow.input_embedding));
    torch::Tensor p = slow.attentions[1];
    EXPECT_EQ(p.sizes(), (std::vector<int64_t>{2, 2, 17, 17}));
    EXPECT_LT(max_abs_diff(p.sum(-1), torch::ones({2, 2, 17})), 1e-5);
    double upper = p.triu(1).abs().max().item<double>();
    if (causal) EXPECT_EQ(upper, 0.0);
    else EXPECT_GT(upper, 0.0);
  }
}

TEST(Model, RopeAugmentationOnlyInTraining) {
  ModelConfig c = tiny();
  torch::manual_seed(5);
  ViTNepaModel m(c);
  torch::NoGradGuard g;
  torch::Tensor x = pixels();
  m->eval();
  auto e1 = m->forward(x).last_hidden_state, e2 = m->forward(x).last_hidden_state;
  EXPECT_TRUE(torch::equal(e1, e2));
  m->train();
  auto t1 = m->forward(x).last_hidden_state, t2 = m->forward(x).last_hidden_state;
  EXPECT_GT(max_abs_diff(t1, t2), 1e-4);  // a fresh rescale factor per forward
  EXPECT_GT(max_abs_diff(t1, e1), 1e-4);
  // With every augmentation off, training mode (no dropout, no drop path) computes the eval function.
  m->eval();
  ModelConfig off = c;
  off.pos_embed_rescale.reset();
  ViTNepaModel m2(off);
  copy_params(*m2, *m);
  m2->train();
  EXPECT_TRUE(torch::equal(m2->forward(x).last_hidden_state, e1));
}

TEST(Model, DropPathIsIdentityInEval) {
  ModelConfig c = tiny();
  c.drop_path_prob = 0.5;
  c.pos_embed_rescale.reset();
  torch::manual_seed(6);
  ViTNepaModel m(c);
  ModelConfig c0 = c;
  c0.drop_path_prob = 0.0;
  ViTNepaModel m0(c0);
  torch::NoGradGuard g;
  copy_params(*m0, *m);
  torch::Tensor x = pixels(8);
  m->eval();
  m0->eval();
  EXPECT_TRUE(torch::equal(m->forward(x).last_hidden_state, m0->forward(x).last_hidden_state));
  m->train();
  EXPECT_GT(max_abs_diff(m->forward(x).last_hidden_state, m0->forward(x).last_hidden_state), 1e-4);
}

TEST(Model, MaskTokenReplacesInputsButNotTargets) {
  ModelConfig c = tiny();
  c.use_mask_token = true;
  torch::manual_seed(7);
  ViTNepaModel m(c);
  m->eval();
  torch::NoGradGuard g;
  m->embeddings->mask_token.fill_(0.25);
  torch::Tensor x = pixels();
  ForwardOptions o;
  o.bool_masked_pos = torch::zeros({2, 16}, torch::kBool);
  o.bool_masked_pos.index_put_({0, 3}, true);
  o.output_hidden_states = true;
  auto masked = m->forward(x, o);
  auto clean = m->forward(x);
  EXPECT_TRUE(torch::equal(masked.input_embedding, clean.input_embedding));
  EXPECT_TRUE(torch::equal(masked.hidden_states[0][0][4], torch::full({32}, 0.25)));  // token 4 = patch 3
  EXPECT_TRUE(torch::equal(masked.hidden_states[0][1], clean.input_embedding[1]));
  EXPECT_THROW(ViTNepaModel(tiny())->forward(x, o), std::invalid_argument);
}

TEST(Model, BadInputShapesGetOneClearMessage) {
  ViTNepaModel m(tiny());
  std::string msg = nepa::test::error_of<std::invalid_argument>([&] { m->forward(torch::zeros({2, 3, 15, 16})); });
  EXPECT_EQ(msg, "pixel_values has shape [2, 3, 15, 16]; expected [B, 3, H, W] with H and W positive multiples of "
                 "patch_size 4");
  EXPECT_THROW(m->forward(torch::zeros({2, 1, 16, 16})), std::invalid_argument);
}

TEST(Model, Bf16AutocastOnCpu) {
  torch::manual_seed(8);
  ViTNepaModel m(tiny());
  m->eval();
  torch::NoGradGuard g;
  torch::Tensor x = pixels();
  auto ref = m->forward(x).last_hidden_state;
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  auto low = m->forward(x).last_hidden_state;
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  EXPECT_TRUE(torch::isfinite(low).all().item<bool>());
  EXPECT_LT(max_abs_diff(low, ref), 0.15);  // bf16 has ~3 significant digits; LayerNorm'd outputs are O(1)
}
