#include "nepa/train/seg_task.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>

#include "nepa/config/hf_config.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "nepa/model/classifier.h"
#include "nepa/train/ema.h"
#include "nepa/train/seg_schedule.h"

namespace nepa {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;


UPerNetOptions upernet_options(const Config& config, int64_t num_classes) {
  UPerNetOptions o;
  o.in_channels = config.model.hidden_size;
  o.channels = config.seg.channels;
  o.aux_channels = config.seg.aux_channels;
  o.num_classes = num_classes;
  o.dropout = config.seg.dropout;
  return o;
}

SegTrainOptions seg_train_options(const Config& config) {
  SegTrainOptions o;
  o.scale_long = config.seg.scale_long;
  o.scale_short = config.seg.scale_short;
  o.ratio_lo = config.seg.ratio_range.at(0);
  o.ratio_hi = config.seg.ratio_range.at(1);
  o.crop = config.data.image_size;
  o.cat_max_ratio = config.seg.cat_max_ratio;
  o.flip_prob = config.data.hflip_prob;
  o.photometric = config.seg.photometric;
  return o;
}

SegEvalOptions seg_eval_options(const Config& config, torch::Device device) {
  SegEvalOptions o;
  o.scale_long = config.seg.scale_long;
  o.scale_short = config.seg.scale_short;
  o.crop = config.seg.eval_mode == "whole" ? 0 : config.seg.eval_crop > 0 ? config.seg.eval_crop : config.data.image_size;
  o.stride = config.seg.eval_stride;
  o.patch = config.model.patch_size;
  o.mean = config.data.mean;
  o.std = config.data.std;
  o.channels = config.data.num_channels;
  o.device = device;
  return o;
}

std::vector<int> seg_out_indices(const Config& config) {
  if (config.seg.out_indices.empty())
    throw ConfigError(fmt::format(
        "config error: seg.out_indices: nepa_seg needs the 4 blocks whose tokens feed the pyramid (mmseg: [3, 5, 7, "
        "11] for B, [7, 11, 15, 23] for L; the model has {} blocks)",
        config.model.num_hidden_layers));
  return config.seg.out_indices;
}

torch::Tensor seg_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, bool avg_non_ignore,
                                int64_t ignore_index) {
  torch::Tensor up = logits.to(torch::kFloat32);
  if (up.size(2) != labels.size(1) || up.size(3) != labels.size(2))
    up = F::interpolate(up, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{labels.size(1), labels.size(2)})
                                .mode(torch::kBilinear)
                                .align_corners(false));
  const torch::Tensor per_pixel = F::cross_entropy(
      up, labels, F::CrossEntropyFuncOptions().ignore_index(ignore_index).reduction(torch::kNone));
  if (!avg_non_ignore) return per_pixel.sum() / static_cast<double>(labels.numel());
  return per_pixel.sum() / labels.ne(ignore_index).sum().clamp_min(1).to(torch::kFloat32);
}

SegmenterInit load_segmenter_init(NepaSegmenter& model, const SegConfig& seg) {
  const auto file = read_classifier_weights(seg.init, seg.init_ema, "seg.init");
  bool file_has_qk_norm = false;
  for (const auto& [k, v] : file)
    if (k.find(".q_norm.") != std::string::npos || k.find(".k_norm.") != std::string::npos) file_has_qk_norm = true;
  // Only the backbone comes from the file: a pretraining run has no heads, and a classifier's are of no use here.
  std::map<std::string, torch::Tensor> backbone;
  SegmenterInit init;
  for (const auto& [k, v] : file) {
    if (k.rfind(kBackbonePrefix, 0) == 0) backbone[k] = v;
    else init.unused.push_back(k);
  }
  int64_t total = 0;
  for (const auto& [k, v] : state_dict(*model->vit_nepa, kBackbonePrefix)) {
    ++total;
    if (backbone.count(k)) continue;
    const bool qk_norm = k.find(".q_norm.") != std::string::npos || k.find(".k_norm.") != std::string::npos;
    (qk_norm && !file_has_qk_norm ? init.expected_new : init.missing_backbone).push_back(k);
  }
  if (!init.missing_backbone.empty() && !seg.allow_missing)
    throw std::runtime_error(fmt::format(
        "seg.init: {} lacks {} of the {} backbone tensors this model needs (first: {}): another architecture than "
        "model.* describes, or not a NEPA backbone; seg.allow_missing: true trains them from random init",
        seg.init, init.missing_backbone.size(), total, init.missing_backbone.front()));
  const LoadReport report = load_state_dict(*model->vit_nepa, backbone, /*strict=*/false, seg.init, kBackbonePrefix);
  if (!report.mismatched.empty() || !report.unexpected.empty())
    throw std::runtime_error(seg.init + ": tensors do not fit the backbone:\n" + report.summary());
  init.loaded = static_cast<int64_t>(backbone.size());
  return init;
}

