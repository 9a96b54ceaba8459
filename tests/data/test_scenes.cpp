// The Fashion-MNIST scenes of the segmentation demo (scenes.h) on the Debian Fashion-MNIST that scripts/setup.sh
// installs: byte-identical for a seed, read back through the ADE20K reader with classes.txt, labels that follow the
// pixels, an idempotent re-run and refusal of folders they did not make. Tiny counts keep it fast.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "nepa/data/ade20k.h"
#include "nepa/data/fashion_mnist.h"
#include "nepa/data/scenes.h"
#include "test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;

// Every file under `root` by relative path, with its bytes.
std::map<std::string, std::string> files_of(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files[fs::relative(e.path(), root).string()] = test::slurp(e.path());
  return files;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

SceneOptions tiny() {
  SceneOptions o;
  o.train_count = 6;
  o.val_count = 3;
  o.seed = 7;
  return o;
}

class Scenes : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kDefaultFashionMnistRoot))
        << kDefaultFashionMnistRoot << " is missing: scripts/setup.sh installs Debian's dataset-fashion-mnist";
  }
  test::TempDir dir;
};

TEST_F(Scenes, TheSameSeedGivesTheSameBytesAnotherSeedOtherScenes) {
  const SceneOptions o = tiny();
  ASSERT_TRUE(write_fmnist_scenes("", (dir.path() / "a").string(), o));
  ASSERT_TRUE(write_fmnist_scenes("", (dir.path() / "b").string(), o));
  const auto a = files_of(dir.path() / "a"), b = files_of(dir.path() / "b");
  EXPECT_EQ(a.size(), 2u * (6 + 3) + 2) << "images, annotations, classes.txt, scenes.json";
  EXPECT_TRUE(a == b);
  EXPECT_TRUE(a.count("images/training/scene_000005.jpg") && a.count("annotations/validation/scene_000002.png"));

  SceneOptions other = o;
  other.seed = 8;
  ASSERT_TRUE(write_fmnist_scenes("", (dir.path() / "c").string(), other));
  const auto c = files_of(dir.path() / "c");
  ASSERT_EQ(c.size(), a.size());
  for (const auto& [name, bytes] : a) {
    if (name.rfind("images/", 0) == 0 || name.rfind("annotations/", 0) == 0) {
      EXPECT_NE(c.at(name), bytes) << name;
    }
  }
  EXPECT_EQ(c.at("classes.txt"), a.at("classes.txt"));
  EXPECT_TRUE(contains(c.at("scenes.json"), "\"seed\": 8"));
  EXPECT_FALSE(fs::exists(dir.path() / ("a.tmp-" + std::to_string(::getpid()))));
}

// Every pixel's label is a function of the composed pixel: uncovered canvas (0) is background, item pixels at or
// above fg_threshold carry a class, those in between are ambiguous; every scene shows 1..items_max classes.
TEST_F(Scenes, LabelsFollowTheVisiblePixels) {
  const auto items = make_fashion_mnist("", "test");
  SceneOptions o = tiny();
  for (const bool scaled : {false, true}) {
    if (scaled) o.scale_max = 1.5;  // 42 px items on the 56 canvas
    std::set<int> counts;
    for (int64_t i = 0; i < 40; ++i) {
      const Scene s = make_scene(*items, o, /*validation=*/true, i);
      ASSERT_EQ(s.image.size(), cv::Size(56, 56));
      ASSERT_EQ(s.labels.type(), CV_8UC1);
      std::set<int> classes;
      for (int y = 0; y < 56; ++y)
        for (int x = 0; x < 56; ++x) {
          const int v = s.image.at<uint8_t>(y, x), l = s.labels.at<uint8_t>(y, x);
          if (v == 0) EXPECT_EQ(l, 1) << i << " " << x << "," << y;
          else if (v < o.bg_threshold) ADD_FAILURE() << "a transparent item pixel was drawn at " << x << "," << y;
          else if (v < o.fg_threshold) EXPECT_EQ(l, 0) << i << " " << x << "," << y;
          else EXPECT_TRUE(l >= 2 && l <= 11) << l;
          if (l >= 2) classes.insert(l);
        }
      EXPECT_GE(classes.size(), 1u) << i;
      EXPECT_LE(classes.size(), static_cast<size_t>(o.items_max)) << i;
      counts.insert(static_cast<int>(classes.size()));
    }
    EXPECT_GE(counts.size(), 3u) << "scenes of 1 to 4 items show various class counts";
  }
  // Scene i does not depend on which other scenes are made, and the two streams differ.
  EXPECT_EQ(cv::norm(make_scene(*items, o, true, 3).labels, make_scene(*items, o, true, 3).labels, cv::NORM_INF), 0);
  EXPECT_GT(cv::norm(make_scene(*items, o, true, 3).image, make_scene(*items, o, false, 3).image, cv::NORM_INF), 0);
}

