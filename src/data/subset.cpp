#include "nepa/data/subset.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <string>

namespace nepa {
namespace {

class SubsetDataset : public Dataset {
 public:
  SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices)
      : base_(std::move(base)), indices_(std::move(indices)) {}
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  int num_classes() const override { return base_->num_classes(); }
  int64_t label(int64_t index) const override { return base_->label(indices_.at(index)); }
  cv::Mat load(int64_t index, int channels) const override { return base_->load(indices_.at(index), channels); }
  std::string describe(int64_t index) const override { return base_->describe(indices_.at(index)); }
  std::string describe_set() const override {
    return fmt::format("{} (subset of {} images)", base_->describe_set(), indices_.size());
  }
  std::vector<std::string> class_names() const override { return base_->class_names(); }
  bool mark_unreadable(int64_t index) const override { return base_->mark_unreadable(indices_.at(index)); }
  bool known_unreadable(int64_t index) const override { return base_->known_unreadable(indices_.at(index)); }
  int64_t unreadable_count() const override { return base_->unreadable_count(); }
  bool has_label_maps() const override { return base_->has_label_maps(); }
  cv::Mat load_label_map(int64_t index) const override { return base_->load_label_map(indices_.at(index)); }

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
};

// Fisher-Yates with the generator's raw output: std::shuffle and the std distributions differ between standard
// libraries, and a subset must be the same wherever the run is repeated.
void seeded_shuffle(std::vector<int64_t>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

}  // namespace

std::vector<int64_t> subset_indices(const Dataset& base, int64_t n, uint64_t seed) {
  const int64_t total = base.size();
  if (n < 1 || n > total)
    throw DataError(fmt::format("data.train_samples = {}: {} has {} images", n, base.describe_set(), total));
  std::mt19937_64 rng(seed);
  // Balanced over image labels where samples have one (a segmentation set has classes but no image label).
  const bool labelled = base.num_classes() > 0 && !base.has_label_maps();
  const int classes = labelled ? base.num_classes() : 1;
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(classes));
  for (int64_t i = 0; i < total; ++i) {
    const int64_t c = labelled ? base.label(i) : 0;
    by_class.at(static_cast<size_t>(c)).push_back(i);
  }
  for (auto& members : by_class) seeded_shuffle(members, rng);
  std::vector<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(n));
  for (size_t round = 0; static_cast<int64_t>(chosen.size()) < n; ++round)
    for (const auto& members : by_class)
      if (round < members.size() && static_cast<int64_t>(chosen.size()) < n) chosen.push_back(members[round]);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::shared_ptr<Dataset> make_subset(std::shared_ptr<const Dataset> base, int64_t n, uint64_t seed) {
  std::vector<int64_t> indices = subset_indices(*base, n, seed);
  return std::make_shared<SubsetDataset>(std::move(base), std::move(indices));
}

std::shared_ptr<Dataset> make_train_dataset(const DataConfig& config) {
  std::shared_ptr<Dataset> set = make_dataset(config, config.split);
  if (config.train_samples <= 0) return set;
  const int64_t total = set->size();
  auto subset = make_subset(set, config.train_samples, static_cast<uint64_t>(config.subset_seed));
  spdlog::info("data: training on {} of the {} images of {} (data.train_samples, {}subset_seed {})", subset->size(),
               total, set->describe_set(), set->num_classes() > 0 && !set->has_label_maps() ? "class-balanced, " : "",
               config.subset_seed);
  return subset;
}

}  // namespace nepa
