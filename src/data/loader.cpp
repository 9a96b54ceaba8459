#include "nepa/data/loader.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "nepa/data/randaugment.h"
#include "nepa/data/seg_transforms.h"
#include "nepa/data/transforms.h"

namespace nepa {

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (!shuffle) return order;
  // Fisher-Yates on our own generator: the same permutation on every platform and standard library. Index -1
  // keeps this stream apart from the per-sample ones.
  SampleRng rng = SampleRng::for_sample(seed ^ 0x5eedULL, epoch, -1);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.randint(0, i)]);
  return order;
}

namespace {

// One batch being assembled. Its tensors are allocated when the batch is opened; workers take its samples
// one at a time and write each into its own slot, so a batch is spread over all workers and no sample is
// copied again after normalisation.
struct Slot {
  int64_t epoch = 0, batch = 0;
  int64_t first = 0, count = 0;  // positions [first, first + count) of the epoch order
  torch::Tensor images, labels, indices;
  torch::Tensor label_maps;  // uint8 [count, size, size], dense (segmentation) batches only
  int64_t next_sample = 0, done = 0;
  std::exception_ptr error;
};

}  // namespace

struct DataLoader::Impl {
  std::shared_ptr<const Dataset> dataset;
  DataConfig config;
  LoaderOptions options;
  int64_t batches = 0;
  int64_t used = 0;  // positions of the epoch order served: the dataset size or LoaderOptions::limit
  int64_t bad_limit = 0;  // unreadable images tolerated
  size_t depth = 1;

  std::mutex mutex;
  std::condition_variable work_cv, ready_cv;
  bool stopping = false;
  bool started = false;
  uint64_t generation = 0;  // bumped by start(): work begun earlier is dropped when it finishes
  int64_t epoch = 0;
  std::shared_ptr<const std::vector<int64_t>> order;
  int64_t next_to_open = 0, next_to_hand = 0;
  std::deque<std::shared_ptr<Slot>> window;  // batches next_to_hand, next_to_hand + 1, ... (at most `depth`)
  std::vector<std::thread> workers;

  std::shared_ptr<Slot> open(int64_t b) const {
    auto s = std::make_shared<Slot>();
    const int64_t n = used;
    const int64_t first = b * options.batch_size * options.world_size + options.rank * options.batch_size;
    s->epoch = epoch;
    s->batch = b;
    s->first = std::min(first, n);
    s->count = std::min(first + options.batch_size, n) - s->first;
    const int c = config.num_channels, size = config.image_size;
    // Pinned only for a CUDA device: the host-to-device copy is then asynchronous. CPU runs never ask for it.
    const bool pin = options.device.is_cuda();
    s->images =
        torch::empty({s->count, c, size, size}, torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(pin));
    s->labels = torch::empty({s->count}, torch::TensorOptions().dtype(torch::kInt64).pinned_memory(pin));
    s->indices = torch::empty({s->count}, torch::kInt64);
    if (options.dense)
      s->label_maps = torch::empty({s->count, size, size}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(pin));
    return s;
  }

  // The image at position `pos` of the order or, if it is unreadable, the next readable one after it (wrapping):
  // a function of the order and the files only, so the batch does not depend on which thread met the bad file.
  // With dense batches the sample is the image and its label map, and a mismatched pair is unreadable too.
  DenseSample load_at(const std::vector<int64_t>& ord, int64_t pos, int64_t& index_out) const {
    const int64_t n = static_cast<int64_t>(ord.size());
    for (int64_t tries = 0; tries < n; ++tries) {
      const int64_t index = ord[(pos + tries) % n];
      if (dataset->known_unreadable(index)) continue;
      try {
        DenseSample sample = options.dense ? load_dense_sample(*dataset, index, config.num_channels)
                                           : DenseSample{dataset->load(index, config.num_channels), cv::Mat()};
        index_out = index;
        return sample;
      } catch (const DataError& e) {
        const bool first_time = dataset->mark_unreadable(index);
        const int64_t count = dataset->unreadable_count();
        if (first_time)
          spdlog::warn("data: skipping unreadable image {} ({} so far, limit {})", e.what(), count, bad_limit);
        if (count > bad_limit)
          throw DataError(fmt::format("data: {} unreadable images in {} (limit {} = data.max_bad_fraction {} x {} "
                                      "images); last: {}",
                                      count, dataset->describe_set(), bad_limit, config.max_bad_fraction, n, e.what()));
      }
    }
    throw DataError("data: no readable image in " + dataset->describe_set());
  }

