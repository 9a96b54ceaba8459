#include <gtest/gtest.h>
#include <opencv2/core.hpp>

#include <cmath>

#include "nepa/data/randaugment.h"
#include "test_util.h"

namespace nepa {
namespace {

cv::Mat random_image(int h, int w, int channels, uint64_t seed) {
  cv::Mat m(h, w, channels == 1 ? CV_8UC1 : CV_8UC3);
  SampleRng rng(seed);
  for (int i = 0; i < h * w * channels; ++i) m.data[i] = static_cast<uchar>(rng.randint(0, 255));
  return m;
}

bool same(const cv::Mat& a, const cv::Mat& b) { return a.size() == b.size() && cv::norm(a, b, cv::NORM_INF) == 0; }

TEST(RandAugment, ParsesTimmNames) {
  RandAugmentSpec s = RandAugmentSpec::parse("rand-m9-mstd0.5-inc1");
  EXPECT_EQ(s.magnitude, 9);
  EXPECT_EQ(s.magnitude_std, 0.5);
  EXPECT_EQ(s.num_ops, 2);
  EXPECT_EQ(s.prob, 0.5);
  EXPECT_EQ(s.magnitude_max, 10);
  s = RandAugmentSpec::parse("rand-m7-n3-mstdinf-p1.0-inc1");
  EXPECT_EQ(s.num_ops, 3);
  EXPECT_TRUE(std::isinf(s.magnitude_std));
  EXPECT_EQ(s.prob, 1.0);
  for (const char* bad : {"augmix-m9", "rand-m9-mstd0.5", "rand-mx-inc1", "rand-q3-inc1", "rand-m9-n0-inc1"}) {
    std::string msg = test::error_of<std::invalid_argument>([&] { RandAugmentSpec::parse(bad); });
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
  }
}

TEST(RandAugment, DeterministicGivenTheSeed) {
  const cv::Mat img = random_image(32, 24, 3, 1);
  const RandAugmentSpec spec = RandAugmentSpec::parse("rand-m9-mstd0.5-inc1");
  AugParams params;
  int changed = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    SampleRng a(seed), b(seed);
    const cv::Mat x = rand_augment(img, spec, params, a), y = rand_augment(img, spec, params, b);
    ASSERT_TRUE(same(x, y)) << seed;
    changed += !same(x, img);
  }
  EXPECT_GT(changed, 25);  // each of 2 ops applies with p 0.5: ~75 % of images change
}

TEST(RandAugment, EachOpDoesWhatItsNameSays) {
  AugParams params;
  SampleRng rng(5);
  const cv::Mat img = random_image(21, 21, 3, 2);
  // Rotate about the centre: the centre pixel stays.
  for (int i = 0; i < 10; ++i) {
    cv::Mat r = apply_aug_op(img, AugOp::kRotate, 9, params, rng);
    EXPECT_EQ(r.at<cv::Vec3b>(10, 10), img.at<cv::Vec3b>(10, 10));
    EXPECT_FALSE(same(r, img));
  }
  // Equalize flattens the histogram of a low-contrast image: each quarter of the range gets ~1/4 of the pixels.
  cv::Mat dull(64, 64, CV_8UC1);
  SampleRng g(3);
  for (int i = 0; i < 64 * 64; ++i) dull.data[i] = static_cast<uchar>(100 + g.randint(0, 20));
  cv::Mat eq = apply_aug_op(dull, AugOp::kEqualize, 5, params, rng);
  int quarter[4] = {0, 0, 0, 0};
  for (int i = 0; i < 64 * 64; ++i) ++quarter[eq.data[i] / 64];
  for (int q : quarter) EXPECT_NEAR(q / 4096.0, 0.25, 0.06);
  // AutoContrast stretches each channel to [0, 255].
  double lo, hi;
  cv::minMaxLoc(apply_aug_op(dull, AugOp::kAutoContrast, 5, params, rng), &lo, &hi);
  EXPECT_EQ(lo, 0);
  EXPECT_EQ(hi, 255);
  // Invert, and the solarize / posterize thresholds of the increasing set.
  cv::Mat inv;
  cv::bitwise_not(img, inv);
  EXPECT_TRUE(same(apply_aug_op(img, AugOp::kInvert, 0, params, rng), inv));
  EXPECT_TRUE(same(apply_aug_op(img, AugOp::kSolarizeIncreasing, 10, params, rng), inv));  // threshold 0
  EXPECT_TRUE(same(apply_aug_op(img, AugOp::kSolarizeIncreasing, 0, params, rng), img));   // threshold 256
  cv::Mat post = apply_aug_op(img, AugOp::kPosterizeIncreasing, 9, params, rng);           // 4 - 3 = 1 bit
  for (int i = 0; i < post.rows * post.cols * 3; ++i) ASSERT_TRUE(post.data[i] == 0 || post.data[i] == 128);
  // Enhancements at magnitude 0 have factor 1 (identity); brightness at factor 0.1 darkens.
  for (AugOp op : {AugOp::kColorIncreasing, AugOp::kContrastIncreasing, AugOp::kBrightnessIncreasing,
                   AugOp::kSharpnessIncreasing, AugOp::kShearX, AugOp::kShearY})
    EXPECT_TRUE(same(apply_aug_op(img, op, 0, params, rng), img)) << aug_op_name(op);
  EXPECT_LT(cv::mean(apply_aug_op(img, AugOp::kBrightnessIncreasing, 10, params, rng))[0], cv::mean(img)[0]);
  // TranslateXRel at magnitude 10 moves by 0.45 x width = 9 px of 20, filling with the fill colour.
  const cv::Mat wide = random_image(8, 20, 3, 4);
  cv::Mat t = apply_aug_op(wide, AugOp::kTranslateXRel, 10, params, rng);
  const bool left = same(t(cv::Rect(0, 0, 11, 8)), wide(cv::Rect(9, 0, 11, 8)));
  const bool right = same(t(cv::Rect(9, 0, 11, 8)), wide(cv::Rect(0, 0, 11, 8)));
  EXPECT_TRUE(left || right);
  EXPECT_EQ(t.at<cv::Vec3b>(4, left ? 19 : 0), cv::Vec3b(128, 128, 128));
  // Grey images pass through every op.
  const cv::Mat grey = random_image(16, 16, 1, 6);
  for (int op = 0; op <= static_cast<int>(AugOp::kTranslateYRel); ++op)
    EXPECT_EQ(apply_aug_op(grey, static_cast<AugOp>(op), 7, params, rng).type(), CV_8UC1);
}

TEST(ColorJitter, IdentityAtZeroAndDeterministic) {
  const cv::Mat img = random_image(16, 16, 3, 8);
  SampleRng a(1);
  EXPECT_TRUE(same(color_jitter(img, 0.0, a), img));
  SampleRng c(2), d(2);
  const cv::Mat x = color_jitter(img, 0.4, c);
  EXPECT_TRUE(same(x, color_jitter(img, 0.4, d)));
  EXPECT_FALSE(same(x, img));
}

TEST(RandomErasing, OneBoxWithinTheAreaAndAspectBounds) {
  const int c = 3, h = 40, w = 50;
  int erased = 0;
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    std::vector<float> img(c * h * w, 7.0f);
    SampleRng rng(seed);
    if (!random_erase(img.data(), c, h, w, 0.25, rng)) {
      for (float v : img) ASSERT_EQ(v, 7.0f);
      continue;
    }
    ++erased;
    int y0 = h, y1 = -1, x0 = w, x1 = -1, count = 0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        if (img[y * w + x] != 7.0f) {
          y0 = std::min(y0, y), y1 = std::max(y1, y), x0 = std::min(x0, x), x1 = std::max(x1, x);
          ++count;
        }
    const int bh = y1 - y0 + 1, bw = x1 - x0 + 1;
    ASSERT_EQ(count, bh * bw) << seed;  // a filled rectangle
    const double area = static_cast<double>(bh) * bw / (h * w);
    EXPECT_GE(area, 0.02 * 0.8) << seed;  // rounding of the sides
    EXPECT_LE(area, 1.0 / 3.0 * 1.2) << seed;
    const double aspect = static_cast<double>(bh) / bw;
    EXPECT_GE(aspect, 0.3 * 0.75) << seed;
    EXPECT_LE(aspect, 1 / 0.3 / 0.75) << seed;
    for (int ch = 1; ch < c; ++ch)  // every channel of the box, independently
      ASSERT_NE(img[(ch * h + y0) * w + x0], img[y0 * w + x0]);
  }
  EXPECT_NEAR(erased / 2000.0, 0.25, 0.04);
}

}  // namespace
}  // namespace nepa
