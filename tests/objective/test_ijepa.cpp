// I-JEPA (issue 18): the block sizes by hand (one uniform for scale and aspect, Python's rounding, the shrink), the
// mask invariants (ranges, block shapes, context disjoint from the targets, equal counts, determinism), config
// errors, and the objective as a plug-in: the target encoder starts as the backbone, gets no gradient and no
// optimizer group, follows it with the scheduled momentum (not at all on a skipped step), is checkpointed, exported
// and resumed exactly.
#include "nepa/objective/ijepa.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "nepa/train/pretrain_task.h"
#include "test_util.h"
#include "train/train_test_util.h"

using namespace nepa;
namespace fs = std::filesystem;

namespace {

Config ijepa_config() {
  Config c;
  c.model = test::tiny_model_config();  // 4 x 4 patches
  c.model.use_cls_token = false;
  c.model.use_sincos_pos_embed = true;
  c.model.use_rope = false;
  c.model.is_causal = false;
  c.model.qk_norm = false;
  c.model.layerscale_value = std::nullopt;
  c.data.image_size = 16;
  c.train.ema = false;
  c.objective.name = "ijepa";
  c.objective.ijepa.num_pred_masks = 2;
  c.objective.ijepa.min_keep = 1;
  c.objective.ijepa.pred_mask_scale = {0.25, 0.3};  // 2 x 2 target blocks: the release's 15-20 % is one patch here
  c.objective.ijepa.predictor_depth = 2;
  c.objective.ijepa.predictor_width = 16;
  c.objective.ijepa.predictor_heads = 2;
  c.objective.ijepa.ema = {0.9, 1.0};
  validate(c);
  return c;
}

}  // namespace

TEST(IjepaMasks, BlockSizeByHand) {
  // u = 0.5: scale 0.175 -> max_keep int(196 x 0.175) = 34, aspect 1.125 -> h = round(6.18) = 6, w = round(5.50) = 5.
  EXPECT_EQ(ijepa_block_size(0.5, {0.15, 0.2}, {0.75, 1.5}, 14, 14), (std::pair<int64_t, int64_t>{6, 5}));
  // The context block at full scale shrinks to one less than the grid side.
  EXPECT_EQ(ijepa_block_size(1.0, {0.85, 1.0}, {1.0, 1.0}, 7, 7), (std::pair<int64_t, int64_t>{6, 6}));
  // Python's round(2.5) is 2 (halves to even): 25 patches at aspect 0.25.
  EXPECT_EQ(ijepa_block_size(0.3, {0.0625, 0.0625}, {0.25, 0.25}, 20, 20), (std::pair<int64_t, int64_t>{2, 10}));
}

TEST(IjepaMasks, BlocksInRangeContextOutsideTargetsEqualCountsAndDeterministic) {
  IjepaConfig cfg;  // the release's: 4 targets of 15-20 %, context 85-100 %, min_keep 10
  torch::manual_seed(7);
  IjepaMasks m = ijepa_block_masks(8, 14, 14, cfg);
  ASSERT_EQ(m.targets.size(), 4u);
  const auto [th, tw] = m.target_size;
  const double area = static_cast<double>(th * tw) / 196.0, aspect = static_cast<double>(th) / static_cast<double>(tw);
  EXPECT_GE(area, 0.10);  // about the drawn scale, after rounding
  EXPECT_LE(area, 0.25);
  EXPECT_GE(aspect, 0.75 * 0.7);
  EXPECT_LE(aspect, 1.5 / 0.7);
  EXPECT_EQ(m.context.size(0), 8);
  EXPECT_GT(m.context.size(1), cfg.min_keep - 1);
  for (int64_t b = 0; b < 8; ++b) {
    std::set<int64_t> context;
    for (int64_t j = 0; j < m.context.size(1); ++j) context.insert(m.context[b][j].item<int64_t>());
    EXPECT_EQ(context.size(), static_cast<size_t>(m.context.size(1)));
    for (const auto& t : m.targets) {
      ASSERT_EQ(t.sizes(), m.targets.front().sizes());
      int64_t r0 = 99, r1 = -1, c0 = 99, c1 = -1;
      for (int64_t j = 0; j < t.size(1); ++j) {
        const int64_t id = t[b][j].item<int64_t>();
        ASSERT_GE(id, 0);
        ASSERT_LT(id, 196);
        EXPECT_EQ(context.count(id), 0u) << "image " << b << ": patch " << id << " is context and target";
        r0 = std::min(r0, id / 14), r1 = std::max(r1, id / 14), c0 = std::min(c0, id % 14), c1 = std::max(c1, id % 14);
      }
      EXPECT_LT(r1 - r0, th);  // inside one th x tw block
      EXPECT_LT(c1 - c0, tw);
      EXPECT_LT(r1, 13);  // randint(0, side - size) never reaches the last row or column
      EXPECT_LT(c1, 13);
    }
  }
  torch::manual_seed(7);
  IjepaMasks again = ijepa_block_masks(8, 14, 14, cfg);
  EXPECT_TRUE(torch::equal(again.context, m.context));
  for (size_t t = 0; t < 4; ++t) EXPECT_TRUE(torch::equal(again.targets[t], m.targets[t]));
  IjepaMasks other = ijepa_block_masks(8, 14, 14, cfg);
  EXPECT_FALSE(other.context.sizes() == m.context.sizes() && torch::equal(other.context, m.context));
  // Overlap allowed: the context is its whole block.
  cfg.allow_overlap = true;
  IjepaMasks whole = ijepa_block_masks(4, 14, 14, cfg);
  EXPECT_EQ(whole.context.size(1), whole.context_size.first * whole.context_size.second);
}

