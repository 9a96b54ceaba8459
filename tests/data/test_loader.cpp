#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "nepa/data/dataset.h"
#include "nepa/data/fashion_mnist.h"
#include "nepa/data/loader.h"
#include "test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;

DataConfig synthetic_config(int workers, int prefetch = 2) {
  DataConfig c;
  c.dataset = "synthetic";
  c.image_size = 16;
  c.synthetic_size = 70;
  c.crop_scale = {0.3, 1.0};
  c.num_workers = workers;
  c.prefetch_batches = prefetch;
  return c;
}

std::vector<Batch> epoch(DataLoader& loader, int64_t e, int64_t first = 0) {
  loader.start(e, first);
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(*b);
  return out;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].images, b[i].images)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].labels, b[i].labels)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].indices, b[i].indices)) << "batch " << i;
  }
}

TEST(EpochOrder, IsAPermutationDrawnFromSeedAndEpoch) {
  auto a = epoch_order(1000, 5, 0, true), b = epoch_order(1000, 5, 1, true), c = epoch_order(1000, 6, 0, true);
  EXPECT_EQ(a, epoch_order(1000, 5, 0, true));
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  auto id = epoch_order(5, 5, 3, false);
  EXPECT_EQ(id, (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(DataLoader, BatchesDoNotDependOnThreadsOrPrefetch) {
  auto data = make_dataset(synthetic_config(0), "train");
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 3;
  DataLoader sync(data, synthetic_config(0), o), one(data, synthetic_config(1, 1), o),
      three(data, synthetic_config(3, 4), o);
  auto ref = epoch(sync, 2);
  ASSERT_EQ(ref.size(), 8u);  // 70 / 8 with drop_last
  EXPECT_EQ(sync.batches_per_epoch(), 8);
  expect_same(ref, epoch(one, 2));
  expect_same(ref, epoch(three, 2));
  EXPECT_EQ(ref[0].images.sizes(), (std::vector<int64_t>{8, 3, 16, 16}));
  EXPECT_EQ(ref[0].epoch, 2);
  // Labels are the dataset's, and the images are really augmented differently per epoch.
  for (int k = 0; k < 8; ++k) EXPECT_EQ(ref[0].labels[k].item<int64_t>(), data->label(ref[0].indices[k].item<int64_t>()));
  auto other = epoch(sync, 3);
  EXPECT_FALSE(torch::equal(ref[0].indices, other[0].indices));
  // Each epoch visits 64 distinct samples.
  std::set<int64_t> seen;
  for (const auto& b : ref)
    for (int k = 0; k < 8; ++k) seen.insert(b.indices[k].item<int64_t>());
  EXPECT_EQ(seen.size(), 64u);
}

TEST(DataLoader, StartingMidEpochYieldsTheRemainingBatches) {
  auto data = make_dataset(synthetic_config(2), "train");
  LoaderOptions o;
  o.batch_size = 8;
  DataLoader loader(data, synthetic_config(2), o);
  auto full = epoch(loader, 1);
  loader.next();  // past the end: nullopt, then restart in the middle
  auto tail = epoch(loader, 1, 5);
  ASSERT_EQ(tail.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(torch::equal(tail[i].images, full[5 + i].images));
    EXPECT_EQ(tail[i].index, static_cast<int64_t>(5 + i));
  }
  // Restarting while batches are in flight discards them cleanly.
  loader.start(0, 0);
  loader.next();
  auto again = epoch(loader, 1, 0);
  expect_same(full, again);
}

TEST(DataLoader, RanksGetDisjointHalvesOfTheSingleProcessBatch) {
  DataConfig c = synthetic_config(1);
  auto data = make_dataset(c, "train");
  LoaderOptions single;
  single.batch_size = 8;
  LoaderOptions r0 = single, r1 = single;
  r0.batch_size = r1.batch_size = 4;
  r0.world_size = r1.world_size = 2;
  r1.rank = 1;
  DataLoader l(data, c, single), l0(data, c, r0), l1(data, c, r1);
  auto a = epoch(l, 0), b0 = epoch(l0, 0), b1 = epoch(l1, 0);
  ASSERT_EQ(b0.size(), a.size());
  ASSERT_EQ(b1.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(torch::cat({b0[i].images, b1[i].images}), a[i].images));
    EXPECT_TRUE(torch::equal(torch::cat({b0[i].indices, b1[i].indices}), a[i].indices));
  }
}

TEST(DataLoader, WithoutDropLastTheLastBatchIsPartial) {
  DataConfig c = synthetic_config(2);
  auto data = make_dataset(c, "train");
  LoaderOptions o;
  o.batch_size = 32;
  o.drop_last = false;
  o.shuffle = false;
  o.train = false;
  DataLoader loader(data, c, o);
  auto all = epoch(loader, 0);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[2].images.size(0), 6);
  EXPECT_EQ(all[2].indices[5].item<int64_t>(), 69);
}

// ---- ImageFolder with unreadable files ------------------------------------------------------------------------

void write_tree(const fs::path& root, int per_class) {
  for (int c = 0; c < 3; ++c) {
    fs::create_directories(root / ("class_" + std::string(1, static_cast<char>('c' - c))));
    for (int i = 0; i < per_class; ++i) {
      cv::Mat img(20, 24, CV_8UC3, cv::Scalar(40 * c, 10 * i, 200));
      std::string name = "img_" + std::to_string(i) + (i % 2 ? ".png" : ".jpg");
      ASSERT_TRUE(cv::imwrite((root / ("class_" + std::string(1, static_cast<char>('c' - c))) / name).string(), img));
    }
  }
}

TEST(ImageFolder, ClassesAreSortedFolderNamesAndColoursAreRgb) {
  test::TempDir dir;
  write_tree(dir.path() / "train", 4);
  auto ds = make_image_folder((dir.path() / "train").string());
  EXPECT_EQ(ds->size(), 12);
  EXPECT_EQ(ds->num_classes(), 3);
  // class_a (written with c = 2) is class 0.
  EXPECT_NE(ds->describe(0).find("class_a"), std::string::npos);
  EXPECT_EQ(ds->label(0), 0);
  EXPECT_EQ(ds->label(11), 2);
  // A pure-red pixel written by OpenCV (BGR) reads back as R = 255 in channel 0.
  cv::Mat red(4, 4, CV_8UC3, cv::Scalar(0, 0, 255));
  cv::imwrite((dir.path() / "train" / "class_a" / "red.png").string(), red);
  auto ds2 = make_image_folder((dir.path() / "train").string());
  int64_t idx = -1;
  for (int64_t i = 0; i < ds2->size(); ++i)
    if (ds2->describe(i).find("red.png") != std::string::npos) idx = i;
  ASSERT_GE(idx, 0);
  cv::Mat rgb = ds2->load(idx, 3);
  EXPECT_EQ(rgb.at<cv::Vec3b>(0, 0), cv::Vec3b(255, 0, 0));
  cv::Mat gray = ds2->load(idx, 1);
  EXPECT_EQ(gray.channels(), 1);
}

TEST(ImageFolder, FileListRestrictsTheSetAndBadRootsAreNamed) {
  test::TempDir dir;
  write_tree(dir.path() / "train", 2);
  std::string list = dir.write("list.txt", "class_b/img_1.png\nclass_c/img_0.jpg\n");
  auto ds = make_image_folder((dir.path() / "train").string(), list);
  ASSERT_EQ(ds->size(), 2);
  EXPECT_EQ(ds->label(0), 1);
  EXPECT_EQ(ds->label(1), 2);
  std::string missing = dir.file("nowhere");
  EXPECT_NE(test::error_of<DataError>([&] { make_image_folder(missing); }).find(missing), std::string::npos);
  fs::create_directories(dir.path() / "empty");
  EXPECT_NE(test::error_of<DataError>([&] { make_image_folder(dir.file("empty")); }).find("no class folders"),
            std::string::npos);
}

void add_bad_files(const fs::path& cls) {
  // A JPEG cut in half, a zero-byte .jpg, and text named .png.
  std::ifstream in(cls / "img_0.jpg", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(cls / "truncated.jpg", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  std::ofstream(cls / "zero.jpg", std::ios::binary);
  std::ofstream(cls / "notes.png") << "this is not an image\n";
}

TEST(ImageFolder, UnreadableImagesAreSkippedCountedOnceAndBatchesStayFull) {
  test::TempDir dir;
  write_tree(dir.path() / "train", 6);
  add_bad_files(dir.path() / "train" / "class_b");
  DataConfig c;
  c.dataset = "image_folder";
  c.root = dir.path().string();
  c.image_size = 16;
  c.max_bad_fraction = 0.2;  // 3 bad of 21: allowed (limit 4)
  auto run = [&](int workers) {
    c.num_workers = workers;
    auto ds = make_dataset(c, "train");
    EXPECT_EQ(ds->size(), 21);
    LoaderOptions o;
    o.batch_size = 5;
    DataLoader loader(ds, c, o);
    std::vector<Batch> all;
    for (int e = 0; e < 2; ++e) {
      auto b = epoch(loader, e);
      all.insert(all.end(), b.begin(), b.end());
    }
    EXPECT_EQ(loader.bad_images().count, 3);
    EXPECT_EQ(loader.bad_images().limit, 4);
    for (const auto& b : all) {
      EXPECT_EQ(b.images.size(0), 5);
      for (int k = 0; k < 5; ++k) {
        std::string path = ds->describe(b.indices[k].item<int64_t>());
        EXPECT_TRUE(path.find("truncated") == std::string::npos && path.find("zero") == std::string::npos &&
                    path.find("notes") == std::string::npos)
            << path;
      }
    }
    return all;
  };
  expect_same(run(0), run(3));

  c.max_bad_fraction = 0.1;  // limit 2 < 3
  c.num_workers = 2;
  auto ds = make_dataset(c, "train");
  LoaderOptions o;
  o.batch_size = 21;
  DataLoader loader(ds, c, o);
  loader.start(0);
  std::string msg = test::error_of<DataError>([&] { loader.next(); });
  EXPECT_NE(msg.find("3 unreadable images (limit 2 = data.max_bad_fraction 0.1 x 21 images)"), std::string::npos)
      << msg;
}

TEST(FashionMnist, TheDebianFilesLoad) {
  ASSERT_TRUE(fs::exists(kDefaultFashionMnistRoot))
      << kDefaultFashionMnistRoot << " is missing: scripts/setup.sh installs dataset-fashion-mnist";
  auto train = make_fashion_mnist("", "train");
  auto test_split = make_fashion_mnist("", "test");
  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(test_split->size(), 10000);
  EXPECT_EQ(train->num_classes(), 10);
  auto raw = load_fashion_mnist("", "test");
  for (int64_t i : {0, 1234, 9999}) {
    cv::Mat m = test_split->load(i, 1);
    ASSERT_EQ(m.rows, 28);
    torch::Tensor t = torch::from_blob(m.data, {28, 28}, torch::kUInt8);
    EXPECT_TRUE(torch::equal(t, raw.images[i]));
    EXPECT_EQ(test_split->label(i), raw.labels[i].item<int64_t>());
    cv::Mat rgb = test_split->load(i, 3);
    EXPECT_EQ(rgb.channels(), 3);
    EXPECT_EQ(rgb.at<cv::Vec3b>(14, 14)[0], rgb.at<cv::Vec3b>(14, 14)[2]);
  }
}

}  // namespace
}  // namespace nepa
