// Batches from a Dataset: worker threads decode and augment samples straight into the batch tensor, a bounded
// queue keeps `prefetch_batches` ready. The order is a permutation drawn from (seed, epoch) and each sample's
// augmentation from (seed, epoch, index), so a batch does not depend on the number of threads, and a run that
// restarts at (epoch, batch) sees exactly the batches it would have seen.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "nepa/config/config.h"
#include "nepa/data/dataset.h"
#include "nepa/data/seg_transforms.h"

namespace nepa {

struct Batch {
  torch::Tensor images;   // float32 [B, C, H, W], normalised, on LoaderOptions::device
  torch::Tensor labels;   // int64 [B] (-1 for unlabelled data), on the same device
  torch::Tensor indices;  // int64 [B], CPU: dataset index of each sample
  torch::Tensor label_maps;  // uint8 [B, H, W], 255 = ignore: dense (segmentation) batches only
  int64_t epoch = 0;
  int64_t index = 0;  // position of this batch within its epoch
};

struct LoaderOptions {
  int64_t batch_size = 64;  // per process
  bool train = true;        // train_transform (random) or eval_transform (deterministic)
  bool shuffle = true;      // false: dataset order (evaluation)
  bool drop_last = true;    // false: the last batch of an epoch may be smaller
  uint64_t seed = 0;
  // Data parallel: the epoch's order is cut into global batches of batch_size * world_size samples; rank r
  // takes samples [r * batch_size, (r + 1) * batch_size) of each. Every rank sees the same batch count.
  int rank = 0;
  int world_size = 1;
  // Only the first `limit` positions of each epoch's order are served (0 = all): a fixed random subset with
  // shuffle, the head of the dataset without. Sharding applies within them.
  int64_t limit = 0;
  torch::Device device = torch::kCPU;  // CUDA: batches assembled in pinned memory and copied non-blocking
  // Segmentation training: each sample is the dataset's image and label map through seg_train_view (crop =
  // data.image_size), padded to the crop (image 0 after normalisation, labels 255); Batch::label_maps is set.
  std::optional<SegTrainOptions> dense;
};

struct BadImageStats {
  int64_t count = 0;   // distinct unreadable samples of the dataset met so far (by any loader)
  int64_t limit = 0;   // floor(max_bad_fraction * dataset size): more stops the run
};

class DataLoader {
 public:
  // Workers = config.num_workers (0 = load on the calling thread); queue depth = config.prefetch_batches.
  DataLoader(std::shared_ptr<const Dataset> dataset, const DataConfig& config, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t batches_per_epoch() const;

  // Positions the loader at batch `first_batch` of `epoch` (stopping any work in flight); next() then
  // returns that batch. Must be called before the first next().
  void start(int64_t epoch, int64_t first_batch = 0);

  // The next batch of the current epoch, or nullopt when the epoch is done. A sample that fails to load is
  // logged once (warning with its path), counted, and replaced by the next readable sample of the epoch order,
  // so batch sizes never change; when the count exceeds the limit, next() throws DataError.
  std::optional<Batch> next();

  BadImageStats bad_images() const;
  const Dataset& dataset() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The order of epoch `epoch`: a permutation of [0, n) from (seed, epoch), or the identity without shuffle.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

}  // namespace nepa
