// Whole-set segmentation evaluation on a tiny ADE20K tree whose image colours encode the classes, with a per-pixel
// "model" that reads the class back from the colour: slide and whole inference agree exactly (padding the windows
// to the patch changes nothing a per-pixel model sees), every labelled pixel is counted once, ranks sum to the
// single-process confusion, and a mismatched pair stops the evaluation.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <filesystem>

#include "dist/run_ranks.h"
#include "nepa/data/ade20k.h"
#include "nepa/eval/seg_evaluate.h"
#include "test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;

// Bands of classes 0..3 (ADE values 1..4) with an unlabelled (0) strip; the image's grey level is 40 k + 20.
void write_scene(const fs::path& root, const std::string& name, int w, int h, int shift) {
  fs::create_directories(root / "images" / "validation");
  fs::create_directories(root / "annotations" / "validation");
  cv::Mat labels(h, w, CV_8UC1), img(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int k = ((y + shift) * 4 / h) % 4;
      labels.at<uchar>(y, x) = x < 2 ? 0 : static_cast<uchar>(k + 1);
      img.at<cv::Vec3b>(y, x) = cv::Vec3b::all(static_cast<uchar>(40 * k + 20));
    }
  ASSERT_TRUE(cv::imwrite((root / "images" / "validation" / (name + ".jpg")).string(), img,
                          {cv::IMWRITE_JPEG_QUALITY, 100}));
  ASSERT_TRUE(cv::imwrite((root / "annotations" / "validation" / (name + ".png")).string(), labels));
}

// Logits -|grey - (40 k + 20)| for 150 classes, per pixel, at the input's size or at a quarter of it.
SegModelFn colour_model(bool quarter) {
  return [quarter](const torch::Tensor& x) {
    const torch::Tensor grey = (x.select(1, 0) * 0.5 + 0.5) * 255;  // [1, h, w]
    const torch::Tensor centres = torch::arange(150, torch::kFloat32).view({1, 150, 1, 1}) * 40 + 20;
    torch::Tensor logits = -(grey.unsqueeze(1) - centres).abs();
    if (quarter) logits = torch::nn::functional::avg_pool2d(logits, torch::nn::functional::AvgPool2dFuncOptions(4));
    return logits;
  };
}

TEST(SegEvaluate, SlideEqualsWholeEveryLabelledPixelCountsAndRanksSum) {
  test::TempDir dir;
  const fs::path root = dir.path() / "ADE";
  write_scene(root, "a", 40, 24, 0);
  write_scene(root, "b", 23, 31, 5);
  write_scene(root, "c", 30, 30, 2);
  auto ds = make_ade20k(root.string(), "validation", true);
  SegEvalOptions o;
  o.scale_long = 64;
  o.scale_short = 32;
  o.crop = 0;
  const SegConfusion whole = evaluate_segmentation(*ds, colour_model(false), o);
  o.crop = 20;  // windows of 20 (padded to 28 for the model), overlapping at stride 13
  o.stride = 13;
  const SegConfusion slide = evaluate_segmentation(*ds, colour_model(false), o);
  EXPECT_TRUE(torch::equal(whole.matrix, slide.matrix));
  int64_t labelled = 0;
  for (int64_t i = 0; i < ds->size(); ++i) labelled += cv::countNonZero(ds->load_label_map(i) != 255);
  EXPECT_EQ(whole.matrix.sum().item<int64_t>(), labelled);
  EXPECT_GE(segmentation_metrics(whole.matrix).aacc, 95.0);  // band edges blur in the test-scale resize
  // A model whose map is at a quarter of the input (as the decode head's) is resized back and stays accurate.
  EXPECT_GE(segmentation_metrics(evaluate_segmentation(*ds, colour_model(true), o).matrix).aacc, 85.0);

  std::vector<torch::Tensor> per_rank(2);
  dist::run_ranks(2, [&](dist::Comm& c) {
    per_rank[c.rank()] = evaluate_segmentation(*ds, colour_model(false), o, &c).matrix;
  });
  EXPECT_TRUE(torch::equal(per_rank[0], slide.matrix));
  EXPECT_TRUE(torch::equal(per_rank[1], slide.matrix));

  // A map of another size than its image stops the evaluation with the file named.
  cv::Mat small(5, 5, CV_8UC1, cv::Scalar(1));
  ASSERT_TRUE(cv::imwrite((root / "annotations" / "validation" / "b.png").string(), small));
  const std::string msg = test::error_of<DataError>([&] { evaluate_segmentation(*ds, colour_model(false), o); });
  EXPECT_NE(msg.find("b.jpg: the image is 23x31 but its label map is 5x5"), std::string::npos) << msg;
}

}  // namespace
}  // namespace nepa
