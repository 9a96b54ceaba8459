#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "nepa/io/atomic_file.h"
#include "nepa/train/checkpoint.h"
#include "nepa/train/optim.h"
#include "train_test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;

struct Trained {
  ViTNepaModel model{nullptr};
  std::vector<ParamGroup> groups;
  std::unique_ptr<AdamW> optim;
};

// A model and AdamW after `steps` real updates, so every moment is non-trivial.
Trained trained(int steps, int64_t seed) {
  torch::manual_seed(seed);
  Trained t;
  t.model = ViTNepaModel(test::tiny_model_config());
  t.groups = decay_groups(*t.model, 0.05);
  t.optim = make_adamw(t.groups, OptimConfig{});
  for (size_t g = 0; g < t.optim->num_groups(); ++g) t.optim->set_lr(g, 1e-3);
  for (int i = 0; i < steps; ++i) {
    auto out = t.model->forward(torch::randn({2, 3, 16, 16}));
    out.last_hidden_state.pow(2).mean().backward();
    t.optim->step();
    t.optim->zero_grad();
  }
  return t;
}

TEST(Checkpoint, RoundTripRestoresModelOptimizerAndGenerator) {
  test::TempDir dir;
  Trained a = trained(3, 1);
  torch::manual_seed(42);
  std::string path = dir.file("c.safetensors");
  save_checkpoint(path, *a.model, *a.optim, a.groups, TrainState{3, 1, 5, 24, 4}, "model: {}\n",
                  {{"ema.w", torch::arange(4.0)}});
  torch::Tensor expected_draw = torch::rand({5});

  Trained b = trained(0, 2);  // fresh weights, no optimizer state yet
  torch::manual_seed(7);
  CheckpointContent c = load_checkpoint(path, *b.model, *b.optim, b.groups);
  EXPECT_EQ(c.state.step, 3);
  EXPECT_EQ(c.state.epoch, 1);
  EXPECT_EQ(c.state.batch, 5);
  EXPECT_EQ(c.state.samples_seen, 24);
  EXPECT_EQ(c.state.world_size, 4);
  EXPECT_EQ(c.config_yaml, "model: {}\n");
  ASSERT_EQ(c.extra.count("ema.w"), 1u);
  EXPECT_EQ(test::max_abs_diff(c.extra["ema.w"], torch::arange(4.0)), 0.0);
  EXPECT_EQ(test::max_abs_diff(torch::rand({5}), expected_draw), 0.0) << "generator state not restored";

  auto pa = a.model->named_parameters();
  for (const auto& p : b.model->named_parameters()) EXPECT_EQ(test::max_abs_diff(p.value(), pa[p.key()]), 0.0);
  for (size_t g = 0; g < a.groups.size(); ++g)
    for (size_t i = 0; i < a.groups[g].params.size(); ++i) {
      const AdamW::ParamState* sa = a.optim->state(g, i);
      const AdamW::ParamState* sb = b.optim->state(g, i);
      ASSERT_TRUE(sa && sb);
      EXPECT_EQ(sb->steps, 3);
      EXPECT_EQ(sb->step.item<double>(), 3.0);
      EXPECT_EQ(test::max_abs_diff(sa->exp_avg, sb->exp_avg), 0.0);
      EXPECT_EQ(test::max_abs_diff(sa->exp_avg_sq, sb->exp_avg_sq), 0.0);
    }
  // One more identical step from both gives identical weights: the state is complete.
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : a.model->named_parameters()) before[p.key()] = p.value().clone();
  torch::manual_seed(5);
  auto x = torch::randn({2, 3, 16, 16});
  for (Trained* t : {&a, &b}) {
    torch::manual_seed(6);  // the same draws in both forwards (training-mode RoPE augmentation)
    t->model->forward(x).last_hidden_state.pow(2).mean().backward();
    t->optim->step();
  }
  auto pa2 = a.model->named_parameters();
  for (const auto& p : b.model->named_parameters()) {
    EXPECT_EQ(test::max_abs_diff(p.value(), pa2[p.key()]), 0.0);
    EXPECT_GT(test::max_abs_diff(p.value(), before.at(p.key())), 0.0) << p.key() << " did not move: the check is void";
  }
}

