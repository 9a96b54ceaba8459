// ADE20K in its release layout, on tiny trees the tests write: pairing, reduce_zero_label, the class list, and
// one clear line for each bad input (a missing annotation, a map of another size, a class beyond 150, a colour
// annotation, a wrong root); other sets in the layout with their classes.txt.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "nepa/data/ade20k.h"
#include "nepa/data/loader.h"
#include "nepa/data/seg_transforms.h"
#include "nepa/data/subset.h"
#include "nepa/data/transforms.h"
#include "test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;

// root/images/<split>/<name>.jpg with root/annotations/<split>/<name>.png of `labels` (one row per image).
void write_pair(const fs::path& root, const std::string& split, const std::string& name, const cv::Mat& labels,
                cv::Size image_size = {}) {
  fs::create_directories(root / "images" / split);
  fs::create_directories(root / "annotations" / split);
  const cv::Size size = image_size.area() ? image_size : labels.size();
  cv::Mat img(size, CV_8UC3);
  cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(255));
  ASSERT_TRUE(cv::imwrite((root / "images" / split / (name + ".jpg")).string(), img));
  ASSERT_TRUE(cv::imwrite((root / "annotations" / split / (name + ".png")).string(), labels));
}

cv::Mat ramp(int w, int h, int offset) {
  cv::Mat m(h, w, CV_8UC1);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<uchar>(y, x) = static_cast<uchar>((x + y * w + offset) % 151);  // 0..150
  return m;
}

TEST(Ade20k, PairsImagesWithTheirMapsAndReducesTheZeroLabel) {
  test::TempDir dir;
  const fs::path root = dir.path() / "ADEChallengeData2016";
  write_pair(root, "training", "ADE_train_00000002", ramp(12, 9, 7));
  write_pair(root, "training", "ADE_train_00000001", ramp(10, 8, 0));
  write_pair(root, "validation", "ADE_val_00000001", ramp(6, 5, 3));
  auto train = make_ade20k(root.string(), "training", /*reduce_zero_label=*/true);
  ASSERT_EQ(train->size(), 2);
  EXPECT_TRUE(train->has_label_maps());
  EXPECT_EQ(train->num_classes(), 150);
  EXPECT_EQ(train->label(0), -1);
  EXPECT_NE(train->describe(0).find("ADE_train_00000001.jpg"), std::string::npos) << "sorted by name";
  const DenseSample s = load_dense_sample(*train, 0, 3);
  EXPECT_EQ(s.image.size(), cv::Size(10, 8));
  EXPECT_EQ(s.image.type(), CV_8UC3);
  const cv::Mat raw = ramp(10, 8, 0);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 10; ++x) {
      const int v = raw.at<uchar>(y, x);
      EXPECT_EQ(s.labels.at<uchar>(y, x), v == 0 ? 255 : v - 1) << x << "," << y;
    }
  auto kept = make_ade20k(root.string(), "train", /*reduce_zero_label=*/false);
  EXPECT_EQ(cv::norm(kept->load_label_map(0), raw, cv::NORM_INF), 0.0);
  EXPECT_EQ(make_ade20k(root.string(), "val", true)->size(), 1);
  // A subset (e.g. data.train_samples) keeps the maps.
  auto sub = make_subset(train, 1, 3);
  EXPECT_TRUE(sub->has_label_maps());
  EXPECT_EQ(sub->load_label_map(0).size(), sub->load(0, 3).size());
}

TEST(Ade20k, ClassNamesAreTheOneHundredAndFiftyOfObjectInfo150) {
  const auto& names = ade20k_class_names();
  ASSERT_EQ(names.size(), 150u);
  EXPECT_EQ(names.front(), "wall");
  EXPECT_EQ(names[12], "person");
  EXPECT_EQ(names[89], "television receiver");
  EXPECT_EQ(names.back(), "flag");
}

