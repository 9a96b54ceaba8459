#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "nepa/data/dataset.h"
#include "nepa/data/loader.h"
#include "nepa/data/subset.h"
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

std::vector<Batch> run_epoch(DataLoader& loader, int64_t e, int64_t first = 0) {
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
    EXPECT_EQ(a[i].index, b[i].index);
    EXPECT_EQ(a[i].epoch, b[i].epoch);
  }
}

std::vector<int64_t> indices_of(const std::vector<Batch>& batches) {
  std::vector<int64_t> out;
  for (const auto& b : batches)
    for (int64_t k = 0; k < b.indices.size(0); ++k) out.push_back(b.indices[k].item<int64_t>());
  return out;
}

TEST(EpochOrder, IsAPermutationDrawnFromSeedAndEpoch) {
  auto a = epoch_order(1000, 5, 0, true), b = epoch_order(1000, 5, 1, true), c = epoch_order(1000, 6, 0, true);
  EXPECT_EQ(a, epoch_order(1000, 5, 0, true));
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  int fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed += a[i] == i;
  EXPECT_LT(fixed, 8);  // a uniform permutation has ~1 fixed point
  EXPECT_EQ(epoch_order(5, 5, 3, false), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(epoch_order(0, 5, 3, true).empty());
}

TEST(DataLoader, BatchesDoNotDependOnThreadsOrPrefetch) {
  auto data = make_dataset(synthetic_config(0), "train");
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 3;
  DataLoader sync(data, synthetic_config(0), o);
  const auto ref = run_epoch(sync, 2);
  ASSERT_EQ(ref.size(), 8u);  // 70 / 8 with drop_last
  EXPECT_EQ(sync.batches_per_epoch(), 8);
  EXPECT_EQ(ref[0].images.sizes(), (std::vector<int64_t>{8, 3, 16, 16}));
  EXPECT_EQ(ref[0].images.dtype(), torch::kFloat32);
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_EQ(ref[i].epoch, 2);
    EXPECT_EQ(ref[i].index, static_cast<int64_t>(i));
  }
  for (auto [workers, prefetch] : std::vector<std::pair<int, int>>{{1, 1}, {1, 3}, {3, 1}, {3, 4}, {5, 2}}) {
    SCOPED_TRACE("workers " + std::to_string(workers) + " prefetch " + std::to_string(prefetch));
    DataLoader threaded(data, synthetic_config(workers, prefetch), o);
    expect_same(ref, run_epoch(threaded, 2));
  }
  // The batches follow epoch_order, and labels are the dataset's.
  const auto order = epoch_order(70, 3, 2, true);
  const auto seen = indices_of(ref);
  EXPECT_EQ(seen, std::vector<int64_t>(order.begin(), order.begin() + 64));
  for (int k = 0; k < 8; ++k)
    EXPECT_EQ(ref[0].labels[k].item<int64_t>(), data->label(ref[0].indices[k].item<int64_t>()));
  // Another epoch: another order, and the same image is augmented differently.
  const auto other = run_epoch(sync, 3);
  EXPECT_NE(indices_of(other), seen);
  const int64_t idx = ref[0].indices[0].item<int64_t>();
  torch::Tensor first_view = ref[0].images[0], second_view;
  for (const auto& b : other)
    for (int64_t k = 0; k < b.indices.size(0); ++k)
      if (b.indices[k].item<int64_t>() == idx) second_view = b.images[k];
  if (second_view.defined()) {
    EXPECT_FALSE(torch::equal(first_view, second_view));
  }
  // Another seed: another order.
  o.seed = 4;
  DataLoader reseeded(data, synthetic_config(0), o);
  EXPECT_NE(indices_of(run_epoch(reseeded, 2)), seen);
}

TEST(DataLoader, EvaluationIsDeterministicAndInDatasetOrder) {
  DataConfig c = synthetic_config(2);
  auto data = make_dataset(c, "val");
  LoaderOptions o;
  o.batch_size = 32;
  o.drop_last = false;
  o.shuffle = false;
  o.train = false;
  DataLoader loader(data, c, o);
  EXPECT_EQ(loader.batches_per_epoch(), 3);
  const auto all = run_epoch(loader, 0);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].images.size(0), 32);
  EXPECT_EQ(all[2].images.size(0), 6);  // 70 = 32 + 32 + 6
  std::vector<int64_t> expected(70);
  for (int i = 0; i < 70; ++i) expected[i] = i;
  EXPECT_EQ(indices_of(all), expected);
  // Evaluation views do not depend on the epoch or the seed.
  const auto later = run_epoch(loader, 5);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_TRUE(torch::equal(later[i].images, all[i].images)) << i;
  o.seed = 99;
  DataLoader reseeded(data, c, o);
  EXPECT_TRUE(torch::equal(run_epoch(reseeded, 0)[2].images, all[2].images));
}