void save_segmenter(const std::string& dir, NepaSegmenter& model, const Config& config,
                    const std::vector<std::string>& class_names) {
  HfModelConfig hf;
  hf.model = model->vit_nepa->config();
  hf.architectures = {"NepaSegmenter"};
  hf.id2label = class_names;
  std::map<std::string, torch::Tensor> rest;
  for (const auto& [name, t] : state_dict(*model))
    if (name.rfind(kBackbonePrefix, 0) != 0) rest[name] = t;
  save_hf_model(dir, model->vit_nepa, hf, rest);
  Config saved = config;
  saved.model = hf.model;
  saved.seg.num_classes = static_cast<int>(model->num_classes());
  save_config(saved, (fs::path(dir) / "config.yaml").string());
}

NepaSegmenter load_segmenter(const std::string& weights, Config& config) {
  const fs::path dir = fs::is_directory(weights) ? fs::path(weights) : fs::path(weights).parent_path();
  const fs::path file = fs::is_directory(weights) ? dir / "model.safetensors" : fs::path(weights);
  if (!fs::exists(file)) throw std::runtime_error("--weights: " + file.string() + " does not exist");
  if (fs::exists(dir / "config.yaml") && !fs::exists(dir / "latest")) {
    const Config exported = load_config((dir / "config.yaml").string()).config;
    config.model = exported.model;
    config.data.mean = exported.data.mean;
    config.data.std = exported.data.std;
    config.data.num_channels = exported.data.num_channels;
    const SegConfig eval_keys = config.seg;  // how to evaluate stays the caller's choice
    config.seg = exported.seg;
    config.seg.eval_mode = eval_keys.eval_mode;
    config.seg.eval_crop = eval_keys.eval_crop;
    config.seg.eval_stride = eval_keys.eval_stride;
    config.seg.eval_samples = eval_keys.eval_samples;
    config.seg.scale_long = eval_keys.scale_long;
    config.seg.scale_short = eval_keys.scale_short;
    spdlog::info("segmenter architecture and normalisation from {}", (dir / "config.yaml").string());
  }
  std::map<std::string, torch::Tensor> tensors = load_safetensors(file.string()), model_tensors;
  bool checkpoint = false;
  for (const auto& [k, v] : tensors) checkpoint = checkpoint || k.rfind("model.", 0) == 0;
  for (const auto& [k, v] : tensors)
    if (!checkpoint) model_tensors[k] = v;
    else if (k.rfind("model.", 0) == 0) model_tensors[k.substr(6)] = v;
  auto it = model_tensors.find("decode_head.conv_seg.weight");
  if (it == model_tensors.end())
    throw std::runtime_error(file.string() + ": no decode_head.conv_seg.weight (not a nepa_seg export or checkpoint)");
  NepaSegmenter model(config.model, upernet_options(config, it->second.size(0)), seg_out_indices(config));
  load_state_dict(*model, model_tensors, /*strict=*/true, file.string());
  model->eval();
  return model;
}

SegTask::SegTask(const Config& config, NepaSegmenter model, std::shared_ptr<const Dataset> eval_set,
                 torch::Device device, dist::Comm* comm, std::vector<std::string> class_names)
    : config_(config), model_(std::move(model)), eval_set_(std::move(eval_set)), device_(device), comm_(comm),
      class_names_(std::move(class_names)) {
  // SyncBN as mmseg trains it: batch statistics over every process's crops, so that the batch norm sees the
  // whole batch of 16 and not 16 / world.
  if (comm_ && comm_->world_size() > 1)
    model_->upernet->set_batch_norm_sync([comm = comm_](torch::Tensor& t) { comm->all_reduce(t); });
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& p : model_->named_parameters()) named.emplace_back(p.key(), p.value());
  groups_ = seg_param_groups(named, model_->vit_nepa->config().num_hidden_layers, config_.optim.weight_decay);
}

std::unique_ptr<LrSchedule> SegTask::make_schedule(const Config& config, int64_t total_steps) {
  if (config.schedule.name != "poly")
    throw ConfigError("config error: schedule.name: nepa_seg trains with poly (mmseg's PolyLR with linear warmup), "
                      "got '" + config.schedule.name + "'");
  auto s = std::make_unique<PolyWarmupSchedule>(groups_.specs, scaled_lr(config.optim, config.train.total_batch),
                                                config.seg.layer_decay, config.seg.warmup_iters,
                                                config.seg.warmup_ratio, total_steps, config.seg.poly_power,
                                                config.schedule.min_lr);
  spdlog::info("BEiT layer decay {} over {} groups:\n{}", config.seg.layer_decay, groups_.groups.size(),
               describe_seg_groups(groups_, *s));
  return s;
}

int64_t SegTask::eval_every(const Config& config, int64_t /*steps_per_epoch*/) { return config.seg.eval_every; }

