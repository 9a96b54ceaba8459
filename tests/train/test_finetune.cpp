#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "dist/run_ranks.h"
#include "nepa/eval/classification.h"
#include "nepa/io/safetensors.h"
#include "nepa/model/classifier.h"
#include "nepa/train/checkpoint.h"
#include "nepa/train/ema.h"
#include "nepa/train/finetune_task.h"
#include "nepa/train/llrd.h"
#include "train_test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;

ModelConfig four_blocks() {
  ModelConfig m = test::tiny_model_config();
  m.num_hidden_layers = 4;
  m.is_causal = false;
  return m;
}

std::vector<std::pair<std::string, torch::Tensor>> named(torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

TEST(Llrd, GroupFactorsForEveryParameterOfAFourBlockModel) {
  ViTNepaForImageClassification model(four_blocks(), 10);
  LlrdGroups g = llrd_groups(named(*model), 4, 0.05);
  LlrdSchedule s("llrd_cosine_warmup", g.specs, /*base=*/1.0, /*head=*/0.5, /*llrd=*/0.65, std::nullopt, 0.0, 100,
                 1000);
  std::set<std::string> seen;
  for (size_t gi = 0; gi < g.groups.size(); ++gi) {
    for (size_t k = 0; k < g.groups[gi].params.size(); ++k) {
      const std::string& name = g.groups[gi].param_names[k];
      const torch::Tensor& p = g.groups[gi].params[k];
      seen.insert(name);
      double factor = 1.0, peak = 1.0;
      if (name.rfind("vit_nepa.embeddings.", 0) == 0) {
        factor = std::pow(0.65, 4);
        peak = factor;
      } else if (name.rfind("vit_nepa.encoder.layer.", 0) == 0) {
        const int i = name[std::string("vit_nepa.encoder.layer.").size()] - '0';
        factor = std::pow(0.65, 3 - i);
        peak = factor;
      } else if (name.rfind("classifier.", 0) == 0 || name.rfind("vit_nepa.layernorm.", 0) == 0) {
        peak = 0.5;  // head_lr, factor 1
      } else {
        ASSERT_EQ(name.rfind("fc_norm.", 0), 0u) << name;
      }
      EXPECT_NEAR(s.factor(static_cast<int>(gi), 0), factor, 1e-12) << name;
      EXPECT_NEAR(s.peak(static_cast<int>(gi)), peak, 1e-12) << name;
      EXPECT_EQ(g.groups[gi].weight_decay, p.dim() >= 2 ? 0.05 : 0.0) << name;
      EXPECT_EQ(g.groups[gi].lr_scale, 1.0);
    }
  }
  EXPECT_EQ(seen.size(), model->parameters().size());  // every parameter, once
  EXPECT_TRUE(seen.count("vit_nepa.embeddings.cls_token"));
}

TEST(Llrd, FrozenParametersAreLeftOut) {
  ViTNepaForImageClassification model(four_blocks(), 10);
  for (auto& p : model->vit_nepa->embeddings->patch_embeddings->parameters()) p.set_requires_grad(false);
  LlrdGroups g = llrd_groups(named(*model), 4, 0.05);
  for (const auto& grp : g.groups)
    for (const auto& n : grp.param_names) EXPECT_EQ(n.find("patch_embeddings"), std::string::npos) << n;
}

TEST(Llrd, CosineWarmupSchedulePerGroupAgainstTheFormula) {
  std::vector<LlrdSpec> specs = {{4, false, ""}, {1, false, ""}, {0, false, ""}, {-1, true, ""}, {-1, false, ""}};
  const double base = 2e-3, head = 1e-3, llrd = 0.65, min_lr = 1e-6;
  const int64_t W = 200, total = 1000;
  LlrdSchedule s("llrd_cosine_warmup", specs, base, head, llrd, 1.0, min_lr, W, total);
  for (int g = 0; g < 5; ++g) {
    const double f = specs[g].depth >= 0 ? std::pow(llrd, specs[g].depth) : 1.0;
    const double peak = specs[g].head ? head : base * f;
    const int64_t w = std::max<int64_t>(1, W - static_cast<int64_t>(std::nearbyint(W * std::min(f, 1.0))));
    EXPECT_EQ(s.warmup_steps(g), w) << g;
    for (int64_t step : {int64_t{0}, int64_t{1}, w / 2, w - 1, w, w + 1, int64_t{500}, total - 1, total}) {
      double expected;
      if (step < w) expected = peak * step / w;
      else expected = min_lr + (peak - min_lr) * 0.5 * (1 + std::cos(M_PI * std::min(1.0, double(step - w) / (total - w))));
      EXPECT_NEAR(s.lr(g, step), expected, 1e-15) << "group " << g << " step " << step;
    }
  }
  // The most decayed group warms up longest: embeddings (0.65^4 = 0.18) -> 200 - 36 = 164 steps.
  EXPECT_EQ(s.warmup_steps(0), 164);
  EXPECT_EQ(s.warmup_steps(3), 1);
}

TEST(Llrd, WarmupRoundsHalfToEvenAndZeroWarmupMeansNone) {
  // 10 x 0.5^2 = 2.5: Python's round gives 2 (half to even), so the group warms up for 8 steps, not 7.
  LlrdSchedule s("llrd_cosine_warmup", {{2, false, ""}, {1, false, ""}}, 1.0, 1.0, 0.5, std::nullopt, 0.0, 10, 100);
  EXPECT_EQ(s.warmup_steps(0), 8);
  EXPECT_EQ(s.warmup_steps(1), 5);  // 10 x 0.5 = 5 exactly
  LlrdSchedule none("llrd_cosine_warmup", {{2, false, ""}}, 1.0, 1.0, 0.5, std::nullopt, 0.0, 0, 100);
  EXPECT_EQ(none.warmup_steps(0), 0);
  EXPECT_DOUBLE_EQ(none.lr(0, 0), 0.25);  // the peak at step 0, as the release without warmup
}

TEST(Llrd, CosineScheduleKeepsLlrdFixedWithoutAnEndValue) {
  LlrdSchedule s("llrd_cosine", {{3, false, ""}}, 1.0, 0.5, 0.65, std::nullopt, 0.0, 100, 1000);
  for (int64_t step : {0, 100, 500, 999}) EXPECT_DOUBLE_EQ(s.factor(0, step), std::pow(0.65, 3)) << step;
}

TEST(Llrd, CosineScheduleMovesLlrdAlongTheRun) {
  std::vector<LlrdSpec> specs = {{3, false, ""}, {-1, true, ""}};
  LlrdSchedule s("llrd_cosine", specs, 1.0, 0.5, 0.35, 1.0, 0.0, 100, 1000);
  EXPECT_EQ(s.warmup_steps(0), 100);  // common warmup
  EXPECT_EQ(s.warmup_steps(1), 100);
  for (int64_t step : {0, 50, 100, 400, 999}) {
    const double llrd = 1.0 + (0.35 - 1.0) * 0.5 * (1 + std::cos(M_PI * step / 1000.0));
    const double shape = step < 100 ? step / 100.0 : 0.5 * (1 + std::cos(M_PI * (step - 100) / 900.0));
    EXPECT_NEAR(s.factor(0, step), std::pow(llrd, 3), 1e-12) << step;
    EXPECT_NEAR(s.lr(0, step), shape * std::pow(llrd, 3), 1e-12) << step;
    EXPECT_NEAR(s.lr(1, step), shape * 0.5, 1e-12) << step;
  }
}

TEST(Ema, StartsAtTheWeightsAfterStepOneThenAveragesAsTheRelease) {
  torch::nn::Linear lin(3, 2);
  torch::NoGradGuard no_grad;
  lin->weight.fill_(1.0);
  lin->bias.fill_(0.0);
  Ema ema(*lin, 0.9);
  ema.update(1);  // the release creates its EMA model at the first update: a copy of the weights after step 1
  lin->weight.fill_(2.0);
  lin->bias.fill_(-1.0);
  for (int64_t step = 2; step <= 6; ++step) ema.update(step);
  // e_k = d^k e_1 + (1 - d^k) w, each update computed as the release's e.mul_(d).add_(w, alpha=1-d) in float32
  const double d5 = std::pow(0.9, 5);
  torch::nn::Linear twin(3, 2);
  ema.copy_to(*twin);
  EXPECT_NEAR(twin->weight[0][0].item<double>(), d5 * 1.0 + (1 - d5) * 2.0, 1e-6);
  EXPECT_NEAR(twin->bias[1].item<double>(), (1 - d5) * -1.0, 1e-6);
  torch::Tensor e = torch::ones({2, 3});
  for (int k = 0; k < 5; ++k) e.mul_(0.9).add_(torch::full({2, 3}, 2.0), 1.0 - 0.9);
  EXPECT_TRUE(torch::equal(twin->weight, e));  // bit for bit
  Ema other(*lin, 0.9);
  other.load_state(ema.state("ema."), "ema.");
  torch::nn::Linear twin2(3, 2);
  other.copy_to(*twin2);
  EXPECT_TRUE(torch::equal(twin->weight, twin2->weight));
  EXPECT_THROW(other.load_state({}, "ema."), std::runtime_error);
}

// The loop averages the buffers as a step ends and the parameters once the step is read good: each half touches
// only its own tensors, and the two halves give update()'s result bit for bit.
TEST(Ema, BuffersAndParametersAverageSeparatelyAndTogetherAsUpdate) {
  torch::nn::BatchNorm1d bn(3);  // weight, bias (parameters); running_mean, running_var, num_batches_tracked
  Ema halves(*bn, 0.9), whole(*bn, 0.9);
  halves.update(1);
  whole.update(1);
  torch::NoGradGuard no_grad;
  bn->weight.fill_(2.0);
  bn->running_mean.fill_(5.0);
  halves.update_buffers(2);
  EXPECT_TRUE(torch::equal(halves.state("").at("weight"), torch::ones({3}))) << "parameters wait";
  EXPECT_FALSE(torch::equal(halves.state("").at("running_mean"), torch::zeros({3})));
  halves.update_parameters(2);
  whole.update(2);
  for (const auto& [name, t] : whole.state("")) EXPECT_TRUE(torch::equal(t, halves.state("").at(name))) << name;
}

TEST(Classification, TopKOnHandMadeLogits) {
  torch::Tensor logits = torch::tensor({{0.1, 0.9, 0.0, 0.0, 0.0, 0.0},    // label 1: top-1
                                        {0.5, 0.1, 0.4, 0.3, 0.2, 0.0},    // label 2: 2nd -> top-5 only
                                        {0.0, 0.1, 0.2, 0.3, 0.4, 0.5},    // label 0: 6th -> neither
                                        {0.3, 0.2, 0.1, 0.0, -0.1, 0.9}});  // label 3: 5th -> top-5
  torch::Tensor labels = torch::tensor({1, 2, 0, 3}, torch::kInt64);
  EXPECT_EQ(topk_correct(logits, labels, 1), 1);
  EXPECT_EQ(topk_correct(logits, labels, 5), 3);
  EXPECT_EQ(topk_correct(logits, labels, 100), 4);  // k capped at the class count
}

TEST(Classifier, APretrainingCheckpointLeavesExactlyTheHeadMissing) {
  test::TempDir dir;
  torch::manual_seed(0);
  ModelConfig m = four_blocks();
  ViTNepaModel backbone(m);
  // Both forms a pretraining run leaves: the HF export and a training checkpoint.
  save_hf_model(dir.file("hf"), backbone, HfModelConfig{m, {}, {}, {}});
  auto groups = decay_groups(*backbone, 0.05);
  auto opt = make_adamw(groups, OptimConfig{});
  CheckpointDir ckpt(dir.file("ckpt"), 1);
  const std::string path = ckpt.save(*backbone, *opt, groups, TrainState{}, "");
  const std::set<std::string> head = {"classifier.bias", "classifier.weight", "fc_norm.bias", "fc_norm.weight"};
  for (const std::string& source : {dir.file("hf"), path}) {
    ViTNepaForImageClassification cls(m, 7);
    ClassifierInit r = load_classifier_init(cls, source);
    EXPECT_EQ(std::set<std::string>(r.report.missing.begin(), r.report.missing.end()), head) << source;
    EXPECT_EQ(std::set<std::string>(r.expected_new.begin(), r.expected_new.end()), head) << source;
    EXPECT_TRUE(r.missing_backbone.empty()) << source;
    EXPECT_TRUE(r.report.unexpected.empty()) << source;
    EXPECT_TRUE(torch::equal(cls->vit_nepa->embeddings->cls_token, backbone->embeddings->cls_token)) << source;
  }
  // A backbone of another width does not fit: one error naming the file.
  ModelConfig wide = m;
  wide.hidden_size = 64;
  ViTNepaForImageClassification w(wide, 7);
  std::string msg = test::error_of<std::runtime_error>([&] { load_classifier_init(w, dir.file("hf")); });
  EXPECT_NE(msg.find(dir.file("hf")), std::string::npos) << msg;
}

// A file that lacks backbone tensors (a 2-block export into a 4-block model, or no backbone at all) is an error
// naming how many and the first few, before anything changes; finetune.allow_missing lets them train from random
// init. QK-Norm weights that a source without affine QK-Norm never had are new, as the head is.
TEST(Classifier, MissingBackboneTensorsAreAnErrorUnlessAllowed) {
  test::TempDir dir;
  torch::manual_seed(0);
  ModelConfig two = four_blocks();
  two.num_hidden_layers = 2;
  ViTNepaModel small(two);
  save_hf_model(dir.file("two"), small, HfModelConfig{two, {}, {}, {}});
  ViTNepaForImageClassification cls(four_blocks(), 7);
  const torch::Tensor before = cls->vit_nepa->embeddings->cls_token.clone();
  int64_t backbone = 0, missing = 0;
  for (const auto& [k, v] : state_dict(*cls)) {
    if (k.rfind("vit_nepa.", 0) != 0) continue;
    ++backbone;
    missing += k.find(".layer.2.") != std::string::npos || k.find(".layer.3.") != std::string::npos;
  }
  std::string msg = test::error_of<std::runtime_error>([&] { load_classifier_init(cls, dir.file("two")); });
  EXPECT_NE(msg.find(fmt::format("finetune.init: {} lacks {} of the {} backbone tensors this model needs (first: "
                                 "vit_nepa.encoder.layer.2.", dir.file("two"), missing, backbone)),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("finetune.allow_missing: true"), std::string::npos) << msg;
  EXPECT_TRUE(torch::equal(cls->vit_nepa->embeddings->cls_token, before)) << "nothing may change on failure";

  ClassifierInit allowed = load_classifier_init(cls, dir.file("two"), false, /*allow_missing=*/true);
  EXPECT_EQ(static_cast<int64_t>(allowed.missing_backbone.size()), missing);
  EXPECT_TRUE(torch::equal(cls->vit_nepa->embeddings->cls_token, small->embeddings->cls_token));

  // A file with none of the backbone's tensors (its QK-Norm weights count as new: the file has none at all).
  int64_t qk_norm_weights = 0;
  for (const auto& [k, v] : state_dict(*cls)) qk_norm_weights += k.find("_norm.") != std::string::npos &&
                                                                   k.find(".attention.") != std::string::npos;
  save_safetensors(dir.file("other.safetensors"), {{"something.else", torch::zeros({3})}});
  msg = test::error_of<std::runtime_error>([&] { load_classifier_init(cls, dir.file("other.safetensors")); });
  EXPECT_NE(msg.find(fmt::format("lacks {} of the {} backbone tensors", backbone - qk_norm_weights, backbone)),
            std::string::npos) << msg;

  // Affine QK-Norm in fine-tuning from a backbone pretrained without it: those weights are new, not missing.
  ModelConfig affine = four_blocks(), no_affine = four_blocks();
  affine.qk_norm_affine = true;
  no_affine.qk_norm_affine = false;
  ViTNepaModel plain(no_affine);
  save_hf_model(dir.file("plain"), plain, HfModelConfig{no_affine, {}, {}, {}});
  ViTNepaForImageClassification with_affine(affine, 7);
  ClassifierInit r = load_classifier_init(with_affine, dir.file("plain"));
  EXPECT_TRUE(r.missing_backbone.empty());
  size_t qk = 0;
  for (const auto& k : r.expected_new) qk += k.find("_norm.weight") != std::string::npos && k.find("attention") != std::string::npos;
  EXPECT_EQ(qk, 8u) << "q_norm and k_norm weights of 4 blocks";
}

// Synthetic train/test sets of `c` and a single-process loader of its micro-batches.
struct TinyData {
  std::shared_ptr<Dataset> train_set, eval_set;
  std::unique_ptr<DataLoader> loader;
};

TinyData tiny_data(const Config& c) {
  TinyData d;
  d.train_set = make_dataset(c.data, "train");
  d.eval_set = make_dataset(c.data, "test");
  LoaderOptions o;
  o.batch_size = c.train.micro_batch;
  d.loader = std::make_unique<DataLoader>(d.train_set, c.data, o);
  return d;
}

TEST(FinetuneTask, FrozenEmbeddingStaysAndEverythingElseTrains) {
  test::TempDir dir;
  Config c = test::tiny_train_config(dir.file("run"));
  c.model.is_causal = false;
  c.schedule.name = "llrd_cosine_warmup";
  c.schedule.max_steps = 4;
  c.train.ema = true;
  c.train.ema_decay = 0.5;
  c.finetune.eval_every_epochs = 0;
  c.data.synthetic_size = 32;
  validate(c);
  torch::manual_seed(0);
  TinyData data = tiny_data(c);
  ViTNepaForImageClassification model(c.model, 10);
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : model->named_parameters()) before[p.key()] = p.value().detach().clone();
  FinetuneTask task(c, model, data.eval_set, torch::kCPU);
  TrainResult r = train(c, task, *data.loader, {"", to_yaml(c)});
  EXPECT_EQ(r.step, 4);
  for (const auto& p : model->named_parameters()) {
    const bool frozen = p.key().find("patch_embeddings") != std::string::npos;
    EXPECT_EQ(torch::equal(p.value(), before[p.key()]), frozen) << p.key();
  }
  // The end-of-run evaluation reports both weight sets, and the exports exist.
  std::set<std::string> names;
  for (const auto& [k, v] : r.last_eval) names.insert(k);
  EXPECT_EQ(names, (std::set<std::string>{"top1", "top5", "ema_top1", "ema_top5"}));
  EXPECT_TRUE(fs::exists(dir.file("run/final/model.safetensors")));
  EXPECT_TRUE(fs::exists(dir.file("run/final_ema/config.json")));
  EXPECT_TRUE(fs::exists(dir.file("run/best_ema/model.safetensors")));
  EXPECT_TRUE(fs::exists(dir.file("run/eval_confusion.csv")));
  // Resuming restores the EMA: a checkpoint holds it.
  auto tensors = load_safetensors(r.checkpoint);
  EXPECT_GT(tensors.count("extra.ema.classifier.weight"), 0u);
  EXPECT_GT(tensors.count("extra.best_ema_top1"), 0u);
}