// A data-parallel run saves every rank's generators; each rank gets its own back. A checkpoint from fewer
// processes has none for the extra ranks (left as seeded), and one written before per-rank states gives every
// rank the single set it holds.
TEST(Checkpoint, EachRankRestoresItsOwnGenerator) {
  test::TempDir dir;
  Trained a = trained(1, 1);
  std::map<std::string, torch::Tensor> generators;
  std::vector<torch::Tensor> next_draw;
  for (int r = 0; r < 2; ++r) {
    torch::manual_seed(100 + r);
    generators.merge(generator_states(r, torch::kCPU));
    next_draw.push_back(torch::rand({4}));
  }
  ASSERT_EQ(generators.size(), 2u);
  ASSERT_EQ(generators.count("rng.1.cpu"), 1u);
  const std::string path = dir.file("c.safetensors");
  save_checkpoint(path, *a.model, *a.optim, a.groups, TrainState{1, 0, 1, 8, 2}, "", {}, generators);
  for (int r = 0; r < 2; ++r) {
    torch::manual_seed(7);
    EXPECT_EQ(load_checkpoint(path, *a.model, *a.optim, a.groups, r).generators, GeneratorRestore::kOwn);
    EXPECT_TRUE(torch::equal(torch::rand({4}), next_draw[r])) << "rank " << r;
  }
  torch::manual_seed(7);
  const torch::Tensor seeded = torch::rand({4});
  torch::manual_seed(7);
  EXPECT_EQ(load_checkpoint(path, *a.model, *a.optim, a.groups, 2).generators, GeneratorRestore::kNone);
  EXPECT_TRUE(torch::equal(torch::rand({4}), seeded)) << "rank 2 has no saved state: its generator is untouched";

  const std::string legacy = dir.file("legacy.safetensors");
  save_checkpoint(legacy, *a.model, *a.optim, a.groups, TrainState{1, 0, 1, 8, 2}, "", {},
                  {{"rng.cpu", generators.at("rng.0.cpu")}});
  torch::manual_seed(7);
  EXPECT_EQ(load_checkpoint(legacy, *a.model, *a.optim, a.groups, 1).generators, GeneratorRestore::kShared);
  EXPECT_TRUE(torch::equal(torch::rand({4}), next_draw[0]));
  EXPECT_NE(test::error_of<CheckpointError>([&] {
              save_checkpoint(legacy, *a.model, *a.optim, a.groups, TrainState{}, "", {}, {{"gen", seeded}});
            }).find("generator state 'gen' is not named rng.*"),
            std::string::npos);
}

// --resume auto skips a newest checkpoint that does not read (truncated by a failing disk) for the newest one that
// does, saying so with both names; with none readable it stops instead of starting afresh.
TEST(Checkpoint, ResumeAutoFallsBackToTheNewestReadableCheckpoint) {
  test::TempDir dir;
  Trained a = trained(1, 1);
  CheckpointDir ckpts(dir.file("run/checkpoints"), 3);
  const std::string one = ckpts.save(*a.model, *a.optim, a.groups, TrainState{1, 0, 1, 8}, "");
  const std::string two = ckpts.save(*a.model, *a.optim, a.groups, TrainState{2, 0, 2, 16}, "");
  fs::resize_file(two, fs::file_size(two) / 2);
  std::vector<std::string> warnings;
  auto path = resolve_resume("auto", dir.file("run"), &warnings);
  ASSERT_TRUE(path);
  EXPECT_EQ(*path, one);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("skipping an unreadable checkpoint (safetensors: " + two), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("; resuming from " + one + " instead"), std::string::npos) << warnings[0];
  // An explicitly named file is never replaced by another.
  EXPECT_EQ(*resolve_resume(two, dir.file("run")), two);
  fs::resize_file(one, 10);
  std::string msg = test::error_of<CheckpointError>([&] { resolve_resume("auto", dir.file("run")); });
  EXPECT_NE(msg.find("--resume auto: no readable checkpoint in " + dir.file("run")), std::string::npos) << msg;
}

// Temp files of killed writers go at start-up; a live writer's stays.
TEST(Checkpoint, StaleTempFilesOfDeadWritersAreRemoved) {
  test::TempDir dir;
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);  // now a pid without a process
  const std::string dead = dir.write("ckpt/step_00000002.safetensors.tmp." + std::to_string(child), "x");
  const std::string live = dir.write("ckpt/latest.tmp." + std::to_string(::getpid()), "x");
  CheckpointDir ckpts(dir.file("ckpt"), 2);
  EXPECT_EQ(ckpts.remove_stale_temp_files(), 1);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
}

