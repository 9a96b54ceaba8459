// A fixed subset of a dataset: the label-fraction protocols of semi-supervised evaluation (fine-tune on 1 % or
// 10 % of the labels) and quick runs on part of a large set.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/data/dataset.h"

namespace nepa {

// `n` images of `base` chosen at random by `seed` and, when `base` is labelled, balanced over its classes: the
// classes take turns (in class order), each giving its next image in a seeded random order, until n are taken;
// so class counts differ by at most one unless a class runs out. The subset keeps `base`'s order, labels, class
// names and messages (an image is named as in `base`). The choice depends only on (base, n, seed), not on the
// standard library. Throws DataError naming data.train_samples when n is not in [1, base->size()].
std::shared_ptr<Dataset> make_subset(std::shared_ptr<const Dataset> base, int64_t n, uint64_t seed);

// The indices make_subset keeps, ascending.
std::vector<int64_t> subset_indices(const Dataset& base, int64_t n, uint64_t seed);

// The training set of a data section: data.split, cut to data.train_samples (seed data.subset_seed) when set.
std::shared_ptr<Dataset> make_train_dataset(const DataConfig& config);

}  // namespace nepa
