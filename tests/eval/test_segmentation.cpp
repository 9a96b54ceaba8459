// Segmentation evaluation against figures worked out by hand (mmseg IoUMetric's formulas) and against the
// properties slide inference must have (window grid, count normalisation, agreement with whole-image inference).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "dist/run_ranks.h"
#include "nepa/eval/segmentation.h"
#include "test_util.h"

namespace nepa {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// 4 classes, 9 labelled pixels + 3 ignored ones, as (true, pred) pairs:
//   (0,0) x3, (0,1) x1            -> class 0: 4 labelled
//   (1,1) x3, (1,0) x1, (1,3) x1  -> class 1: 5 labelled
//   class 2: in no label and no counted prediction (an ignored pixel predicts 2: must not count)
//   class 3: predicted once, never labelled
//   (255,0) x1, (255,2) x1, (255,3) x1 -> ignored
// Confusion (rows true, columns pred):
//   [3 1 0 0]   area_label = [4, 5, 0, 0]
//   [1 3 0 1]   area_pred  = [4, 4, 0, 1]
//   [0 0 0 0]
//   [0 0 0 0]
// IoU: c0 3/(4+4-3)=60%, c1 3/(5+4-3)=50%, c2 0/0 NaN, c3 0/(0+1-0)=0%
// Acc: c0 3/4=75%,       c1 3/5=60%,       c2 NaN,     c3 0/0 NaN
// mIoU = (60+50+0)/3 = 36.666..%, mAcc = (75+60)/2 = 67.5%, aAcc = (3+3)/9 = 66.666..%
SegConfusion hand_confusion() {
  // Laid out as [2, 2, 3] to exercise the "any leading dims" contract; the pixel order is irrelevant.
  torch::Tensor label = torch::tensor({0, 0, 0, 0, 1, 1, 1, 1, 1, 255, 255, 255}, torch::kInt64).view({2, 2, 3});
  torch::Tensor pred = torch::tensor({0, 0, 0, 1, 1, 1, 1, 0, 3, 0, 2, 3}, torch::kInt64).view({2, 2, 3});
  SegConfusion c(4);
  c.add(pred, label);
  return c;
}

TEST(SegConfusion, CountsPairsAndSkipsIgnoredPixels) {
  SegConfusion c = hand_confusion();
  torch::Tensor want = torch::tensor({3, 1, 0, 0, 1, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, torch::kInt64).view({4, 4});
  EXPECT_TRUE(torch::equal(c.matrix, want)) << c.matrix;
  // A second add accumulates onto the first (one counted pixel here, the other ignored).
  torch::Tensor label = torch::tensor({{2, 255}}, torch::kInt64), pred = torch::tensor({{2, 1}}, torch::kInt64);
  c.add(pred, label);
  EXPECT_EQ(c.matrix[2][2].item<int64_t>(), 1);
  EXPECT_EQ(c.matrix.sum().item<int64_t>(), 10);
}

TEST(SegConfusion, AnotherIgnoreIndexIsHonoured) {
  SegConfusion c(3, /*ignore_index=*/-1);
  c.add(torch::tensor({0, 1, 2}, torch::kInt64), torch::tensor({-1, 1, 2}, torch::kInt64));
  EXPECT_EQ(c.matrix.sum().item<int64_t>(), 2);
  EXPECT_EQ(c.matrix[1][1].item<int64_t>(), 1);
}

TEST(SegMetrics, MatchHandComputedIoUMetricFigures) {
  SegMetrics m = segmentation_metrics(hand_confusion().matrix);
  ASSERT_EQ(m.iou.size(), 4u);
  ASSERT_EQ(m.acc.size(), 4u);
  EXPECT_DOUBLE_EQ(m.iou[0], 60.0);
  EXPECT_DOUBLE_EQ(m.iou[1], 50.0);
  EXPECT_TRUE(std::isnan(m.iou[2]));
  EXPECT_DOUBLE_EQ(m.iou[3], 0.0);
  EXPECT_DOUBLE_EQ(m.acc[0], 75.0);
  EXPECT_DOUBLE_EQ(m.acc[1], 60.0);
  EXPECT_TRUE(std::isnan(m.acc[2]));
  EXPECT_TRUE(std::isnan(m.acc[3]));
  EXPECT_NEAR(m.miou, 110.0 / 3.0, 1e-12);
  EXPECT_NEAR(m.macc, 67.5, 1e-12);
  EXPECT_NEAR(m.aacc, 600.0 / 9.0, 1e-12);
}

TEST(SegConfusion, AnOutOfRangeLabelThrowsNamingTheValue) {
  SegConfusion c(4);
  std::string msg = test::error_of<std::runtime_error>(
      [&] { c.add(torch::tensor({0, 1, 2}, torch::kInt64), torch::tensor({0, 7, 255}, torch::kInt64)); });
  EXPECT_NE(msg.find("label 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("4 classes"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  EXPECT_EQ(c.matrix.sum().item<int64_t>(), 0) << "a rejected batch must leave the counts untouched";
  // A label equal to C is just as wrong.
  msg = test::error_of<std::runtime_error>(
      [&] { c.add(torch::tensor({0}, torch::kInt64), torch::tensor({4}, torch::kInt64)); });
  EXPECT_NE(msg.find("label 4"), std::string::npos) << msg;
}

TEST(SegConfusion, AllReducedOverTwoRanksEqualsTheConfusionOfTheConcatenatedMaps) {
  // Deterministic maps per rank (the rank threads share torch's generator, so no randn here).
  auto maps = [](int rank) {
    torch::Tensor i = torch::arange(60, torch::kInt64).view({3, 4, 5});
    torch::Tensor label = (i * (rank + 3) + rank) % 6;  // 5 classes; value 5 becomes ignore below
    label = torch::where(label.eq(5), torch::full_like(label, 255), label);
    torch::Tensor pred = (i * (2 * rank + 1) + 1) % 5;
    return std::make_pair(pred, label);
  };
  SegConfusion want(5);
  {
    auto [p0, l0] = maps(0);
    auto [p1, l1] = maps(1);
    want.add(torch::cat({p0, p1}), torch::cat({l0, l1}));
  }
  ASSERT_GT(want.matrix.sum().item<int64_t>(), 0);
  ASSERT_LT(want.matrix.sum().item<int64_t>(), 120) << "the maps should contain ignored pixels";
  std::vector<torch::Tensor> got(2);
  dist::run_ranks(2, [&](dist::Comm& comm) {
    SegConfusion c(5);
    auto [p, l] = maps(comm.rank());
    c.add(p, l);
    c.all_reduce(&comm);
    got[comm.rank()] = c.matrix.clone();
  });
  for (int r = 0; r < 2; ++r) EXPECT_TRUE(torch::equal(got[r], want.matrix)) << "rank " << r << "\n" << got[r];
  // Without a group nothing changes.
  SegConfusion solo(5);
  auto [p, l] = maps(0);
  solo.add(p, l);
  torch::Tensor before = solo.matrix.clone();
  solo.all_reduce(nullptr);
  EXPECT_TRUE(torch::equal(solo.matrix, before));
}

// A deterministic image [1, 3, H, W] with distinct values per pixel and channel.
torch::Tensor test_image(int64_t h, int64_t w) {
  return torch::sin(torch::arange(3 * h * w, torch::kFloat32) * 0.37f).view({1, 3, h, w});
}

TEST(SlideInference, WindowGridFollowsMmsegsFormula) {
  // H=10, crop 4, stride 3: grids = (10-4+3-1)/3+1 = 3; rows [0,4), [3,7), [6,10) (the last one already ends at
  // the border). W=13: grids = (13-4+2)/3+1 = 4; columns [0,4), [3,7), [6,10), [9,13).
  std::vector<SlideWindow> w = slide_windows(10, 13, 4, 3);
  ASSERT_EQ(w.size(), 12u);
  EXPECT_EQ(w[0], (SlideWindow{0, 4, 0, 4}));
  EXPECT_EQ(w[3], (SlideWindow{0, 4, 9, 13}));
  EXPECT_EQ(w[11], (SlideWindow{6, 10, 9, 13}));
  // H=11, crop 4, stride 3: grids = (11-4+2)/3+1 = 4; the last row window y1=9 -> y2=min(13,11)=11 -> y1=7.
  w = slide_windows(11, 4, 4, 3);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[3], (SlideWindow{7, 11, 0, 4}));
  // An image smaller than the crop is one window over the whole image.
  w = slide_windows(3, 5, 8, 6);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0], (SlideWindow{0, 3, 0, 5}));
}

TEST(SlideInference, OneWindowCoveringTheImageEqualsWholeInference) {
  // A fixed 1x1 conv: position-independent, so crop boundaries cannot matter anyway; here there is one window.
  torch::Tensor weight = torch::tensor({0.5f, -1.f, 2.f, 1.5f, 0.25f, -0.75f}).view({2, 3, 1, 1});
  torch::Tensor bias = torch::tensor({0.1f, -0.2f});
  LogitsFn conv = [&](const torch::Tensor& x) { return torch::conv2d(x, weight, bias); };
  torch::Tensor image = test_image(6, 7);
  for (int64_t crop : {7, 8, 20}) {
    torch::Tensor count;
    torch::Tensor slide = slide_inference(image, conv, crop, 5, &count);
    EXPECT_TRUE(torch::equal(slide, whole_inference(image, conv))) << "crop " << crop;
    EXPECT_TRUE(torch::equal(count, torch::ones({6, 7}))) << "crop " << crop;
  }
}

TEST(SlideInference, OverlappingWindowsAreAveragedByTheirCount) {
  const std::vector<float> per_class = {0.5f, -1.25f, 3.0f};
  std::vector<std::vector<int64_t>> crop_shapes;
  LogitsFn constant = [&](const torch::Tensor& x) {
    crop_shapes.push_back(x.sizes().vec());
    return torch::tensor(per_class).view({1, 3, 1, 1}).expand({1, 3, x.size(2), x.size(3)}).clone();
  };
  torch::Tensor count;
  torch::Tensor out = slide_inference(test_image(10, 10), constant, 4, 3, &count);
  // 3 x 3 windows, each a full 4 x 4 crop.
  ASSERT_EQ(crop_shapes.size(), 9u);
  for (const auto& s : crop_shapes) EXPECT_EQ(s, (std::vector<int64_t>{1, 3, 4, 4}));
  // Rows covered by [0,4), [3,7), [6,10): rows 3 and 6 twice, the others once; same for columns.
  torch::Tensor line = torch::tensor({1.f, 1.f, 1.f, 2.f, 1.f, 1.f, 2.f, 1.f, 1.f, 1.f});
  EXPECT_TRUE(torch::equal(count, line.view({10, 1}) * line.view({1, 10}))) << count;
  EXPECT_EQ(count.sum().item<float>(), 9 * 16);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 3, 10, 10}));
  for (int c = 0; c < 3; ++c)
    EXPECT_TRUE(torch::equal(out[0][c], torch::full({10, 10}, per_class[c]))) << "class " << c << "\n" << out[0][c];
}