TEST_F(Scenes, TheAde20kReaderServesThemWithTheirElevenClasses) {
  const SceneOptions o = tiny();
  const fs::path out = dir.path() / "scenes";
  ASSERT_TRUE(write_fmnist_scenes("", out.string(), o));
  auto train = make_ade20k(out.string(), "training", /*reduce_zero_label=*/true);
  auto val = make_ade20k(out.string(), "validation", true);
  ASSERT_EQ(train->size(), 6);
  ASSERT_EQ(val->size(), 3);
  ASSERT_EQ(train->num_classes(), 11);
  const std::vector<std::string> names = train->class_names();
  ASSERT_EQ(names.size(), 11u);
  EXPECT_EQ(names[0], "background");
  EXPECT_EQ(names[1], "T-shirt/top");
  EXPECT_EQ(names[10], "Ankle boot");

  const auto fmnist_train = make_fashion_mnist("", "train"), fmnist_test = make_fashion_mnist("", "test");
  for (const auto& [ds, validation] : {std::pair{train, false}, std::pair{val, true}}) {
    for (int64_t i = 0; i < ds->size(); ++i) {
      const DenseSample s = load_dense_sample(*ds, i, 1);
      ASSERT_EQ(s.image.size(), cv::Size(56, 56));
      // The files are make_scene's: the annotation exactly (reduced), the image within JPEG's error.
      const Scene want = make_scene(validation ? *fmnist_test : *fmnist_train, o, validation, i);
      int64_t item_pixels = 0, dark_items = 0, background = 0, bright_background = 0;
      std::set<int> classes;
      for (int y = 0; y < 56; ++y)
        for (int x = 0; x < 56; ++x) {
          const int l = s.labels.at<uint8_t>(y, x), raw = want.labels.at<uint8_t>(y, x);
          const int v = s.image.at<uint8_t>(y, x);
          ASSERT_EQ(l, raw == 0 ? 255 : raw - 1) << ds->describe(i) << " " << x << "," << y;
          if (l == 0) {
            ++background;
            bright_background += v >= o.bg_threshold;
          } else if (l != 255) {
            ASSERT_LE(l, 10);
            ++item_pixels;
            dark_items += v < o.fg_threshold - 16;
            classes.insert(l);
          }
        }
      EXPECT_LT(cv::norm(s.image, want.image, cv::NORM_L1) / (56 * 56), 2.0) << "JPEG quality 95";
      EXPECT_LE(dark_items, item_pixels / 50) << ds->describe(i);
      EXPECT_LE(bright_background, background / 50) << ds->describe(i);
      EXPECT_GE(classes.size(), 1u);
      EXPECT_LE(classes.size(), 4u);
    }
  }
}

