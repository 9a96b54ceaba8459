#include "nepa/train/finetune_task.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "nepa/data/mixup.h"
#include "nepa/eval/classification.h"

namespace nepa {
namespace fs = std::filesystem;

FinetuneTask::FinetuneTask(const Config& config, ViTNepaForImageClassification model,
                           std::shared_ptr<const Dataset> eval_set, torch::Device device, dist::Comm* comm,
                           std::vector<std::string> labels)
    : config_(config), model_(std::move(model)), eval_set_(std::move(eval_set)), device_(device), comm_(comm),
      labels_(std::move(labels)) {
  if (config_.finetune.freeze_embed)
    for (auto& p : model_->vit_nepa->embeddings->patch_embeddings->parameters()) p.set_requires_grad(false);
  if (model_->probe && comm_ && comm_->world_size() > 1)
    model_->probe->sync_statistics([comm = comm_](torch::Tensor& t) { comm->all_reduce(t); });
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& p : model_->named_parameters()) named.emplace_back(p.key(), p.value());
  llrd_ = llrd_groups(named, model_->vit_nepa->config().num_hidden_layers, config_.optim.weight_decay);
}

std::vector<ParamGroup> FinetuneTask::param_groups() { return llrd_.groups; }

std::unique_ptr<LrSchedule> FinetuneTask::make_schedule(const Config& config, int64_t total_steps) {
  if (config.schedule.name.rfind("llrd_", 0) != 0) return TrainTask::make_schedule(config, total_steps);
  auto s = make_llrd_schedule(config, llrd_.specs, total_steps);
  spdlog::info("layer-wise lr decay ({}, llrd {}{}):\n{}", config.schedule.name, config.finetune.llrd,
               config.finetune.llrd_end ? fmt::format(" -> {} along a half-cosine", *config.finetune.llrd_end) : ", fixed",
               describe_llrd(llrd_, *s));
  return s;
}

int64_t FinetuneTask::eval_every(const Config& config, int64_t steps_per_epoch) {
  if (config.finetune.eval_every_epochs <= 0) return 0;
  return std::max<int64_t>(1, std::llround(config.finetune.eval_every_epochs * static_cast<double>(steps_per_epoch)));
}

StepOutput FinetuneTask::forward(const Batch& batch) {
  torch::Tensor images = batch.images;  // the loader hands each batch out once: mixing in place is safe
  const int rank = comm_ ? comm_->rank() : 0, world = comm_ ? comm_->world_size() : 1;
  // One draw per batch and rank, reproducible from (seed, epoch, batch).
  SampleRng rng = SampleRng::for_sample(static_cast<uint64_t>(config_.train.seed) ^ 0x6d69787570ULL, batch.epoch,
                                        batch.index * world + rank);
  const MixParams mix =
      draw_mix(config_.finetune, static_cast<int>(images.size(2)), static_cast<int>(images.size(3)), rng);
  torch::Tensor targets =
      apply_mix(images, batch.labels, model_->num_classes(), config_.finetune.label_smoothing, mix);
  torch::Tensor logits = model_->forward(images);
  torch::Tensor loss = soft_target_cross_entropy(logits, targets);
  // Agreement with the dominant label: a training accuracy that stays meaningful under mixing.
  torch::Tensor acc = logits.detach().argmax(1).eq(targets.argmax(1)).to(torch::kFloat32).mean() * 100.0;
  return {loss, {{"train_acc", acc}}};
}

std::map<std::string, torch::Tensor> FinetuneTask::extra_state() {
  return {{"best_ema_top1", torch::tensor(best_ema_top1_, torch::kFloat64)}};
}

void FinetuneTask::load_extra_state(const std::map<std::string, torch::Tensor>& extra) {
  if (auto it = extra.find("best_ema_top1"); it != extra.end()) best_ema_top1_ = it->second.item<double>();
}

ClassificationResult evaluate_on(ViTNepaForImageClassification& model, std::shared_ptr<const Dataset> eval_set,
                                 const Config& config, torch::Device device, dist::Comm* comm) {
  LoaderOptions opts;
  opts.batch_size = std::max(config.train.micro_batch, 64);
  opts.train = false;
  opts.shuffle = false;
  opts.drop_last = false;
  opts.device = device;
  opts.rank = comm ? comm->rank() : 0;
  opts.world_size = comm ? comm->world_size() : 1;
  DataLoader loader(eval_set, config.data, opts);
  loader.start(0);
  const bool was_training = model->is_training();
  model->eval();
  ClassificationResult r = evaluate_classifier([&](const torch::Tensor& x) { return model->forward(x); }, loader,
                                               model->num_classes(), comm);
  if (was_training) model->train();
  return r;
}

std::vector<std::pair<std::string, double>> FinetuneTask::evaluate(int64_t step) {
  if (!eval_set_) return {};
  const bool main_rank = !comm_ || comm_->is_main();
  const fs::path run_dir = config_.train.output_dir;
  ClassificationResult plain = evaluate_on(model_, eval_set_, config_, device_, comm_);
  std::vector<std::pair<std::string, double>> out = {{"top1", plain.top1_pct()}, {"top5", plain.top5_pct()}};
  const ClassificationResult* headline = &plain;
  ClassificationResult averaged;
  if (ema()) {
    averaged = evaluate_on(ema_twin(), eval_set_, config_, device_, comm_);
    out.emplace_back("ema_top1", averaged.top1_pct());
    out.emplace_back("ema_top5", averaged.top5_pct());
    headline = &averaged;
    if (averaged.top1_pct() > best_ema_top1_) {
      best_ema_top1_ = averaged.top1_pct();
      if (main_rank) {
        save_hf_classifier((run_dir / "best_ema").string(), eval_twin_, labels_);
        spdlog::info("best EMA top-1 so far ({:.2f}% at step {}): {}", best_ema_top1_, step,
                     (run_dir / "best_ema").string());
      }
    }
  }
  if (main_rank) {
    write_confusion_csv(*headline, labels_, (run_dir / "eval_confusion.csv").string());
    write_per_class_csv(*headline, labels_, (run_dir / "eval_per_class.csv").string());
  }
  spdlog::info("eval ({} images): top-1 {:.2f}% top-5 {:.2f}%{}", plain.count, plain.top1_pct(), plain.top5_pct(),
               ema() ? fmt::format(", EMA top-1 {:.2f}% top-5 {:.2f}%", averaged.top1_pct(), averaged.top5_pct()) : "");
  return out;
}

void FinetuneTask::export_final(const std::string& dir) {
  save_hf_classifier(dir, model_, labels_);
  if (ema()) save_hf_classifier(dir + "_ema", ema_twin(), labels_);
}

ViTNepaForImageClassification& FinetuneTask::ema_twin() {
  if (!eval_twin_) {
    eval_twin_ = without_drawing([&] {  // made at the first evaluation, mid-run
      return ViTNepaForImageClassification(model_->vit_nepa->config(), model_->num_classes(), model_->head(),
                                           model_->probe_blocks());
    });
    eval_twin_->to(device_);
  }
  ema()->copy_to(*eval_twin_);
  return eval_twin_;
}

}  // namespace nepa