TEST(SlideInference, APositionDependentModelStillMatchesWholeInference) {
  // Logits = the crop's own pixels: every window covering a pixel reports that pixel's value, so the average is
  // the value itself, whatever the overlap.
  LogitsFn identity = [](const torch::Tensor& x) { return x.clone(); };
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{10, 13}, {11, 4}, {3, 11}}) {
    torch::Tensor image = test_image(h, w);
    torch::Tensor slide = slide_inference(image, identity, 4, 3);
    EXPECT_LT(test::max_abs_diff(slide, whole_inference(image, identity)), 1e-6) << h << "x" << w;
  }
}

TEST(SegmentationPrediction, ResizesBilinearlyThenTakesTheArgmax) {
  // Channel 0 = [[1, -1], [1, -1]], channel 1 = its negative. Upsampled 2 -> 4 with align_corners=false the
  // source column of output column j is (j+0.5)/2-0.5: -0.25 (clamped to 0) -> 1, 0.25 -> 0.75-0.25 = 0.5,
  // 0.75 -> 0.25-0.75 = -0.5, 1.25 (clamped to 1) -> -1. So columns 0,1 are class 0, columns 2,3 class 1.
  torch::Tensor c0 = torch::tensor({1.f, -1.f, 1.f, -1.f}).view({2, 2});
  torch::Tensor logits = torch::stack({c0, -c0}).unsqueeze(0);
  torch::Tensor pred = segmentation_prediction(logits, 4, 4);
  EXPECT_EQ(pred.scalar_type(), torch::kInt64);
  torch::Tensor row = torch::tensor({0, 0, 1, 1}, torch::kInt64);
  EXPECT_TRUE(torch::equal(pred, row.view({1, 4}).expand({4, 4}))) << pred;
  // At the logits' own size it is the plain argmax.
  EXPECT_TRUE(torch::equal(segmentation_prediction(logits, 2, 2), logits.argmax(1)[0]));
}

