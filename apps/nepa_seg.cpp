// nepa_seg: semantic segmentation with UPerNet on a NEPA backbone (issue 14; mmseg's BEiT/MAE ADE20K protocol).
//   nepa_seg --config configs/seg/vitb_ade20k.yaml --set data.root=/data/ADEChallengeData2016 --init runs/x/final
//   nepa_seg --config configs/seg/vitb_ade20k.yaml --set data.root=... --eval-only --weights runs/seg/final
//   nepa_seg --config configs/seg/vitb_ade20k.yaml --predict a.jpg b.jpg --weights runs/seg/final --out preds/
// Multi-process as nepa_pretrain (torchrun --no-python / srun / scripts/launch_local.sh), SyncBN over the
// processes. Exit codes: 0 done or stopped by a signal, 2 config error, 3 diverged, 1 other errors.
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>

#include "app_cli.h"
#include "nepa/config/config.h"
#include "nepa/data/dataset.h"
#include "nepa/data/loader.h"
#include "nepa/data/subset.h"
#include "nepa/eval/seg_evaluate.h"
#include "nepa/eval/seg_render.h"
#include "nepa/eval/segmentation.h"
#include "nepa/train/autocast.h"
#include "nepa/train/runtime.h"
#include "nepa/train/seg_task.h"
#include "nepa/train/trainer.h"

namespace fs = std::filesystem;
using namespace nepa;

