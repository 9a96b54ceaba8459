// UPerNet's structure (pyramid strides, head shapes, mmseg's parameter names) and SyncBN: two ranks with half a
// batch each must train as one process on the whole batch. Equality with a PyTorch reference of the same model is
// in test_upernet_parity.cpp (it needs the Python fixtures).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/run_ranks.h"
#include "nepa/io/hf_checkpoint.h"
#include "model/upernet_test_util.h"
#include "nepa/model/segmenter.h"
#include "nepa/model/upernet.h"
#include "test_util.h"

namespace nepa {
namespace {

std::vector<torch::Tensor> grids(int64_t batch, int64_t dim, int64_t h, int64_t w, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> out;
  for (int i = 0; i < 4; ++i) out.push_back(torch::randn({batch, dim, h, w}));
  return out;
}

// The pyramid turns stride-16 grids into strides 4/8/16/32 at the backbone's width, for the B and L widths; the
// heads give class maps at strides 4 (decode) and 16 (auxiliary). A 518 px image on 14 px patches is a 37x37
// grid: odd sizes must survive the max-pool (floor) and the upsampling back.
TEST(UPerNet, PyramidStridesAndHeadShapesForBaseAndLarge) {
  torch::NoGradGuard no_grad;
  for (int64_t dim : {768, 1024}) {
    SCOPED_TRACE(dim);
    FeaturePyramid pyramid(dim);
    const auto levels = pyramid->forward(grids(1, dim, 5, 5, 0));
    ASSERT_EQ(levels.size(), 4u);
    const std::vector<int64_t> sides = {20, 10, 5, 2};
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(levels[i].sizes(), torch::IntArrayRef({1, dim, sides[i], sides[i]})) << i;
  }
  UPerNetOptions o = test::small_upernet_options();
  UPerNet net(o);
  net->eval();
  const auto out = net->forward(grids(2, o.in_channels, 37, 37, 1));
  EXPECT_EQ(out.logits.sizes(), torch::IntArrayRef({2, o.num_classes, 148, 148}));
  EXPECT_EQ(out.aux_logits.sizes(), torch::IntArrayRef({2, o.num_classes, 37, 37}));
}

TEST(UPerNet, ParameterNamesAreMmsegs) {
  UPerNet net(test::small_upernet_options());
  const auto sd = state_dict(*net);
  for (const char* name :
       {"backbone.fpn1.0.weight", "backbone.fpn1.1.running_var", "backbone.fpn1.3.bias", "backbone.fpn2.0.weight",
        "decode_head.psp_modules.3.1.conv.weight", "decode_head.psp_modules.0.1.bn.weight",
        "decode_head.bottleneck.conv.weight", "decode_head.lateral_convs.2.bn.running_mean",
        "decode_head.fpn_convs.0.conv.weight", "decode_head.fpn_bottleneck.bn.bias", "decode_head.conv_seg.weight",
        "decode_head.conv_seg.bias", "auxiliary_head.convs.0.conv.weight", "auxiliary_head.conv_seg.bias"})
    EXPECT_EQ(sd.count(name), 1u) << name;
  EXPECT_EQ(sd.count("decode_head.bottleneck.conv.bias"), 0u) << "a conv followed by BatchNorm has no bias";
}

// Train-mode outputs, parameter gradients (averaged over ranks, as GradSync does) and running statistics of two
// ranks holding half a batch each equal one process on the whole batch.
TEST(UPerNet, SyncBatchNormOverTwoRanksEqualsOneProcessOnTheWholeBatch) {
  torch::set_num_threads(1);
  const UPerNetOptions o = test::small_upernet_options();
  torch::manual_seed(3);
  UPerNet single(o);
  std::map<std::string, torch::Tensor> init;  // copies: state_dict() hands out the module's own tensors
  for (const auto& [name, t] : state_dict(*single)) init[name] = t.clone();
  const auto input = grids(4, o.in_channels, 6, 6, 4);
  torch::manual_seed(5);
  const torch::Tensor weights_main = torch::randn({4, o.num_classes, 24, 24}),
                      weights_aux = torch::randn({4, o.num_classes, 6, 6});
  auto loss_of = [&](const UPerNetOutput& out, int64_t from, int64_t n) {
    // A per-rank mean, as each rank's cross entropy is: the gradient average makes it the global mean.
    return (out.logits * weights_main.narrow(0, from, n)).mean() +
           0.4 * (out.aux_logits * weights_aux.narrow(0, from, n)).mean();
  };
  single->train();
  const UPerNetOutput whole = single->forward(input);
  loss_of(whole, 0, 4).backward();

  std::vector<std::map<std::string, torch::Tensor>> grads(2), states(2);
  std::vector<UPerNetOutput> outs(2);
  std::vector<UPerNet> nets;
  for (int r = 0; r < 2; ++r) {  // built here: the rank threads would share torch's generator
    nets.emplace_back(o);
    load_state_dict(*nets.back(), init, /*strict=*/true, "init");
  }
  dist::run_ranks(2, [&](dist::Comm& c) {
    UPerNet& net = nets[c.rank()];
    net->set_batch_norm_sync([&c](torch::Tensor& t) { c.all_reduce(t); });
    net->train();
    std::vector<torch::Tensor> half;
    for (const auto& g : input) half.push_back(g.narrow(0, 2 * c.rank(), 2));
    outs[c.rank()] = net->forward(half);
    loss_of(outs[c.rank()], 2 * c.rank(), 2).backward();
    for (const auto& p : net->named_parameters()) {
      torch::Tensor g = p.value().grad().clone();
      c.all_reduce(g);
      grads[c.rank()][p.key()] = g / 2;
    }
    states[c.rank()] = state_dict(*net);
  });
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE(r);
    EXPECT_LE(test::max_abs_diff(outs[r].logits, whole.logits.narrow(0, 2 * r, 2)), 1e-5);
    EXPECT_LE(test::max_abs_diff(outs[r].aux_logits, whole.aux_logits.narrow(0, 2 * r, 2)), 1e-5);
    for (const auto& p : single->named_parameters())
      EXPECT_LE(test::max_abs_diff(grads[r].at(p.key()), p.value().grad()), 1e-6) << p.key();
    for (const auto& [name, t] : state_dict(*single)) {
      if (name.find("running_") == std::string::npos) continue;
      EXPECT_LE(test::max_abs_diff(states[r].at(name), t), 1e-6) << name;
    }
  }
  // Without the sync each rank normalises with its own half's statistics: visibly different.
  UPerNet unsynced(o);
  load_state_dict(*unsynced, init, true, "init");
  unsynced->train();
  std::vector<torch::Tensor> first;
  for (const auto& g : input) first.push_back(g.narrow(0, 0, 2));
  EXPECT_GT(test::max_abs_diff(unsynced->forward(first).logits, whole.logits.narrow(0, 0, 2)), 1e-3);
}

// The segmenter feeds the heads the patch tokens of the chosen blocks as grids: equal to the backbone's own hidden
// states of those blocks, reshaped, on a non-square image; gradients reach the backbone.
TEST(NepaSegmenter, FeaturesAreTheChosenBlocksPatchGridsAndTrainEndToEnd) {
  ModelConfig m = test::tiny_model_config();
  m.num_hidden_layers = 4;
  m.is_causal = false;
  UPerNetOptions o = test::small_upernet_options();
  o.in_channels = m.hidden_size;
  NepaSegmenter seg(m, o, std::vector<int>{0, 1, 2, 3});
  seg->eval();
  torch::manual_seed(2);
  const torch::Tensor x = torch::randn({2, 3, 3 * m.patch_size, 5 * m.patch_size});
  ForwardOptions opts;
  opts.output_hidden_states = true;
  const auto hidden = seg->vit_nepa->forward(x, opts).hidden_states;
  const auto grids = seg->features(x);
  ASSERT_EQ(grids.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(grids[i].sizes(), torch::IntArrayRef({2, m.hidden_size, 3, 5}));
    // Grid cell (row 1, column 2) is patch token 1 * 5 + 2, after the CLS token.
    EXPECT_TRUE(torch::equal(grids[i].select(2, 1).select(2, 2), hidden[i + 1].select(1, 1 + 7))) << i;
  }
  seg->train();
  const UPerNetOutput out = seg->forward(x);
  EXPECT_EQ(out.logits.sizes(), torch::IntArrayRef({2, o.num_classes, 12, 20}));
  out.logits.sum().backward();
  const auto names = seg->named_parameters();
  const torch::Tensor g = names["vit_nepa.embeddings.patch_embeddings.projection.weight"].grad();
  ASSERT_TRUE(g.defined());
  EXPECT_GT(g.abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(names.contains("vit_nepa.embeddings.patch_embeddings.projection.weight"));
  EXPECT_TRUE(names.contains("backbone.fpn1.0.weight"));
  EXPECT_TRUE(names.contains("decode_head.conv_seg.weight"));
  EXPECT_FALSE(names.contains("upernet.decode_head.conv_seg.weight"));
  EXPECT_THROW(NepaSegmenter(m, o, std::vector<int>{0, 1, 2}), std::invalid_argument);
  EXPECT_THROW(NepaSegmenter(m, o, std::vector<int>{0, 2, 1, 3}), std::invalid_argument);
}

}  // namespace
}  // namespace nepa