TEST(SegmentationWriters, CsvAndMarkdownHoldEveryClassIncludingNaN) {
  SegMetrics m = segmentation_metrics(hand_confusion().matrix);
  test::TempDir dir;
  // Three names for four classes: the last falls back to its index; a comma forces CSV quoting.
  const std::vector<std::string> names = {"wall", "floor, tiled", "sky"};
  write_segmentation_csv(m, names, dir.file("per_class.csv"));
  EXPECT_EQ(read_all(dir.file("per_class.csv")),
            "class,name,iou,acc\n"
            "0,wall,60.0000,75.0000\n"
            "1,\"floor, tiled\",50.0000,60.0000\n"
            "2,sky,nan,nan\n"
            "3,3,0.0000,nan\n");
  write_segmentation_markdown(m, names, dir.file("per_class.md"));
  std::string md = read_all(dir.file("per_class.md"));
  EXPECT_NE(md.find("| Class | IoU | Acc |\n"), std::string::npos) << md;
  EXPECT_NE(md.find("| wall | 60.00 | 75.00 |\n"), std::string::npos) << md;
  EXPECT_NE(md.find("| floor, tiled | 50.00 | 60.00 |\n"), std::string::npos) << md;
  EXPECT_NE(md.find("| sky | nan | nan |\n"), std::string::npos) << md;
  EXPECT_NE(md.find("| 3 | 0.00 | nan |\n"), std::string::npos) << md;
  EXPECT_NE(md.find("mIoU: 36.67 | mAcc: 67.50 | aAcc: 66.67\n"), std::string::npos) << md;
  // No names at all: indices throughout.
  write_segmentation_csv(m, {}, dir.file("bare.csv"));
  EXPECT_NE(read_all(dir.file("bare.csv")).find("\n0,0,60.0000,75.0000\n"), std::string::npos) << read_all(dir.file("bare.csv"));
}

}  // namespace
}  // namespace nepa
