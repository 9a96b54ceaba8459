#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>

#include "nepa/data/transforms.h"
#include "test_util.h"

namespace nepa {

// Readable failure messages for boxes (found by argument-dependent lookup, hence in nepa itself).
void PrintTo(const CropBox& b, std::ostream* os) {
  *os << "{x " << b.x << ", y " << b.y << ", w " << b.w << ", h " << b.h << "}";
}

namespace {

TEST(SampleRng, DeterministicPerSampleAndUniformInRange) {
  SampleRng a = SampleRng::for_sample(1, 2, 3), b = SampleRng::for_sample(1, 2, 3);
  SampleRng c = SampleRng::for_sample(1, 2, 4), d = SampleRng::for_sample(1, 3, 3), e = SampleRng::for_sample(1, 3, 2);
  const uint64_t va = a.next();
  EXPECT_EQ(va, b.next());
  EXPECT_NE(va, c.next());
  EXPECT_NE(va, d.next());
  EXPECT_NE(SampleRng::for_sample(1, 2, 3).next(), e.next());  // (epoch, index) is not symmetric
  SampleRng r(7);
  double sum = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.003);
  int hist[3] = {0, 0, 0};
  for (int i = 0; i < 30000; ++i) {
    const int64_t k = r.randint(3, 5);
    ASSERT_TRUE(k >= 3 && k <= 5) << k;
    ++hist[k - 3];
  }
  for (int h : hist) EXPECT_NEAR(h, 10000, 400);  // ~4.6 sigma
  EXPECT_EQ(r.randint(4, 4), 4);
}

TEST(SampleRng, MatchesTheXoshiroReferenceStream) {
  // xoshiro256** seeded by splitmix64, transcribed separately from Vigna's reference code.
  SampleRng r(0);
  uint64_t x = 0, s[4];
  auto splitmix = [&x] {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  for (auto& v : s) v = splitmix();
  EXPECT_EQ(s[0], 0xe220a8397b1dcdafULL);  // splitmix64's known first output for seed 0
  auto rotl = [](uint64_t v, int k) { return (v << k) | (v >> (64 - k)); };
  for (int i = 0; i < 100; ++i) {
    const uint64_t expected = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    ASSERT_EQ(r.next(), expected) << i;
  }
}

// torchvision's get_params written out line by line, on the same generator: pins the order of the draws.
CropBox reference_get_params(int width, int height, double s0, double s1, double r0, double r1, SampleRng& rng) {
  const double area = double(height) * width;
  for (int t = 0; t < 10; ++t) {
    const double target_area = area * rng.uniform(s0, s1);
    const double aspect_ratio = std::exp(rng.uniform(std::log(r0), std::log(r1)));
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect_ratio)));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect_ratio)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int i = static_cast<int>(rng.randint(0, height - h));
      const int j = static_cast<int>(rng.randint(0, width - w));
      return {j, i, w, h};
    }
  }
  ADD_FAILURE() << "unexpected fallback";
  return {};
}

TEST(RandomResizedCrop, DrawsInTorchvisionsOrder) {
  SampleRng a(5), b(5);
  for (int i = 0; i < 2000; ++i)
    ASSERT_EQ(random_resized_crop_box(500, 375, {0.08, 1.0}, {0.75, 4.0 / 3.0}, a),
              reference_get_params(500, 375, 0.08, 1.0, 0.75, 4.0 / 3.0, b))
        << i;
}

