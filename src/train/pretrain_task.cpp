#include "nepa/train/pretrain_task.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>

#include "nepa/eval/knn.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/objective/nepa_loss.h"

namespace nepa {

NepaPretrainTask::NepaPretrainTask(const Config& config, ViTNepaModel model, std::shared_ptr<const Dataset> knn_memory,
                                   std::shared_ptr<const Dataset> knn_queries, torch::Device device,
                                   dist::Comm* comm)
    : config_(config), model_(std::move(model)), knn_memory_(std::move(knn_memory)),
      knn_queries_(std::move(knn_queries)), device_(device), comm_(comm) {}

std::vector<ParamGroup> NepaPretrainTask::param_groups() { return decay_groups(*model_, config_.optim.weight_decay); }

StepOutput NepaPretrainTask::forward(const Batch& batch) {
  NepaLoss l = nepa_forward_loss(model_, batch.images, config_.objective);
  return {l.loss, {{"cos", l.mean_cos}, {"pred_std", l.pred_std}}};
}

std::vector<std::pair<std::string, double>> NepaPretrainTask::evaluate(int64_t /*step*/) {
  if (config_.eval.knn_k <= 0 || !knn_memory_ || !knn_queries_) return {};
  auto t0 = std::chrono::steady_clock::now();
  dist::Comm single;
  dist::Comm& comm = comm_ ? *comm_ : single;
  LoaderOptions opts;
  opts.batch_size = std::max(config_.train.micro_batch, 256);
  opts.train = false;
  opts.drop_last = false;
  opts.seed = static_cast<uint64_t>(config_.train.seed);
  opts.device = device_;
  opts.rank = comm.rank();
  opts.world_size = comm.world_size();
  // A fixed random subset when limited (ImageFolder order is sorted by class), the full split otherwise.
  opts.limit = config_.eval.knn_train_samples;
  opts.shuffle = opts.limit > 0;
  DataLoader memory_loader(knn_memory_, config_.data, opts);
  memory_loader.start(0);
  Features memory = all_gather(comm, extract_features(model_, memory_loader));
  opts.limit = config_.eval.knn_eval_samples;
  opts.shuffle = opts.limit > 0;
  DataLoader query_loader(knn_queries_, config_.data, opts);
  query_loader.start(0);
  Features queries = all_gather(comm, extract_features(model_, query_loader));
  const int classes = std::max(knn_memory_->num_classes(), 1);
  const int k = static_cast<int>(std::min<int64_t>(config_.eval.knn_k, memory.labels.size(0)));
  double mean_top1 = knn_top1(memory.mean_pooled, memory.labels, queries.mean_pooled, queries.labels, k, classes);
  double last_top1 = knn_top1(memory.last_token, memory.labels, queries.last_token, queries.labels, k, classes);
  spdlog::info("k-NN (k={}, {} memory / {} query images, {:.0f} s): mean-pooled {:.2f}%, last token {:.2f}%", k,
               memory.labels.size(0), queries.labels.size(0),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 100 * mean_top1,
               100 * last_top1);
  return {{"knn_mean_top1", 100 * mean_top1}, {"knn_last_top1", 100 * last_top1}};
}

void NepaPretrainTask::export_final(const std::string& dir) {
  save_hf_model(dir, model_, HfModelConfig{config_.model, {}, {}, {}});
  if (ema()) {
    // The release saves its EMA beside the weights (pytorch_model_ema.bin) for init_nepa_cls_from_pretrain.py
    // --use_ema; here it is a second HF folder, which nepa_finetune --init takes like the first.
    ViTNepaModel twin(model_->config());
    ema()->copy_to(*twin);
    save_hf_model(dir + "_ema", twin, HfModelConfig{config_.model, {}, {}, {}});
  }
}

}  // namespace nepa