TEST(Checkpoint, ADifferentModelIsRejectedBeforeAnythingChanges) {
  test::TempDir dir;
  Trained a = trained(1, 1);
  std::string path = dir.file("c.safetensors");
  save_checkpoint(path, *a.model, *a.optim, a.groups, TrainState{1, 0, 1, 8}, "");
  ModelConfig other = test::tiny_model_config();
  other.num_hidden_layers = 3;
  ViTNepaModel m(other);
  auto groups = decay_groups(*m, 0.05);
  auto optim = make_adamw(groups, OptimConfig{});
  auto before = m->named_parameters()["layernorm.weight"].clone();
  std::string msg = test::error_of<CheckpointError>([&] { load_checkpoint(path, *m, *optim, groups); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("parameter groups differ"), std::string::npos) << msg;
  EXPECT_EQ(test::max_abs_diff(m->named_parameters()["layernorm.weight"], before), 0.0);
  EXPECT_NE(test::error_of<CheckpointError>([&] { read_checkpoint_info(dir.write("x.safetensors", "")); }).size(), 0u);
}

TEST(Checkpoint, DirectoryKeepsTheLastKAndPointsAtTheNewest) {
  test::TempDir dir;
  Trained a = trained(1, 1);
  CheckpointDir ckpts(dir.file("checkpoints"), 2);
  EXPECT_FALSE(ckpts.latest());
  for (int64_t s : {10, 20, 30}) ckpts.save(*a.model, *a.optim, a.groups, TrainState{s, 0, s, s}, "");
  EXPECT_FALSE(fs::exists(ckpts.path_for_step(10)));
  EXPECT_TRUE(fs::exists(ckpts.path_for_step(20)));
  ASSERT_TRUE(ckpts.latest());
  EXPECT_EQ(*ckpts.latest(), ckpts.path_for_step(30));
  EXPECT_EQ(*resolve_resume("auto", dir.path().string()), ckpts.path_for_step(30));
  EXPECT_EQ(*resolve_resume(dir.path().string(), "/elsewhere"), ckpts.path_for_step(30));
  EXPECT_FALSE(resolve_resume("", dir.path().string()));
  test::TempDir empty;
  EXPECT_FALSE(resolve_resume("auto", empty.path().string()));
  EXPECT_NE(test::error_of<CheckpointError>([&] { resolve_resume(empty.file("missing"), ""); }).find("missing"),
            std::string::npos);
}

// The process dies after the new checkpoint's bytes are written but before the rename: the previous
// checkpoint and the pointer to it survive, and the next save clears the orphaned temp file.
TEST(CheckpointDeathTest, KilledMidWriteLeavesThePreviousCheckpointLoadable) {
  // "threadsafe" re-runs this test body in a fresh process up to the EXPECT_EXIT, so the directory must be the
  // same in both processes: a fixed one under the build tree, not a random TempDir.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const fs::path dir = fs::path(NEPA_FIXTURE_DIR).parent_path() / "test_killed_mid_write";
  fs::remove_all(dir);
  Trained a = trained(1, 1);
  CheckpointDir ckpts((dir / "checkpoints").string(), 3);
  ckpts.save(*a.model, *a.optim, a.groups, TrainState{1, 0, 1, 8}, "");
  EXPECT_EXIT(
      {
        set_before_rename_hook([](const std::string&, const std::string& target) {
          if (target.find("step_00000002") != std::string::npos) std::_Exit(9);
        });
        ckpts.save(*a.model, *a.optim, a.groups, TrainState{2, 0, 2, 16}, "");
      },
      ::testing::ExitedWithCode(9), "");
  EXPECT_FALSE(fs::exists(ckpts.path_for_step(2)));
  ASSERT_TRUE(ckpts.latest());
  EXPECT_EQ(*ckpts.latest(), ckpts.path_for_step(1));
  bool orphan = false;
  for (const auto& e : fs::directory_iterator(ckpts.dir()))
    orphan |= e.path().filename().string().find(".tmp.") != std::string::npos;
  EXPECT_TRUE(orphan) << "the simulated crash should have left a temp file";
  Trained b = trained(0, 3);
  EXPECT_EQ(load_checkpoint(*ckpts.latest(), *b.model, *b.optim, b.groups).state.step, 1);
  ckpts.save(*a.model, *a.optim, a.groups, TrainState{3, 0, 3, 24}, "");
  for (const auto& e : fs::directory_iterator(ckpts.dir()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nepa
