#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "dist/run_ranks.h"
#include "nepa/io/atomic_file.h"
#include "nepa/io/safetensors.h"
#include "nepa/train/autocast.h"
#include "nepa/train/checkpoint.h"
#include "nepa/train/schedule.h"
#include "nepa/train/signals.h"
#include "train_test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;
using test::make_tiny_run;
using test::tiny_train_config;

std::vector<double> metric_column(const fs::path& jsonl, const std::string& key) {
  std::vector<double> out;
  std::ifstream in(jsonl);
  std::string line;
  while (std::getline(in, line)) {
    auto pos = line.find("\"" + key + "\":");
    if (line.find("\"kind\":\"train\"") != std::string::npos && pos != std::string::npos)
      out.push_back(std::stod(line.substr(pos + key.size() + 3)));
  }
  return out;
}

TEST(Trainer, TinyRunLowersTheLossAndExportsTheBackbone) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("run"));
  c.train.total_batch = c.train.micro_batch = 32;
  c.data.synthetic_size = 256;
  c.optim.base_lr = 0.02;  // peak 2.5e-3
  c.schedule.max_steps = 40;
  c.schedule.warmup_fraction = 0.1;
  c.log.log_every = 5;
  auto run = make_tiny_run(c);
  TrainResult r = train(c, *run.task, *run.loader, {});
  EXPECT_EQ(r.status, TrainResult::Status::kCompleted);
  EXPECT_EQ(r.step, 40);
  auto losses = metric_column(dir.path() / "run" / "metrics.jsonl", "loss");
  ASSERT_EQ(losses.size(), 8u);
  EXPECT_LT(losses.back(), losses.front() - 0.05) << "loss did not decrease";
  EXPECT_TRUE(fs::exists(dir.path() / "run" / "final" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir.path() / "run" / "final" / "config.json"));
  EXPECT_EQ(fs::path(r.checkpoint).filename(), "step_00000040.safetensors");
  // Peak host memory: a process running LibTorch holds tens of MB at least, and a peak never goes down.
  auto rss = metric_column(dir.path() / "run" / "metrics.jsonl", "peak_rss_mb");
  ASSERT_EQ(rss.size(), 8u);
  EXPECT_GT(rss.front(), 10.0);
  for (size_t i = 1; i < rss.size(); ++i) EXPECT_GE(rss[i], rss[i - 1]);
  // Every progress line carries the documented fields.
  std::ifstream in(dir.path() / "run" / "metrics.jsonl");
  std::string first;
  std::getline(in, first);
  for (const char* key : {"\"step\":5", "\"epoch\":", "\"loss\":", "\"cos\":", "\"pred_std\":", "\"lr\":",
                          "\"grad_norm\":", "\"img_per_s\":", "\"data_wait\":", "\"peak_rss_mb\":"})
    EXPECT_NE(first.find(key), std::string::npos) << key << " missing in " << first;
}