StepOutput SegTask::forward(const Batch& batch) {
  if (!batch.label_maps.defined())
    throw std::logic_error("SegTask: the loader gave no label maps (LoaderOptions::dense unset)");
  const torch::Tensor labels = batch.label_maps.to(batch.images.device(), torch::kInt64);
  const UPerNetOutput out = model_->forward(batch.images);
  const torch::Tensor loss_seg = seg_cross_entropy(out.logits, labels, config_.seg.avg_non_ignore);
  const torch::Tensor loss_aux = seg_cross_entropy(out.aux_logits, labels, config_.seg.avg_non_ignore);
  // Pixel accuracy at the stride-4 logits upsampled, over labelled pixels (mmseg's acc_seg).
  torch::Tensor acc;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor pred =
        F::interpolate(out.logits.detach().to(torch::kFloat32),
                       F::InterpolateFuncOptions()
                           .size(std::vector<int64_t>{labels.size(1), labels.size(2)})
                           .mode(torch::kBilinear)
                           .align_corners(false))
            .argmax(1);
    const torch::Tensor valid = labels.ne(255);
    acc = (pred.eq(labels) & valid).sum().to(torch::kFloat32) * 100.0 / valid.sum().clamp_min(1).to(torch::kFloat32);
  }
  return {loss_seg + config_.seg.aux_weight * loss_aux,
          {{"loss_seg", loss_seg.detach()}, {"loss_aux", loss_aux.detach()}, {"acc_seg", acc}}};
}

std::map<std::string, torch::Tensor> SegTask::extra_state() {
  return {{"best_miou", torch::tensor(best_miou_, torch::kFloat64)}};
}

void SegTask::load_extra_state(const std::map<std::string, torch::Tensor>& extra) {
  if (auto it = extra.find("best_miou"); it != extra.end()) best_miou_ = it->second.item<double>();
}

SegEvaluation evaluate_segmenter(NepaSegmenter& model, const Dataset& dataset, const Config& config,
                                 torch::Device device, dist::Comm* comm) {
  const bool was_training = model->is_training();
  model->eval();
  const SegModelFn fn = [&model](const torch::Tensor& x) { return model->forward(x).logits; };
  const SegConfusion confusion =
      evaluate_segmentation(dataset, fn, seg_eval_options(config, device), comm, config.seg.eval_samples);
  if (was_training) model->train();
  const int64_t images = config.seg.eval_samples > 0 ? std::min<int64_t>(config.seg.eval_samples, dataset.size())
                                                      : dataset.size();
  return {segmentation_metrics(confusion.matrix), images};
}

std::vector<std::pair<std::string, double>> SegTask::evaluate(int64_t step) {
  if (!eval_set_) return {};
  const bool main_rank = !comm_ || comm_->is_main();
  const fs::path run_dir = config_.train.output_dir;
  const SegEvaluation plain_eval = evaluate_segmenter(model_, *eval_set_, config_, device_, comm_);
  const SegMetrics& plain = plain_eval.metrics;
  const int64_t images = plain_eval.images;
  std::vector<std::pair<std::string, double>> out = {
      {"mIoU", plain.miou}, {"mAcc", plain.macc}, {"aAcc", plain.aacc}};
  const SegMetrics* headline = &plain;
  SegMetrics averaged;
  NepaSegmenter* best_model = &model_;
  if (ema()) {
    averaged = evaluate_segmenter(ema_twin(), *eval_set_, config_, device_, comm_).metrics;
    out.insert(out.end(), {{"ema_mIoU", averaged.miou}, {"ema_mAcc", averaged.macc}, {"ema_aAcc", averaged.aacc}});
    headline = &averaged;
    best_model = &eval_twin_;
  }
  const std::string subset =
      images < eval_set_->size() ? fmt::format(" (the first {} of {})", images, eval_set_->size()) : "";
  if (headline->miou > best_miou_) {
    best_miou_ = headline->miou;
    const std::string best_dir = (run_dir / (ema() ? "best_ema" : "best")).string();
    if (main_rank) save_segmenter(best_dir, *best_model, config_, class_names_);
    spdlog::info("best {}mIoU so far ({:.2f} at step {}): {}", ema() ? "EMA " : "", best_miou_, step, best_dir);
  }
  if (main_rank) {
    write_segmentation_csv(*headline, class_names_, (run_dir / "seg_per_class.csv").string());
    write_segmentation_markdown(*headline, class_names_, (run_dir / "seg_per_class.md").string());
  }
  spdlog::info("eval ({} images{}, {}): mIoU {:.2f} mAcc {:.2f} aAcc {:.2f}{}", images, subset, config_.seg.eval_mode,
               plain.miou, plain.macc, plain.aacc,
               ema() ? fmt::format(", EMA mIoU {:.2f} mAcc {:.2f} aAcc {:.2f}", averaged.miou, averaged.macc,
                                   averaged.aacc)
                     : "");
  return out;
}

void SegTask::export_final(const std::string& dir) {
  save_segmenter(dir, model_, config_, class_names_);
  if (ema()) save_segmenter(dir + "_ema", ema_twin(), config_, class_names_);
}

NepaSegmenter& SegTask::ema_twin() {
  if (!eval_twin_) {
    eval_twin_ = without_drawing([&] {  // made at the first evaluation, mid-run
      return NepaSegmenter(model_->vit_nepa->config(), upernet_options(config_, model_->num_classes()),
                           model_->out_indices());
    });
    eval_twin_->to(device_);
  }
  ema()->copy_to(*eval_twin_);
  return eval_twin_;
}

}  // namespace nepa
