// Image views against torchvision (fixtures from tests/reference/make_recipe_fixtures.py, generated
// ImageNet-sized images): the release's B and L evaluation views and training crops at 224 with the bilinear
// (pretraining) and bicubic (fine-tuning) filters. Equal, pixel for pixel, to torchvision on uint8 tensors
// (resize(antialias=True)); within a grey level of torchvision on PIL images (the release's pipeline) except
// where bicubic overshoot is clamped between the two passes in another order (recent Pillow runs the vertical
// pass first when the height shrinks much more than the width; the fixtures' fine stripes provoke it).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/core.hpp>

#include "nepa/data/transforms.h"
#include "nepa/io/safetensors.h"

namespace nepa {
namespace {

cv::Mat to_mat(const torch::Tensor& t) {
  const int c = t.dim() == 3 ? static_cast<int>(t.size(2)) : 1;
  cv::Mat m(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_8UC(c));
  std::memcpy(m.data, t.contiguous().data_ptr<uint8_t>(), m.total() * c);
  return m;
}

struct Stats {
  int max = 0;
  double mean = 0, within1 = 0;
};

Stats compare(const cv::Mat& ours, const torch::Tensor& theirs) {
  const cv::Mat ref = to_mat(theirs);
  EXPECT_EQ(ours.size(), ref.size());
  EXPECT_EQ(ours.type(), ref.type());
  cv::Mat diff;
  cv::absdiff(ours, ref, diff);
  diff = diff.reshape(1);
  Stats s;
  double mx = 0;
  cv::minMaxLoc(diff, nullptr, &mx);
  s.max = static_cast<int>(mx);
  s.mean = cv::mean(diff)[0];
  s.within1 = static_cast<double>(cv::countNonZero(diff <= 1)) / static_cast<double>(diff.total());
  return s;
}

TEST(ViewParity, EvalViewsAndCropsEqualTorchvision) {
  auto f = load_safetensors(std::string(NEPA_FIXTURE_DIR) + "/recipes/views.safetensors");
  const int64_t count = f.at("count").item<int64_t>();
  ASSERT_GE(count, 5);
  DataConfig b;
  b.image_size = 224;
  b.interpolation = "bicubic";
  b.eval_crop_pct = 0.875;
  b.eval_resize = "shorter_side";
  DataConfig l = b;
  l.eval_crop_pct = 0.95;
  l.eval_resize = "square";
  int views = 0;
  double pil_pixels = 0, pil_within1 = 0;
  for (int64_t i = 0; i < count; ++i) {
    const std::string n = std::to_string(i);
    const cv::Mat img = to_mat(f.at("image." + n));
    std::vector<std::pair<std::string, cv::Mat>> ours = {{"eval_b", eval_transform(img, b).clone()},
                                                         {"eval_l", eval_transform(img, l).clone()}};
    const torch::Tensor boxes = f.at("boxes." + n);
    for (int64_t k = 0; k < boxes.size(0); ++k) {
      const cv::Rect r(static_cast<int>(boxes[k][0].item<int64_t>()), static_cast<int>(boxes[k][1].item<int64_t>()),
                       static_cast<int>(boxes[k][2].item<int64_t>()), static_cast<int>(boxes[k][3].item<int64_t>()));
      for (const std::string mode : {"bilinear", "bicubic"})
        ours.emplace_back("crop" + std::to_string(k) + "." + mode, resize_image(img(r), 224, 224, mode));
    }
    for (const auto& [name, view] : ours) {
      SCOPED_TRACE(name + " of image " + n + " (" + std::to_string(img.cols) + "x" + std::to_string(img.rows) + ")");
      const Stats t = compare(view, f.at(name + ".tensor." + n));
      EXPECT_EQ(t.max, 0) << "differs from torchvision on uint8 tensors";
      const Stats p = compare(view, f.at(name + ".pil." + n));
      std::cout << "image " << i << " " << name << ": vs torchvision+PIL max " << p.max << ", mean " << p.mean
                << ", within 1 grey level " << 100 * p.within1 << "%\n";
      EXPECT_GE(p.within1, 0.85);
      EXPECT_LE(p.mean, 1.5);
      if (name.rfind("eval", 0) == 0) {
        EXPECT_LE(p.max, 2);  // the eval resizes shrink both axes alike
      }
      pil_pixels += static_cast<double>(view.total() * view.channels());
      pil_within1 += p.within1 * static_cast<double>(view.total() * view.channels());
      ++views;
    }
  }
  std::cout << views << " views; within 1 grey level of torchvision+PIL: " << 100 * pil_within1 / pil_pixels << "%\n";
  EXPECT_GE(pil_within1 / pil_pixels, 0.99);
}

}  // namespace
}  // namespace nepa