// optim.final_weight_decay reaches the optimizer: a one-step run whose ramp 0.04 -> 0.4 ends at that step (I-JEPA's
// schedule: the first update is already one call in) trains exactly as a run at 0.4 throughout, and not as one at
// 0.04; a longer run logs the ramp's value at every step.
TEST(Trainer, TheWeightDecayRampIsWhatTheOptimizerApplies) {
  test::TempDir dir;
  auto one_step = [&](const std::string& name, double wd, std::optional<double> final_wd) {
    Config c = tiny_train_config(dir.file(name));
    c.schedule.name = "constant";
    c.schedule.warmup_fraction = 0.0;  // a full lr at the one step: lr x wd is what differs
    c.schedule.max_steps = 1;
    c.optim.base_lr = 0.5;             // a visible decay: (1 - lr x wd) of each matrix
    c.optim.lr_batch_reference = c.train.total_batch;  // lr = base_lr
    c.optim.weight_decay = wd;
    c.optim.final_weight_decay = final_wd;
    auto run = make_tiny_run(c, 3);
    train(c, *run.task, *run.loader, {});
    return run;
  };
  auto ramp = one_step("ramp", 0.04, 0.4), high = one_step("high", 0.4, std::nullopt),
       low = one_step("low", 0.04, std::nullopt);
  auto pr = ramp.task->model()->named_parameters(), ph = high.task->model()->named_parameters(),
       pl = low.task->model()->named_parameters();
  double from_low = 0.0;
  for (const auto& p : pr) {
    EXPECT_TRUE(torch::equal(p.value(), ph[p.key()])) << p.key();
    from_low = std::max(from_low, test::max_abs_diff(p.value(), pl[p.key()]));
  }
  EXPECT_GT(from_low, 1e-3);

  Config c = tiny_train_config(dir.file("long"));
  c.schedule.max_steps = 6;
  c.log.log_every = 1;
  c.optim.weight_decay = 0.04;
  c.optim.final_weight_decay = 0.4;
  auto run = make_tiny_run(c);
  train(c, *run.task, *run.loader, {});
  const auto wd = metric_column(dir.path() / "long" / "metrics.jsonl", "wd");
  ASSERT_EQ(wd.size(), 6u);
  for (int64_t step = 0; step < 6; ++step) EXPECT_NEAR(wd[step], weight_decay_at(c.optim, step, 6), 1e-8) << step;
  EXPECT_NEAR(wd.back(), 0.4, 1e-8);
}

// Accumulating 2 micro-batches of 4 must equal one batch of 8 over the same samples.
TEST(Trainer, GradientAccumulationEqualsOneBigBatch) {
  test::TempDir dir;
  Config big = tiny_train_config(dir.file("big"));
  big.model.drop_path_prob = 0.0;         // the two runs draw random numbers in different amounts
  big.model.pos_embed_rescale.reset();
  big.schedule.max_steps = 4;
  Config small = big;
  small.train.output_dir = dir.file("small");
  small.train.micro_batch = 4;
  auto a = make_tiny_run(big, 7);
  auto b = make_tiny_run(small, 7);
  train(big, *a.task, *a.loader, {});
  train(small, *b.task, *b.loader, {});
  EXPECT_EQ(a.task->forwards, 4);
  EXPECT_EQ(b.task->forwards, 8);
  auto pa = a.task->model()->named_parameters();
  auto pb = b.task->model()->named_parameters();
  for (const auto& p : pa) EXPECT_LT(test::max_abs_diff(p.value(), pb[p.key()]), 2e-6) << p.key();
  // Mean of the two micro-batch losses equals the big batch's loss at every step.
  for (int s = 0; s < 4; ++s)
    EXPECT_NEAR((b.task->losses[2 * s] + b.task->losses[2 * s + 1]) / 2, a.task->losses[s], 1e-6) << "step " << s;
}

