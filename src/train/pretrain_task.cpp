#include "nepa/train/pretrain_task.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <stdexcept>

#include "nepa/eval/knn.h"

namespace nepa {

namespace {

// The backbone's own tensors and children registered under their own names (shared, not copied), then the
// objective's modules: old checkpoints, saved from the backbone alone as "model.*", still load, and the EMA's
// backbone twin finds its names.
class CarriedModules : public torch::nn::Module {
 public:
  CarriedModules(ViTNepaModel backbone, const NamedModules& added) : backbone_(std::move(backbone)) {
    for (const auto& p : backbone_->named_parameters(/*recurse=*/false))
      register_parameter(p.key(), p.value(), p.value().requires_grad());
    for (const auto& b : backbone_->named_buffers(/*recurse=*/false)) register_buffer(b.key(), b.value());
    for (const auto& c : backbone_->named_children()) register_module(c.key(), c.value());
    for (const auto& [name, m] : added) {
      if (named_children().contains(name) || named_parameters(false).contains(name) ||
          named_buffers(false).contains(name))
        throw std::logic_error("objective module '" + name + "' has the name of a part of the backbone");
      register_module(name, m);
    }
  }
  // The backbone is not a child (its parts are), so its own training flag is set here.
  void train(bool on) override {
    torch::nn::Module::train(on);
    backbone_->train(on);
  }

 private:
  ViTNepaModel backbone_;
};

}  // namespace

PretrainTask::PretrainTask(const Config& config, ViTNepaModel model, std::shared_ptr<const Dataset> knn_memory,
                           std::shared_ptr<const Dataset> knn_queries, torch::Device device, dist::Comm* comm)
    : config_(config), model_(std::move(model)), objective_(make_objective(config)),
      knn_memory_(std::move(knn_memory)), knn_queries_(std::move(knn_queries)), device_(device), comm_(comm) {
  // Before attach: an objective may copy the trunk (I-JEPA's target encoder). hf is what the constructor drew.
  const BackboneInit init = backbone_init(config.objective.backbone_init);
  if (init != BackboneInit::kHf) {
    model_->init_weights(init);
    spdlog::info("backbone initialised as objective.backbone_init {} says", config.objective.backbone_init);
  }
  objective_->attach(model_);
  NamedModules added = objective_->modules();
  for (auto& [name, m] : added) m->to(device_);
  carried_ = std::make_shared<CarriedModules>(model_, added);
}

std::vector<ParamGroup> PretrainTask::param_groups() { return decay_groups(*carried_, config_.optim.weight_decay); }

StepOutput PretrainTask::forward(const Batch& batch) {
  ObjectiveOutput out = objective_->forward(model_, batch.images);
  return {out.loss, out.metrics};
}

std::vector<std::pair<std::string, double>> PretrainTask::evaluate(int64_t /*step*/) {
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
  ViTNepaModel encoder = objective_->readout_encoder(model_);
  Features memory = all_gather(comm, extract_features(encoder, memory_loader));
  opts.limit = config_.eval.knn_eval_samples;
  opts.shuffle = opts.limit > 0;
  DataLoader query_loader(knn_queries_, config_.data, opts);
  query_loader.start(0);
  Features queries = all_gather(comm, extract_features(encoder, query_loader));
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

void PretrainTask::export_final(const std::string& dir) {
  objective_->export_model(dir, model_);
  if (ema()) {
    // The release saves its EMA beside the weights (pytorch_model_ema.bin) for init_nepa_cls_from_pretrain.py
    // --use_ema; here it is a second HF folder, which nepa_finetune --init takes like the first.
    ViTNepaModel twin(model_->config());
    ema()->copy_to(*twin);
    objective_->export_model(dir + "_ema", twin);
  }
}

}  // namespace nepa
