// nepa_pretrain: NEPA pretraining from a YAML config. Wiring only; the loop is nepa::train.
//   nepa_pretrain --config configs/pretrain/vitb.yaml --set data.root=/data/imagenet [--resume auto]
// Multi-process: torchrun --no-python --nproc_per_node N nepa_pretrain ..., or srun (one task per GPU).
// Exit codes: 0 done or stopped by a signal (checkpoint written), 2 config error, 3 diverged, 1 other errors.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>

#include "app_cli.h"
#include "nepa/config/config.h"
#include "nepa/data/dataset.h"
#include "nepa/data/loader.h"
#include "nepa/data/subset.h"
#include "nepa/data/transforms.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/train/checkpoint.h"
#include "nepa/train/pretrain_task.h"
#include "nepa/train/runtime.h"
#include "nepa/train/trainer.h"

namespace fs = std::filesystem;
using namespace nepa;

namespace {

int run(const LoadedConfig& loaded, const std::string& resume, bool dry_run) {
  const Config& cfg = loaded.config;
  if (dry_run) {
    ViTNepaModel model(cfg.model);
    const int64_t side = cfg.model.image_size / cfg.model.patch_size;
    std::cout << to_yaml(cfg) << "# model: " << count_parameters(*model) << " parameters ("
              << cfg.model.num_hidden_layers << " blocks, width " << cfg.model.hidden_size << ", " << side * side
              << (cfg.model.use_cls_token ? " patches + CLS)\n" : " patches)\n");
    // What the objective trains beside the backbone (AIM's pixel head) costs memory and time too.
    for (const auto& [name, module] : make_objective(cfg)->modules())
      std::cout << "# objective " << cfg.objective.name << ": " << name << " " << count_parameters(*module)
                << " parameters\n";
    std::cout << "# accumulation: " << cfg.train.total_batch / cfg.train.micro_batch << " micro-batches of "
              << cfg.train.micro_batch << " per optimizer step (divided among the processes of a launch)\n"
              << "# " << describe_clipping(cfg.optim) << "\n# " << describe_ema(cfg.train) << "\n# "
              << describe_eval_view(cfg.data) << " (the k-NN readout)\n";
    return 0;
  }
  Runtime rt = start_runtime(loaded);

  auto train_set = make_train_dataset(cfg.data);
  std::shared_ptr<const Dataset> knn_memory, knn_queries;
  if (cfg.eval.knn_k > 0) {
    knn_memory = train_set;
    knn_queries = make_dataset(cfg.data, cfg.data.eval_split);
  }
  spdlog::info("data: {} '{}' {} images ({} workers), device {}, {} threads", cfg.data.dataset, cfg.data.split,
               train_set->size(), cfg.data.num_workers, rt.device.str(), rt.threads);

  DataLoader loader(train_set, cfg.data, rt.train_loader_options(cfg));

  ViTNepaModel model(cfg.model);
  model->to(rt.device);
  spdlog::info("model: {} parameters, {} blocks, width {}, {}", count_parameters(*model), cfg.model.num_hidden_layers,
               cfg.model.hidden_size, cfg.model.is_causal ? "causal" : "bidirectional");
  PretrainTask task(cfg, model, knn_memory, knn_queries, rt.device, rt.comm_ptr());

  TrainResult result = run_training(cfg, task, loader, resume, rt);
  if (result.status == TrainResult::Status::kInterrupted) return 0;
  for (size_t i = 0; i < result.last_eval.size(); ++i) {
    const auto& [name, value] = result.last_eval[i];
    if (i < result.first_eval.size())
      spdlog::info("  {:<14} {:6.2f} at init -> {:6.2f} after pretraining", name, result.first_eval[i].second, value);
    else
      spdlog::info("  {:<14} {:6.2f}", name, value);
  }
  spdlog::info("  metrics    {}", (fs::path(cfg.train.output_dir) / "metrics.jsonl").string());
  spdlog::info("  checkpoint {}", result.checkpoint);
  spdlog::info("  backbone   {}/model.safetensors + config.json (Hugging Face layout)", result.export_dir);
  if (cfg.train.ema) spdlog::info("  its EMA    {}_ema/ (nepa_finetune --init takes either)", result.export_dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nepa_pretrain: Next-Embedding Predictive Autoregression pretraining", "nepa_pretrain"};
  RunOptions o;
  add_run_options(app, o, "configs/pretrain/*.yaml");
  if (auto code = parse_command_line(app, argc, argv)) return *code;
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] %^%l%$ %v");
  return guarded_main([&] { return run(load_config(o.config_path, o.overrides()), o.resume, o.dry_run); });
}