  // A segmentation sample: image and label map through the joint training view, the image normalised and padded
  // with 0 (in normalised units, as mmseg's data preprocessor pads), the map padded with 255.
  void fill_dense(Slot& s, int64_t k, const DenseSample& sample, int64_t index, SampleRng& rng) const {
    const SegView view = seg_train_view(sample.image, sample.labels, *options.dense, rng);
    const int c = config.num_channels, size = config.image_size, h = view.image.rows, w = view.image.cols;
    std::vector<float> plane(static_cast<size_t>(c) * h * w);
    normalise_into(view.image, config.mean, config.std, plane.data());
    float* dst = s.images.data_ptr<float>() + k * c * size * size;
    std::fill(dst, dst + c * size * size, 0.0f);
    for (int ch = 0; ch < c; ++ch)
      for (int y = 0; y < h; ++y)
        std::copy_n(plane.data() + (static_cast<size_t>(ch) * h + y) * w, w, dst + (static_cast<size_t>(ch) * size + y) * size);
    const cv::Mat labels = pad_labels(view.labels, size, options.dense->ignore_index);
    uint8_t* lab = s.label_maps.data_ptr<uint8_t>() + k * size * size;
    for (int y = 0; y < size; ++y) std::copy_n(labels.ptr<uint8_t>(y), size, lab + static_cast<size_t>(y) * size);
    s.labels.data_ptr<int64_t>()[k] = -1;
    s.indices.data_ptr<int64_t>()[k] = index;
  }

  void fill(Slot& s, const std::vector<int64_t>& ord, int64_t k) const {
    int64_t index = -1;
    const DenseSample sample = load_at(ord, s.first + k, index);
    // The sample's own generator: its augmentation does not depend on who loads it or when.
    SampleRng rng = SampleRng::for_sample(options.seed, s.epoch, index);
    if (options.dense) return fill_dense(s, k, sample, index, rng);
    const cv::Mat& img = sample.image;
    const cv::Mat view = options.train ? train_transform(img, config, rng) : eval_transform(img, config);
    const int c = config.num_channels, size = config.image_size;
    if (view.rows != size || view.cols != size || view.channels() != c)
      throw std::logic_error(fmt::format("data: transform of {} gave {}x{}x{}, expected {}x{}x{}",
                                         dataset->describe(index), view.rows, view.cols, view.channels(), size,
                                         size, c));
    float* dst = s.images.data_ptr<float>() + k * c * size * size;
    normalise_into(view, config.mean, config.std, dst);
    if (options.train && config.erase_prob > 0) random_erase(dst, c, size, size, config.erase_prob, rng);
    s.labels.data_ptr<int64_t>()[k] = dataset->num_classes() > 0 ? dataset->label(index) : -1;
    s.indices.data_ptr<int64_t>()[k] = index;
  }

