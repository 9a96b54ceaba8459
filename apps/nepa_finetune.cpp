// nepa_finetune: supervised fine-tuning of a NEPA backbone (NEPA-SPEC §4), and evaluation of classifiers.
//   nepa_finetune --config configs/finetune/vitb.yaml --set data.root=/data/imagenet --set finetune.init=runs/x/final
//   nepa_finetune --config configs/finetune/vitb.yaml --set data.root=... --eval-only --weights nepa-base-patch14-224-sft
// Multi-process as nepa_pretrain (torchrun --no-python / srun). Exit codes: 0 done or stopped by a signal,
// 2 config error, 3 diverged, 1 other errors.
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>

#include "app_cli.h"
#include "nepa/config/config.h"
#include "nepa/config/hf_config.h"
#include "nepa/data/dataset.h"
#include "nepa/data/loader.h"
#include "nepa/data/subset.h"
#include "nepa/data/transforms.h"
#include "nepa/model/classifier.h"
#include "nepa/train/autocast.h"
#include "nepa/train/finetune_task.h"
#include "nepa/train/runtime.h"
#include "nepa/train/trainer.h"

namespace fs = std::filesystem;
using namespace nepa;

namespace {

// The classifier described by `weights`: an HF folder (or its model.safetensors) brings its own config.json;
// a training checkpoint is read with the model section of the config. Loaded strictly.
ViTNepaForImageClassification load_for_eval(const std::string& weights, const Config& cfg) {
  fs::path dir = fs::is_directory(weights) ? fs::path(weights) : fs::path(weights).parent_path();
  auto tensors = read_classifier_weights(weights);
  auto it = tensors.find("classifier.weight");
  if (it == tensors.end()) throw std::runtime_error(weights + ": no classifier.weight (not a classification checkpoint)");
  ModelConfig model = cfg.model;
  if (fs::exists(dir / "config.json") && !fs::exists(dir / "latest")) {
    model = read_hf_config((dir / "config.json").string()).model;
    spdlog::info("model from {}", (dir / "config.json").string());
  }
  ViTNepaForImageClassification m(model, it->second.size(0), head_of(tensors), cfg.finetune.probe_blocks);
  load_state_dict(*m, tensors, /*strict=*/true, weights);
  return m;
}

int run(const LoadedConfig& loaded, const std::vector<std::string>& adopted, const std::string& resume, bool dry_run,
        bool eval_only, const std::string& weights) {
  const Config& cfg = loaded.config;
  if (dry_run) {
    if (!adopted.empty()) std::cout << "# " << describe_adopted(adopted, "finetune.init") << "\n";
    ViTNepaForImageClassification model(cfg.model, cfg.finetune.num_classes > 0 ? cfg.finetune.num_classes : 1000,
                                        cfg.finetune.head, cfg.finetune.probe_blocks);
    std::cout << to_yaml(cfg) << "# classifier: " << count_parameters(*model) << " parameters with "
              << model->num_classes() << " classes, head init " << cfg.finetune.head_init << "\n# "
              << describe_clipping(cfg.optim) << "\n# " << describe_ema(cfg.train) << "\n# "
              << describe_eval_view(cfg.data) << "\n";
    if (cfg.schedule.name.rfind("llrd_", 0) == 0) {
      // Without schedule.max_steps the run length depends on the data: a nominal 100,000 steps.
      const int64_t steps = cfg.schedule.max_steps > 0 ? cfg.schedule.max_steps : 100000;
      FinetuneTask task(cfg, model, nullptr, torch::kCPU);
      task.make_schedule(cfg, steps);  // prints the table
      if (cfg.schedule.max_steps <= 0)
        std::cout << "# the lr table above assumes a nominal run of 100,000 steps (its warmup column is in steps)\n";
    }
    return 0;
  }
  Runtime rt = start_runtime(loaded, eval_only ? "eval.log" : "train.log");
  if (!adopted.empty()) spdlog::info("{}", describe_adopted(adopted, "finetune.init"));
  auto eval_set = make_dataset(cfg.data, cfg.data.eval_split);

  if (eval_only) {
    if (weights.empty()) throw std::runtime_error("--eval-only needs --weights (an HF folder or a checkpoint)");
    ViTNepaForImageClassification model = load_for_eval(weights, cfg);
    model->to(rt.device);
    ClassificationResult r;
    {
      AutocastScope scope(cfg.train.precision == "bf16", rt.device.type());  // as the loop's evaluations
      r = evaluate_on(model, eval_set, cfg, rt.device, rt.comm_ptr());
    }
    spdlog::info("{}: top-1 {:.2f}% top-5 {:.2f}% on {} images of '{}'", weights, r.top1_pct(), r.top5_pct(), r.count,
                 cfg.data.eval_split);
    if (rt.is_main()) {
      fs::create_directories(cfg.train.output_dir);
      const fs::path out = cfg.train.output_dir;
      write_confusion_csv(r, eval_set->class_names(), (out / "eval_confusion.csv").string());
      write_per_class_csv(r, eval_set->class_names(), (out / "eval_per_class.csv").string());
      spdlog::info("confusion matrix and per-class accuracy in {}", out.string());
    }
    return 0;
  }

  auto train_set = make_train_dataset(cfg.data);
  const int64_t classes = cfg.finetune.num_classes > 0 ? cfg.finetune.num_classes : train_set->num_classes();
  if (classes <= 0) throw std::runtime_error("finetune.num_classes is 0 and the training set has no labels");
  ViTNepaForImageClassification model(cfg.model, classes, cfg.finetune.head, cfg.finetune.probe_blocks);
  model->init_head(cfg.finetune.head_init);
  if (!cfg.finetune.init.empty()) {
    ClassifierInit init =
        load_classifier_init(model, cfg.finetune.init, cfg.finetune.init_ema, cfg.finetune.allow_missing);
    spdlog::info("initialised from {}{}", cfg.finetune.init, cfg.finetune.init_ema ? " (its EMA weights)" : "");
    auto list = [](const std::vector<std::string>& names) { return fmt::format("{}", fmt::join(names, ", ")); };
    if (!init.expected_new.empty())
      spdlog::warn("new, not in finetune.init ({}): {}", init.expected_new.size(), list(init.expected_new));
    if (!init.missing_backbone.empty())
      spdlog::warn("finetune.allow_missing: {} backbone tensors train from random init: {}",
                   init.missing_backbone.size(), list(init.missing_backbone));
    if (!init.report.unexpected.empty())
      spdlog::warn("finetune.init tensors this model does not use ({}): {}", init.report.unexpected.size(),
                   list(init.report.unexpected));
  } else {
    spdlog::info("no finetune.init: training from random init");
  }
  spdlog::info("classifier head init: {}; {}", cfg.finetune.head_init, describe_eval_view(cfg.data));
  model->to(rt.device);
  spdlog::info("data: {} '{}' {} images, {} classes; eval '{}' {} images; device {}, {} threads", cfg.data.dataset,
               cfg.data.split, train_set->size(), classes, cfg.data.eval_split, eval_set->size(), rt.device.str(),
               rt.threads);

  DataLoader loader(train_set, cfg.data, rt.train_loader_options(cfg));
  FinetuneTask task(cfg, model, eval_set, rt.device, rt.comm_ptr(), train_set->class_names());

  TrainResult result = run_training(cfg, task, loader, resume, rt);
  if (result.status == TrainResult::Status::kInterrupted) return 0;
  for (const auto& [name, value] : result.last_eval) spdlog::info("  {:<10} {:6.2f}", name, value);
  if (cfg.train.ema)
    spdlog::info("  best EMA top-1 {:.2f}% ({}/best_ema)", task.best_ema_top1(), cfg.train.output_dir);
  spdlog::info("  classifier {}/model.safetensors + config.json{}", result.export_dir,
               cfg.train.ema ? fmt::format(" (EMA: {}_ema)", result.export_dir) : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nepa_finetune: fine-tune and evaluate NEPA classifiers", "nepa_finetune"};
  RunOptions o;
  std::string init, weights;
  bool eval_only = false;
  add_run_options(app, o, "configs/finetune/*.yaml");
  app.add_option("--init", init, "weights to start from (same as --set finetune.init=PATH)");
  app.add_flag("--eval-only", eval_only, "evaluate --weights on data.eval_split and exit");
  app.add_option("--weights", weights, "--eval-only: an HF classification folder or a nepa_finetune checkpoint");
  if (auto code = parse_command_line(app, argc, argv)) return *code;
  std::vector<std::string> sets = o.overrides();
  if (!init.empty()) sets.push_back("finetune.init=" + init);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] %^%l%$ %v");
  return guarded_main([&] {
    LoadedConfig loaded = load_config(o.config_path, sets);
    const auto adopted = adopt_init_architecture(loaded, loaded.config.finetune.init);
    return run(loaded, adopted, o.resume, o.dry_run, eval_only, weights);
  });
}
