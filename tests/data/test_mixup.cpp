#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "nepa/data/mixup.h"
#include "test_util.h"

namespace nepa {
namespace {

TEST(Mixup, BetaSamplesHaveTheBetaMeanAndVariance) {
  for (double alpha : {0.8, 1.0, 2.5}) {
    SampleRng rng(42);
    const int n = 40000;
    double sum = 0, sq = 0;
    for (int i = 0; i < n; ++i) {
      const double x = sample_beta(alpha, rng);
      ASSERT_GT(x, 0.0);
      ASSERT_LT(x, 1.0);
      sum += x;
      sq += x * x;
    }
    const double mean = sum / n, var = sq / n - mean * mean;
    EXPECT_NEAR(mean, 0.5, 0.01) << alpha;
    EXPECT_NEAR(var, 1.0 / (4.0 * (2.0 * alpha + 1.0)), 0.004) << alpha;  // Beta(a, a)
  }
}

TEST(Mixup, CutMixLambdaIsTheAreaActuallyKept) {
  SampleRng rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const double lam = rng.uniform(0.05, 0.95);
    const MixParams m = cutmix_box(24, 20, lam, rng);
    // Paste a marked mirror image and count the pixels that came from it, box clipping included.
    torch::Tensor images = torch::zeros({2, 1, 24, 20});
    images[1].fill_(1.0);
    torch::Tensor labels = torch::tensor({0, 1}, torch::kInt64);
    torch::Tensor targets = apply_mix(images, labels, 2, 0.0, m);
    const double kept = 1.0 - images[0].sum().item<double>() / (24.0 * 20.0);
    EXPECT_DOUBLE_EQ(m.lambda, kept) << trial;
    // The box is centred on a pixel and half-sides of int(side * sqrt(1 - lam)) / 2 before clipping.
    EXPECT_LE(m.y1 - m.y0, static_cast<int>(24 * std::sqrt(1 - lam)));
    EXPECT_LE(m.x1 - m.x0, static_cast<int>(20 * std::sqrt(1 - lam)));
    EXPECT_NEAR(targets[0][0].item<double>(), m.lambda, 1e-6);
    EXPECT_NEAR(targets[0][1].item<double>(), 1.0 - m.lambda, 1e-6);
  }
}

TEST(Mixup, TargetsAreSmoothedMixedAndSumToOne) {
  torch::manual_seed(0);
  torch::Tensor labels = torch::tensor({3, 0, 9, 3}, torch::kInt64);
  torch::Tensor one_hot = smooth_one_hot(labels, 10, 0.1);
  EXPECT_NEAR(one_hot[0][3].item<double>(), 0.91, 1e-6);
  EXPECT_NEAR(one_hot[0][4].item<double>(), 0.01, 1e-6);
  FinetuneConfig c;  // 0.8 / 1.0, prob 1, switch 0.5
  SampleRng rng(3);
  int cutmix = 0;
  for (int i = 0; i < 400; ++i) {
    torch::Tensor images = torch::rand({4, 3, 8, 8});
    const torch::Tensor before = images.clone();
    const MixParams m = draw_mix(c, 8, 8, rng);
    ASSERT_TRUE(m.mixed);
    cutmix += m.cutmix;
    torch::Tensor t = apply_mix(images, labels, 10, 0.1, m);
    ASSERT_LE(test::max_abs_diff(t.sum(1), torch::ones({4})), 1e-6);
    if (!m.cutmix) {  // a convex blend with the mirrored batch
      ASSERT_LE(test::max_abs_diff(images, before * m.lambda + before.flip(0) * (1 - m.lambda)), 1e-6);
      ASSERT_LE(test::max_abs_diff(t, one_hot * m.lambda + one_hot.flip(0) * (1 - m.lambda)), 1e-6);
    }
  }
  EXPECT_NEAR(cutmix, 200, 40);  // switch probability 0.5
  // Off, or not drawn: untouched images and plain smoothed targets.
  c.mixup_prob = 0.0;
  torch::Tensor images = torch::rand({4, 3, 8, 8});
  const torch::Tensor copy = images.clone();
  const MixParams none = draw_mix(c, 8, 8, rng);
  EXPECT_FALSE(none.mixed);
  EXPECT_TRUE(torch::equal(apply_mix(images, labels, 10, 0.1, none), one_hot));
  EXPECT_TRUE(torch::equal(images, copy));
  // An odd batch cannot pair with its mirror.
  torch::Tensor odd = torch::rand({3, 3, 8, 8});
  MixParams mixed;
  mixed.mixed = true;
  mixed.lambda = 0.5;
  EXPECT_THROW(apply_mix(odd, labels.narrow(0, 0, 3), 10, 0.1, mixed), std::invalid_argument);
}

TEST(Mixup, SoftTargetCrossEntropyIsLabelSmoothingCrossEntropy) {
  torch::manual_seed(1);
  torch::Tensor logits = torch::randn({5, 7});
  torch::Tensor labels = torch::tensor({0, 6, 3, 3, 1}, torch::kInt64);
  const double s = 0.1;
  torch::Tensor logp = torch::log_softmax(logits, 1);
  // (1 - s) * NLL + s * mean over classes of -log p: timm's LabelSmoothingCrossEntropy.
  torch::Tensor expected =
      ((1 - s) * -logp.gather(1, labels.view({-1, 1})).squeeze(1) + s * -logp.mean(1)).mean();
  torch::Tensor got = soft_target_cross_entropy(logits, smooth_one_hot(labels, 7, s));
  EXPECT_NEAR(got.item<double>(), expected.item<double>(), 1e-6);
}

}  // namespace
}  // namespace nepa
