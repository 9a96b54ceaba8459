#include "nepa/data/loader.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "nepa/data/transforms.h"

namespace nepa {

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (!shuffle) return order;
  // Fisher-Yates on our own generator: the same permutation on every platform and standard library.
  SampleRng rng = SampleRng::for_sample(seed ^ 0x5eedULL, epoch, -1);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.randint(0, i)]);
  return order;
}

struct DataLoader::Impl {
  std::shared_ptr<const Dataset> dataset;
  DataConfig config;
  LoaderOptions options;
  int64_t batches = 0;
  int64_t limit = 0;

  std::mutex mutex;
  std::condition_variable work_cv, ready_cv;
  bool stopping = false;
  bool started = false;
  uint64_t generation = 0;
  int64_t epoch = 0;
  std::shared_ptr<const std::vector<int64_t>> order;
  int64_t next_to_make = 0, next_to_hand = 0, in_flight = 0;
  struct Result {
    Batch batch;
    std::exception_ptr error;
  };
  std::map<int64_t, Result> ready;
  std::vector<std::thread> workers;

  // Global positions [first, last) of this rank's part of batch b.
  std::pair<int64_t, int64_t> span(int64_t b) const {
    const int64_t n = dataset->size();
    int64_t first = b * options.batch_size * options.world_size + options.rank * options.batch_size;
    return {std::min(first, n), std::min(first + options.batch_size, n)};
  }

  // Loads the sample at `pos` of the order, or the next readable one after it.
  cv::Mat load_at(const std::vector<int64_t>& ord, int64_t pos, int64_t& index_out) {
    const int64_t n = static_cast<int64_t>(ord.size());
    for (int64_t tries = 0; tries < n; ++tries) {
      int64_t index = ord[(pos + tries) % n];
      if (dataset->known_unreadable(index)) continue;
      try {
        cv::Mat img = dataset->load(index, config.num_channels);
        index_out = index;
        return img;
      } catch (const DataError& e) {
        bool first_time = dataset->mark_unreadable(index);
        int64_t count = dataset->unreadable_count();
        if (first_time) spdlog::warn("data: skipping unreadable image {} ({} so far)", e.what(), count);
        if (count > limit)
          throw DataError(fmt::format("data: {} unreadable images (limit {} = data.max_bad_fraction {} x {} images); "
                                      "last: {}", count, limit, config.max_bad_fraction, n, e.what()));
      }
    }
    throw DataError("data: no readable image in the dataset (" + dataset->describe(0) + ", ...)");
  }

  Batch make(const std::vector<int64_t>& ord, int64_t ep, int64_t b) {
    auto [first, last] = span(b);
    const int64_t count = last - first;
    const int c = config.num_channels, s = config.image_size;
    auto opts = torch::TensorOptions().dtype(torch::kFloat32);
    if (options.device.is_cuda()) opts = opts.pinned_memory(true);
    Batch batch;
    batch.images = torch::empty({count, c, s, s}, opts);
    batch.labels = torch::empty({count}, torch::TensorOptions().dtype(torch::kInt64).pinned_memory(options.device.is_cuda()));
    batch.indices = torch::empty({count}, torch::kInt64);
    batch.epoch = ep;
    batch.index = b;
    float* dst = batch.images.data_ptr<float>();
    int64_t* labels = batch.labels.data_ptr<int64_t>();
    int64_t* indices = batch.indices.data_ptr<int64_t>();
    for (int64_t k = 0; k < count; ++k) {
      int64_t index = -1;
      cv::Mat img = load_at(ord, first + k, index);
      // The sample's own generator: the batch does not depend on who loads it.
      SampleRng rng = SampleRng::for_sample(options.seed, ep, index);
      cv::Mat view = options.train ? train_transform(img, config, rng) : eval_transform(img, config);
      normalise_into(view, config.mean, config.std, dst + k * c * s * s);
      labels[k] = dataset->num_classes() > 0 ? dataset->label(index) : -1;
      indices[k] = index;
    }
    return batch;
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      work_cv.wait(lock, [&] {
        return stopping || (started && next_to_make < batches &&
                            in_flight + static_cast<int64_t>(ready.size()) < config.prefetch_batches);
      });
      if (stopping) return;
      const int64_t b = next_to_make++;
      const uint64_t gen = generation;
      const int64_t ep = epoch;
      auto ord = order;
      ++in_flight;
      lock.unlock();
      Result r;
      try {
        r.batch = make(*ord, ep, b);
      } catch (...) {
        r.error = std::current_exception();
      }
      lock.lock();
      if (gen != generation) continue;  // start() moved on; this batch belongs to the old position
      --in_flight;
      ready.emplace(b, std::move(r));
      ready_cv.notify_all();
    }
  }
};

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, const DataConfig& config, LoaderOptions options)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.dataset = std::move(dataset);
  m.config = config;
  m.options = options;
  if (options.batch_size <= 0 || options.world_size <= 0 || options.rank < 0 || options.rank >= options.world_size)
    throw std::invalid_argument("DataLoader: bad batch_size/rank/world_size");
  const int64_t n = m.dataset->size(), global = options.batch_size * options.world_size;
  m.batches = options.drop_last ? n / global : (n + global - 1) / global;
  m.limit = static_cast<int64_t>(std::floor(config.max_bad_fraction * static_cast<double>(n)));
  for (int i = 0; i < config.num_workers; ++i) m.workers.emplace_back([this] { impl_->worker_loop(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->work_cv.notify_all();
  for (auto& t : impl_->workers) t.join();
}

int64_t DataLoader::batches_per_epoch() const { return impl_->batches; }

void DataLoader::start(int64_t epoch, int64_t first_batch) {
  auto& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    ++m.generation;
    m.started = true;
    m.epoch = epoch;
    m.order = std::make_shared<const std::vector<int64_t>>(
        epoch_order(m.dataset->size(), m.options.seed, epoch, m.options.shuffle));
    m.next_to_make = m.next_to_hand = first_batch;
    m.in_flight = 0;
    m.ready.clear();
  }
  m.work_cv.notify_all();
}

std::optional<Batch> DataLoader::next() {
  auto& m = *impl_;
  Impl::Result r;
  {
    std::unique_lock<std::mutex> lock(m.mutex);
    if (!m.started) throw std::logic_error("DataLoader::next() before start()");
    if (m.next_to_hand >= m.batches) return std::nullopt;
    const int64_t b = m.next_to_hand++;
    if (m.workers.empty()) {
      auto ord = m.order;
      const int64_t ep = m.epoch;
      lock.unlock();
      r.batch = m.make(*ord, ep, b);
    } else {
      m.ready_cv.wait(lock, [&] { return m.ready.count(b) > 0; });
      r = std::move(m.ready.at(b));
      m.ready.erase(b);
      lock.unlock();
      m.work_cv.notify_all();
    }
  }
  if (r.error) std::rethrow_exception(r.error);
  if (m.options.device.is_cuda()) {
    r.batch.images = r.batch.images.to(m.options.device, /*non_blocking=*/true);
    r.batch.labels = r.batch.labels.to(m.options.device, /*non_blocking=*/true);
  }
  return std::move(r.batch);
}

BadImageStats DataLoader::bad_images() const { return {impl_->dataset->unreadable_count(), impl_->limit}; }

const Dataset& DataLoader::dataset() const { return *impl_->dataset; }

}  // namespace nepa
