#include <gtest/gtest.h>
#include <opencv2/core.hpp>

#include <cmath>

#include "nepa/data/transforms.h"
#include "test_util.h"

namespace nepa {
namespace {

TEST(SampleRng, DeterministicPerSampleAndUniformInRange) {
  SampleRng a = SampleRng::for_sample(1, 2, 3), b = SampleRng::for_sample(1, 2, 3);
  SampleRng c = SampleRng::for_sample(1, 2, 4), d = SampleRng::for_sample(1, 3, 3);
  uint64_t va = a.next();
  EXPECT_EQ(va, b.next());
  EXPECT_NE(va, c.next());
  EXPECT_NE(va, d.next());
  SampleRng r(7);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
  for (int i = 0; i < 1000; ++i) {
    int64_t k = r.randint(3, 5);
    ASSERT_TRUE(k >= 3 && k <= 5);
  }
}

// Boxes stay inside the image and respect the scale/ratio bounds; the mean area matches the sampling rule.
TEST(RandomResizedCrop, BoxStatisticsFollowTheTorchvisionRule) {
  const std::vector<double> scale = {0.08, 1.0}, ratio = {3.0 / 4.0, 4.0 / 3.0};
  const int W = 500, H = 375;
  SampleRng rng(11);
  double area_sum = 0;
  int n = 20000, fallback = 0;
  for (int i = 0; i < n; ++i) {
    CropBox b = random_resized_crop_box(W, H, scale, ratio, rng);
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    ASSERT_LE(b.x + b.w, W);
    ASSERT_LE(b.y + b.h, H);
    ASSERT_GT(b.w, 0);
    ASSERT_GT(b.h, 0);
    double frac = static_cast<double>(b.w) * b.h / (W * H);
    double aspect = static_cast<double>(b.w) / b.h;
    if (b.w == W && b.h == H) {
      ++fallback;
      continue;
    }
    // Rounding w and h to integers moves area and aspect slightly past the bounds.
    EXPECT_GE(frac, 0.08 * 0.97);
    EXPECT_LE(frac, 1.0);
    EXPECT_GE(aspect, 0.75 * 0.97);
    EXPECT_LE(aspect, 4.0 / 3.0 * 1.03);
    area_sum += frac;
  }
  // Monte-Carlo of the rule with an independent generator: draw (area, log-aspect) until the box fits.
  SampleRng ref(99);
  double ref_sum = 0;
  int ref_n = 0;
  for (int i = 0; i < n; ++i) {
    for (int t = 0; t < 10; ++t) {
      double a = W * H * ref.uniform(0.08, 1.0);
      double r = std::exp(ref.uniform(std::log(0.75), std::log(4.0 / 3.0)));
      double w = std::round(std::sqrt(a * r)), h = std::round(std::sqrt(a / r));
      if (w <= W && h <= H) {
        ref_sum += w * h / (W * H);
        ++ref_n;
        break;
      }
    }
  }
  EXPECT_NEAR(area_sum / (n - fallback), ref_sum / ref_n, 0.01);
  EXPECT_LT(fallback, n / 100);  // a 4:3 image almost never needs the fallback
}

TEST(RandomResizedCrop, FallbackIsTheCentreCropWithTheRatioClamped) {
  SampleRng rng(1);
  // 100x10 with ratio exactly 1 and 90-100 % of the area: no square of that area fits -> fallback.
  CropBox b = random_resized_crop_box(100, 10, {0.9, 1.0}, {1.0, 1.0}, rng);
  EXPECT_EQ(b, (CropBox{45, 0, 10, 10}));
  // Taller than the smallest ratio allows: full width, height cut to width / min ratio, centred.
  CropBox t = random_resized_crop_box(10, 100, {0.95, 1.0}, {0.5, 2.0}, rng);
  EXPECT_EQ(t, (CropBox{0, 40, 10, 20}));
}

cv::Mat gradient_image(int w, int h, int channels) {
  cv::Mat m(h, w, CV_8UC(channels));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c) m.ptr<uint8_t>(y)[x * channels + c] = static_cast<uint8_t>((x * 7 + y * 3 + c * 50) % 256);
  return m;
}

TEST(Transforms, EvalResizesTheShortSideAndCropsTheCentre) {
  DataConfig c;
  c.image_size = 8;
  c.eval_crop_pct = 1.0;
  c.interpolation = "nearest";
  cv::Mat img = gradient_image(12, 8, 3);  // already at the short side: a pure centre crop of columns 2..9
  cv::Mat out = eval_transform(img, c);
  ASSERT_EQ(out.cols, 8);
  ASSERT_EQ(out.rows, 8);
  EXPECT_EQ(cv::norm(out, img(cv::Rect(2, 0, 8, 8)), cv::NORM_INF), 0.0);
  c.image_size = 224;
  c.eval_crop_pct = 0.875;  // 256 short side for 224
  cv::Mat big = eval_transform(gradient_image(500, 375, 3), c);
  EXPECT_EQ(big.cols, 224);
  EXPECT_EQ(big.rows, 224);
}

TEST(Transforms, FlipWithProbabilityOneMirrors) {
  DataConfig c;
  c.image_size = 16;
  c.crop_scale = {1.0, 1.0};
  c.crop_ratio = {1.0, 1.0};
  c.interpolation = "nearest";
  c.hflip_prob = 1.0;
  cv::Mat img = gradient_image(16, 16, 1), flipped;
  SampleRng rng(3);
  cv::Mat out = train_transform(img, c, rng);
  cv::flip(img, flipped, 1);
  EXPECT_EQ(cv::norm(out, flipped, cv::NORM_INF), 0.0);
  c.hflip_prob = 0.0;
  SampleRng rng2(3);
  EXPECT_EQ(cv::norm(train_transform(img, c, rng2), img, cv::NORM_INF), 0.0);
}

TEST(Transforms, NormaliseWritesChannelPlanes) {
  cv::Mat img(1, 2, CV_8UC3);
  img.at<cv::Vec3b>(0, 0) = {0, 128, 255};
  img.at<cv::Vec3b>(0, 1) = {255, 0, 64};
  std::vector<float> out(6);
  normalise_into(img, {0.5, 0.4, 0.3}, {0.5, 0.2, 0.1}, out.data());
  const float expected[6] = {(0 / 255.f - 0.5f) / 0.5f,   (255 / 255.f - 0.5f) / 0.5f,
                             (128 / 255.f - 0.4f) / 0.2f, (0 / 255.f - 0.4f) / 0.2f,
                             (255 / 255.f - 0.3f) / 0.1f, (64 / 255.f - 0.3f) / 0.1f};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(out[i], expected[i], 1e-5) << i;
  EXPECT_THROW(normalise_into(img, {0.5}, {0.5}, out.data()), std::invalid_argument);
}

}  // namespace
}  // namespace nepa
