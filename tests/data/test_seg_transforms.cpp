#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "nepa/data/seg_transforms.h"
#include "test_util.h"

namespace nepa {
namespace {

// An RGB image whose pixels encode their coordinates: R = x mod 251, G = y mod 251, B = (x / 251 + y / 251 * 7)
// mod 251. Below 251 x 251, R = x and G = y exactly.
cv::Mat coordinate_image(int width, int height) {
  cv::Mat img(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      img.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(x % 251), static_cast<uint8_t>(y % 251),
                                          static_cast<uint8_t>((x / 251 + y / 251 * 7) % 251));
  return img;
}

template <class F>
cv::Mat label_map(int width, int height, F&& f) {
  cv::Mat labels(height, width, CV_8UC1);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) labels.at<uint8_t>(y, x) = static_cast<uint8_t>(f(x, y));
  return labels;
}

bool same(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return false;
  return cv::norm(a, b, cv::NORM_INF) == 0;
}

TEST(SegTransforms, RescaleSizeMatchesMmcvOnHandComputedCases) {
  // factor = min(2048 / 640, 512 / 480) = 1.0667: 640 * 1.0667 = 682.67 -> 683, 480 -> 512.
  EXPECT_EQ(rescale_size(640, 480, 2048, 512), cv::Size(683, 512));
  EXPECT_EQ(rescale_size(640, 480, 512, 2048), cv::Size(683, 512));  // (long, short) in either order
  // A very wide image is limited by the long side: min(2048 / 4000, 512 / 500) = 0.512 -> 2048 x 256.
  EXPECT_EQ(rescale_size(4000, 500, 2048, 512), cv::Size(2048, 256));
  // A tall one too: min(2048 / 3000, 512 / 300) = 0.68267: 300 * 0.68267 = 204.8 -> 205.
  EXPECT_EQ(rescale_size(300, 3000, 2048, 512), cv::Size(205, 2048));
  // Shrinking by the short side: min(1024 / 2000, 256 / 1000) = 0.256 -> 512 x 256.
  EXPECT_EQ(rescale_size(2000, 1000, 1024, 256), cv::Size(512, 256));
  // Rounding half up of w * factor: 3 * (512 / 2) = 768 exactly; 7 * 0.5 = 3.5 -> 4.
  EXPECT_EQ(rescale_size(3, 2, 4096, 512), cv::Size(768, 512));
  EXPECT_EQ(rescale_size(7, 4, 100, 2), cv::Size(4, 2));
  EXPECT_THROW(rescale_size(0, 4, 100, 2), std::invalid_argument);
}

TEST(SegTransforms, RandomResizeTruncatesTheTargetScaleAsMmcv) {
  // r = 0.7: target (int(2048 * 0.7), int(512 * 0.7)) = (1433, 358); factor = min(1433 / 640, 358 / 480) = 0.745833
  // -> 477 x 358. Without the truncation (358.4 / 480) the width would be 478.
  SegTrainOptions o;
  o.ratio_lo = o.ratio_hi = 0.7;
  const cv::Mat img = coordinate_image(640, 480);
  const cv::Mat lab = label_map(640, 480, [](int x, int y) { return (x + 3 * y) % 150; });
  SampleRng rng(3);
  const SegView v = seg_random_resize(img, lab, o, rng);
  EXPECT_EQ(v.image.size(), cv::Size(477, 358));
  EXPECT_EQ(v.labels.size(), cv::Size(477, 358));
  EXPECT_EQ(v.image.type(), CV_8UC3);
  EXPECT_EQ(v.labels.type(), CV_8UC1);
  // OpenCV's bilinear (mmcv.imresize), not the antialiased filter; labels nearest.
  cv::Mat want_img, want_lab;
  cv::resize(img, want_img, cv::Size(477, 358), 0, 0, cv::INTER_LINEAR);
  cv::resize(lab, want_lab, cv::Size(477, 358), 0, 0, cv::INTER_NEAREST);
  EXPECT_TRUE(same(v.image, want_img));
  EXPECT_TRUE(same(v.labels, want_lab));
  // One uniform draw.
  SampleRng replay(3);
  replay.uniform();
  EXPECT_EQ(rng.next(), replay.next());
}

TEST(SegTransforms, JointGeometryIsExactAtTwiceTheSize) {
  // scale (120, 90) at ratio 2 doubles a 120 x 90 image exactly. Bilinear of a linear ramp at 2x gives
  // floor(x_out / 2), which is what nearest picks, so image and labels must agree exactly.
  const int W = 120, H = 90;
  const cv::Mat img = coordinate_image(W, H);
  const cv::Mat lab = label_map(W, H, [](int x, int y) { return (x + 3 * y) % 150; });
  SegTrainOptions o;
  o.scale_long = 120;
  o.scale_short = 90;
  o.ratio_lo = o.ratio_hi = 2.0;
  o.crop = 64;
  o.photometric = false;
  int flipped = 0, unflipped = 0;
  std::set<std::pair<int, int>> origins;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    SampleRng rng(seed);
    const SegView v = seg_train_view(img, lab, o, rng);
    ASSERT_EQ(v.image.size(), cv::Size(64, 64)) << seed;
    ASSERT_EQ(v.labels.size(), cv::Size(64, 64)) << seed;
    ASSERT_EQ(v.image.type(), CV_8UC3);
    ASSERT_EQ(v.labels.type(), CV_8UC1);
    int mismatches = 0;
    for (int y = 0; y < 64; ++y)
      for (int x = 0; x < 64; ++x) {
        const cv::Vec3b p = v.image.at<cv::Vec3b>(y, x);
        const int label = v.labels.at<uint8_t>(y, x);
        if (label == 255) continue;
        if (label != (p[0] + 3 * p[1]) % 150 || p[2] != 0) ++mismatches;
      }
    EXPECT_EQ(mismatches, 0) << "seed " << seed;
    // The source x falls along a row, then the view was flipped (with its labels, as checked above).
    const bool flip = v.image.at<cv::Vec3b>(0, 0)[0] > v.image.at<cv::Vec3b>(0, 63)[0];
    (flip ? flipped : unflipped)++;
    origins.insert({v.image.at<cv::Vec3b>(0, flip ? 63 : 0)[0], v.image.at<cv::Vec3b>(0, 0)[1]});
  }
  EXPECT_GT(flipped, 5);
  EXPECT_GT(unflipped, 5);
  EXPECT_GT(origins.size(), 10u);  // the crop moves
}

