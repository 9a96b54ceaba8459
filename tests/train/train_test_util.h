// A tiny synthetic training setup shared by the training-loop tests.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <csignal>
#include <functional>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include "nepa/data/loader.h"
#include "nepa/io/safetensors.h"
#include "nepa/train/pretrain_task.h"
#include "nepa/train/trainer.h"
#include "test_util.h"

namespace nepa::test {

// 16x16 synthetic images, the tiny 2-block model, 8 images per step, logs every step, no k-NN.
inline Config tiny_train_config(const std::string& output_dir) {
  Config c;
  c.model = tiny_model_config();
  c.model.drop_path_prob = 0.1;  // randomness in the step: resume must restore the generator
  c.data.dataset = "synthetic";
  c.data.image_size = 16;
  c.data.synthetic_size = 64;
  c.data.crop_scale = {0.5, 1.0};
  c.data.num_workers = 2;
  c.optim.base_lr = 2e-3;
  c.optim.weight_decay = 0.05;
  c.schedule.max_steps = 6;
  c.schedule.warmup_fraction = 0.2;
  c.train.total_batch = 8;
  c.train.micro_batch = 8;
  c.train.threads = 1;
  c.train.output_dir = output_dir;
  c.train.checkpoint_every = 1000;
  c.train.keep_last = 2;
  c.log.log_every = 1;
  c.eval.knn_k = 0;
  validate(c);
  return c;
}

// The NEPA task with hooks: records every micro-batch loss, can corrupt a step's loss or gradient, or raise a
// signal.
class RecordingTask : public PretrainTask {
 public:
  RecordingTask(const Config& c, ViTNepaModel m) : PretrainTask(c, std::move(m), nullptr, nullptr, torch::kCPU) {}
  StepOutput forward(const Batch& batch) override {
    StepOutput out = PretrainTask::forward(batch);
    ++forwards;
    if (nan_at_forward == forwards) out.loss = out.loss * std::nan("");
    if (inf_grad_at_forward == forwards) {
      // A finite loss whose gradient is not: the CLS token's gradient becomes +inf in this backward.
      torch::Tensor& cls = model()->embeddings->cls_token;
      hook_ = cls.register_hook([](torch::Tensor g) { return torch::full_like(g, INFINITY); });
      hooked_ = true;
    }
    losses.push_back(out.loss.item<double>());
    if (signal_at_forward == forwards) std::raise(signal_to_raise);
    return out;
  }
  std::vector<std::pair<std::string, double>> evaluate(int64_t step) override {
    eval_under_autocast.push_back(at::autocast::is_autocast_enabled(c10::DeviceType::CPU));
    if (signal_in_eval_at == step) std::raise(signal_to_raise);  // e.g. during the k-NN at init
    return PretrainTask::evaluate(step);
  }
  void after_step(int64_t step, const torch::Tensor& /*skipped*/) override {
    if (signal_after_step == step) std::raise(signal_to_raise);
  }
  std::map<std::string, torch::Tensor> extra_state() override {
    std::this_thread::sleep_for(slow_save);  // a large checkpoint, as far as the other ranks can tell
    return PretrainTask::extra_state();
  }
  ~RecordingTask() override {
    if (hooked_) model()->embeddings->cls_token.remove_hook(hook_);
  }
  std::vector<double> losses;
  std::vector<bool> eval_under_autocast;  // one per evaluate()
  int64_t forwards = 0, nan_at_forward = -1, inf_grad_at_forward = -1, signal_after_step = -1,
          signal_at_forward = -1, signal_in_eval_at = -1;
  int signal_to_raise = SIGTERM;
  std::chrono::milliseconds slow_save{0};

 private:
  unsigned hook_ = 0;
  bool hooked_ = false;
};

struct TinyRun {
  std::shared_ptr<const Dataset> data;
  std::unique_ptr<DataLoader> loader;
  std::unique_ptr<RecordingTask> task;
};

inline TinyRun make_tiny_run(const Config& c, int64_t init_seed = 0) {
  TinyRun r;
  torch::manual_seed(init_seed);
  r.data = make_dataset(c.data, c.data.split);
  LoaderOptions o;
  o.batch_size = c.train.micro_batch;
  o.seed = static_cast<uint64_t>(c.train.seed);
  r.loader = std::make_unique<DataLoader>(r.data, c.data, o);
  r.task = std::make_unique<RecordingTask>(c, ViTNepaModel(c.model));
  return r;
}

// Runs `c` (its output_dir) uninterrupted, and again in `stopped_dir` stopped by SIGTERM after step 3 and resumed
// in a fresh task built from another seed: the per-step losses, every parameter of the task's module (`must_have`
// among them: an objective's own module) and the final/ and final_ema/ exports must be equal. Returns the resumed
// run's last checkpoint.
inline std::string expect_resumes_exactly(const Config& c, const std::string& stopped_dir, const std::string& must_have) {
  namespace fs = std::filesystem;
  auto ref = make_tiny_run(c);
  train(c, *ref.task, *ref.loader, {});
  EXPECT_EQ(ref.task->losses.size(), static_cast<size_t>(c.schedule.max_steps));

  Config ci = c;
  ci.train.output_dir = stopped_dir;
  auto first = make_tiny_run(ci);
  first.task->signal_after_step = 3;
  TrainResult r1 = train(ci, *first.task, *first.loader, {});
  EXPECT_EQ(r1.status, TrainResult::Status::kInterrupted);
  EXPECT_EQ(r1.step, 3);
  torch::manual_seed(4242);  // the generator's state now must not matter
  auto second = make_tiny_run(ci, /*init_seed=*/99);
  TrainResult r2 = train(ci, *second.task, *second.loader, {"auto", ""});
  EXPECT_EQ(r2.status, TrainResult::Status::kCompleted);
  std::vector<double> resumed = first.task->losses;
  resumed.insert(resumed.end(), second.task->losses.begin(), second.task->losses.end());
  EXPECT_EQ(resumed, ref.task->losses);

  auto want = ref.task->module().named_parameters();
  auto got = second.task->module().named_parameters();
  EXPECT_TRUE(got.contains(must_have)) << must_have;
  for (const auto& p : want) EXPECT_TRUE(got.contains(p.key()) && torch::equal(p.value(), got[p.key()])) << p.key();
  for (const char* dir : {"final_ema", "final"}) {
    if (!fs::exists(fs::path(c.train.output_dir) / dir)) {  // final_ema/ only with train.ema
      EXPECT_FALSE(fs::exists(fs::path(ci.train.output_dir) / dir)) << dir;
      continue;
    }
    auto x = load_safetensors((fs::path(c.train.output_dir) / dir / "model.safetensors").string());
    auto y = load_safetensors((fs::path(ci.train.output_dir) / dir / "model.safetensors").string());
    EXPECT_EQ(x.size(), y.size());
    for (const auto& [name, t] : x) EXPECT_TRUE(y.count(name) && torch::equal(t, y.at(name))) << dir << " " << name;
  }
  return r2.checkpoint;
}

}  // namespace nepa::test