// On a square image with scale (0.08, 1) and ratio (3/4, 4/3), a try with area fraction s ~ U(0.08, 1) and
// log-aspect l ~ U(-L, L), L = ln 4/3, fits exactly when s <= exp(-|l|) (up to rounding to whole pixels).
// The accepted boxes are the uniform density restricted to that region (the fallback after 10 rejections has
// probability ~0.14^10), so with m(l) = exp(-|l|):
//   E[s]   = int_0^L (m^2 - 0.08^2) / 2 dl / int_0^L (m - 0.08) dl
//          = ((1 - e^-2L) / 2 - 0.0064 L) / 2 / ((1 - e^-L) - 0.08 L)        ~ 0.4778
//   E[|l|] = int_0^L l (m - 0.08) dl / int_0^L (m - 0.08) dl
//          = (1 - e^-L (1 + L) - 0.04 L^2) / ((1 - e^-L) - 0.08 L)            ~ 0.1363 (0.1438 without rejection)
//   E[l]   = 0 by symmetry (an aspect drawn uniformly instead of log-uniformly gives ~0.025)
TEST(RandomResizedCrop, BoxStatisticsFollowTheTorchvisionRule) {
  const int side = 1000, n = 100000;
  const double L = std::log(4.0 / 3.0);
  const double denom = (1 - std::exp(-L)) - 0.08 * L;
  const double expected_area = ((1 - std::exp(-2 * L)) / 2 - 0.0064 * L) / 2 / denom;
  const double expected_abs_log_aspect = (1 - std::exp(-L) * (1 + L) - 0.04 * L * L) / denom;
  SampleRng rng(11);
  double area_sum = 0, log_aspect_sum = 0, signed_log_aspect_sum = 0, x_pos_sum = 0;
  int x_pos_n = 0;
  for (int i = 0; i < n; ++i) {
    const CropBox b = random_resized_crop_box(side, side, {0.08, 1.0}, {3.0 / 4.0, 4.0 / 3.0}, rng);
    ASSERT_TRUE(b.x >= 0 && b.y >= 0 && b.w > 0 && b.h > 0 && b.x + b.w <= side && b.y + b.h <= side);
    const double frac = double(b.w) * b.h / (double(side) * side), aspect = double(b.w) / b.h;
    // Whole pixels move the area and aspect by at most ~0.5 px / 280 px past the bounds.
    ASSERT_GE(frac, 0.08 * 0.995);
    ASSERT_LE(frac, 1.0);
    ASSERT_GE(aspect, 0.75 * 0.995);
    ASSERT_LE(aspect, 4.0 / 3.0 * 1.005);
    area_sum += frac;
    log_aspect_sum += std::abs(std::log(aspect));
    signed_log_aspect_sum += std::log(aspect);
    if (b.w < side) {
      x_pos_sum += double(b.x) / (side - b.w);
      ++x_pos_n;
    }
  }
  // Standard errors: ~0.0007 for the area, ~0.0003 for |log aspect|, ~0.0005 for log aspect, ~0.001 for the
  // position.
  EXPECT_NEAR(expected_area, 0.4778, 5e-4);
  EXPECT_NEAR(area_sum / n, expected_area, 0.004);
  EXPECT_NEAR(log_aspect_sum / n, expected_abs_log_aspect, 0.0015);
  EXPECT_NEAR(signed_log_aspect_sum / n, 0.0, 0.003);
  EXPECT_NEAR(x_pos_sum / x_pos_n, 0.5, 0.006);
}

TEST(RandomResizedCrop, FallbackIsTheCentreCropWithTheRatioClamped) {
  SampleRng rng(1);
  // 100x10 with ratio exactly 1 and 90-100 % of the area: no 30x30 square fits -> full height, width = height.
  EXPECT_EQ(random_resized_crop_box(100, 10, {0.9, 1.0}, {1.0, 1.0}, rng), (CropBox{45, 0, 10, 10}));
  // Taller than the smallest ratio allows: full width, height = width / min ratio, centred.
  EXPECT_EQ(random_resized_crop_box(10, 100, {0.95, 1.0}, {0.5, 2.0}, rng), (CropBox{0, 40, 10, 20}));
  // Ratio 2..3 on a 10x12 image: every try is too wide; h = round(10 / 2) = 5, top = (12 - 5) // 2 = 3.
  EXPECT_EQ(random_resized_crop_box(10, 12, {1.0, 1.0}, {2.0, 3.0}, rng), (CropBox{0, 3, 10, 5}));
}