TEST(SegTransforms, JointGeometryStaysAlignedWhenScalingUpAndDown) {
  // Labels encode x (and, in a second run with the same seed, y); the bilinear image's coordinate can lead the
  // nearest label's by up to 1.5 source pixels (pixel-centre vs floor mapping, shrinking by up to 2).
  const int W = 120, H = 90, crop = 80;
  const cv::Mat img = coordinate_image(W, H);
  const cv::Mat lab_x = label_map(W, H, [](int x, int) { return x; });
  const cv::Mat lab_y = label_map(W, H, [](int, int y) { return y; });
  SegTrainOptions o;
  o.scale_long = 120;
  o.scale_short = 90;
  o.ratio_lo = 0.5;
  o.ratio_hi = 2.0;
  o.crop = crop;
  o.cat_max_ratio = 1.0;  // the geometry then does not depend on the label content
  o.photometric = false;
  int up = 0, down = 0, flipped = 0;
  for (uint64_t seed = 0; seed < 60; ++seed) {
    SampleRng rx(seed), ry(seed);
    const SegView vx = seg_train_view(img, lab_x, o, rx);
    const SegView vy = seg_train_view(img, lab_y, o, ry);
    ASSERT_TRUE(same(vx.image, vy.image)) << seed;
    SampleRng replay(seed);
    const double r = replay.uniform(o.ratio_lo, o.ratio_hi);
    const cv::Size resized = rescale_size(W, H, static_cast<int>(120 * r), static_cast<int>(90 * r));
    (resized.width > W ? up : down)++;
    ASSERT_EQ(vx.image.size(), cv::Size(std::min(crop, resized.width), std::min(crop, resized.height))) << seed;
    // Pad as a caller would and check only labelled pixels.
    const cv::Mat px = pad_labels(vx.labels, crop), py = pad_labels(vy.labels, crop);
    ASSERT_EQ(px.size(), cv::Size(crop, crop));
    int bad = 0, labelled = 0;
    for (int y = 0; y < crop; ++y)
      for (int x = 0; x < crop; ++x) {
        const int lx = px.at<uint8_t>(y, x), ly = py.at<uint8_t>(y, x);
        const bool inside = x < vx.image.cols && y < vx.image.rows;
        if (!inside) {
          bad += lx != 255 || ly != 255;
          continue;
        }
        ASSERT_NE(lx, 255);
        ++labelled;
        const cv::Vec3b p = vx.image.at<cv::Vec3b>(y, x);
        const int dx = p[0] - lx, dy = p[1] - ly;
        bad += dx < -1 || dx > 2 || dy < -1 || dy > 2;
      }
    EXPECT_EQ(bad, 0) << "seed " << seed << " resized " << resized;
    EXPECT_EQ(labelled, static_cast<int>(vx.image.total()));
    if (vx.image.cols > 1 && vx.image.at<cv::Vec3b>(0, 0)[0] > vx.image.at<cv::Vec3b>(0, vx.image.cols - 1)[0])
      ++flipped;
  }
  EXPECT_GT(up, 5);
  EXPECT_GT(down, 5);
  EXPECT_GT(flipped, 5);
}