// Stopped by SIGTERM after step 3, resumed in a new process state: the per-step losses equal an uninterrupted
// run's exactly (same seed, CPU).
TEST(Trainer, SigtermCheckpointsAndResumeReproducesLossesExactly) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("ref"));
  c.schedule.max_steps = 12;  // crosses epochs: 64 images / 8 = 8 steps per epoch
  auto ref = make_tiny_run(c);
  train(c, *ref.task, *ref.loader, {});
  ASSERT_EQ(ref.task->losses.size(), 12u);

  Config ci = c;
  ci.train.output_dir = dir.file("interrupted");
  auto first = make_tiny_run(ci);
  first.task->signal_after_step = 3;
  TrainResult r1 = train(ci, *first.task, *first.loader, {});
  EXPECT_EQ(r1.status, TrainResult::Status::kInterrupted);
  EXPECT_EQ(r1.stop_signal, SIGTERM);
  EXPECT_EQ(r1.step, 3);
  ASSERT_TRUE(fs::exists(r1.checkpoint));
  EXPECT_EQ(read_checkpoint_info(r1.checkpoint).state.step, 3);
  EXPECT_FALSE(fs::exists(fs::path(ci.train.output_dir) / "final"));

  torch::manual_seed(999);  // whatever the generator holds now must not matter
  auto second = make_tiny_run(ci, /*init_seed=*/123);
  TrainResult r2 = train(ci, *second.task, *second.loader, {"auto", ""});
  EXPECT_EQ(r2.status, TrainResult::Status::kCompleted);
  std::vector<double> resumed = first.task->losses;
  resumed.insert(resumed.end(), second.task->losses.begin(), second.task->losses.end());
  ASSERT_EQ(resumed.size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(resumed[i], ref.task->losses[i]) << "step " << i + 1;
  auto pa = ref.task->model()->named_parameters();
  for (const auto& p : second.task->model()->named_parameters())
    EXPECT_EQ(test::max_abs_diff(p.value(), pa[p.key()]), 0.0) << p.key();
  // The EMA (train.ema, on by default) resumes exactly too, and is exported beside the weights.
  ASSERT_TRUE(c.train.ema);
  auto ema_ref = load_safetensors((fs::path(c.train.output_dir) / "final_ema" / "model.safetensors").string());
  auto ema_res = load_safetensors((fs::path(ci.train.output_dir) / "final_ema" / "model.safetensors").string());
  ASSERT_EQ(ema_ref.size(), pa.size());
  for (const auto& [name, t] : ema_ref) EXPECT_TRUE(torch::equal(t, ema_res.at(name))) << name;
  // metrics.jsonl describes one run: steps 1..12 once each.
  auto steps = metric_column(fs::path(ci.train.output_dir) / "metrics.jsonl", "step");
  ASSERT_EQ(steps.size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(steps[i], static_cast<double>(i + 1));
}

// With accumulation a stop does not wait for the step: after the micro-batch in which the signal came, the
// partial step is dropped, the last completed step is saved (generators as they stood before the dropped step),
// and the resumed run redoes that step exactly.
TEST(Trainer, AStopBetweenMicroBatchesDropsThePartialStepAndResumesExactly) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("ref"));
  c.train.total_batch = 32;  // 4 micro-batches of 8 per step; 64 images = 2 steps per epoch
  c.schedule.max_steps = 5;
  auto ref = make_tiny_run(c);
  train(c, *ref.task, *ref.loader, {});
  ASSERT_EQ(ref.task->losses.size(), 20u);

  Config ci = c;
  ci.train.output_dir = dir.file("interrupted");
  auto first = make_tiny_run(ci);
  first.task->signal_at_forward = 10;  // step 3, micro-batch 2 of 4
  TrainResult r1 = train(ci, *first.task, *first.loader, {});
  EXPECT_EQ(r1.status, TrainResult::Status::kInterrupted);
  EXPECT_EQ(r1.step, 2);
  EXPECT_EQ(first.task->forwards, 10) << "the stop came after micro-batch 2, not at the end of the step";
  ASSERT_TRUE(fs::exists(r1.checkpoint));
  EXPECT_EQ(read_checkpoint_info(r1.checkpoint).state.step, 2);

  auto second = make_tiny_run(ci, /*init_seed=*/123);
  TrainResult r2 = train(ci, *second.task, *second.loader, {"auto", ""});
  EXPECT_EQ(r2.status, TrainResult::Status::kCompleted);
  ASSERT_EQ(second.task->losses.size(), 12u);  // steps 3..5, all 4 micro-batches each
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(second.task->losses[i], ref.task->losses[8 + i]) << "forward " << 9 + i;
  auto pa = ref.task->model()->named_parameters();
  for (const auto& p : second.task->model()->named_parameters())
    EXPECT_EQ(test::max_abs_diff(p.value(), pa[p.key()]), 0.0) << p.key();
}

