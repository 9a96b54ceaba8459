// UPerNet against the float64 PyTorch reference written from the description of mmseg's model
// (tests/reference/upernet_reference.py, fixture "upernet" of make_fixtures.py): eval-mode outputs (running
// statistics), train-mode outputs (batch statistics), the updated running statistics and every parameter's
// gradient, loaded by mmseg's parameter names.
#include <gtest/gtest.h>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "model/upernet_test_util.h"
#include "nepa/model/upernet.h"
#include "test_util.h"

namespace nepa {
namespace {

// One process uses ATen's batch norm; a reducer (here: a group of one, the sum over one rank) switches every
// BatchNorm to the SyncBN function, which must equal the reference just as well.
class UPerNetParity : public ::testing::TestWithParam<bool> {};

TEST_P(UPerNetParity, ForwardStatisticsAndGradientsEqualTheReference) {
  const std::string dir = std::string(NEPA_FIXTURE_DIR) + "/upernet/";
  const auto weights = load_safetensors(dir + "model.safetensors");
  const auto inputs = load_safetensors(dir + "input.safetensors");
  const auto expected = load_safetensors(dir + "expected.safetensors");
  UPerNet net(test::small_upernet_options());
  load_state_dict(*net, weights, /*strict=*/true, dir + "model.safetensors");
  if (GetParam()) net->set_batch_norm_sync([](torch::Tensor&) {});
  std::vector<torch::Tensor> grids;
  for (int i = 0; i < 4; ++i) grids.push_back(inputs.at("grid" + std::to_string(i)));

  net->eval();
  {
    torch::NoGradGuard no_grad;
    const UPerNetOutput out = net->forward(grids);
    EXPECT_LE(test::max_abs_diff(out.logits, expected.at("eval.logits")), 1e-5);
    EXPECT_LE(test::max_abs_diff(out.aux_logits, expected.at("eval.aux_logits")), 1e-5);
  }
  net->train();
  const UPerNetOutput out = net->forward(grids);
  EXPECT_LE(test::max_abs_diff(out.logits, expected.at("train.logits")), 1e-5);
  EXPECT_LE(test::max_abs_diff(out.aux_logits, expected.at("train.aux_logits")), 1e-5);
  ((out.logits * inputs.at("weights_main")).sum() + 0.4 * (out.aux_logits * inputs.at("weights_aux")).sum()).backward();
  int grads = 0, states = 0;
  const auto params = net->named_parameters();
  const auto current = state_dict(*net);
  for (const auto& [key, value] : expected) {
    if (key.rfind("grad.", 0) == 0) {
      const std::string name = key.substr(5);
      ASSERT_TRUE(params.contains(name)) << name;
      const torch::Tensor g = params[name].grad();
      ASSERT_TRUE(g.defined()) << name;
      const double scale = std::max(1.0, value.abs().max().item<double>());
      EXPECT_LE(test::max_abs_diff(g, value) / scale, 1e-4) << name;
      ++grads;
    } else if (key.rfind("state.", 0) == 0) {
      EXPECT_LE(test::max_abs_diff(current.at(key.substr(6)), value), 1e-5) << key;
      ++states;
    }
  }
  EXPECT_EQ(grads, static_cast<int>(params.size()));
  // 14 BatchNorms: fpn1's, 4 pooling branches, the PPM bottleneck, 3 laterals, 3 FPN convs, the fusion, the FCN
  // head's conv.
  EXPECT_EQ(states, 2 * 14);
}

INSTANTIATE_TEST_SUITE_P(BatchNorm, UPerNetParity, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "SyncFunction" : "Aten"; });

}  // namespace
}  // namespace nepa
