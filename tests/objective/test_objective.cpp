// The objective plug-in (issue 17 §1): NEPA through Objective and PretrainTask must be the NEPA of before, bit for
// bit, with the same checkpoint names and parameter groups.
#include "nepa/objective/objective.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/objective/nepa_loss.h"
#include "nepa/train/optim.h"
#include "nepa/train/pretrain_task.h"
#include "test_util.h"
#include "train/train_test_util.h"

using namespace nepa;
namespace fs = std::filesystem;

namespace {

Config tiny_config() {
  Config c;
  c.model = test::tiny_model_config();
  c.model.use_mask_token = true;
  c.model.drop_path_prob = 0.1;  // the forward draws, so both paths must draw alike
  c.data.image_size = 16;
  c.objective.mask_ratio = 0.4;
  validate(c);
  return c;
}

// The pretraining task as it was before the plug-in: the backbone is the module and nepa_forward_loss the loss.
class DirectNepaTask : public TrainTask {
 public:
  DirectNepaTask(const Config& c, ViTNepaModel m) : config_(c), model_(std::move(m)) {}
  torch::nn::Module& module() override { return *model_; }
  std::vector<ParamGroup> param_groups() override { return decay_groups(*model_, config_.optim.weight_decay); }
  StepOutput forward(const Batch& batch) override {
    NepaLoss l = nepa_forward_loss(model_, batch.images, config_.objective);
    losses.push_back(l.loss.item<double>());
    return {l.loss, {{"cos", l.mean_cos}, {"pred_std", l.pred_std}}};
  }
  void export_final(const std::string& dir) override {
    save_hf_model(dir, model_, HfModelConfig{config_.model, {}, {}, {}});
  }
  ViTNepaModel& model() { return model_; }
  std::vector<double> losses;

 private:
  Config config_;
  ViTNepaModel model_;
};

}  // namespace