TEST(SegTransforms, FlipMovesImageAndLabelsTogether) {
  // The flip coin is drawn whatever flip_prob is, so prob 1 and prob 0 give mirror views of the same crop.
  const cv::Mat img = coordinate_image(150, 100);
  const cv::Mat lab = label_map(150, 100, [](int x, int y) { return (x + 3 * y) % 150; });
  SegTrainOptions o;
  o.scale_long = 150;
  o.scale_short = 100;
  o.crop = 64;
  o.photometric = false;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    SegTrainOptions always = o, never = o;
    always.flip_prob = 1.0;
    never.flip_prob = 0.0;
    SampleRng a(seed), b(seed);
    const SegView f = seg_train_view(img, lab, always, a);
    const SegView n = seg_train_view(img, lab, never, b);
    cv::Mat mi, ml;
    cv::flip(n.image, mi, 1);
    cv::flip(n.labels, ml, 1);
    EXPECT_TRUE(same(f.image, mi)) << seed;
    EXPECT_TRUE(same(f.labels, ml)) << seed;
    EXPECT_FALSE(same(f.labels, n.labels)) << seed;
  }
}

// Replays mmseg's crop_bbox on `rng` with an independent class count (std::map over the box).
cv::Rect replay_crop_box(const cv::Mat& labels, int crop, double cat_max_ratio, int ignore, SampleRng& rng,
                         int* boxes_drawn) {
  const int h = labels.rows, w = labels.cols;
  auto generate = [&] {
    ++*boxes_drawn;
    const int64_t oh = rng.randint(0, std::max(h - crop, 0));
    const int64_t ow = rng.randint(0, std::max(w - crop, 0));
    return cv::Rect(static_cast<int>(ow), static_cast<int>(oh), std::min(crop, w), std::min(crop, h));
  };
  auto ok = [&](const cv::Rect& box) {
    std::map<int, long> cnt;
    const cv::Mat roi = labels(box);
    for (auto it = roi.begin<uint8_t>(); it != roi.end<uint8_t>(); ++it)
      if (*it != ignore) ++cnt[*it];
    long mx = 0, sum = 0;
    for (const auto& kv : cnt) mx = std::max(mx, kv.second), sum += kv.second;
    return cnt.size() > 1 && static_cast<double>(mx) / sum < cat_max_ratio;
  };
  cv::Rect box = generate();
  if (cat_max_ratio < 1) {
    for (int i = 0; i < 10; ++i) {
      if (ok(box)) break;
      box = generate();
    }
  }
  return box;
}

bool balanced(const cv::Mat& labels, const cv::Rect& box, double ratio) {
  const cv::Mat roi = labels(box);
  const int ones = cv::countNonZero(roi == 1), zeros = cv::countNonZero(roi == 0);
  return ones > 0 && zeros > 0 && std::max(ones, zeros) < ratio * (ones + zeros);
}