TEST(Ade20k, BadInputsGiveOneClearLine) {
  test::TempDir dir;
  const fs::path root = dir.path() / "ADE";
  write_pair(root, "training", "a", ramp(8, 8, 0));
  write_pair(root, "training", "b", ramp(8, 8, 0), cv::Size(9, 8));  // image 9x8, map 8x8
  cv::Mat beyond = ramp(8, 8, 0);
  beyond.at<uchar>(3, 3) = 200;  // class 199 after the reduction
  write_pair(root, "training", "c", beyond);
  cv::Mat colour(8, 8, CV_8UC3, cv::Scalar(1, 2, 3));
  write_pair(root, "training", "d", colour);
  auto ds = make_ade20k(root.string(), "training", true);
  ASSERT_EQ(ds->size(), 4);
  std::string msg = test::error_of<DataError>([&] { load_dense_sample(*ds, 1, 3); });
  EXPECT_EQ(msg, ds->describe(1) + ": the image is 9x8 but its label map is 8x8");
  msg = test::error_of<DataError>([&] { ds->load_label_map(2); });
  EXPECT_NE(msg.find("c.png: class 199 in the annotation (after reduce_zero_label), but ADE20K has 150 classes"),
            std::string::npos) << msg;
  msg = test::error_of<DataError>([&] { ds->load_label_map(3); });
  EXPECT_NE(msg.find("d.png: an annotation must be an 8-bit single-channel PNG"), std::string::npos) << msg;

  fs::remove(root / "annotations" / "training" / "b.png");
  msg = test::error_of<DataError>([&] { make_ade20k(root.string(), "training", true); });
  EXPECT_NE(msg.find("ade20k: 1 of the 4 images in "), std::string::npos) << msg;
  EXPECT_NE(msg.find("b.png (annotation of "), std::string::npos) << msg;
  msg = test::error_of<DataError>([&] { make_ade20k(dir.path().string(), "training", true); });
  EXPECT_NE(msg.find("is not a directory (data.root must be the ADEChallengeData2016 folder"), std::string::npos)
      << msg;
  EXPECT_NE(test::error_of<DataError>([&] { make_ade20k(root.string(), "test", true); }).find("split 'test'"),
            std::string::npos);
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

// A set of its own classes in the layout (the Fashion-MNIST scenes) lists them in classes.txt: their count bounds
// the labels and names the per-class table; without the file the 150 ADE20K classes stand.
TEST(Ade20k, ClassesTxtNamesTheClassesOfOtherSets) {
  test::TempDir dir;
  const fs::path root = dir.path() / "scenes";
  cv::Mat labels(4, 4, CV_8UC1, cv::Scalar(1));
  labels.at<uchar>(0, 0) = 0;  // ignored
  labels.at<uchar>(1, 1) = 4;  // class 3, the last
  write_pair(root, "training", "a", labels);
  cv::Mat beyond = labels.clone();
  beyond.at<uchar>(2, 2) = 5;  // class 4 of 4
  write_pair(root, "training", "b", beyond);
  std::ofstream(root / "classes.txt") << "  background \n\nT-shirt/top\r\nchest of drawers\n\tlast\n\n";
  auto ds = make_ade20k(root.string(), "training", true);
  EXPECT_EQ(ds->num_classes(), 4);
  EXPECT_EQ(ds->class_names(), (std::vector<std::string>{"background", "T-shirt/top", "chest of drawers", "last"}));
  const cv::Mat map = ds->load_label_map(0);
  EXPECT_EQ(map.at<uchar>(0, 0), 255);
  EXPECT_EQ(map.at<uchar>(1, 1), 3);
  std::string msg = test::error_of<DataError>([&] { ds->load_label_map(1); });
  EXPECT_NE(msg.find("b.png: class 4 in the annotation (after reduce_zero_label), but " +
                     (root / "classes.txt").string() + " lists 4 classes (0-3)"),
            std::string::npos)
      << msg;
  // 150 classes again without the file, where the map above is fine.
  fs::remove(root / "classes.txt");
  ds = make_ade20k(root.string(), "training", true);
  EXPECT_EQ(ds->num_classes(), 150);
  EXPECT_EQ(ds->class_names().front(), "wall");
  EXPECT_EQ(ds->load_label_map(1).at<uchar>(2, 2), 4);

  std::ofstream(root / "classes.txt") << " \n\n";
  msg = test::error_of<DataError>([&] { make_ade20k(root.string(), "training", true); });
  EXPECT_EQ(msg, "ade20k: " + (root / "classes.txt").string() + " names no class (one name per line)");
}

// Dense training batches: each sample is exactly seg_train_view of its image and label map under the sample's own
// generator, normalised and padded (image 0, labels 255); the same for any number of workers; a mismatched pair is
// skipped and counted like an unreadable image, and the batch stays full.
TEST(Ade20k, DenseBatchesAreTheJointViewsOfEachSample) {
  test::TempDir dir;
  const fs::path root = dir.path() / "ADE";
  const std::vector<cv::Size> sizes = {{20, 14}, {9, 12}, {30, 18}, {16, 16}, {11, 7}, {24, 10}};
  for (size_t i = 0; i < sizes.size(); ++i)
    write_pair(root, "training", "s" + std::to_string(i), ramp(sizes[i].width, sizes[i].height, 5 * i));
  write_pair(root, "training", "s9_bad", ramp(8, 8, 0), cv::Size(10, 8));  // last in name order
  DataConfig c;
  c.dataset = "ade20k";
  c.root = root.string();
  c.image_size = 16;
  c.num_channels = 3;
  c.mean = {0.5, 0.5, 0.5};
  c.std = {0.5, 0.5, 0.5};
  c.max_bad_fraction = 0.2;
  SegTrainOptions seg;
  seg.scale_long = 32;
  seg.scale_short = 16;
  seg.crop = 16;
  auto ds = make_ade20k(root.string(), "training", true);
  auto run = [&](int workers) {
    c.num_workers = workers;
    LoaderOptions o;
    o.batch_size = 7;
    o.seed = 11;
    o.dense = seg;
    DataLoader loader(ds, c, o);
    loader.start(1);
    std::optional<Batch> b = loader.next();
    EXPECT_FALSE(loader.next().has_value());
    return *b;
  };
  const Batch a = run(0), b = run(2);
  ASSERT_TRUE(a.label_maps.defined());
  EXPECT_EQ(a.label_maps.sizes(), torch::IntArrayRef({7, 16, 16}));
  EXPECT_EQ(a.label_maps.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(a.images, b.images));
  EXPECT_TRUE(torch::equal(a.label_maps, b.label_maps));
  EXPECT_EQ(ds->unreadable_count(), 1) << "the mismatched pair";
  const int64_t bad = ds->size() - 1;
  for (int64_t k = 0; k < 7; ++k) {
    const int64_t index = a.indices[k].item<int64_t>();
    EXPECT_NE(index, bad);
    const DenseSample sample = load_dense_sample(*ds, index, 3);
    SampleRng rng = SampleRng::for_sample(11, 1, index);
    const SegView view = seg_train_view(sample.image, sample.labels, seg, rng);
    const cv::Mat labels = pad_labels(view.labels, 16);
    const torch::Tensor expected_labels =
        torch::from_blob(labels.data, {16, 16}, torch::kUInt8).clone();
    EXPECT_TRUE(torch::equal(a.label_maps[k], expected_labels)) << k;
    torch::Tensor expected = torch::zeros({3, 16, 16});
    std::vector<float> plane(3 * view.image.rows * view.image.cols);
    normalise_into(view.image, c.mean, c.std, plane.data());
    expected.narrow(1, 0, view.image.rows).narrow(2, 0, view.image.cols)
        .copy_(torch::from_blob(plane.data(), {3, view.image.rows, view.image.cols}));
    EXPECT_TRUE(torch::equal(a.images[k], expected)) << k;
  }
  // Evaluation does not go through dense batches, and a set without maps cannot give them.
  LoaderOptions eval;
  eval.train = false;
  eval.dense = seg;
  EXPECT_THROW(DataLoader(ds, c, eval), std::invalid_argument);
}

}  // namespace
}  // namespace nepa