TEST_F(Scenes, ARerunIsIdempotentAndForeignFoldersAreRefused) {
  const SceneOptions o = tiny();
  const fs::path out = dir.path() / "scenes";
  ASSERT_TRUE(write_fmnist_scenes("", out.string(), o));
  const auto before = files_of(out);
  const auto stamp = fs::last_write_time(out / "images" / "training" / "scene_000000.jpg");
  EXPECT_FALSE(write_fmnist_scenes("", out.string(), o)) << "the same set is there";
  EXPECT_TRUE(files_of(out) == before);
  EXPECT_EQ(fs::last_write_time(out / "images" / "training" / "scene_000000.jpg"), stamp);

  SceneOptions other = o;
  other.seed = 9;
  std::string msg = test::error_of<std::runtime_error>([&] { write_fmnist_scenes("", out.string(), other); });
  EXPECT_TRUE(contains(msg, out.string() + " holds scenes made otherwise (seed 7 there, 9 asked)")) << msg;
  EXPECT_TRUE(files_of(out) == before);

  const fs::path foreign = dir.path() / "foreign";
  fs::create_directories(foreign);
  std::ofstream(foreign / "notes.txt") << "mine\n";
  msg = test::error_of<std::runtime_error>([&] { write_fmnist_scenes("", foreign.string(), o); });
  EXPECT_TRUE(contains(msg, foreign.string() + " is not empty and holds no finished scene set")) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  EXPECT_EQ(files_of(foreign).size(), 1u);
  std::ofstream(dir.path() / "file") << "x";
  msg = test::error_of<std::runtime_error>([&] { write_fmnist_scenes("", (dir.path() / "file").string(), o); });
  EXPECT_TRUE(contains(msg, "file exists and is not a directory")) << msg;

  // An empty folder (made by hand beforehand) is filled, named with a trailing slash or not.
  fs::create_directories(dir.path() / "empty");
  EXPECT_TRUE(write_fmnist_scenes("", (dir.path() / "empty").string() + "/", o));
  EXPECT_FALSE(write_fmnist_scenes("", (dir.path() / "empty").string(), o));
  EXPECT_TRUE(files_of(dir.path() / "empty") == before);
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_FALSE(contains(e.path().filename().string(), ".tmp-")) << e.path();
}

// A writer killed mid-write leaves its temp folder; the next run removes it, and keeps a live writer's.
TEST_F(Scenes, TempFoldersOfKilledWritersAreRemovedByTheNextRun) {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);  // now a pid without a process
  const fs::path dead = dir.path() / ("s.tmp-" + std::to_string(child));
  const fs::path live = dir.path() / ("s.tmp-" + std::to_string(::getppid()));
  for (const fs::path& p : {dead, live}) {
    fs::create_directories(p / "images");
    std::ofstream(p / "images" / "half.jpg") << "x";
  }
  ASSERT_TRUE(write_fmnist_scenes("", (dir.path() / "s").string(), tiny()));
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live / "images" / "half.jpg"));
  EXPECT_TRUE(fs::exists(dir.path() / "s" / "scenes.json"));
}

TEST_F(Scenes, BadOptionsAreOneLineNamingTheField) {
  auto message = [](auto edit) {
    SceneOptions o;
    edit(o);
    return test::error_of<std::invalid_argument>([&] { check_scene_options(o); });
  };
  EXPECT_NO_THROW(check_scene_options(SceneOptions{}));
  EXPECT_TRUE(contains(message([](SceneOptions& o) { o.items_min = 3, o.items_max = 2; }),
                       "items_max (2) is below items_min (3)"));
  EXPECT_TRUE(contains(message([](SceneOptions& o) { o.size = 20; }), "a 20x20 canvas cannot hold a 28x28 item"));
  EXPECT_TRUE(contains(message([](SceneOptions& o) { o.scale_max = 2.5; }), "cannot hold a 70x70 item"));
  EXPECT_TRUE(contains(message([](SceneOptions& o) { o.val_count = 0; }), "val_count must be in 1-"));
  EXPECT_TRUE(contains(message([](SceneOptions& o) { o.bg_threshold = 100; }), "0 < bg_threshold < fg_threshold"));
  EXPECT_TRUE(contains(message([](SceneOptions& o) { o.scale_min = 0.5; }), "1 <= scale_min <= scale_max"));
  // Checked before anything is read or written.
  SceneOptions bad;
  bad.items_max = 0;
  EXPECT_THROW(write_fmnist_scenes("/nonexistent", (dir.path() / "x").string(), bad), std::invalid_argument);
  EXPECT_FALSE(fs::exists(dir.path() / "x"));
}

}  // namespace
}  // namespace nepa