TEST(SegTransforms, CropBoxFollowsTheCatMaxRatioRule) {
  // Class 0 almost everywhere, class 1 in a 30 x 30 corner, ignore (255) in the opposite 40 x 40 corner: a box
  // of 0 and 255 only holds one class (counting 255 would wrongly accept boxes near that corner).
  const cv::Mat labels = label_map(100, 100, [](int x, int y) {
    if (x < 30 && y < 30) return 1;
    return x >= 60 && y >= 60 ? 255 : 0;
  });
  int valid = 0, fallback = 0, rejected_255 = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    SampleRng a(seed), b(seed);
    const cv::Rect box = seg_crop_box(labels, 40, 0.75, 255, a);
    int drawn = 0;
    const cv::Rect want = replay_crop_box(labels, 40, 0.75, 255, b, &drawn);
    ASSERT_EQ(box, want) << "seed " << seed;
    ASSERT_EQ(a.next(), b.next()) << "seed " << seed << ": a different number of draws";
    ASSERT_EQ(box.size(), cv::Size(40, 40));
    // Independently: the boxes drawn before the chosen one all failed the check (hand count of 0s and 1s), and
    // the chosen one passes it unless it is the 11th, which is never checked.
    SampleRng c(seed);
    for (int i = 0; i < drawn; ++i) {
      const int oh = static_cast<int>(c.randint(0, 60)), ow = static_cast<int>(c.randint(0, 60));
      const cv::Rect candidate(ow, oh, 40, 40);
      if (i + 1 < drawn) {
        ASSERT_FALSE(balanced(labels, candidate, 0.75)) << "seed " << seed << " box " << i;
        const cv::Mat roi = labels(candidate);
        const int zeros = cv::countNonZero(roi == 0), ignored = cv::countNonZero(roi == 255);
        if (zeros > 0 && ignored > 0 && std::max(zeros, ignored) < 0.75 * (zeros + ignored)) ++rejected_255;
      } else {
        ASSERT_EQ(candidate, box);
      }
    }
    ASSERT_LE(drawn, 11);
    if (drawn <= 10) {
      ASSERT_TRUE(balanced(labels, box, 0.75)) << "seed " << seed;
      ++valid;
    } else {
      ++fallback;
    }
  }
  EXPECT_GT(valid, 10);
  EXPECT_GT(fallback, 10);
  EXPECT_GT(rejected_255, 10);  // boxes that would have passed had 255 counted as a class
}

TEST(SegTransforms, CropBoxOfASingleClassIsTheEleventhDraw) {
  const cv::Mat one = label_map(120, 90, [](int, int) { return 7; });
  const cv::Mat ignored(90, 120, CV_8UC1, cv::Scalar(255));
  for (const cv::Mat* labels : {&one, &ignored}) {
    for (uint64_t seed = 0; seed < 20; ++seed) {
      SampleRng a(seed), b(seed);
      const cv::Rect box = seg_crop_box(*labels, 40, 0.75, 255, a);
      cv::Rect last;
      for (int i = 0; i < 11; ++i) {  // 11 boxes x 2 randint calls
        const int oh = static_cast<int>(b.randint(0, 50)), ow = static_cast<int>(b.randint(0, 80));
        last = cv::Rect(ow, oh, 40, 40);
      }
      EXPECT_EQ(box, last) << seed;
      EXPECT_EQ(a.next(), b.next()) << seed;
    }
  }
  // cat_max_ratio >= 1: the first box, two draws.
  SampleRng a(5), b(5);
  const cv::Rect box = seg_crop_box(one, 40, 1.0, 255, a);
  const int oh = static_cast<int>(b.randint(0, 50)), ow = static_cast<int>(b.randint(0, 80));
  EXPECT_EQ(box, cv::Rect(ow, oh, 40, 40));
  EXPECT_EQ(a.next(), b.next());
  // A map smaller than the crop: the whole map, and no margin to draw.
  const cv::Mat small = label_map(30, 20, [](int, int) { return 1; });
  SampleRng c(9), fresh(9);
  EXPECT_EQ(seg_crop_box(small, 40, 0.75, 255, c), cv::Rect(0, 0, 30, 20));
  EXPECT_EQ(c.next(), fresh.next());
}

