#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

#include "nepa/config/config.h"
#include "nepa/train/seg_schedule.h"
#include "nepa/train/seg_task.h"
#include "test_util.h"

namespace nepa {
namespace {

// mmseg's loss written out pixel by pixel: -log softmax at the label, 0 at ignored pixels, over a divisor.
double loss_by_hand(const torch::Tensor& logits /*[B,C,H,W] at label size*/, const torch::Tensor& labels,
                    bool avg_non_ignore) {
  const auto l = logits.to(torch::kFloat64);
  double sum = 0;
  int64_t labelled = 0;
  for (int64_t b = 0; b < labels.size(0); ++b)
    for (int64_t y = 0; y < labels.size(1); ++y)
      for (int64_t x = 0; x < labels.size(2); ++x) {
        const int64_t t = labels[b][y][x].item<int64_t>();
        if (t == 255) continue;
        double denom = 0;
        for (int64_t c = 0; c < l.size(1); ++c) denom += std::exp(l[b][c][y][x].item<double>());
        sum += std::log(denom) - l[b][t][y][x].item<double>();
        ++labelled;
      }
  return sum / static_cast<double>(avg_non_ignore ? labelled : labels.numel());
}

TEST(SegLoss, AveragesOverAllPixelsAsMmsegOrOverLabelledOnes) {
  torch::manual_seed(3);
  const torch::Tensor logits = torch::randn({2, 4, 5, 6});
  torch::Tensor labels = torch::randint(0, 4, {2, 5, 6}, torch::kInt64);
  labels.index_put_({0, torch::indexing::Slice(0, 2)}, 255);  // 12 of 60 pixels ignored
  for (bool avg : {false, true})
    EXPECT_NEAR(seg_cross_entropy(logits, labels, avg).item<double>(), loss_by_hand(logits, labels, avg), 1e-5)
        << "avg_non_ignore " << avg;
  // The two differ by exactly labelled / all.
  const double all = seg_cross_entropy(logits, labels, false).item<double>();
  const double non_ignored = seg_cross_entropy(logits, labels, true).item<double>();
  EXPECT_NEAR(all, non_ignored * 48.0 / 60.0, 1e-6);
}

TEST(SegLoss, UpsamplesTheLogitsBilinearlyToTheLabelSize) {
  torch::manual_seed(4);
  const torch::Tensor logits = torch::randn({1, 3, 4, 4}, torch::requires_grad());
  const torch::Tensor labels = torch::randint(0, 3, {1, 16, 16}, torch::kInt64);
  namespace F = torch::nn::functional;
  const torch::Tensor up = F::interpolate(
      logits, F::InterpolateFuncOptions().size(std::vector<int64_t>{16, 16}).mode(torch::kBilinear).align_corners(false));
  EXPECT_NEAR(seg_cross_entropy(logits, labels, false).item<double>(), loss_by_hand(up.detach(), labels, false), 1e-5);
  // Every logit gets a gradient through the resize; a crop that is all ignore gives zero loss and gradient.
  seg_cross_entropy(logits, labels, false).backward();
  EXPECT_GT(logits.grad().abs().min().item<double>(), 0.0);
  const torch::Tensor ignored = torch::full({1, 16, 16}, 255, torch::kInt64);
  for (bool avg : {false, true}) EXPECT_EQ(seg_cross_entropy(logits, ignored, avg).item<double>(), 0.0);
}

Config seg_config() {
  Config c;
  c.model = test::tiny_model_config();
  c.model.num_hidden_layers = 4;
  c.model.is_causal = false;
  c.data.image_size = 16;
  c.seg.out_indices = {0, 1, 2, 3};
  c.seg.channels = 8;
  c.seg.aux_channels = 6;
  c.seg.dropout = 0.0;
  c.schedule.name = "poly";
  c.schedule.max_steps = 100;
  c.optim.base_lr = 1e-4;
  c.optim.lr_batch_reference = 16;
  c.train.total_batch = 16;
  c.train.micro_batch = 16;
  c.seg.warmup_iters = 10;
  validate(c);
  return c;
}

TEST(SegTask, LossIsTheDecodeLossPlusTheWeightedAuxiliaryLoss) {
  Config c = seg_config();
  c.seg.aux_weight = 0.4;
  torch::manual_seed(0);
  NepaSegmenter model(c.model, upernet_options(c, 5), c.seg.out_indices);
  SegTask task(c, model, nullptr, torch::kCPU);
  Batch batch;
  batch.images = torch::randn({2, 3, 16, 16});
  batch.label_maps = torch::randint(0, 5, {2, 16, 16}, torch::kUInt8);
  batch.label_maps.index_put_({1, 0}, 255);
  model->train();
  torch::manual_seed(1);
  const StepOutput out = task.forward(batch);
  std::map<std::string, double> m;
  for (const auto& [k, v] : out.metrics) m[k] = v.item<double>();
  EXPECT_NEAR(out.loss.item<double>(), m.at("loss_seg") + 0.4 * m.at("loss_aux"), 1e-6);
  // The same figures from the model's outputs directly (BatchNorm in train mode, no dropout: deterministic).
  torch::manual_seed(1);
  const UPerNetOutput o = model->forward(batch.images);
  const torch::Tensor labels = batch.label_maps.to(torch::kInt64);
  EXPECT_NEAR(m.at("loss_seg"), seg_cross_entropy(o.logits, labels, false).item<double>(), 1e-6);
  EXPECT_NEAR(m.at("loss_aux"), seg_cross_entropy(o.aux_logits, labels, false).item<double>(), 1e-6);
  EXPECT_GE(m.at("acc_seg"), 0.0);
  EXPECT_LE(m.at("acc_seg"), 100.0);
  // Backward reaches the backbone's first block and both heads.
  out.loss.backward();
  for (const auto& p : model->named_parameters())
    if (p.value().requires_grad()) EXPECT_TRUE(p.value().grad().defined()) << p.key();
}

TEST(SegTask, GroupsCoverEveryParameterOnceWithBeitFactorsAndThePolySchedule) {
  Config c = seg_config();
  c.seg.layer_decay = 0.5;
  NepaSegmenter model(c.model, upernet_options(c, 5), c.seg.out_indices);
  SegTask task(c, model, nullptr, torch::kCPU);
  auto schedule = task.make_schedule(c, 100);
  const auto& poly = dynamic_cast<const PolyWarmupSchedule&>(*schedule);
  std::set<std::string> seen;
  const auto& groups = task.groups().groups;
  for (size_t g = 0; g < groups.size(); ++g)
    for (const std::string& name : groups[g].param_names) {
      EXPECT_TRUE(seen.insert(name).second) << name << " in two groups";
      double factor = 1.0;  // heads and neck: layer id L + 1 = 5
      if (name.rfind("vit_nepa.embeddings.", 0) == 0) factor = std::pow(0.5, 5);
      else if (name.rfind("vit_nepa.encoder.layer.", 0) == 0)
        factor = std::pow(0.5, 4 - (name[23] - '0'));  // block i: id i + 1
      EXPECT_DOUBLE_EQ(poly.factor(static_cast<int>(g)), factor) << name;
      EXPECT_DOUBLE_EQ(poly.peak(static_cast<int>(g)), 1e-4 * factor) << name;
    }
  EXPECT_EQ(seen.size(), model->parameters().size() - 2) << "all but the unused final layernorm";
  // Warmup from 1e-6 of the poly value at step 0, poly (power 1) to 0 at step 100.
  const int heads = static_cast<int>(groups.size()) - 1;
  EXPECT_NEAR(schedule->lr(heads, 0), 1e-4 * 1e-6, 1e-16);
  EXPECT_NEAR(schedule->lr(heads, 50), 1e-4 * 0.5, 1e-15);
  EXPECT_NEAR(schedule->lr(heads, 100), 0.0, 1e-18);
}

TEST(SegTask, TheScheduleMustBePolyAndOutIndicesMustBeSet) {
  Config c = seg_config();
  c.schedule.name = "cosine";
  NepaSegmenter model(c.model, upernet_options(c, 5), c.seg.out_indices);
  SegTask task(c, model, nullptr, torch::kCPU);
  try {
    task.make_schedule(c, 100);
    FAIL() << "cosine accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("schedule.name"), std::string::npos) << e.what();
  }
  c.seg.out_indices.clear();
  try {
    seg_out_indices(c);
    FAIL() << "empty out_indices accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("seg.out_indices"), std::string::npos) << e.what();
  }
}

TEST(SegConfig, OutIndicesAreCheckedAgainstTheBackbone) {
  try {
    load_config_from_string("model:\n  num_hidden_layers: 4\nseg:\n  out_indices: [0, 1, 2, 4]\n", "s.yaml");
    FAIL() << "block 4 of 4 accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("seg.out_indices"), std::string::npos) << e.what();
  }
  try {
    load_config_from_string("model:\n  num_hidden_layers: 4\nseg:\n  out_indices: [0, 2, 1, 3]\n", "s.yaml");
    FAIL() << "unordered blocks accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("increasing"), std::string::npos) << e.what();
  }
  const Config ok = load_config_from_string("model:\n  num_hidden_layers: 4\nseg:\n  out_indices: [0, 1, 2, 3]\n").config;
  EXPECT_EQ(ok.seg.out_indices, (std::vector<int>{0, 1, 2, 3}));
  // The list survives the documented dump.
  EXPECT_EQ(load_config_from_string(to_yaml(ok)).config.seg.out_indices, ok.seg.out_indices);
}

}  // namespace
}  // namespace nepa