TEST(IjepaConfigKeys, KeysElsewhereAndImpossibleBlocksAreErrorsNamingTheKey) {
  auto msg = test::error_of<ConfigError>(
      [] { load_config_from_string("objective:\n  ijepa:\n    predictor_depth: 3\n", "nepa.yaml"); });
  EXPECT_NE(msg.find("nepa.yaml: objective.ijepa.predictor_depth: an I-JEPA key, but objective.name is nepa"),
            std::string::npos)
      << msg;
  const std::string ij = "model:\n  image_size: 16\n  patch_size: 4\n  is_causal: false\n  use_cls_token: false\n"
                         "data:\n  image_size: 16\ntrain:\n  ema: false\nobjective:\n  name: ijepa\n"
                         "  ijepa:\n    min_keep: 1\n    pred_mask_scale: [0.25, 0.3]\n";
  EXPECT_NO_THROW(load_config_from_string(ij, "ij.yaml"));
  msg = test::error_of<ConfigError>([&] { load_config_from_string(ij, "ij.yaml", {"objective.ijepa.min_keep=10"}); });
  EXPECT_NE(msg.find("objective.ijepa.min_keep: the smallest block on the 4 x 4 grid (target 2 x 2) holds 4 patches"),
            std::string::npos)
      << msg;
  // The release's 15-20 % target blocks are single patches on a 4 x 4 grid: redrawing them until they hold more
  // than one patch would never end.
  msg = test::error_of<ConfigError>(
      [&] { load_config_from_string(ij, "ij.yaml", {"objective.ijepa.pred_mask_scale=[0.15, 0.2]"}); });
  EXPECT_NE(msg.find("(target 1 x 1) holds 1 patches"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(ij, "ij.yaml", {"train.ema=true"}); });
  EXPECT_NE(msg.find("train.ema: I-JEPA's target encoder is already an EMA"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(ij, "ij.yaml", {"model.use_cls_token=true"}); });
  EXPECT_NE(msg.find("model.use_cls_token: I-JEPA's encoder has no CLS token"), std::string::npos) << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(ij, "ij.yaml", {"objective.ijepa.predictor_heads=5"}); });
  EXPECT_NE(msg.find("objective.ijepa.predictor_heads: 5 heads do not divide predictor_width 384"), std::string::npos)
      << msg;
  msg = test::error_of<ConfigError>([&] { load_config_from_string(ij, "ij.yaml", {"objective.ijepa.ema=[0.99, 0.9]"}); });
  EXPECT_NE(msg.find("objective.ijepa.ema: must be [start, end]"), std::string::npos) << msg;
}

TEST(IjepaObjective, TargetStartsAsTheBackboneTakesNoGradientAndFollowsWithTheScheduledMomentum) {
  Config c = ijepa_config();
  torch::manual_seed(0);
  ViTNepaModel trunk(c.model);
  PretrainTask task(c, trunk, nullptr, nullptr, torch::kCPU);
  auto names = task.module().named_parameters();
  ASSERT_TRUE(names.contains("target_encoder.encoder.layer.0.attention.attention.query.weight"));
  ASSERT_TRUE(names.contains("ijepa_predictor.predictor_blocks.1.output.dense.weight"));
  for (const auto& p : trunk->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), names["target_encoder." + p.key()])) << p.key();
  size_t grouped_target = 0, grouped_predictor = 0;
  for (const auto& g : task.param_groups())
    for (const auto& n : g.param_names) {
      grouped_target += n.rfind("target_encoder.", 0) == 0;
      grouped_predictor += n.rfind("ijepa_predictor.", 0) == 0;
    }
  EXPECT_EQ(grouped_target, 0u);
  EXPECT_GT(grouped_predictor, 0u);

  task.begin(10);
  torch::manual_seed(5);
  Batch batch;
  batch.images = torch::randn({4, 3, 16, 16});
  StepOutput out = task.forward(batch);
  out.loss.backward();
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  names = task.module().named_parameters();
  EXPECT_FALSE(names["target_encoder.embeddings.patch_embeddings.projection.weight"].grad().defined());
  EXPECT_GT(names["ijepa_predictor.mask_token"].grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(names["embeddings.patch_embeddings.projection.weight"].grad().abs().sum().item<double>(), 0.0);

  // Move the backbone, then step 3 of 10: m = 0.9 + 2 x 0.1 / 10 = 0.92.
  EXPECT_DOUBLE_EQ(IjepaObjective::momentum({0.9, 1.0}, 3, 10), 0.92);
  EXPECT_DOUBLE_EQ(IjepaObjective::momentum({0.996, 1.0}, 1, 100), 0.996);
  const std::string w = "encoder.layer.1.output.dense.weight";
  torch::Tensor before = names["target_encoder." + w].clone();
  {
    torch::NoGradGuard g;
    names[w].add_(1.0);
  }
  task.after_step(3, torch::ones({}));  // skipped: the target stays
  EXPECT_TRUE(torch::equal(names["target_encoder." + w], before));
  task.after_step(3, torch::zeros({}));
  torch::Tensor want = before * 0.92 + names[w] * 0.08;
  EXPECT_LE(test::max_abs_diff(names["target_encoder." + w], want), 1e-6);

  test::TempDir dir;
  task.export_final(dir.file("final"));
  LoadedModel back = load_hf_model(dir.file("final"), "", /*strict=*/true);
  auto exported = back.model->named_parameters();
  EXPECT_TRUE(torch::equal(exported[w], names["target_encoder." + w]));  // the target encoder is the deliverable
  EXPECT_FALSE(torch::equal(exported[w], names[w]));
}