// The documented arithmetic of mmseg's PhotoMetricDistortion.convert: float32 multiply-add, clip, truncate.
cv::Mat ref_convert(const cv::Mat& img, double alpha, double beta) {
  cv::Mat out = img.clone();
  cv::Mat flat = out.reshape(1);  // one uint8 per element (a Mat iterator steps by whole pixels)
  const float a = static_cast<float>(alpha), b = static_cast<float>(beta);
  for (auto it = flat.begin<uint8_t>(); it != flat.end<uint8_t>(); ++it) {
    float v = static_cast<float>(*it) * a;
    v += b;
    *it = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
  }
  return out;
}

struct Branches {
  int bright = 0, mode1 = 0, contrast = 0, sat = 0, hue = 0, runs = 0;
};

// mmseg's PhotoMetricDistortion.transform replayed on rng (numpy randint(2) -> randint(0, 1); randint(-18, 18)
// -> [-18, 17]), each HSV step with its own round trip.
cv::Mat ref_photometric(const cv::Mat& image, SampleRng& rng, Branches* br) {
  cv::Mat img = image.clone();
  ++br->runs;
  if (rng.randint(0, 1)) {
    ++br->bright;
    img = ref_convert(img, 1.0, rng.uniform(-32, 32));
  }
  const int64_t mode = rng.randint(0, 1);
  br->mode1 += mode == 1;
  auto contrast = [&] {
    if (rng.randint(0, 1)) {
      ++br->contrast;
      img = ref_convert(img, rng.uniform(0.5, 1.5), 0.0);
    }
  };
  if (mode == 1) contrast();
  if (img.channels() == 3) {
    if (rng.randint(0, 1)) {
      ++br->sat;
      cv::Mat hsv;
      cv::cvtColor(img, hsv, cv::COLOR_RGB2HSV);
      std::vector<cv::Mat> ch;
      cv::split(hsv, ch);
      ch[1] = ref_convert(ch[1], rng.uniform(0.5, 1.5), 0.0);
      cv::merge(ch, hsv);
      cv::cvtColor(hsv, img, cv::COLOR_HSV2RGB);
    }
    if (rng.randint(0, 1)) {
      ++br->hue;
      const int delta = static_cast<int>(rng.randint(-18, 17));
      cv::Mat hsv;
      cv::cvtColor(img, hsv, cv::COLOR_RGB2HSV);
      for (auto it = hsv.begin<cv::Vec3b>(); it != hsv.end<cv::Vec3b>(); ++it)
        (*it)[0] = static_cast<uint8_t>((((*it)[0] + delta) % 180 + 180) % 180);
      cv::cvtColor(hsv, img, cv::COLOR_HSV2RGB);
    }
  }
  if (mode == 0) contrast();
  return img;
}

TEST(SegTransforms, PhotometricConvertTruncatesAndClips) {
  cv::Mat px = (cv::Mat_<uint8_t>(1, 6) << 100, 250, 5, 171, 3, 0);
  EXPECT_TRUE(same(photometric_convert(px, 1.0, 10.7), (cv::Mat_<uint8_t>(1, 6) << 110, 255, 15, 181, 13, 10)));
  EXPECT_TRUE(same(photometric_convert(px, 1.0, -10.0), (cv::Mat_<uint8_t>(1, 6) << 90, 240, 0, 161, 0, 0)));
  EXPECT_TRUE(same(photometric_convert(px, 1.5, 0.0), (cv::Mat_<uint8_t>(1, 6) << 150, 255, 7, 255, 4, 0)));
  EXPECT_TRUE(same(photometric_convert(px, 0.5, 0.0), (cv::Mat_<uint8_t>(1, 6) << 50, 125, 2, 85, 1, 0)));
}