namespace {

struct SegCommand {
  bool eval_only = false;
  std::string weights;
  std::vector<std::string> predict;
  std::string out;
};

int dry_run(const Config& cfg) {
  const int64_t classes = cfg.seg.num_classes > 0 ? cfg.seg.num_classes : 150;
  NepaSegmenter model(cfg.model, upernet_options(cfg, classes), seg_out_indices(cfg));
  std::cout << to_yaml(cfg) << "# segmenter: " << count_parameters(*model) << " parameters with " << classes
            << " classes" << (cfg.seg.num_classes > 0 ? "" : " (seg.num_classes 0: the training set's; 150 shown)")
            << ", features after blocks " << fmt::format("{}", fmt::join(cfg.seg.out_indices, "/")) << "\n# "
            << describe_clipping(cfg.optim) << "\n# " << describe_ema(cfg.train) << "\n";
  SegTask task(cfg, model, nullptr, torch::kCPU);
  const int64_t steps = cfg.schedule.max_steps > 0 ? cfg.schedule.max_steps : 160000;
  auto schedule = task.make_schedule(cfg, steps);  // logs the table
  std::cout << "# lr " << scaled_lr(cfg.optim, cfg.train.total_batch) << " (optim.base_lr x " << cfg.train.total_batch
            << " / " << cfg.optim.lr_batch_reference << "), " << schedule->summary() << ", " << steps << " steps"
            << (cfg.schedule.max_steps > 0 ? "" : " (nominal: schedule.max_steps is 0)") << "\n";
  return 0;
}

int eval_only(const Runtime& rt, Config cfg, const std::string& weights) {
  if (weights.empty()) throw std::runtime_error("--eval-only needs --weights (a nepa_seg export folder or checkpoint)");
  NepaSegmenter model = load_segmenter(weights, cfg);
  model->to(rt.device);
  auto eval_set = make_dataset(cfg.data, cfg.data.eval_split);
  if (eval_set->num_classes() != model->num_classes())
    throw std::runtime_error(fmt::format("{} predicts {} classes but data.eval_split '{}' has {}", weights,
                                         model->num_classes(), cfg.data.eval_split, eval_set->num_classes()));
  SegEvaluation result;
  {
    AutocastScope scope(cfg.train.precision == "bf16", rt.device.type());  // as the loop's evaluations
    result = evaluate_segmenter(model, *eval_set, cfg, rt.device, rt.comm_ptr());
  }
  const SegMetrics& m = result.metrics;
  const int64_t n = result.images;
  spdlog::info("{}: mIoU {:.2f} mAcc {:.2f} aAcc {:.2f} on {} images of '{}' ({}{})", weights, m.miou, m.macc, m.aacc,
               n, cfg.data.eval_split, cfg.seg.eval_mode, n < eval_set->size() ? ", a subset" : "");
  if (rt.is_main()) {
    const fs::path out = cfg.train.output_dir;
    fs::create_directories(out);
    write_segmentation_csv(m, eval_set->class_names(), (out / "eval_per_class.csv").string());
    write_segmentation_markdown(m, eval_set->class_names(), (out / "eval_per_class.md").string());
    spdlog::info("per-class IoU and accuracy in {}/eval_per_class.{{csv,md}}", out.string());
  }
  return 0;
}

// Each image: its class map as a paletted PNG (pixel value = class) and an overlay on the image.
int predict(const Runtime& rt, Config cfg, const SegCommand& c) {
  if (c.weights.empty()) throw std::runtime_error("--predict needs --weights (a nepa_seg export folder or checkpoint)");
  if (c.out.empty()) throw std::runtime_error("--predict needs --out (the folder for the label maps and overlays)");
  NepaSegmenter model = load_segmenter(c.weights, cfg);
  model->to(rt.device);
  const SegEvalOptions opts = seg_eval_options(cfg, rt.device);
  const SegModelFn fn = [&model](const torch::Tensor& x) { return model->forward(x).logits; };
  const auto palette = seg_palette(static_cast<int>(model->num_classes()));
  fs::create_directories(c.out);
  for (const std::string& path : c.predict) {
    const cv::Mat image = read_image(path, cfg.data.num_channels);
    const torch::Tensor classes = segment_image(image, fn, opts);
    const std::string stem = fs::path(path).stem().string();
    const fs::path labels_png = fs::path(c.out) / (stem + "_labels.png");
    const fs::path overlay_png = fs::path(c.out) / (stem + "_overlay.png");
    write_label_png(labels_png.string(), classes, palette);
    write_rgb_image(overlay_png.string(), seg_overlay(image, classes, palette));
    spdlog::info("{}: {} and {}", path, labels_png.string(), overlay_png.string());
  }
  return 0;
}

int train_segmenter(const Runtime& rt, const Config& cfg, const std::string& resume) {
  auto train_set = make_train_dataset(cfg.data);
  auto eval_set = make_dataset(cfg.data, cfg.data.eval_split);
  if (!train_set->has_label_maps())
    throw ConfigError("config error: data.dataset: nepa_seg trains on per-pixel labels; '" + cfg.data.dataset +
                      "' has none (ade20k)");
  const int64_t classes = cfg.seg.num_classes > 0 ? cfg.seg.num_classes : train_set->num_classes();
  if (eval_set->num_classes() != classes)
    throw std::runtime_error(fmt::format("the model has {} classes but data.eval_split '{}' has {}", classes,
                                         cfg.data.eval_split, eval_set->num_classes()));
  NepaSegmenter model(cfg.model, upernet_options(cfg, classes), seg_out_indices(cfg));
  if (!cfg.seg.init.empty()) {
    const SegmenterInit init = load_segmenter_init(model, cfg.seg);
    spdlog::info("backbone: {} tensors from {}{}", init.loaded, cfg.seg.init, cfg.seg.init_ema ? " (its EMA)" : "");
    if (!init.expected_new.empty())
      spdlog::warn("new, not in seg.init ({}): {}", init.expected_new.size(), fmt::join(init.expected_new, ", "));
    if (!init.missing_backbone.empty())
      spdlog::warn("seg.allow_missing: {} backbone tensors train from random init: {}", init.missing_backbone.size(),
                   fmt::join(init.missing_backbone, ", "));
    if (!init.unused.empty()) spdlog::info("not used from seg.init: {}", fmt::join(init.unused, ", "));
  } else {
    spdlog::info("no seg.init: the backbone trains from random init");
  }
  model->to(rt.device);
  spdlog::info("data: {} '{}' {} images, {} classes, crops {}; eval '{}' {} images ({}); device {}, {} threads",
               cfg.data.dataset, cfg.data.split, train_set->size(), classes, cfg.data.image_size, cfg.data.eval_split,
               eval_set->size(), cfg.seg.eval_mode, rt.device.str(), rt.threads);

  LoaderOptions opts = rt.train_loader_options(cfg);
  opts.dense = seg_train_options(cfg);
  DataLoader loader(train_set, cfg.data, opts);
  SegTask task(cfg, model, eval_set, rt.device, rt.comm_ptr(), train_set->class_names());
  TrainResult result = run_training(cfg, task, loader, resume, rt);
  if (result.status == TrainResult::Status::kInterrupted) return 0;
  for (const auto& [name, value] : result.last_eval) spdlog::info("  {:<9} {:6.2f}", name, value);
  spdlog::info("  segmenter {}/model.safetensors + config.yaml; per-class table {}/seg_per_class.md", result.export_dir,
               cfg.train.output_dir);
  return 0;
}

int run(const LoadedConfig& loaded, const std::vector<std::string>& adopted, const RunOptions& o,
        const SegCommand& c) {
  const Config& cfg = loaded.config;
  if (o.dry_run) {
    if (!adopted.empty()) std::cout << "# " << describe_adopted(adopted, "seg.init") << "\n";
    return dry_run(cfg);
  }
  const std::string log = !c.predict.empty() ? "predict.log" : c.eval_only ? "eval.log" : "train.log";
  Runtime rt = start_runtime(loaded, log);
  if (!adopted.empty()) spdlog::info("{}", describe_adopted(adopted, "seg.init"));
  if (!c.predict.empty()) return predict(rt, cfg, c);
  if (c.eval_only) return eval_only(rt, cfg, c.weights);
  return train_segmenter(rt, cfg, o.resume);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nepa_seg: semantic segmentation (UPerNet) on NEPA backbones", "nepa_seg"};
  RunOptions o;
  SegCommand c;
  std::string init;
  add_run_options(app, o, "configs/seg/*.yaml");
  app.add_option("--init", init, "backbone weights to start from (same as --set seg.init=PATH)");
  app.add_flag("--eval-only", c.eval_only, "evaluate --weights on data.eval_split and exit");
  app.add_option("--weights", c.weights, "--eval-only / --predict: a nepa_seg export folder or checkpoint");
  app.add_option("--predict", c.predict, "images to segment with --weights; results go to --out")->expected(1, -1);
  app.add_option("--out", c.out, "--predict: folder for <name>_labels.png (paletted) and <name>_overlay.png");
  if (auto code = parse_command_line(app, argc, argv)) return *code;
  if (c.eval_only && !c.predict.empty()) {
    std::cerr << "nepa_seg: --eval-only and --predict exclude each other (see --help)\n";
    return 2;
  }
  std::vector<std::string> sets = o.overrides();
  if (!init.empty()) sets.push_back("seg.init=" + init);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] %^%l%$ %v");
  return guarded_main([&] {
    LoadedConfig loaded = load_config(o.config_path, sets);
    const auto adopted = adopt_init_architecture(loaded, loaded.config.seg.init);
    return run(loaded, adopted, o, c);
  });
}