// An I-JEPA run stopped by SIGTERM after step 3 and resumed in a fresh task: the masks replay from the checkpointed
// generator and the target encoder (a checkpointed module) and momentum schedule continue, so every per-step loss,
// both encoders and the predictor equal an uninterrupted run's.
// objective.backbone_init depth_scaled (I-JEPA's encoder init) is applied before the target encoder is copied:
// both start from the rescaled weights. An unknown name is a config error naming the key and the choices.
TEST(IjepaObjective, TheReleaseInitReachesTheTrunkBeforeTheTargetCopiesIt) {
  Config c = ijepa_config();
  c.objective.backbone_init = "depth_scaled";
  torch::manual_seed(0);
  ViTNepaModel trunk(c.model);
  const torch::Tensor fc2_before = trunk->encoder->layer[1]->as<NepaLayer>()->output->dense->weight.clone();
  PretrainTask task(c, trunk, nullptr, nullptr, torch::kCPU);
  const torch::Tensor fc2 = trunk->encoder->layer[1]->as<NepaLayer>()->output->dense->weight;
  EXPECT_FALSE(torch::equal(fc2, fc2_before));  // re-drawn, then divided by sqrt(4) (exactly: Model.*Initialisations*)
  auto names = task.module().named_parameters();
  for (const auto& p : trunk->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), names["target_encoder." + p.key()])) << p.key();

  const std::string msg = test::error_of<ConfigError>([&] {
    load_config_from_string("objective:\n  backbone_init: jax\n", "run.yaml");
  });
  EXPECT_EQ(msg, "config error: run.yaml: objective.backbone_init: unknown initialisation 'jax' (hf, xavier, "
                 "depth_scaled)");
}

// The k-NN readout during pretraining measures the target encoder, the model the export writes: changing the
// context encoder (the backbone) leaves its figures as they were, the same change to the target does not.
TEST(IjepaObjective, TheKnnReadoutReadsTheTargetEncoder) {
  Config c = ijepa_config();
  c.data.dataset = "synthetic";
  c.data.synthetic_size = 48;
  c.data.num_workers = 1;
  c.eval.knn_k = 5;
  torch::manual_seed(0);
  ViTNepaModel trunk(c.model);
  PretrainTask task(c, trunk, make_dataset(c.data, c.data.split), make_dataset(c.data, c.data.eval_split),
                    torch::kCPU);
  const auto before = task.evaluate(0);
  ASSERT_EQ(before.size(), 2u);
  auto params = task.module().named_parameters();
  {
    torch::NoGradGuard g;
    for (const auto& p : trunk->parameters()) p.mul_(-3.0).add_(0.1);
  }
  const auto after_trunk = task.evaluate(0);
  EXPECT_EQ(after_trunk, before);
  {
    torch::NoGradGuard g;
    for (const auto& p : params)
      if (p.key().rfind("target_encoder.", 0) == 0) p.value().mul_(-3.0).add_(0.1);
  }
  EXPECT_NE(task.evaluate(0), before);  // the same change made to the target encoder is seen

  IjepaObjective o(c.objective.ijepa, c.model);
  o.attach(trunk);
  EXPECT_EQ(o.readout_encoder(trunk).ptr(), o.modules()[1].second);
}

TEST(IjepaObjective, ARunResumesExactly) {
  test::TempDir dir;
  Config c = test::tiny_train_config(dir.file("ref"));
  const Config j = ijepa_config();
  c.model = j.model;
  c.model.drop_path_prob = 0.1;
  c.objective = j.objective;
  c.train.ema = false;
  c.schedule.max_steps = 10;
  validate(c);
  const std::string checkpoint = test::expect_resumes_exactly(c, dir.file("stopped"), "target_encoder.layernorm.weight");
  auto ckpt = load_safetensors(checkpoint);
  EXPECT_TRUE(ckpt.count("model.ijepa_predictor.mask_token")) << checkpoint;
}