TEST(SegTransforms, PhotometricDistortionMatchesReplayedDraws) {
  cv::Mat img(29, 37, CV_8UC3);
  cv::RNG cvrng(12345);
  cvrng.fill(img, cv::RNG::UNIFORM, 0, 256);
  img(cv::Rect(0, 0, 5, 5)).setTo(cv::Scalar::all(255));  // clipping at both ends
  img(cv::Rect(5, 0, 5, 5)).setTo(cv::Scalar::all(0));
  Branches br;
  int changed = 0;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    SampleRng a(seed), b(seed);
    const cv::Mat got = photometric_distortion(img, a);
    const cv::Mat want = ref_photometric(img, b, &br);
    ASSERT_EQ(got.size(), img.size());
    ASSERT_EQ(got.type(), CV_8UC3);
    EXPECT_TRUE(same(got, want)) << "seed " << seed << " max diff " << cv::norm(got, want, cv::NORM_INF);
    EXPECT_EQ(a.next(), b.next()) << seed;
    changed += !same(got, img);
  }
  // Every branch both taken and skipped over the seeds.
  for (const int n : {br.bright, br.mode1, br.contrast, br.sat, br.hue}) {
    EXPECT_GT(n, 5);
    EXPECT_LT(n, br.runs - 5);
  }
  EXPECT_GT(changed, 40);
  // The input is left alone.
  SampleRng c(1);
  const cv::Mat before = img.clone();
  photometric_distortion(img, c);
  EXPECT_TRUE(same(img, before));
}

TEST(SegTransforms, PhotometricDistortionOfAGreyImageSkipsTheHsvSteps) {
  cv::Mat grey(17, 23, CV_8UC1);
  cv::RNG cvrng(7);
  cvrng.fill(grey, cv::RNG::UNIFORM, 0, 256);
  Branches br;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SampleRng a(seed), b(seed);
    const cv::Mat got = photometric_distortion(grey, a);
    ASSERT_EQ(got.size(), grey.size());
    ASSERT_EQ(got.type(), CV_8UC1);
    EXPECT_TRUE(same(got, ref_photometric(grey, b, &br))) << seed;
    EXPECT_EQ(a.next(), b.next()) << seed;  // no saturation / hue draws
  }
  EXPECT_EQ(br.sat + br.hue, 0);
  // And through the whole view.
  const cv::Mat labels = label_map(23, 17, [](int x, int y) { return (x + y) % 3; });
  SegTrainOptions o;
  o.scale_long = 46;
  o.scale_short = 34;
  o.crop = 32;
  SampleRng rng(4);
  const SegView v = seg_train_view(grey, labels, o, rng);
  EXPECT_EQ(v.image.type(), CV_8UC1);
  EXPECT_EQ(v.image.size(), v.labels.size());
}

TEST(SegTransforms, HueShiftWrapsIntoZeroTo180) {
  // Saturated colours with hue 179, 178, 2 and 0 (OpenCV 8-bit hue, degrees / 2).
  cv::Mat hsv(1, 4, CV_8UC3);
  const int hues[4] = {179, 178, 2, 0};
  for (int i = 0; i < 4; ++i) hsv.at<cv::Vec3b>(0, i) = cv::Vec3b(static_cast<uint8_t>(hues[i]), 255, 255);
  cv::Mat rgb;
  cv::cvtColor(hsv, rgb, cv::COLOR_HSV2RGB);
  auto circular = [](int a, int b) {
    const int d = std::abs(a - b) % 180;
    return std::min(d, 180 - d);
  };
  for (const int delta : {10, 17, -18, -5}) {
    const cv::Mat out = shift_hue(rgb, delta);
    cv::Mat out_hsv;
    cv::cvtColor(out, out_hsv, cv::COLOR_RGB2HSV);
    cv::Mat in_hsv;
    cv::cvtColor(rgb, in_hsv, cv::COLOR_RGB2HSV);
    for (int i = 0; i < 4; ++i) {
      const int h = out_hsv.at<cv::Vec3b>(0, i)[0];
      EXPECT_LT(h, 180);
      const int want = ((hues[i] + delta) % 180 + 180) % 180;  // e.g. 179 + 10 -> 9, 2 - 18 -> 164
      EXPECT_LE(circular(h, want), 2) << "hue " << hues[i] << " delta " << delta << " got " << h;
    }
    // Exactly the documented arithmetic on the converted hue.
    for (auto it = in_hsv.begin<cv::Vec3b>(); it != in_hsv.end<cv::Vec3b>(); ++it)
      (*it)[0] = static_cast<uint8_t>((((*it)[0] + delta) % 180 + 180) % 180);
    cv::Mat want_rgb;
    cv::cvtColor(in_hsv, want_rgb, cv::COLOR_HSV2RGB);
    EXPECT_TRUE(same(out, want_rgb)) << delta;
  }
}

