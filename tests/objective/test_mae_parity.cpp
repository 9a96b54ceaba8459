// MAE parity with the float64 PyTorch reference written from the release's facts (tests/reference/mae_reference.py,
// fixtures by make_mae_fixtures.py): the encoder on the visible patches (sin-cos, RoPE or learned positions of each
// kept patch), the decoder's predictions of every patch, the loss on the hidden ones and every parameter's
// gradient, in float32 within 1e-5, with fixed masks.
#include <gtest/gtest.h>

#include <fstream>

#include "nepa/config/hf_config.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "nepa/objective/mae.h"
#include "test_util.h"

using namespace nepa;
using nepa::test::max_abs_diff;

namespace {
constexpr double kTol = 1e-5;
const std::vector<std::string> kCases = {"mae_tiny", "mae_rope_no_cls_raw", "mae_learned_pos"};
std::string case_dir(const std::string& name) { return std::string(NEPA_FIXTURE_DIR) + "/mae/" + name; }
}  // namespace

TEST(MaeParityFixtures, GeneratorAndTestAgreeOnTheCases) {
  std::vector<std::string> written;
  std::ifstream in(std::string(NEPA_FIXTURE_DIR) + "/mae/cases.txt");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) written.push_back(line);
  EXPECT_EQ(written, kCases);
}

class MaeParity : public ::testing::TestWithParam<std::string> {};

TEST_P(MaeParity, EncoderDecoderLossAndGradientsMatchTheReference) {
  const std::string dir = case_dir(GetParam());
  auto inputs = load_safetensors(dir + "/input.safetensors");
  auto expected = load_safetensors(dir + "/expected.safetensors");
  auto weights = load_safetensors(dir + "/model.safetensors");
  auto meta = [&](const std::string& k) { return expected.at("meta." + k).item<double>(); };

  const ModelConfig model = read_hf_config(dir + "/config.json").model;
  MaeConfig mae;
  mae.decoder_depth = static_cast<int>(meta("depth"));
  mae.decoder_width = static_cast<int>(meta("width"));
  mae.decoder_heads = static_cast<int>(meta("heads"));
  mae.decoder_mlp_ratio = static_cast<int>(meta("ratio"));
  mae.decoder_norm_eps = meta("eps");
  mae.norm_pix_loss = meta("norm_pix_loss") > 0;
  mae.norm_pix_eps = meta("norm_pix_eps");

  ViTNepaModel trunk(model);
  MaeDecoder decoder(mae, model);
  std::map<std::string, torch::Tensor> trunk_w, decoder_w;
  const std::string prefix = "mae_decoder.";
  for (const auto& [k, v] : weights)
    (k.rfind(prefix, 0) == 0 ? decoder_w[k.substr(prefix.size())] : trunk_w[k]) = v;
  load_state_dict(*trunk, trunk_w, /*strict=*/true, dir);
  load_state_dict(*decoder, decoder_w, /*strict=*/true, dir);
  trunk->eval();  // no RoPE augmentation, dropout or drop path in the reference
  decoder->eval();

  MaeLoss out = mae_forward_loss(trunk, decoder, inputs.at("pixel_values"), inputs.at("ids_keep"), mae);
  out.loss.backward();
  const double dl = max_abs_diff(out.latent, expected.at("latent"));
  const double dp = max_abs_diff(out.pred, expected.at("pred"));
  const double dloss = std::abs(out.loss.item<double>() - expected.at("loss").item<double>());
  std::cout << "  " << GetParam() << ": latent " << dl << ", pred " << dp << ", loss " << dloss << "\n";
  EXPECT_LE(dl, kTol);
  EXPECT_LE(dp, kTol);
  EXPECT_LE(dloss, kTol);

  std::map<std::string, torch::Tensor> grads;
  for (const auto& p : trunk->named_parameters()) grads[p.key()] = p.value().grad();
  for (const auto& p : decoder->named_parameters()) grads[prefix + p.key()] = p.value().grad();
  test::expect_gradients_match(grads, expected, kTol);
}

INSTANTIATE_TEST_SUITE_P(Cases, MaeParity, ::testing::ValuesIn(kCases));