  // Under the lock: a batch with a sample nobody has taken, opening the next batch while the window has room.
  std::shared_ptr<Slot> find_work() {
    while (true) {
      for (const auto& s : window)
        if (s->next_sample < s->count) return s;
      if (window.size() >= depth || next_to_open >= batches) return nullptr;
      std::shared_ptr<Slot> slot;
      try {
        slot = open(next_to_open);
      } catch (...) {  // e.g. out of memory: the caller of next() hears of it, not std::terminate
        slot = std::make_shared<Slot>();
        slot->epoch = epoch;
        slot->batch = next_to_open;
        slot->error = std::current_exception();
      }
      ++next_to_open;
      window.push_back(slot);
      if (slot->count == 0) ready_cv.notify_all();  // nothing to load: an allocation error or an empty shard
    }
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      std::shared_ptr<Slot> s;
      work_cv.wait(lock, [&] { return stopping || (started && (s = find_work())); });
      if (stopping) return;
      const int64_t k = s->next_sample++;
      const uint64_t gen = generation;
      const auto ord = order;
      lock.unlock();
      std::exception_ptr error;
      try {
        fill(*s, *ord, k);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (gen != generation) continue;  // start() moved on; `s` is no longer in the window
      if (error && !s->error) s->error = error;
      if (++s->done == s->count) ready_cv.notify_all();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
    }
    work_cv.notify_all();
    for (auto& t : workers)
      if (t.joinable()) t.join();
  }
};

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, const DataConfig& config, LoaderOptions options)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  if (!dataset) throw std::invalid_argument("DataLoader: no dataset");
  if (options.batch_size <= 0 || options.world_size <= 0 || options.rank < 0 || options.rank >= options.world_size)
    throw std::invalid_argument(fmt::format("DataLoader: batch_size {} rank {} world_size {}", options.batch_size,
                                            options.rank, options.world_size));
  if ((config.num_channels != 1 && config.num_channels != 3) ||
      static_cast<int>(config.mean.size()) != config.num_channels ||
      static_cast<int>(config.std.size()) != config.num_channels || config.image_size <= 0)
    throw std::invalid_argument("DataLoader: data.num_channels, mean, std or image_size inconsistent");
  if (options.dense) {
    if (!options.train)
      throw std::invalid_argument("DataLoader: dense batches are for training; segmentation evaluation reads whole "
                                  "images (eval/segmentation.h)");
    if (!dataset->has_label_maps())
      throw std::invalid_argument("DataLoader: dense batches need a dataset with label maps, " +
                                  dataset->describe_set() + " has none");
    if (options.dense->crop != config.image_size)
      throw std::invalid_argument(fmt::format("DataLoader: the segmentation crop {} must equal data.image_size {}",
                                              options.dense->crop, config.image_size));
  }
  m.dataset = std::move(dataset);
  m.config = config;
  m.options = options;
  const int64_t n = m.dataset->size(), global = options.batch_size * options.world_size;
  if (options.limit < 0) throw std::invalid_argument("DataLoader: negative limit");
  m.used = options.limit > 0 ? std::min(options.limit, n) : n;
  m.batches = options.drop_last ? m.used / global : (m.used + global - 1) / global;
  // The epsilon keeps 0.29 x 100 at 29, not 28.999...
  m.bad_limit = static_cast<int64_t>(std::floor(config.max_bad_fraction * static_cast<double>(n) + 1e-9));
  m.depth = static_cast<size_t>(std::max(1, config.prefetch_batches));
  try {
    for (int i = 0; i < config.num_workers; ++i) m.workers.emplace_back([im = impl_.get()] { im->worker_loop(); });
  } catch (...) {
    m.stop_workers();
    throw;
  }
}

DataLoader::~DataLoader() { impl_->stop_workers(); }

int64_t DataLoader::batches_per_epoch() const { return impl_->batches; }

void DataLoader::start(int64_t epoch, int64_t first_batch) {
  auto& m = *impl_;
  if (first_batch < 0) throw std::invalid_argument("DataLoader::start: negative first_batch");
  auto order = std::make_shared<const std::vector<int64_t>>(
      epoch_order(m.dataset->size(), m.options.seed, epoch, m.options.shuffle));
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    ++m.generation;
    m.started = true;
    m.epoch = epoch;
    m.order = std::move(order);
    m.next_to_open = m.next_to_hand = first_batch;
    m.window.clear();
  }
  m.work_cv.notify_all();
}

std::optional<Batch> DataLoader::next() {
  auto& m = *impl_;
  std::shared_ptr<Slot> s;
  {
    std::unique_lock<std::mutex> lock(m.mutex);
    if (!m.started) throw std::logic_error("DataLoader::next() before start()");
    if (m.next_to_hand >= m.batches) return std::nullopt;
    if (m.workers.empty()) {
      s = m.open(m.next_to_hand++);
      const auto ord = m.order;
      lock.unlock();
      for (int64_t k = 0; k < s->count; ++k) m.fill(*s, *ord, k);
    } else {
      m.ready_cv.wait(lock, [&] { return !m.window.empty() && m.window.front()->done == m.window.front()->count; });
      s = std::move(m.window.front());
      m.window.pop_front();
      ++m.next_to_hand;
      lock.unlock();
      m.work_cv.notify_all();  // room for one more batch
    }
  }
  if (s->error) std::rethrow_exception(s->error);
  Batch batch;
  batch.images = std::move(s->images);
  batch.labels = std::move(s->labels);
  batch.indices = std::move(s->indices);
  batch.label_maps = std::move(s->label_maps);
  batch.epoch = s->epoch;
  batch.index = s->batch;
  if (m.options.device.is_cuda()) {
    batch.images = batch.images.to(m.options.device, /*non_blocking=*/true);
    batch.labels = batch.labels.to(m.options.device, /*non_blocking=*/true);
    if (batch.label_maps.defined()) batch.label_maps = batch.label_maps.to(m.options.device, /*non_blocking=*/true);
  }
  return batch;
}

BadImageStats DataLoader::bad_images() const { return {impl_->dataset->unreadable_count(), impl_->bad_limit}; }

const Dataset& DataLoader::dataset() const { return *impl_->dataset; }

}  // namespace nepa