TEST(DataLoader, StartingMidEpochYieldsTheRemainingBatches) {
  auto data = make_dataset(synthetic_config(2), "train");
  LoaderOptions o;
  o.batch_size = 8;
  for (int workers : {0, 2}) {
    SCOPED_TRACE("workers " + std::to_string(workers));
    DataLoader loader(data, synthetic_config(workers), o);
    const auto full = run_epoch(loader, 1);
    ASSERT_EQ(full.size(), 8u);
    EXPECT_FALSE(loader.next().has_value());  // past the end stays at the end
    const auto tail = run_epoch(loader, 1, 5);
    expect_same(std::vector<Batch>(full.begin() + 5, full.end()), tail);
    EXPECT_TRUE(run_epoch(loader, 1, 8).empty());
    // Restarting while batches are in flight discards them cleanly.
    loader.start(0, 0);
    loader.next();
    loader.start(4, 3);
    expect_same(full, run_epoch(loader, 1, 0));
  }
}

TEST(DataLoader, RanksGetDisjointHalvesOfTheSingleProcessBatch) {
  DataConfig c = synthetic_config(1);
  auto data = make_dataset(c, "train");
  for (bool drop_last : {true, false}) {
    SCOPED_TRACE(drop_last ? "drop_last" : "keep last");
    LoaderOptions single;
    single.batch_size = 8;
    single.drop_last = drop_last;
    LoaderOptions r0 = single, r1 = single;
    r0.batch_size = r1.batch_size = 4;
    r0.world_size = r1.world_size = 2;
    r1.rank = 1;
    DataLoader l(data, c, single), l0(data, c, r0), l1(data, c, r1);
    EXPECT_EQ(l0.batches_per_epoch(), l.batches_per_epoch());
    EXPECT_EQ(l1.batches_per_epoch(), l.batches_per_epoch());
    const auto a = run_epoch(l, 0), b0 = run_epoch(l0, 0), b1 = run_epoch(l1, 0);
    ASSERT_EQ(a.size(), drop_last ? 8u : 9u);
    ASSERT_EQ(b0.size(), a.size());
    ASSERT_EQ(b1.size(), a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(torch::cat({b0[i].images, b1[i].images}), a[i].images)) << i;
      EXPECT_TRUE(torch::equal(torch::cat({b0[i].indices, b1[i].indices}), a[i].indices)) << i;
    }
    const auto i0 = indices_of(b0), i1 = indices_of(b1);
    std::set<int64_t> s0(i0.begin(), i0.end()), s1(i1.begin(), i1.end()), both;
    EXPECT_EQ(s0.size(), i0.size());
    std::set_intersection(s0.begin(), s0.end(), s1.begin(), s1.end(), std::inserter(both, both.begin()));
    EXPECT_TRUE(both.empty());
    if (!drop_last) {  // 70 = 8 x 8 + 6: the last global batch is 4 + 2
      EXPECT_EQ(b0.back().images.size(0), 4);
      EXPECT_EQ(b1.back().images.size(0), 2);
      EXPECT_EQ(s0.size() + s1.size(), 70u);
    }
  }
  LoaderOptions bad;
  bad.world_size = 2;
  bad.rank = 2;
  EXPECT_THROW(DataLoader(data, c, bad), std::invalid_argument);
}