cv::Mat gradient_image(int w, int h, int channels) {
  cv::Mat m(h, w, CV_8UC(channels));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c)
        m.ptr<uint8_t>(y)[x * channels + c] = static_cast<uint8_t>((x * 7 + y * 3 + c * 50) % 256);
  return m;
}

double max_diff(const cv::Mat& a, const cv::Mat& b) { return cv::norm(a, b, cv::NORM_INF); }

TEST(Transforms, EvalResizesTheShortSideAndCropsTheCentre) {
  DataConfig c;
  c.image_size = 8;
  c.eval_crop_pct = 1.0;
  c.interpolation = "nearest";
  const cv::Mat img = gradient_image(12, 8, 3);  // already at the short side: a pure centre crop of columns 2..9
  cv::Mat out = eval_transform(img, c);
  ASSERT_EQ(out.size(), cv::Size(8, 8));
  EXPECT_EQ(max_diff(out, img(cv::Rect(2, 0, 8, 8))), 0.0);

  // 500x375 at 224 / 0.875: short side 256, long side int(256 * 500 / 375) = 341; the left offset is
  // round((341 - 224) / 2) = round(58.5) = 58 (Python rounds half to even), the top one 16.
  c.image_size = 224;
  c.eval_crop_pct = 0.875;
  c.interpolation = "bilinear";
  const cv::Mat big = gradient_image(500, 375, 3);
  out = eval_transform(big, c);
  ASSERT_EQ(out.size(), cv::Size(224, 224));
  cv::Mat resized = resize_image(big, 341, 256, "bilinear");
  EXPECT_EQ(max_diff(out, resized(cv::Rect(58, 16, 224, 224))), 0.0);
  // Portrait, one channel: 300x400 -> 256x341, top offset 58.
  const cv::Mat tall = gradient_image(300, 400, 1);
  out = eval_transform(tall, c);
  ASSERT_EQ(out.size(), cv::Size(224, 224));
  ASSERT_EQ(out.channels(), 1);
  resized = resize_image(tall, 256, 341, "bilinear");
  EXPECT_EQ(max_diff(out, resized(cv::Rect(16, 58, 224, 224))), 0.0);

  // The release's L view: crop_pct 0.95 -> int(224 / 0.95) = 235 (truncated, not rounded to 236), resized to a
  // square 235 x 235 whatever the aspect, then the centre 224 (offsets round(5.5) = 6 on both axes).
  c.eval_crop_pct = 0.95;
  c.eval_resize = "square";
  c.interpolation = "bicubic";
  out = eval_transform(big, c);
  ASSERT_EQ(out.size(), cv::Size(224, 224));
  resized = resize_image(big, 235, 235, "bicubic");
  EXPECT_EQ(max_diff(out, resized(cv::Rect(6, 6, 224, 224))), 0.0);
  EXPECT_EQ(describe_eval_view(c),
            "eval view: resize to 235x235 (bicubic, antialiased; eval_crop_pct 0.95, eval_resize square) -> centre "
            "crop 224");
}

TEST(Transforms, EvalPadsLikeCenterCropWhenTheResizeIsSmaller) {
  DataConfig c;
  c.image_size = 8;
  c.eval_crop_pct = 1.25;  // rejected by the config validator; CenterCrop's padding rule still applies here
  c.interpolation = "nearest";
  const cv::Mat img(5, 5, CV_8UC1, cv::Scalar(200));  // short side round(6.4) = 6 -> 6x6, padded 1 + 1
  const cv::Mat out = eval_transform(img, c);
  ASSERT_EQ(out.size(), cv::Size(8, 8));
  EXPECT_EQ(out.at<uint8_t>(0, 0), 0);
  EXPECT_EQ(out.at<uint8_t>(7, 7), 0);
  EXPECT_EQ(out.at<uint8_t>(1, 1), 200);
  EXPECT_EQ(out.at<uint8_t>(6, 6), 200);
  EXPECT_EQ(cv::countNonZero(out), 36);
}

