// AIM parity with the float64 PyTorch reference written from the release's facts (tests/reference/aim_reference.py,
// fixtures by make_aim_fixtures.py): the trunk under the prefix-causal mask, the head's predictions, the loss on
// the normalised targets and every parameter's gradient, in float32 within 1e-5, with fixed prefix lengths.
#include <gtest/gtest.h>

#include <fstream>

#include "nepa/config/hf_config.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "nepa/objective/aim.h"
#include "test_util.h"

using namespace nepa;
using nepa::test::max_abs_diff;

namespace {
constexpr double kTol = 1e-5;
const std::vector<std::string> kCases = {"aim_tiny", "aim_rope_raw_pixels"};
std::string case_dir(const std::string& name) { return std::string(NEPA_FIXTURE_DIR) + "/aim/" + name; }
}  // namespace

TEST(AimParityFixtures, GeneratorAndTestAgreeOnTheCases) {
  std::vector<std::string> written;
  std::ifstream in(std::string(NEPA_FIXTURE_DIR) + "/aim/cases.txt");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) written.push_back(line);
  EXPECT_EQ(written, kCases);
}

class AimParity : public ::testing::TestWithParam<std::string> {};

TEST_P(AimParity, ForwardLossAndGradientsMatchTheReference) {
  const std::string dir = case_dir(GetParam());
  auto inputs = load_safetensors(dir + "/input.safetensors");
  auto expected = load_safetensors(dir + "/expected.safetensors");
  auto weights = load_safetensors(dir + "/model.safetensors");
  auto meta = [&](const std::string& k) { return expected.at("meta." + k).item<double>(); };

  const ModelConfig model = read_hf_config(dir + "/config.json").model;
  AimConfig aim;
  aim.head_blocks = static_cast<int>(meta("blocks"));
  aim.head_width = static_cast<int>(meta("width"));
  aim.head_mlp_ratio = static_cast<int>(meta("ratio"));
  aim.head_norm_eps = meta("eps");
  aim.head_pos_embed = meta("pos_embed") > 0;
  aim.norm_pix_loss = meta("norm_pix_loss") > 0;
  aim.norm_pix_eps = meta("norm_pix_eps");

  ViTNepaModel trunk(model);
  AimPixelHead head(aim, model);
  std::map<std::string, torch::Tensor> trunk_w, head_w;
  for (const auto& [k, v] : weights) (k.rfind("aim_head.", 0) == 0 ? head_w[k.substr(9)] : trunk_w[k]) = v;
  load_state_dict(*trunk, trunk_w, /*strict=*/true, dir);
  load_state_dict(*head, head_w, /*strict=*/true, dir);
  trunk->eval();  // no dropout / drop path in the reference; the mask is what pretraining adds
  head->eval();

  const torch::Tensor pixels = inputs.at("pixel_values");
  const torch::Tensor prefix = inputs.at("prefix_lengths");
  AimLoss out = aim_forward_loss(trunk, head, pixels, prefix, aim);
  ForwardOptions o;
  o.attn_mask = prefix_causal_mask(prefix, pixels.size(2) / model.patch_size * (pixels.size(3) / model.patch_size));
  const torch::Tensor hidden = trunk->forward(pixels, o).last_hidden_state;
  out.loss.backward();

  const double dh = max_abs_diff(hidden, expected.at("last_hidden_state"));
  const double dp = max_abs_diff(out.pred, expected.at("pred"));
  const double dl = std::abs(out.loss.item<double>() - expected.at("loss").item<double>());
  std::cout << "  " << GetParam() << ": hidden " << dh << ", pred " << dp << ", loss " << dl << "\n";
  EXPECT_LE(dh, kTol);
  EXPECT_LE(dp, kTol);
  EXPECT_LE(dl, kTol);

  std::map<std::string, torch::Tensor> grads;
  for (const auto& p : trunk->named_parameters()) grads[p.key()] = p.value().grad();
  for (const auto& p : head->named_parameters()) grads["aim_head." + p.key()] = p.value().grad();
  test::expect_gradients_match(grads, expected, kTol);
}

INSTANTIATE_TEST_SUITE_P(Cases, AimParity, ::testing::ValuesIn(kCases));