// A dataset whose sample `fail_at` fails with an ordinary error and whose loads can be slowed down.
class FlakyDataset : public Dataset {
 public:
  explicit FlakyDataset(int delay_ms = 0, int64_t fail_at = 13)
      : inner_(make_synthetic(40, 8, "train")), delay_ms_(delay_ms), fail_at_(fail_at) {}
  int64_t size() const override { return inner_->size(); }
  int num_classes() const override { return 0; }
  int64_t label(int64_t) const override { return 0; }
  std::string describe(int64_t i) const override { return inner_->describe(i); }
  cv::Mat load(int64_t i, int channels) const override {
    loads.fetch_add(1);
    if (delay_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    if (i == fail_at_) throw std::runtime_error("disk on fire at " + std::to_string(i));
    return inner_->load(i, channels);
  }
  mutable std::atomic<int> loads{0};

 private:
  std::shared_ptr<Dataset> inner_;
  int delay_ms_;
  int64_t fail_at_;
};

TEST(DataLoader, WorkerErrorsReachTheCallerAndUnlabelledDataGetsMinusOne) {
  DataConfig c = synthetic_config(0);
  c.image_size = 8;
  LoaderOptions o;
  o.batch_size = 5;
  o.shuffle = false;
  for (int workers : {0, 3}) {
    SCOPED_TRACE("workers " + std::to_string(workers));
    c.num_workers = workers;
    auto data = std::make_shared<FlakyDataset>();
    DataLoader loader(data, c, o);
    loader.start(0);
    auto b0 = loader.next();
    ASSERT_TRUE(b0.has_value());
    EXPECT_TRUE(torch::equal(b0->labels, torch::full({5}, -1, torch::kInt64)));
    loader.next();
    const std::string msg = test::error_of<std::runtime_error>([&] { loader.next(); });  // batch 2 holds 13
    EXPECT_EQ(msg, "disk on fire at 13");
    EXPECT_EQ(data->unreadable_count(), 0);  // not a bad image: nothing skipped
    EXPECT_TRUE(loader.next().has_value());  // the loader goes on after the caller has seen the error
  }
}

TEST(DataLoader, StoppingEarlyOrDestroyingMidEpochDoesNotHang) {
  DataConfig c = synthetic_config(3, 4);
  c.image_size = 8;
  LoaderOptions o;
  o.batch_size = 4;
  auto data = std::make_shared<FlakyDataset>(5, -1);
  const auto t0 = std::chrono::steady_clock::now();
  {
    DataLoader loader(data, c, o);
    loader.start(0);
    loader.next();  // workers are now busy filling the prefetch window
  }
  {
    DataLoader never_started(data, c, o);
  }
  {
    DataLoader loader(data, c, o);
    loader.start(1);
    for (int i = 0; i < 5; ++i) loader.start(i, i);  // restarts pile up stale work
    EXPECT_EQ(loader.next()->index, 4);
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  // The prefetch window bounds the work done ahead: 4 batches of 4 plus the samples in the workers' hands.
  data->loads = 0;
  DataLoader loader(data, c, o);
  loader.start(0);
  loader.next();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LE(data->loads.load(), 4 + 4 * 4 + 3);
  EXPECT_THROW(DataLoader(data, c, o).next(), std::logic_error);  // next() before start()
}

// On a CUDA device the batch is assembled in pinned memory and copied asynchronously; the values are the CPU ones.
TEST(DataLoader, CudaBatchesEqualCpuBatches) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  DataConfig c = synthetic_config(2);
  auto data = make_dataset(c, "train");
  LoaderOptions o;
  o.batch_size = 8;
  DataLoader cpu(data, c, o);
  o.device = torch::Device(torch::kCUDA, 0);
  DataLoader gpu(data, c, o);
  const auto a = run_epoch(cpu, 1), b = run_epoch(gpu, 1);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(b[i].images.is_cuda());
    ASSERT_TRUE(b[i].labels.is_cuda());
    EXPECT_FALSE(b[i].indices.is_cuda());
    EXPECT_TRUE(torch::equal(a[i].images, b[i].images.cpu()));
    EXPECT_TRUE(torch::equal(a[i].labels, b[i].labels.cpu()));
  }
}

// ---- Unreadable files ------------------------------------------------------------------------------------------

void write_tree_with_bad_files(const fs::path& root) {
  for (int c = 0; c < 3; ++c) {
    const fs::path cls = root / ("class_" + std::to_string(c));
    fs::create_directories(cls);
    for (int i = 0; i < 6; ++i) {
      cv::Mat img(20, 24, CV_8UC3);
      cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(255));
      ASSERT_TRUE(cv::imwrite((cls / ("img_" + std::to_string(i) + (i % 2 ? ".png" : ".jpg"))).string(), img));
    }
  }
  // A JPEG cut in half, a zero-byte .jpg, and text named .png.
  const fs::path cls = root / "class_1";
  std::ifstream in(cls / "img_0.jpg", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(cls / "truncated.jpg", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  std::ofstream(cls / "zero.jpg", std::ios::binary);
  std::ofstream(cls / "notes.png") << "this is not an image\n";
}

// An image_folder config over write_tree_with_bad_files, written under `dir`.
DataConfig bad_tree_config(const test::TempDir& dir) {
  write_tree_with_bad_files(dir.path() / "train");
  DataConfig c;
  c.dataset = "image_folder";
  c.root = dir.path().string();
  c.image_size = 16;
  return c;
}

bool is_bad(const std::string& path) {
  return path.find("truncated") != std::string::npos || path.find("zero") != std::string::npos ||
         path.find("notes") != std::string::npos;
}

// Captures spdlog's default logger for the test's lifetime.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(text_)));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return text_.str(); }

 private:
  std::ostringstream text_;
  std::shared_ptr<spdlog::logger> previous_;
};

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

