#include "nepa/model/rope.h"

#include <gtest/gtest.h>

#include "nepa/model/vit_nepa.h"
#include "test_util.h"

using namespace nepa;
using nepa::test::max_abs_diff;

TEST(Rope, CoordinatesArePatchCentresRowMajor) {
  torch::Tensor c = rope_2d_coords(2, 4, torch::kCPU);
  ASSERT_EQ(c.sizes(), (std::vector<int64_t>{8, 2}));
  // y = 2*(i+0.5)/2 - 1 = -0.5, 0.5; x = 2*(j+0.5)/4 - 1 = -0.75, -0.25, 0.25, 0.75
  EXPECT_FLOAT_EQ(c[0][0].item<float>(), -0.5f);
  EXPECT_FLOAT_EQ(c[0][1].item<float>(), -0.75f);
  EXPECT_FLOAT_EQ(c[3][1].item<float>(), 0.75f);
  EXPECT_FLOAT_EQ(c[4][0].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(c[4][1].item<float>(), -0.75f);
}

TEST(Rope, FrequencyLayout) {
  // head_dim 8: two frequencies per axis, 1/100^0 and 1/100^0.5; angles [y f0, y f1, x f0, x f1] tiled twice.
  torch::Tensor coords = torch::tensor({{0.5f, -0.25f}});
  auto [cos, sin] = rope_2d_from_coords(coords, 8, 100.0);
  std::vector<double> ang = {2 * M_PI * 0.5, 2 * M_PI * 0.5 / 10, 2 * M_PI * -0.25, 2 * M_PI * -0.25 / 10};
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(cos[0][i].item<double>(), std::cos(ang[i % 4]), 1e-6) << i;
    EXPECT_NEAR(sin[0][i].item<double>(), std::sin(ang[i % 4]), 1e-6) << i;
  }
}

TEST(Rope, PreservesNorms) {
  torch::manual_seed(0);
  auto [cos, sin] = rope_2d(4, 6, 16, 100.0, torch::kCPU);
  torch::Tensor x = torch::randn({3, 2, 24, 16});
  torch::Tensor y = apply_rope(x, cos, sin);
  EXPECT_LT(max_abs_diff(y.norm(2, -1), x.norm(2, -1)), 1e-5);
  EXPECT_GT(max_abs_diff(y, x), 1e-2);
}

TEST(Rope, ScoresDependOnlyOnRelativeOffsetPerAxis) {
  torch::manual_seed(1);
  torch::Tensor q = torch::randn({5, 16}), k = torch::randn({5, 16});
  torch::Tensor coords = torch::rand({5, 2}) * 2 - 1;
  auto score = [&](const torch::Tensor& c) {
    auto [cos, sin] = rope_2d_from_coords(c, 16, 100.0);
    return torch::matmul(apply_rope(q, cos, sin), apply_rope(k, cos, sin).t());
  };
  torch::Tensor base = score(coords);
  // Shifting every position by the same (dy, dx) keeps all pairwise scores.
  EXPECT_LT(max_abs_diff(score(coords + torch::tensor({{0.3f, -0.7f}})), base), 1e-4);
  // Moving one axis of one token changes its scores with the others.
  torch::Tensor moved = coords.clone();
  moved[2][1] += 0.4;
  EXPECT_GT(max_abs_diff(score(moved), base), 1e-3);
}

TEST(Rope, AugmentationsDrawOnceAndStayWithinBounds) {
  torch::manual_seed(2);
  RopeAugment aug{std::nullopt, std::nullopt, 2.0};
  auto [cos0, sin0] = rope_2d(3, 3, 8, 100.0, torch::kCPU);
  auto [cos1, sin1] = rope_2d(3, 3, 8, 100.0, torch::kCPU, &aug);
  EXPECT_GT(max_abs_diff(cos0, cos1), 1e-4);
  // All coordinates are scaled by one factor s in [1/2, 2]: recover s from the slow y frequency (1/10, so
  // the angle stays below pi and atan2 does not wrap) of token 0.
  torch::Tensor c = rope_2d_coords(3, 3, torch::kCPU);
  double y0 = c[0][0].item<double>();
  double angle = std::atan2(sin1[0][1].item<double>(), cos1[0][1].item<double>());
  double s = angle / (2 * M_PI * y0 / 10);
  EXPECT_GE(s, 0.5 - 1e-5);
  EXPECT_LE(s, 2.0 + 1e-5);
  for (int64_t n = 0; n < 9; ++n) {  // same s for every token
    double yn = c[n][0].item<double>();
    EXPECT_NEAR(std::cos(2 * M_PI * yn * s / 10), cos1[n][1].item<double>(), 1e-5);
  }
}

namespace nepa {
namespace {

// model.rope_grid: at the pretraining grid's own size the coordinates are the normalised ones (so the option
// changes nothing there); on a larger grid neighbours keep the pretraining spacing 2 / G, centred on 0, instead of
// the finer 2 / h of the normalised arithmetic.
TEST(Rope, GridSpacingOptionKeepsThePretrainingSpacing) {
  EXPECT_TRUE(torch::allclose(rope_2d_coords(16, 16, torch::kCPU, 16), rope_2d_coords(16, 16, torch::kCPU), 0, 1e-6));
  const torch::Tensor c = rope_2d_coords(37, 20, torch::kCPU, 16).view({37, 20, 2});
  const torch::Tensor dy = c.select(2, 0).narrow(0, 1, 36) - c.select(2, 0).narrow(0, 0, 36);
  const torch::Tensor dx = c.select(2, 1).narrow(1, 1, 19) - c.select(2, 1).narrow(1, 0, 19);
  EXPECT_NEAR(dy.min().item<double>(), 2.0 / 16, 1e-6);
  EXPECT_NEAR(dy.max().item<double>(), 2.0 / 16, 1e-6);
  EXPECT_NEAR(dx.min().item<double>(), 2.0 / 16, 1e-6);
  EXPECT_NEAR(c.mean().item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(c.select(2, 0).max().item<double>(), 36.0 / 16, 1e-6);  // last row centre: (36.5 * 2 - 37) / 16
  const torch::Tensor n = rope_2d_coords(37, 20, torch::kCPU).view({37, 20, 2});
  EXPECT_NEAR((n.select(2, 0)[1][0] - n.select(2, 0)[0][0]).item<double>(), 2.0 / 37, 1e-6);

  // In the model: rope_grid equal to the input's grid gives the default forward exactly; another grid does not.
  ModelConfig m = test::tiny_model_config();
  m.pos_embed_rescale = std::nullopt;
  torch::manual_seed(1);
  ViTNepaModel a(m);
  a->eval();
  const torch::Tensor x = torch::randn({1, 3, 16, 16});
  const int grid = 16 / m.patch_size;
  ModelConfig g = m;
  g.rope_grid = grid;
  ViTNepaModel b(g);
  g.rope_grid = 2 * grid;
  ViTNepaModel c2(g);
  for (ViTNepaModel* t : {&b, &c2}) {
    torch::NoGradGuard no_grad;
    auto pa = a->named_parameters();
    for (auto& p : (*t)->named_parameters()) p.value().copy_(pa[p.key()]);
    (*t)->eval();
  }
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(a->forward(x).last_hidden_state, b->forward(x).last_hidden_state));
  EXPECT_FALSE(torch::allclose(a->forward(x).last_hidden_state, c2->forward(x).last_hidden_state));
}

}  // namespace
}  // namespace nepa