TEST(Probes, OnlyTheHeadTrainsAndTheBackboneStaysInEvalMode) {
  for (const std::string head : {"linear_probe", "attentive_probe"}) {
    SCOPED_TRACE(head);
    test::TempDir dir;
    Config c = test::tiny_train_config(dir.file("run"));
    c.model.is_causal = false;
    c.finetune.head = head;
    c.finetune.probe_blocks = 2;
    c.train.ema = false;
    c.finetune.mixup_alpha = c.finetune.cutmix_alpha = 0;
    c.finetune.eval_every_epochs = 0;
    c.schedule.max_steps = 3;
    validate(c);
    torch::manual_seed(0);
    TinyData data = tiny_data(c);
    ViTNepaForImageClassification model(c.model, 10, head, 2);
    std::map<std::string, torch::Tensor> before;
    for (const auto& p : state_dict(*model)) before[p.first] = p.second.detach().clone();
    FinetuneTask task(c, model, data.eval_set, torch::kCPU);
    // The trainer puts the module in training mode: the frozen backbone stays in eval mode.
    model->train();
    EXPECT_TRUE(model->probe->is_training());
    EXPECT_FALSE(model->vit_nepa->is_training());
    TrainResult r = train(c, task, *data.loader, {"", to_yaml(c)});
    EXPECT_EQ(r.step, 3);
    for (const auto& [name, t] : state_dict(*model)) {
      const bool head_tensor = name.rfind("vit_nepa.", 0) != 0;
      if (name.find("num_batches_tracked") != std::string::npos) continue;
      EXPECT_EQ(!torch::equal(t, before[name]), head_tensor) << name;  // head moves, backbone does not
    }
    // A pretrained backbone leaves the probe and the classifier missing, nothing else.
    save_hf_model(dir.file("backbone"), model->vit_nepa, HfModelConfig{c.model, {}, {}, {}});
    ViTNepaForImageClassification fresh(c.model, 10, head, 2);
    ClassifierInit rep = load_classifier_init(fresh, dir.file("backbone"));
    for (const auto& k : rep.report.missing)
      EXPECT_TRUE(k.rfind("probe.", 0) == 0 || k.rfind("classifier.", 0) == 0) << k;
    EXPECT_EQ(head_of(read_classifier_weights(dir.file("run/final"))), head);
  }
}