// A signal during start-up or the evaluation at init stops the run there, cleanly (exit status of a stop, not the
// signal's default action); with no step trained there is nothing to save.
TEST(Trainer, AStopDuringTheEvaluationAtInitEndsTheRunBeforeTheFirstStep) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("run"));
  c.eval.knn_at_init = true;
  auto run = make_tiny_run(c);
  run.task->signal_in_eval_at = 0;
  TrainResult r = train(c, *run.task, *run.loader, {});
  EXPECT_EQ(r.status, TrainResult::Status::kInterrupted);
  EXPECT_EQ(r.stop_signal, SIGTERM);
  EXPECT_EQ(r.step, 0);
  EXPECT_EQ(run.task->forwards, 0);
  EXPECT_TRUE(r.checkpoint.empty());
  EXPECT_FALSE(fs::exists(fs::path(c.train.output_dir) / "checkpoints"));
}

// Every floating-point tensor of a checkpoint is finite.
void expect_all_finite(const std::string& checkpoint) {
  for (const auto& [name, t] : load_safetensors(checkpoint))
    if (t.is_floating_point()) {
      EXPECT_TRUE(torch::isfinite(t).all().item<bool>()) << name;
    }
}

TEST(Trainer, NonFiniteLossStopsAfterSavingTheLastGoodState) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("run"));
  auto run = make_tiny_run(c);
  run.task->nan_at_forward = 3;
  std::string msg = test::error_of<TrainingDiverged>([&] { train(c, *run.task, *run.loader, {}); });
  EXPECT_NE(msg.find("at step 3"), std::string::npos) << msg;
  std::string ckpt = (fs::path(c.train.output_dir) / "checkpoints" / "step_00000002.safetensors").string();
  EXPECT_NE(msg.find(ckpt), std::string::npos) << msg;
  CheckpointContent info = read_checkpoint_info(ckpt);
  EXPECT_EQ(info.state.step, 2);
  EXPECT_EQ(info.state.batch, 2);  // resuming replays the batch of the failed step
  expect_all_finite(ckpt);  // the bad step never reached the optimizer
}

// A bad step is found one step late (its figures are read once the next step's backward is queued) and its update
// was skipped on the device: what is saved must still be exactly the state after the last good step, as a run
// stopped there by a signal saves it (weights, moments and their step counts, EMA, generators, data position),
// and metrics.jsonl must end at that step.
TEST(Trainer, ADivergedRunSavesExactlyTheStateOfTheStepBefore) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("diverged"));
  ASSERT_TRUE(c.train.ema);
  auto bad = make_tiny_run(c);
  bad.task->nan_at_forward = 4;
  std::string msg = test::error_of<TrainingDiverged>([&] { train(c, *bad.task, *bad.loader, {}); });
  EXPECT_NE(msg.find("loss is nan at step 4"), std::string::npos) << msg;
  EXPECT_EQ(bad.task->forwards, 5) << "found while the next step's forward and backward were queued";

  Config s = c;
  s.train.output_dir = dir.file("stopped");
  auto stopped = make_tiny_run(s);
  stopped.task->signal_after_step = 3;
  TrainResult r = train(s, *stopped.task, *stopped.loader, {});
  ASSERT_EQ(r.status, TrainResult::Status::kInterrupted);

  const std::string a = (fs::path(c.train.output_dir) / "checkpoints" / "step_00000003.safetensors").string();
  ASSERT_EQ(r.checkpoint, (fs::path(s.train.output_dir) / "checkpoints" / "step_00000003.safetensors").string());
  auto ta = load_safetensors(a), tb = load_safetensors(r.checkpoint);
  ASSERT_EQ(ta.size(), tb.size());
  size_t moments = 0, ema = 0;
  for (const auto& [name, t] : ta) {
    ASSERT_TRUE(tb.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, tb.at(name))) << name;
    moments += name.find("exp_avg") != std::string::npos;
    ema += name.rfind("extra.ema.", 0) == 0;
  }
  EXPECT_GT(moments, 0u);
  EXPECT_GT(ema, 0u);
  const TrainState sa = read_checkpoint_info(a).state, sb = read_checkpoint_info(r.checkpoint).state;
  EXPECT_EQ(sa.step, sb.step);
  EXPECT_EQ(sa.epoch, sb.epoch);
  EXPECT_EQ(sa.batch, sb.batch);
  EXPECT_EQ(sa.samples_seen, sb.samples_seen);
  EXPECT_EQ(metric_column(fs::path(c.train.output_dir) / "metrics.jsonl", "step"), (std::vector<double>{1, 2, 3}));
}

