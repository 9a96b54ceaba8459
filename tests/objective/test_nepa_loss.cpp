#include "nepa/objective/nepa_loss.h"

#include <gtest/gtest.h>

#include "test_util.h"

using namespace nepa;

TEST(NepaLoss, IsMinusOneWhenPredictionsEqualTheNextEmbedding) {
  torch::manual_seed(0);
  torch::Tensor z = torch::randn({3, 9, 16});
  torch::Tensor h = torch::randn({3, 9, 16});
  // Position t holds (a positive multiple of) the embedding of token t+1; the last position is free.
  h.narrow(1, 0, 8).copy_(z.narrow(1, 1, 8) * 2.5);
  NepaLoss l = next_embedding_loss(h, z);
  EXPECT_NEAR(l.loss.item<double>(), -1.0, 1e-6);
  EXPECT_NEAR(l.mean_cos.item<double>(), 1.0, 1e-6);
  // Same-position matching (shift off) is not satisfied by the same tensors.
  EXPECT_GT(next_embedding_loss(h, z, /*shift=*/false).loss.item<double>(), -0.9);
  // ...but is by h == z.
  EXPECT_NEAR(next_embedding_loss(z, z, /*shift=*/false).loss.item<double>(), -1.0, 1e-6);
}

TEST(NepaLoss, MatchesTheFormula) {
  torch::manual_seed(1);
  torch::Tensor h = torch::randn({2, 5, 8}, torch::kFloat64), z = torch::randn({2, 5, 8}, torch::kFloat64);
  double expect = 0;
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 4; ++t) {
      torch::Tensor p = h[b][t], q = z[b][t + 1];
      expect -= (p.dot(q) / (p.norm() * q.norm())).item<double>() / 8.0;
    }
  EXPECT_NEAR(next_embedding_loss(h, z).loss.item<double>(), expect, 1e-6);
}

TEST(NepaLoss, StopGradientBlocksTheTargetPath) {
  torch::manual_seed(2);
  torch::Tensor h = torch::randn({2, 6, 8}, torch::requires_grad());
  torch::Tensor z = torch::randn({2, 6, 8}, torch::requires_grad());
  next_embedding_loss(h, z, true, /*stop_grad=*/true).loss.backward();
  EXPECT_FALSE(z.grad().defined() && z.grad().abs().sum().item<double>() > 0);
  EXPECT_GT(h.grad().abs().sum().item<double>(), 0);
  h.mutable_grad() = torch::Tensor();
  next_embedding_loss(h, z, true, /*stop_grad=*/false).loss.backward();
  ASSERT_TRUE(z.grad().defined());
  EXPECT_GT(z.grad().abs().sum().item<double>(), 0);
  EXPECT_EQ(z.grad()[0][0].abs().sum().item<double>(), 0.0);  // token 0 (CLS) is never a target
}

TEST(NepaLoss, StopGradientInTheModel) {
  // Through the model: the patch embedding gets gradient only through the prediction path, so its gradient
  // differs with stop_grad on vs off, and with a detached prediction it gets none at all.
  ModelConfig c = nepa::test::tiny_model_config();
  c.image_size = 8;
  c.num_hidden_layers = 1;
  torch::manual_seed(3);
  ViTNepaModel m(c);
  m->eval();
  torch::Tensor x = torch::randn({2, 3, 8, 8});
  auto& w = m->embeddings->patch_embeddings->projection->weight;
  auto out = m->forward(x);
  EXPECT_FALSE(next_embedding_loss(out.last_hidden_state.detach(), out.input_embedding).loss.requires_grad());
  next_embedding_loss(out.last_hidden_state, out.input_embedding, true, true).loss.backward();
  torch::Tensor g_stop = w.grad().clone();
  m->zero_grad();
  auto out2 = m->forward(x);
  next_embedding_loss(out2.last_hidden_state, out2.input_embedding, true, false).loss.backward();
  EXPECT_GT(nepa::test::max_abs_diff(g_stop, w.grad()), 1e-8);
}

TEST(NepaLoss, CollapseIndicator) {
  torch::manual_seed(4);
  torch::Tensor z = torch::randn({4, 10, 64});
  torch::Tensor collapsed = torch::randn({1, 1, 64}).expand({4, 10, 64});
  EXPECT_NEAR(next_embedding_loss(collapsed, z).pred_std.item<double>(), 0.0, 1e-6);
  double healthy = next_embedding_loss(torch::randn({4, 10, 64}), z).pred_std.item<double>();
  EXPECT_NEAR(healthy, 1.0 / std::sqrt(64.0), 0.03);
}

TEST(NepaLoss, RandomPatchMaskHasExactCount) {
  torch::manual_seed(5);
  torch::Tensor m = random_patch_mask(6, 49, 0.4, torch::kCPU);
  EXPECT_EQ(m.scalar_type(), torch::kBool);
  EXPECT_TRUE(torch::equal(m.sum(1), torch::full({6}, 20, torch::kInt64)));  // round(0.4*49) = 20
  EXPECT_FALSE(torch::equal(m[0], m[1]));
  EXPECT_EQ(random_patch_mask(2, 10, 0.0, torch::kCPU).sum().item<int64_t>(), 0);
}

TEST(NepaLoss, ShapeErrors) {
  EXPECT_THROW(next_embedding_loss(torch::zeros({2, 3, 4}), torch::zeros({2, 4, 4})), std::invalid_argument);
  EXPECT_THROW(next_embedding_loss(torch::zeros({2, 1, 4}), torch::zeros({2, 1, 4})), std::invalid_argument);
}