TEST(Transforms, TrainCropIsResizedAndFlipWithProbabilityOneMirrors) {
  DataConfig c;
  c.image_size = 16;
  c.crop_scale = {1.0, 1.0};
  c.crop_ratio = {1.0, 1.0};
  c.interpolation = "nearest";
  c.hflip_prob = 1.0;
  const cv::Mat img = gradient_image(16, 16, 1);
  cv::Mat flipped;
  SampleRng rng(3);
  cv::Mat out = train_transform(img, c, rng);
  cv::flip(img, flipped, 1);
  ASSERT_EQ(out.type(), CV_8UC1);
  EXPECT_EQ(max_diff(out, flipped), 0.0);
  c.hflip_prob = 0.0;
  SampleRng rng2(3);
  EXPECT_EQ(max_diff(train_transform(img, c, rng2), img), 0.0);

  // The output is the box of random_resized_crop_box (same draws) resized to image_size.
  c.image_size = 24;
  c.crop_scale = {0.08, 1.0};
  c.crop_ratio = {0.75, 4.0 / 3.0};
  c.interpolation = "bicubic";
  const cv::Mat rgb = gradient_image(90, 70, 3);
  SampleRng r1(9), r2(9);
  out = train_transform(rgb, c, r1);
  const CropBox box = random_resized_crop_box(90, 70, c.crop_scale, c.crop_ratio, r2);
  const cv::Mat expected = resize_image(rgb(cv::Rect(box.x, box.y, box.w, box.h)), 24, 24, "bicubic");
  ASSERT_EQ(out.type(), CV_8UC3);
  EXPECT_EQ(max_diff(out, expected), 0.0);
}

TEST(Transforms, NormaliseWritesExactChannelPlanes) {
  cv::Mat img(1, 2, CV_8UC3);
  img.at<cv::Vec3b>(0, 0) = {0, 128, 255};
  img.at<cv::Vec3b>(0, 1) = {255, 0, 64};
  std::vector<float> out(6);
  const std::vector<double> mean = {0.5, 0.4, 0.3}, std = {0.5, 0.2, 0.1};
  normalise_into(img, mean, std, out.data());
  auto ref = [&](int v, int k) { return static_cast<float>((v / 255.0 - mean[k]) / std[k]); };
  const float expected[6] = {ref(0, 0), ref(255, 0), ref(128, 1), ref(0, 1), ref(255, 2), ref(64, 2)};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out[i], expected[i]) << i;
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_THROW(normalise_into(img, {0.5}, {0.5}, out.data()), std::invalid_argument);

  // A view into a larger image (rows not contiguous), one channel.
  const cv::Mat big = gradient_image(10, 6, 1);
  const cv::Mat roi = big(cv::Rect(3, 2, 4, 3));
  std::vector<float> plane(12);
  normalise_into(roi, {0.25}, {2.0}, plane.data());
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 4; ++x)
      EXPECT_EQ(plane[y * 4 + x], static_cast<float>((roi.at<uint8_t>(y, x) / 255.0 - 0.25) / 2.0)) << y << "," << x;
}

TEST(Transforms, InterpolationNames) {
  EXPECT_EQ(interpolation_flag("bilinear"), cv::INTER_LINEAR);
  EXPECT_EQ(interpolation_flag("bicubic"), cv::INTER_CUBIC);
  EXPECT_EQ(interpolation_flag("nearest"), cv::INTER_NEAREST);
  EXPECT_EQ(interpolation_flag("area"), cv::INTER_AREA);
  EXPECT_THROW(interpolation_flag("lanczos"), std::invalid_argument);
}

}  // namespace
}  // namespace nepa
