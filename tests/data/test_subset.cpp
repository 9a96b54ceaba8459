#include <gtest/gtest.h>
#include <opencv2/core.hpp>

#include <map>
#include <set>

#include "nepa/config/config.h"
#include "nepa/data/dataset.h"
#include "nepa/data/subset.h"

namespace nepa {
namespace {

// Labels of the synthetic set are i % 10, so 103 images hold classes of 11 (0-2) and 10 (3-9).
TEST(Subset, ClassBalancedFixedBySeedAndFaithfulToTheBase) {
  auto base = make_synthetic(103, 8, "train");
  auto sub = make_subset(base, 25, 7);
  ASSERT_EQ(sub->size(), 25);
  EXPECT_EQ(sub->num_classes(), 10);
  std::map<int64_t, int> per_class;
  for (int64_t i = 0; i < sub->size(); ++i) ++per_class[sub->label(i)];
  ASSERT_EQ(per_class.size(), 10u);
  for (const auto& [c, count] : per_class) EXPECT_TRUE(count == 2 || count == 3) << "class " << c << ": " << count;

  const std::vector<int64_t> idx = subset_indices(*base, 25, 7);
  EXPECT_TRUE(std::is_sorted(idx.begin(), idx.end()));
  EXPECT_EQ(std::set<int64_t>(idx.begin(), idx.end()).size(), idx.size()) << "an image taken twice";
  for (int64_t i = 0; i < sub->size(); ++i) {
    const int64_t j = idx[static_cast<size_t>(i)];
    EXPECT_EQ(sub->label(i), base->label(j));
    EXPECT_EQ(sub->describe(i), base->describe(j));
    EXPECT_EQ(cv::norm(sub->load(i, 3), base->load(j, 3), cv::NORM_INF), 0.0);
  }
  EXPECT_EQ(subset_indices(*base, 25, 7), idx) << "the same seed must give the same subset";
  EXPECT_NE(subset_indices(*base, 25, 8), idx) << "another seed should give another subset";
  // A larger subset from the same seed is not required to contain the smaller one, but it is balanced too.
  std::map<int64_t, int> big;
  for (int64_t j : subset_indices(*base, 95, 7)) ++big[base->label(j)];
  for (const auto& [c, count] : big) EXPECT_TRUE(count == 9 || count == 10) << "class " << c << ": " << count;
  // All of it is the base, in order.
  std::vector<int64_t> all = subset_indices(*base, 103, 1);
  for (int64_t i = 0; i < 103; ++i) EXPECT_EQ(all[static_cast<size_t>(i)], i);
}

TEST(Subset, SizeOutsideTheSetNamesTheKey) {
  auto base = make_synthetic(40, 8, "train");
  for (int64_t n : {int64_t{0}, int64_t{41}}) {
    try {
      make_subset(base, n, 0);
      FAIL() << "n = " << n << " accepted";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("data.train_samples = " + std::to_string(n)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("has 40 images"), std::string::npos) << e.what();
    }
  }
}

TEST(Subset, TrainDatasetFollowsTheDataSection) {
  DataConfig cfg;
  cfg.dataset = "synthetic";
  cfg.synthetic_size = 60;
  cfg.image_size = 8;
  EXPECT_EQ(make_train_dataset(cfg)->size(), 60);
  cfg.train_samples = 20;
  cfg.subset_seed = 3;
  auto sub = make_train_dataset(cfg);
  ASSERT_EQ(sub->size(), 20);
  auto base = make_synthetic(60, 8, "train");
  const std::vector<int64_t> idx = subset_indices(*base, 20, 3);
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(sub->describe(i), base->describe(idx[static_cast<size_t>(i)]));
  EXPECT_NE(sub->describe_set().find("subset of 20 images"), std::string::npos) << sub->describe_set();
}

}  // namespace
}  // namespace nepa