TEST(Trainer, NonFiniteGradientNormStopsLikeANonFiniteLoss) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("run"));
  auto run = make_tiny_run(c);
  run.task->inf_grad_at_forward = 4;
  std::string msg = test::error_of<TrainingDiverged>([&] { train(c, *run.task, *run.loader, {}); });
  EXPECT_NE(msg.find("the gradient norm is inf at step 4"), std::string::npos) << msg;
  EXPECT_TRUE(std::isfinite(run.task->losses.back()));  // the loss of that step was fine
  const std::string ckpt = (fs::path(c.train.output_dir) / "checkpoints" / "step_00000003.safetensors").string();
  EXPECT_NE(msg.find(ckpt), std::string::npos) << msg;
  expect_all_finite(ckpt);  // weights, moments and EMA of step 3
}

TEST(Trainer, OnDivergenceEveryRankWaitsForRankZerosCheckpoint) {
  // Two ranks in this process; the NaN comes from rank 1 only, and the loss all-reduce makes it both ranks'.
  // Rank 0's checkpoint takes a while to write: rank 1 must not leave before it is on disk, or a launcher that
  // ends the job when the first rank exits would cut rank 0 off mid-write.
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("run"));
  c.model.drop_path_prob = 0.0;  // the ranks' threads share torch's generator
  c.train.micro_batch = 4;       // x 2 ranks = train.total_batch 8
  const std::string ckpt = (fs::path(c.train.output_dir) / "checkpoints" / "step_00000002.safetensors").string();
  std::vector<int> saw_checkpoint(2, -1);
  dist::run_ranks(2, [&](dist::Comm& comm) {
    auto run = make_tiny_run(c);
    if (comm.rank() == 1) run.task->nan_at_forward = 3;
    if (comm.rank() == 0) run.task->slow_save = std::chrono::milliseconds(1500);
    const std::string msg = test::error_of<TrainingDiverged>(
        [&] { train(c, *run.task, *run.loader, TrainOptions{"", to_yaml(c), &comm}); });
    EXPECT_NE(msg.find("loss is nan at step 3"), std::string::npos) << msg;
    saw_checkpoint[comm.rank()] = fs::exists(ckpt) ? 1 : 0;
  });
  EXPECT_EQ(saw_checkpoint, (std::vector<int>{1, 1}));
}

TEST(Trainer, ResumeRefusesAnotherBatchOrModelAndAFreshRunRefusesAnOccupiedDirectory) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("run"));
  c.schedule.max_steps = 2;
  auto first = make_tiny_run(c);
  train(c, *first.task, *first.loader, {"", to_yaml(c)});
  // A fresh start in the same directory would mix two runs' checkpoints.
  auto again = make_tiny_run(c);
  std::string msg = test::error_of<CheckpointError>([&] { train(c, *again.task, *again.loader, {"", to_yaml(c)}); });
  EXPECT_NE(msg.find("--resume auto"), std::string::npos) << msg;
  Config other = c;
  other.train.micro_batch = 4;
  auto r = make_tiny_run(other);
  msg = test::error_of<CheckpointError>([&] { train(other, *r.task, *r.loader, {"auto", to_yaml(other)}); });
  EXPECT_NE(msg.find("train.micro_batch = 4 (the run used 8)"), std::string::npos) << msg;
  // A longer schedule is fine.
  Config longer = c;
  longer.schedule.max_steps = 3;
  auto l = make_tiny_run(longer);
  EXPECT_EQ(train(longer, *l.task, *l.loader, {"auto", to_yaml(longer)}).step, 3);
}