TEST(SegTransforms, PadLabelsFillsWithIgnoreAndKeepsTheOriginal) {
  cv::Mat labels(20, 30, CV_8UC1);
  cv::RNG cvrng(3);
  cvrng.fill(labels, cv::RNG::UNIFORM, 0, 150);
  const cv::Mat padded = pad_labels(labels, 32);
  ASSERT_EQ(padded.size(), cv::Size(32, 32));
  ASSERT_EQ(padded.type(), CV_8UC1);
  EXPECT_TRUE(same(padded(cv::Rect(0, 0, 30, 20)), labels));
  EXPECT_EQ(cv::countNonZero(padded(cv::Rect(30, 0, 2, 32)) != 255), 0);
  EXPECT_EQ(cv::countNonZero(padded(cv::Rect(0, 20, 32, 12)) != 255), 0);
  // Another ignore value, and a side already longer than the crop is kept.
  const cv::Mat wide = pad_labels(label_map(40, 20, [](int x, int) { return x; }), 32, 200);
  ASSERT_EQ(wide.size(), cv::Size(40, 32));
  EXPECT_EQ(cv::countNonZero(wide(cv::Rect(0, 20, 40, 12)) != 200), 0);
  EXPECT_EQ(wide.at<uint8_t>(19, 39), 39);
}

TEST(SegTransforms, MismatchedOrMistypedInputsThrow) {
  const cv::Mat img = coordinate_image(10, 8);
  const cv::Mat lab(9, 10, CV_8UC1, cv::Scalar(0));
  SampleRng rng(0);
  const std::string msg =
      test::error_of<std::invalid_argument>([&] { seg_train_view(img, lab, SegTrainOptions{}, rng); });
  EXPECT_NE(msg.find("10x8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("10x9"), std::string::npos) << msg;
  const cv::Mat lab3(8, 10, CV_8UC3, cv::Scalar::all(0));
  EXPECT_THROW(seg_train_view(img, lab3, SegTrainOptions{}, rng), std::invalid_argument);
  const cv::Mat img4(8, 10, CV_8UC4, cv::Scalar::all(0));
  EXPECT_THROW(seg_train_view(img4, lab3, SegTrainOptions{}, rng), std::invalid_argument);
}

TEST(SegTransforms, TrainViewIsAPureFunctionOfItsRng) {
  const cv::Mat img = coordinate_image(160, 120);
  const cv::Mat lab = label_map(160, 120, [](int x, int y) { return (x / 20 + y / 20) % 5; });
  SegTrainOptions o;
  o.scale_long = 160;
  o.scale_short = 120;
  o.crop = 96;
  int distinct = 0;
  cv::Mat first;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    SampleRng a = SampleRng::for_sample(11, 2, static_cast<int64_t>(seed));
    SampleRng b = SampleRng::for_sample(11, 2, static_cast<int64_t>(seed));
    const SegView va = seg_train_view(img, lab, o, a), vb = seg_train_view(img, lab, o, b);
    EXPECT_TRUE(same(va.image, vb.image));
    EXPECT_TRUE(same(va.labels, vb.labels));
    EXPECT_LE(va.image.cols, 96);
    EXPECT_LE(va.image.rows, 96);
    if (seed == 0) first = va.image;
    else distinct += !same(first, va.image);
  }
  EXPECT_GE(distinct, 6);
}

TEST(SegTransforms, EvalResizeKeepsTheRatioWithOpenCvBilinear) {
  cv::Mat img(480, 640, CV_8UC3);
  cv::RNG cvrng(5);
  cvrng.fill(img, cv::RNG::UNIFORM, 0, 256);
  const cv::Mat out = seg_eval_resize(img);
  ASSERT_EQ(out.size(), cv::Size(683, 512));
  cv::Mat want;
  cv::resize(img, want, cv::Size(683, 512), 0, 0, cv::INTER_LINEAR);
  EXPECT_TRUE(same(out, want));
  EXPECT_EQ(seg_eval_resize(coordinate_image(4000, 500)).size(), cv::Size(2048, 256));
}

}  // namespace
}  // namespace nepa