TEST(Objective, UnknownNameIsAConfigErrorNamingTheKeyAndTheKnownNames) {
  Config c = tiny_config();
  c.objective.name = "jepa";
  std::string msg = test::error_of<ConfigError>([&] { make_objective(c); });
  EXPECT_NE(msg.find("objective.name"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'jepa'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(nepa, aim, mae, ijepa)"), std::string::npos) << msg;
  // Loading a config rejects it the same way, naming where it was set.
  msg = test::error_of<ConfigError>(
      [&] { load_config_from_string("objective:\n  name: jepa\n", "run.yaml"); });
  EXPECT_NE(msg.find("run.yaml: objective.name: unknown objective 'jepa' (nepa, aim, mae, ijepa)"), std::string::npos) << msg;
  EXPECT_THROW(PretrainTask(c, ViTNepaModel(c.model), nullptr, nullptr, torch::kCPU), ConfigError);
}

TEST(Objective, NepaThroughTheInterfaceIsNepaForwardLossBitForBit) {
  Config c = tiny_config();
  auto objective = make_objective(c);
  EXPECT_TRUE(objective->modules().empty());
  EXPECT_TRUE(objective->extra_state().empty());
  torch::manual_seed(3);
  ViTNepaModel model(c.model);
  torch::Tensor pixels = torch::randn({4, 3, 16, 16});
  auto grads = [&] {
    std::vector<torch::Tensor> g;
    for (const auto& p : model->parameters()) {
      g.push_back(p.grad().clone());
      p.mutable_grad() = torch::Tensor();
    }
    return g;
  };

  torch::manual_seed(11);
  NepaLoss direct = nepa_forward_loss(model, pixels, c.objective);
  direct.loss.backward();
  auto direct_grads = grads();
  torch::manual_seed(11);
  ObjectiveOutput out = objective->forward(model, pixels);
  out.loss.backward();
  auto plugin_grads = grads();

  EXPECT_TRUE(torch::equal(out.loss, direct.loss));
  ASSERT_EQ(out.metrics.size(), 2u);
  EXPECT_EQ(out.metrics[0].first, "cos");
  EXPECT_TRUE(torch::equal(out.metrics[0].second, direct.mean_cos));
  EXPECT_EQ(out.metrics[1].first, "pred_std");
  EXPECT_TRUE(torch::equal(out.metrics[1].second, direct.pred_std));
  ASSERT_EQ(plugin_grads.size(), direct_grads.size());
  for (size_t i = 0; i < plugin_grads.size(); ++i) EXPECT_TRUE(torch::equal(plugin_grads[i], direct_grads[i])) << i;
}

TEST(Objective, NepaTaskCarriesTheBackboneUnderItsOwnNamesAndGroups) {
  Config c = tiny_config();
  ViTNepaModel model(c.model);
  PretrainTask task(c, model, nullptr, nullptr, torch::kCPU);

  // Checkpoint names and tensors: the backbone's, the same tensors, in the same order (DDP's replicated set).
  auto carried = task.module().named_parameters();
  auto own = model->named_parameters();
  ASSERT_EQ(carried.size(), own.size());
  for (size_t i = 0; i < own.size(); ++i) {
    EXPECT_EQ(carried[i].key(), own[i].key());
    EXPECT_TRUE(carried[i].value().is_same(own[i].value())) << own[i].key();
  }
  auto carried_buffers = task.module().named_buffers();
  auto own_buffers = model->named_buffers();
  ASSERT_EQ(carried_buffers.size(), own_buffers.size());
  for (size_t i = 0; i < own_buffers.size(); ++i) EXPECT_EQ(carried_buffers[i].key(), own_buffers[i].key());
  EXPECT_TRUE(task.extra_state().empty());

  std::vector<ParamGroup> groups = task.param_groups();
  std::vector<ParamGroup> expect = decay_groups(*model, c.optim.weight_decay);
  ASSERT_EQ(groups.size(), expect.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    EXPECT_EQ(groups[g].name, expect[g].name);
    EXPECT_EQ(groups[g].param_names, expect[g].param_names);
    EXPECT_EQ(groups[g].weight_decay, expect[g].weight_decay);
    EXPECT_EQ(groups[g].lr_scale, expect[g].lr_scale);
    ASSERT_EQ(groups[g].params.size(), expect[g].params.size());
    for (size_t i = 0; i < groups[g].params.size(); ++i) EXPECT_TRUE(groups[g].params[i].is_same(expect[g].params[i]));
  }

  // The training flag reaches the backbone itself, not only its parts.
  task.module().eval();
  EXPECT_FALSE(model->is_training());
  EXPECT_FALSE(model->embeddings->is_training());
  task.module().train();
  EXPECT_TRUE(model->is_training());
}

// A short run through the loop (with the EMA, so that its names and export are covered) gives the per-step losses
// and final weights of the task as it was before the plug-in.
TEST(Objective, NepaPretrainingRunEqualsThePreviousTask) {
  test::TempDir dir;
  Config c = test::tiny_train_config(dir.file("plugin"));
  c.model.use_mask_token = true;
  c.objective.mask_ratio = 0.4;
  c.train.ema = true;
  c.train.ema_decay = 0.9;
  validate(c);
  auto plugin = test::make_tiny_run(c);
  train(c, *plugin.task, *plugin.loader, {});

  Config d = c;
  d.train.output_dir = dir.file("direct");
  torch::manual_seed(0);  // as make_tiny_run
  auto data = make_dataset(d.data, d.data.split);
  LoaderOptions o;
  o.batch_size = d.train.micro_batch;
  o.seed = static_cast<uint64_t>(d.train.seed);
  DataLoader loader(data, d.data, o);
  DirectNepaTask direct(d, ViTNepaModel(d.model));
  train(d, direct, loader, {});

  ASSERT_EQ(plugin.task->losses.size(), static_cast<size_t>(c.schedule.max_steps));
  EXPECT_EQ(plugin.task->losses, direct.losses);
  auto a = plugin.task->model()->named_parameters();
  auto b = direct.model()->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].value(), b[i].value())) << a[i].key();
  EXPECT_EQ(test::slurp((fs::path(dir.file("plugin")) / "final" / "model.safetensors").string()),
            test::slurp((fs::path(dir.file("direct")) / "final" / "model.safetensors").string()));
  EXPECT_TRUE(fs::exists(fs::path(dir.file("plugin")) / "final_ema" / "model.safetensors"));
}
