// The backbone's forward on a subset of patch tokens (ForwardOptions::token_ids; MAE's visible patches, I-JEPA's
// context): it equals the full forward restricted to those tokens when attention is limited to them, in float64,
// for every kind of position information (RoPE rows, fixed sin-cos, a learned table) with and without CLS, and in
// any token order; causal attention over the subset equals the full causal forward restricted to a sorted subset.
#include <gtest/gtest.h>

#include "nepa/model/vit_nepa.h"
#include "test_util.h"

using namespace nepa;

namespace {

// The full forward under a mask that lets every query see only CLS (if any) and the subset (and, causal, only the
// earlier ones of those), then the subset's rows gathered in token_ids' order.
torch::Tensor restricted_full_forward(ViTNepaModel& m, const torch::Tensor& pixels, const torch::Tensor& ids,
                                      bool causal) {
  const int64_t b = pixels.size(0), n = (pixels.size(2) / 4) * (pixels.size(3) / 4);
  const int64_t c = m->config().use_cls_token ? 1 : 0, t = c + n;
  torch::Tensor allowed_key = torch::zeros({b, t}, torch::kBool);
  if (c) allowed_key.narrow(1, 0, 1).fill_(true);
  allowed_key.scatter_(1, ids + c, true);
  torch::Tensor mask = allowed_key.unsqueeze(1).expand({b, t, t}).clone();
  if (causal) mask = mask.logical_and(torch::ones({t, t}, torch::kBool).tril());
  ForwardOptions o;
  o.attn_mask = mask;
  torch::Tensor h = m->forward(pixels, o).last_hidden_state;
  torch::Tensor rows = ids + c;
  if (c) rows = torch::cat({torch::zeros({b, 1}, torch::kInt64), rows}, 1);
  return h.gather(1, rows.unsqueeze(-1).expand({b, rows.size(1), h.size(2)}));
}

void expect_subset_equals_restricted(ModelConfig cfg, const torch::Tensor& ids, int64_t height, int64_t width) {
  cfg.is_causal = false;
  cfg.layerscale_value = std::nullopt;  // LayerScale 1e-5 would hide what attention mixes in
  torch::manual_seed(11);
  ViTNepaModel m(cfg);
  m->to(torch::kFloat64);
  m->eval();
  torch::Tensor pixels = torch::randn({ids.size(0), cfg.num_channels, height, width}, torch::kFloat64);
  ForwardOptions o;
  o.token_ids = ids;
  NepaOutputs sub = m->forward(pixels, o);
  const int64_t c = cfg.use_cls_token ? 1 : 0;
  ASSERT_EQ(sub.last_hidden_state.size(1), c + ids.size(1));
  torch::Tensor want = restricted_full_forward(m, pixels, ids, false);
  EXPECT_LE(test::max_abs_diff(sub.last_hidden_state, want), 1e-12);
  // Other tokens are not a constant of the subset's output: dropping one changes the rest (a test that would
  // pass with the positions ignored or the full sequence attended would not see this).
  ForwardOptions fewer;
  fewer.token_ids = ids.narrow(1, 0, ids.size(1) - 1);
  torch::Tensor h2 = m->forward(pixels, fewer).last_hidden_state;
  EXPECT_GT(test::max_abs_diff(h2, sub.last_hidden_state.narrow(1, 0, h2.size(1))), 1e-6);
}

}  // namespace

TEST(TokenSubset, RopeRowsWithClsEqualTheRestrictedFullForward) {
  ModelConfig cfg = test::tiny_model_config();  // RoPE, QK-Norm, LayerScale, CLS: the NEPA trunk
  expect_subset_equals_restricted(cfg, torch::tensor({{9, 2, 15, 4, 0}, {1, 3, 5, 7, 11}}, torch::kInt64), 16, 16);
}

TEST(TokenSubset, SinCosWithoutClsOnANonSquareGridEqualsTheRestrictedFullForward) {
  ModelConfig cfg = test::tiny_model_config();
  cfg.use_rope = false;
  cfg.use_sincos_pos_embed = true;
  cfg.use_cls_token = false;
  expect_subset_equals_restricted(cfg, torch::tensor({{23, 0, 6, 17}, {5, 4, 3, 2}}, torch::kInt64), 16, 24);
}

TEST(TokenSubset, LearnedPositionTableEqualsTheRestrictedFullForward) {
  ModelConfig cfg = test::tiny_model_config();
  cfg.use_rope = false;
  cfg.use_abs_pos_embed = true;
  cfg.initializer_range = 0.5;  // positions large enough to matter
  expect_subset_equals_restricted(cfg, torch::tensor({{12, 3, 8}, {0, 15, 7}}, torch::kInt64), 16, 16);
}

TEST(TokenSubset, CausalOverASortedSubsetEqualsTheRestrictedCausalForward) {
  ModelConfig cfg = test::tiny_model_config();
  cfg.layerscale_value = std::nullopt;
  torch::manual_seed(12);
  ViTNepaModel m(cfg);
  m->to(torch::kFloat64);
  m->eval();
  torch::Tensor pixels = torch::randn({2, 3, 16, 16}, torch::kFloat64);
  torch::Tensor ids = torch::tensor({{0, 2, 3, 9, 14}, {1, 4, 5, 6, 10}}, torch::kInt64);
  ForwardOptions o;
  o.token_ids = ids;
  torch::Tensor sub = m->forward(pixels, o).last_hidden_state;
  EXPECT_LE(test::max_abs_diff(sub, restricted_full_forward(m, pixels, ids, true)), 1e-12);
}

TEST(TokenSubset, BadIdsAreErrorsNamingTheTensor) {
  ModelConfig cfg = test::tiny_model_config();
  ViTNepaModel m(cfg);
  torch::Tensor pixels = torch::randn({2, 3, 16, 16});
  ForwardOptions o;
  o.token_ids = torch::tensor({{1, 2}}, torch::kInt64);  // batch 1 for 2 images
  auto msg = test::error_of<std::invalid_argument>([&] { m->forward(pixels, o); });
  EXPECT_NE(msg.find("token_ids has shape [1, 2]"), std::string::npos) << msg;
  o.token_ids = torch::tensor({{1, 2}, {3, 4}}, torch::kInt32);
  msg = test::error_of<std::invalid_argument>([&] { m->forward(pixels, o); });
  EXPECT_NE(msg.find("expected int64"), std::string::npos) << msg;
  o.token_ids = torch::tensor({{1, 2}, {3, 16}}, torch::kInt64);  // outside the 4 x 4 grid
  EXPECT_ANY_THROW(m->forward(pixels, o));
}
