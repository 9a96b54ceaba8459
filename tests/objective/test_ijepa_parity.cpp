// I-JEPA parity with the float64 PyTorch reference written from the release's facts
// (tests/reference/ijepa_reference.py, fixtures by make_ijepa_fixtures.py): the target encoder's layer-normed
// features at the target blocks, the context encoder on the context block, the predictor's outputs, the smooth L1
// loss and the gradients of the context encoder and the predictor (none for the target encoder), in float32
// within 1e-5, with fixed masks.
#include <gtest/gtest.h>

#include <fstream>

#include "nepa/config/hf_config.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "nepa/objective/ijepa.h"
#include "test_util.h"

using namespace nepa;
using nepa::test::max_abs_diff;

namespace {
constexpr double kTol = 1e-5;
const std::vector<std::string> kCases = {"ijepa_tiny", "ijepa_rope"};
std::string case_dir(const std::string& name) { return std::string(NEPA_FIXTURE_DIR) + "/ijepa/" + name; }
}  // namespace

TEST(IjepaParityFixtures, GeneratorAndTestAgreeOnTheCases) {
  std::vector<std::string> written;
  std::ifstream in(std::string(NEPA_FIXTURE_DIR) + "/ijepa/cases.txt");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) written.push_back(line);
  EXPECT_EQ(written, kCases);
}

class IjepaParity : public ::testing::TestWithParam<std::string> {};

TEST_P(IjepaParity, TargetsPredictionsLossAndGradientsMatchTheReference) {
  const std::string dir = case_dir(GetParam());
  auto inputs = load_safetensors(dir + "/input.safetensors");
  auto expected = load_safetensors(dir + "/expected.safetensors");
  auto weights = load_safetensors(dir + "/model.safetensors");
  auto meta = [&](const std::string& k) { return static_cast<int>(expected.at("meta." + k).item<double>()); };

  const ModelConfig model = read_hf_config(dir + "/config.json").model;
  IjepaConfig ijepa;
  ijepa.predictor_depth = meta("depth");
  ijepa.predictor_width = meta("width");
  ijepa.predictor_heads = meta("heads");

  ViTNepaModel encoder(model), target(model);
  IjepaPredictor predictor(ijepa, model);
  std::map<std::string, torch::Tensor> enc_w, tgt_w, pred_w;
  for (const auto& [k, v] : weights) {
    if (k.rfind("target_encoder.", 0) == 0) tgt_w[k.substr(15)] = v;
    else if (k.rfind("ijepa_predictor.", 0) == 0) pred_w[k.substr(16)] = v;
    else enc_w[k] = v;
  }
  load_state_dict(*encoder, enc_w, /*strict=*/true, dir);
  load_state_dict(*target, tgt_w, /*strict=*/true, dir);
  load_state_dict(*predictor, pred_w, /*strict=*/true, dir);
  for (auto& p : target->parameters()) p.set_requires_grad(false);
  encoder->eval();
  target->eval();
  predictor->eval();

  IjepaMasks masks;
  masks.context = inputs.at("context_ids");
  for (const auto& t : inputs.at("target_ids").unbind(0)) masks.targets.push_back(t.contiguous());
  IjepaLoss out = ijepa_forward_loss(encoder, target, predictor, inputs.at("pixel_values"), masks);
  out.loss.backward();
  const double dt = max_abs_diff(out.target, expected.at("target"));
  const double dp = max_abs_diff(out.pred, expected.at("pred"));
  const double dl = std::abs(out.loss.item<double>() - expected.at("loss").item<double>());
  std::cout << "  " << GetParam() << ": target " << dt << ", pred " << dp << ", loss " << dl << "\n";
  EXPECT_LE(dt, kTol);
  EXPECT_LE(dp, kTol);
  EXPECT_LE(dl, kTol);

  std::map<std::string, torch::Tensor> grads;
  for (const auto& p : encoder->named_parameters()) grads[p.key()] = p.value().grad();
  for (const auto& p : predictor->named_parameters()) grads["ijepa_predictor." + p.key()] = p.value().grad();
  test::expect_gradients_match(grads, expected, kTol);
  for (const auto& p : target->parameters()) EXPECT_FALSE(p.grad().defined());
}

INSTANTIATE_TEST_SUITE_P(Cases, IjepaParity, ::testing::ValuesIn(kCases));