TEST(Probes, SyncedBatchNormOverTwoRanksEqualsOneProcessOnTheWholeBatch) {
  for (const std::string kind : {"linear_probe", "attentive_probe"}) {
    SCOPED_TRACE(kind);
    torch::manual_seed(5);
    ProbeHead init(kind, 8, 2);
    const torch::Tensor x = torch::randn({6, 5, 8}) * 3 + 1;
    auto copy_state = [&](ProbeHead& to) {
      torch::NoGradGuard no_grad;
      for (auto& p : to->named_parameters()) p.value().copy_(init->named_parameters()[p.key()]);
      for (auto& b : to->named_buffers()) b.value().copy_(init->named_buffers()[b.key()]);
    };
    ProbeHead whole(kind, 8, 2);
    copy_state(whole);
    whole->train();
    const torch::Tensor want = whole->forward(x).detach();  // one process, the whole batch of 6
    dist::run_ranks(2, [&](dist::Comm& comm) {
      ProbeHead half(kind, 8, 2);
      copy_state(half);
      half->train();
      half->sync_statistics([&comm](torch::Tensor& t) { comm.all_reduce(t); });
      const torch::Tensor got = half->forward(x.narrow(0, 3 * comm.rank(), 3));  // each rank: 3 of the 6
      EXPECT_LE(test::max_abs_diff(got, want.narrow(0, 3 * comm.rank(), 3)), 1e-5);
      EXPECT_LE(test::max_abs_diff(half->norm->running_mean, whole->norm->running_mean), 1e-6);
      EXPECT_LE(test::max_abs_diff(half->norm->running_var, whole->norm->running_var), 1e-6);
      EXPECT_EQ(half->norm->num_batches_tracked.item<int64_t>(), 1);
    });
  }
}

TEST(Probes, AttentivePoolingIsOneQueryAttendingOverTheTokens) {
  torch::manual_seed(3);
  ProbeHead p("attentive_probe", 8, 2);
  p->eval();  // BatchNorm with its initial running statistics (mean 0, var 1): identity up to eps
  torch::Tensor x = torch::randn({3, 5, 8});
  torch::Tensor t = x / std::sqrt(1 + 1e-6);
  // Reference: per head h, softmax(q_h . k_h / sqrt(4)) v_h.
  torch::Tensor k = p->k->forward(t), v = p->v->forward(t);
  torch::Tensor out = torch::empty({3, 8});
  for (int h = 0; h < 2; ++h) {
    torch::Tensor q = p->query.view({8}).narrow(0, 4 * h, 4);
    torch::Tensor kh = k.narrow(2, 4 * h, 4), vh = v.narrow(2, 4 * h, 4);
    torch::Tensor w = torch::softmax(kh.matmul(q) / 2.0, 1);  // [3, 5]
    out.narrow(1, 4 * h, 4).copy_((w.unsqueeze(2) * vh).sum(1));
  }
  EXPECT_LE(test::max_abs_diff(p->forward(x), out), 1e-5);
}

}  // namespace
}  // namespace nepa