TEST(DataLoader, UnreadableImagesAreSkippedLoggedAndCountedOnceAndBatchesStayFull) {
  test::TempDir dir;
  DataConfig c = bad_tree_config(dir);
  c.max_bad_fraction = 0.2;  // 3 bad of 21: allowed (limit floor(4.2) = 4)
  auto run = [&](int workers) {
    LogCapture log;
    c.num_workers = workers;
    auto ds = make_dataset(c, "train");
    EXPECT_EQ(ds->size(), 21);
    LoaderOptions o;
    o.batch_size = 5;
    std::vector<Batch> all;
    // Two loaders (a train and an evaluation one) over the same dataset, two epochs each.
    DataLoader loader(ds, c, o);
    o.train = false;
    o.shuffle = false;
    o.drop_last = false;
    DataLoader eval_loader(ds, c, o);
    for (int e = 0; e < 2; ++e) {
      for (DataLoader* l : {&loader, &eval_loader}) {
        auto b = run_epoch(*l, e);
        EXPECT_EQ(b.size(), l == &loader ? 4u : 5u);
        all.insert(all.end(), b.begin(), b.end());
      }
    }
    EXPECT_EQ(loader.bad_images().count, 3);
    EXPECT_EQ(loader.bad_images().limit, 4);
    EXPECT_EQ(eval_loader.bad_images().count, 3);
    for (const char* name : {"truncated.jpg", "zero.jpg", "notes.png"})
      EXPECT_EQ(occurrences(log.text(), name), 1u) << name << " in\n" << log.text();
    for (const auto& b : all) {
      EXPECT_EQ(b.images.size(0), b.indices.size(0));
      for (int64_t k = 0; k < b.indices.size(0); ++k) EXPECT_FALSE(is_bad(ds->describe(b.indices[k].item<int64_t>())));
    }
    // Train batches are full; a bad sample's place is taken by the next readable one of the epoch order.
    const auto order = epoch_order(21, 0, 0, true);
    std::vector<int64_t> expected;
    for (int64_t pos = 0; pos < 20; ++pos) {
      int64_t p = pos;
      while (is_bad(ds->describe(order[p % 21]))) ++p;
      expected.push_back(order[p % 21]);
    }
    EXPECT_EQ(indices_of(std::vector<Batch>(all.begin(), all.begin() + 4)), expected);
    return all;
  };
  expect_same(run(0), run(3));
}

// The k-NN memory is a subset of the training set: a bad file the training loader met is known to the subset's
// loader too, and both report one count (not "1 unreadable image" from one loader after three from the other).
TEST(DataLoader, ASubsetSharesItsBaseSetsUnreadableCount) {
  test::TempDir dir;
  DataConfig c = bad_tree_config(dir);
  c.max_bad_fraction = 0.5;
  c.num_workers = 0;
  auto base = make_dataset(c, "train");
  auto subset = make_subset(base, base->size(), 7);  // every image, in another order
  LogCapture log;
  LoaderOptions o;
  o.batch_size = 7;
  DataLoader loader(base, c, o);
  loader.start(0);
  while (loader.next()) {
  }
  ASSERT_EQ(base->unreadable_count(), 3);
  EXPECT_EQ(subset->unreadable_count(), 3);
  int64_t known = 0;
  for (int64_t i = 0; i < subset->size(); ++i) {
    EXPECT_EQ(subset->known_unreadable(i), is_bad(subset->describe(i))) << subset->describe(i);
    known += subset->known_unreadable(i);
  }
  EXPECT_EQ(known, 3);
  for (int64_t i = 0; i < subset->size(); ++i) {
    if (!is_bad(subset->describe(i))) continue;
    EXPECT_FALSE(subset->mark_unreadable(i)) << "marked already, through the base";
  }
}

TEST(DataLoader, TooManyUnreadableImagesStopWithOneClearLine) {
  test::TempDir dir;
  DataConfig c = bad_tree_config(dir);
  c.max_bad_fraction = 0.1;  // limit floor(2.1) = 2 < 3
  for (int workers : {0, 2}) {
    SCOPED_TRACE("workers " + std::to_string(workers));
    LogCapture log;
    c.num_workers = workers;
    auto ds = make_dataset(c, "train");
    LoaderOptions o;
    o.batch_size = 21;
    o.drop_last = false;
    DataLoader loader(ds, c, o);
    loader.start(0);
    const std::string msg = test::error_of<DataError>([&] { loader.next(); });
    const std::string root = (dir.path() / "train").string();
    EXPECT_NE(msg.find("data: 3 unreadable images in " + root +
                       " (limit 2 = data.max_bad_fraction 0.1 x 21 images); last: " + root + "/class_1/"),
              std::string::npos)
        << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(loader.bad_images().count, 3);
  }
}

}  // namespace
}  // namespace nepa