TEST(Trainer, Bf16AutocastOnCpuTrains) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("run"));
  c.train.precision = "bf16";
  c.schedule.max_steps = 3;
  auto run = make_tiny_run(c);
  TrainResult r = train(c, *run.task, *run.loader, {});
  EXPECT_EQ(r.step, 3);
  EXPECT_TRUE(std::isfinite(r.last_metrics.at("loss")));
  for (const auto& p : run.task->model()->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat32);
  // Autocast really ran: the first loss is close to, but not bit-equal with, the fp32 run's.
  Config f = c;
  f.train.precision = "fp32";
  f.train.output_dir = dir.file("fp32");
  auto ref = make_tiny_run(f);
  train(f, *ref.task, *ref.loader, {});
  EXPECT_NE(run.task->losses[0], ref.task->losses[0]);
  EXPECT_NEAR(run.task->losses[0], ref.task->losses[0], 0.05);
}

// Evaluations run under the training's precision (bf16: autocast, as the release's Trainer evaluates), and the
// scopes nest: an evaluation's own scope inside the loop's leaves the loop's autocast as it found it.
TEST(Trainer, EvaluationsRunUnderTheTrainingsPrecision) {
  test::TempDir dir;
  for (const char* precision : {"bf16", "fp32"}) {
    Config c = tiny_train_config(dir.file(precision));
    c.train.precision = precision;
    c.schedule.max_steps = 2;
    auto run = make_tiny_run(c);
    train(c, *run.task, *run.loader, {});
    ASSERT_EQ(run.task->eval_under_autocast.size(), 1u);  // the evaluation at the end
    EXPECT_EQ(run.task->eval_under_autocast[0], std::string(precision) == "bf16") << precision;
    EXPECT_FALSE(at::autocast::is_autocast_enabled(c10::DeviceType::CPU)) << "left on after the run";
  }
  {
    AutocastScope outer(true, c10::DeviceType::CPU);
    { AutocastScope inner(true, c10::DeviceType::CPU); }
    EXPECT_TRUE(at::autocast::is_autocast_enabled(c10::DeviceType::CPU));
    EXPECT_EQ(at::autocast::get_autocast_dtype(c10::DeviceType::CPU), at::kBFloat16);
  }
  EXPECT_FALSE(at::autocast::is_autocast_enabled(c10::DeviceType::CPU));
}

// metrics.jsonl that cannot be opened stops the run before the first step; one whose writes fail (/dev/full: the
// write fails as on a full disk) stops it at that write. Both name the path and the system's reason.
TEST(Trainer, AMetricsFileThatCannotBeWrittenStopsTheRun) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("dir_run"));
  fs::create_directories(fs::path(c.train.output_dir) / "metrics.jsonl");
  auto run = make_tiny_run(c);
  std::string msg = test::error_of<std::runtime_error>([&] { train(c, *run.task, *run.loader, {}); });
  EXPECT_EQ(msg, (fs::path(c.train.output_dir) / "metrics.jsonl").string() + ": cannot open for writing: Is a directory");
  EXPECT_EQ(run.task->forwards, 0);

  Config full = tiny_train_config(dir.file("full_run"));
  fs::create_directories(full.train.output_dir);
  fs::create_symlink("/dev/full", fs::path(full.train.output_dir) / "metrics.jsonl");
  auto run2 = make_tiny_run(full);
  msg = test::error_of<std::runtime_error>([&] { train(full, *run2.task, *run2.loader, {}); });
  EXPECT_EQ(msg, (fs::path(full.train.output_dir) / "metrics.jsonl").string() +
                     ": write failed: No space left on device");
  // Step 1's line is written one step late, once step 2's forward and backward are queued (read back then).
  EXPECT_EQ(run2.task->forwards, 2) << "the first metrics line is written during the second step";
}

TEST(Trainer, ResumeRejectsAMissingCheckpoint) {
  test::TempDir dir;
  Config c = tiny_train_config(dir.file("run"));
  auto run = make_tiny_run(c);
  std::string msg = test::error_of<CheckpointError>([&] { train(c, *run.task, *run.loader, {dir.file("nope.safetensors"), ""}); });
  EXPECT_NE(msg.find("nope.safetensors"), std::string::npos) << msg;
}

}  // namespace
}  // namespace nepa
