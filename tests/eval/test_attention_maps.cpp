#include "nepa/eval/attention_maps.h"

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "nepa/io/hf_checkpoint.h"
#include "test_util.h"

using namespace nepa;
using nepa::test::max_abs_diff;

namespace {

ModelConfig tiny(bool causal) {
  ModelConfig c = nepa::test::tiny_model_config();  // 16x16 inputs, 4x4 grid, width 32, 2 heads, 2 blocks
  c.layerscale_value = 0.5;                          // so the blocks change the hidden states visibly
  c.is_causal = causal;
  return c;
}

torch::Tensor pixels(int64_t b = 2) { return torch::rand({b, 3, 16, 16}) * 2 - 1; }

}  // namespace

// The probabilities are the ones the model attends with: multiplied by V they give the context that SDPA
// computes in the forward, and pushed through the rest of the block they reproduce the block's output.
TEST(AttentionMaps, ProbabilitiesTimesValueReproduceTheLayer) {
  for (bool causal : {true, false}) {
    torch::manual_seed(3);
    ViTNepaModel model(tiny(/*causal=*/true));  // the config says causal; `causal` is what we ask for
    model->eval();
    torch::NoGradGuard g;
    torch::Tensor px = pixels();
    for (int64_t l = 0; l < 2; ++l) {
      SCOPED_TRACE("causal " + std::to_string(causal) + " layer " + std::to_string(l));
      torch::Tensor probs = layer_attention(model, px, l, causal);
      EXPECT_TRUE(model->is_causal());  // the model's own flag is restored
      const int64_t b = 2, h = 2, t = 17, d = 16;
      ASSERT_EQ(probs.sizes(), torch::IntArrayRef({b, h, t, t}));
      EXPECT_LT(max_abs_diff(probs.sum(-1), torch::ones({b, h, t})), 1e-6);
      torch::Tensor future = probs.masked_select(torch::ones({t, t}, torch::kBool).triu(1));  // key after query
      if (causal) EXPECT_EQ(future.abs().max().item<float>(), 0.0f);
      else EXPECT_GT(future.min().item<float>(), 0.0f);

      model->set_causal(causal);
      ForwardOptions o;
      o.output_hidden_states = true;
      NepaOutputs out = model->forward(px, o);  // the SDPA path
      model->set_causal(true);
      auto* block = model->encoder->layer[l]->as<NepaLayer>();
      auto* attn = block->attention->attention.get();
      torch::Tensor x = block->layernorm_before->forward(out.hidden_states[l]);
      auto [cos, sin] = model->rope_tables(4, 4, px.device());
      torch::Tensor sdpa = attn->forward(x, cos, sin, causal, /*need_probs=*/false).first;
      torch::Tensor v = attn->value->forward(x).view({b, t, h, d}).transpose(1, 2);
      torch::Tensor context = torch::matmul(probs, v).transpose(1, 2).reshape({b, t, h * d});
      EXPECT_LT(max_abs_diff(context, sdpa), 1e-5);

      // The rest of block l, written out (NEPA-SPEC §1), from these probabilities: the block's own output.
      torch::Tensor h1 = out.hidden_states[l] + block->layer_scale->forward(block->attention->output->forward(context));
      torch::Tensor h2 =
          h1 + block->output->forward(block->intermediate->forward(block->layernorm_after->forward(h1)));
      EXPECT_LT(max_abs_diff(h2, out.hidden_states[l + 1]), 1e-5);
    }
  }
}

// A model whose attention is known by construction. No RoPE and no QK-Norm, a learned absolute position
// embedding; the patch embedding and CLS token are zero, and the position embedding is zero except at the
// target patch's token, where it is e_0. So every token entering block 0 is the zero vector except the target's,
// and layernorm_before (weight 1, bias 0) keeps zeros at zero and maps e_0 to a vector whose first entry is
// (1 - 1/D) / sqrt((1/D)(1 - 1/D)) = sqrt(D - 1). Head 0's query is its bias e_0 (query weights zero), its key
// is c * x[0] in dimension 0 (one key weight c, the rest zero): the score q.k / sqrt(d) is
// s = c sqrt(D - 1) / sqrt(d) for the target key and exactly 0 for every other key. Head 0 of every query that
// can see the target therefore puts e^s / (e^s + n - 1) on it (n = visible keys), and head 1 (zero query)
// attends uniformly. The maps must have their maximum at the target.
TEST(AttentionMaps, AHeadThatAttendsToOneFixedPatch) {
  ModelConfig c = tiny(false);
  c.num_hidden_layers = 1;
  c.use_rope = false;
  c.qk_norm = false;
  c.qk_norm_affine = false;
  c.use_abs_pos_embed = true;
  const int64_t target = 6, gh = 4, gw = 4, D = 32, d = 16, t = 17;  // target = patch (1, 2)
  const double key_weight = 10.0;
  ViTNepaModel model(c);
  model->eval();
  {
    torch::NoGradGuard g;
    model->embeddings->patch_embeddings->projection->weight.zero_();
    model->embeddings->patch_embeddings->projection->bias.zero_();
    model->embeddings->cls_token.zero_();
    model->embeddings->position_embeddings.zero_();
    model->embeddings->position_embeddings[0][1 + target][0] = 1.0;
    auto* attn = model->encoder->layer[0]->as<NepaLayer>()->attention->attention.get();
    attn->query->weight.zero_();
    attn->query->bias.zero_();
    attn->query->bias[0] = 1.0;  // head 0, dimension 0
    attn->key->weight.zero_();
    attn->key->bias.zero_();
    attn->key->weight[0][0] = key_weight;
  }
  const double s = key_weight * std::sqrt(static_cast<double>(D - 1)) / std::sqrt(static_cast<double>(d));
  torch::Tensor px = pixels();  // any image: the patch embedding ignores it
  std::vector<PatchQuery> all;
  for (int64_t i = 0; i < gh * gw; ++i) all.push_back({i / gw, i % gw});

  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    torch::Tensor maps = patch_attention_maps(layer_attention(model, px, 0, causal), all, gh, gw);
    ASSERT_EQ(maps.sizes(), torch::IntArrayRef({2, gh * gw, 2, gh, gw}));
    for (int64_t q = 0; q < gh * gw; ++q) {
      const int64_t visible = causal ? q + 2 : t;  // CLS + patches 0..q, or all tokens
      if (causal && q < target) {                  // the target lies in this query's future: not seen
        EXPECT_EQ(maps[0][q][0].flatten()[target].item<float>(), 0.0f);
        continue;
      }
      const double expected = std::exp(s) / (std::exp(s) + visible - 1);
      for (int64_t b = 0; b < 2; ++b) {
        torch::Tensor head0 = maps[b][q][0].flatten(), mean = maps[b][q].mean(0).flatten();
        EXPECT_NEAR(head0[target].item<double>(), expected, 1e-6) << "query " << q;
        EXPECT_EQ(head0.argmax().item<int64_t>(), target) << "query " << q;
        EXPECT_EQ(mean.argmax().item<int64_t>(), target) << "query " << q;
        EXPECT_NEAR(maps[b][q][1].flatten()[0].item<double>(), 1.0 / visible, 1e-6);  // head 1 uniform
      }
    }
  }
}

TEST(AttentionMaps, SimilarityIsTheCosineOfTheOutputEmbeddings) {
  torch::manual_seed(5);
  ViTNepaModel model(tiny(true));
  model->eval();
  torch::NoGradGuard g;
  torch::Tensor h = model->forward(pixels()).last_hidden_state;
  std::vector<PatchQuery> queries = {{0, 0}, {2, 1}, {3, 3}};
  torch::Tensor maps = patch_similarity_maps(h, queries, 4, 4);
  ASSERT_EQ(maps.sizes(), torch::IntArrayRef({2, 3, 4, 4}));
  for (int64_t b = 0; b < 2; ++b)
    for (size_t q = 0; q < queries.size(); ++q) {
      const int64_t qi = queries[q].row * 4 + queries[q].col;
      EXPECT_NEAR(maps[b][q][queries[q].row][queries[q].col].item<double>(), 1.0, 1e-6);
      // By hand, in float64: token 1 + j is patch j (token 0 is CLS).
      torch::Tensor a = h[b][1 + qi].to(torch::kFloat64);
      for (int64_t j = 0; j < 16; ++j) {
        torch::Tensor o = h[b][1 + j].to(torch::kFloat64);
        const double cosine = (a.dot(o) / (a.norm() * o.norm())).item<double>();
        EXPECT_NEAR(maps[b][q][j / 4][j % 4].item<double>(), cosine, 1e-6) << "query " << qi << " patch " << j;
      }
    }
}

TEST(AttentionMaps, PatchQueries) {
  EXPECT_EQ(parse_patch_query("13", 4, 4).row, 3);
  EXPECT_EQ(parse_patch_query("13", 4, 4).col, 1);
  EXPECT_EQ(parse_patch_query("2,3", 4, 4).row, 2);
  EXPECT_EQ(parse_patch_query("2,3", 4, 4).col, 3);
  for (const char* bad : {"16", "-1", "4,0", "0,4", "x", "1,", "1.5"})
    EXPECT_NE(test::error_of<MapInputError>([&] { parse_patch_query(bad, 4, 4); }).find(bad), std::string::npos);
  auto d = default_patch_queries(7, 7);  // the demo's grid: centre, upper left, upper right, lower middle
  ASSERT_EQ(d.size(), 4u);
  EXPECT_TRUE(d[0].row == 3 && d[0].col == 3);
  EXPECT_TRUE(d[1].row == 1 && d[1].col == 1);
  EXPECT_TRUE(d[2].row == 1 && d[2].col == 5);
  EXPECT_TRUE(d[3].row == 5 && d[3].col == 3);
  EXPECT_EQ(default_patch_queries(1, 1).size(), 1u);
}

namespace {

struct ToolRun {
  int code;
  std::string stderr_text;
};

ToolRun run_tool(const test::TempDir& dir, const std::string& args) {
  const std::string err = dir.file("stderr.txt");
  const int status = std::system((std::string(NEPA_TOOL) + " " + args + " >/dev/null 2>" + err).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, test::slurp(err)};
}

int lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

}  // namespace

// The layout of attention_maps.h: panels of P = 16 x 14 = 224 px (the smallest enlargement to >= 224 px).
TEST(AttentionMaps, CommandLineWritesTheFigureAndRefusesBadInput) {
  test::TempDir dir;
  torch::manual_seed(1);
  ViTNepaModel model(tiny(true));
  const std::string folder = dir.file("backbone");
  save_hf_model(folder, model, HfModelConfig{model->config(), {}, {}, {}});
  cv::Mat grey(16, 16, CV_8UC1), wide(12, 20, CV_8UC3);
  cv::randu(grey, 0, 255);
  cv::randu(wide, 0, 255);
  const std::string a = dir.file("a.png"), w = dir.file("wide.png");
  ASSERT_TRUE(cv::imwrite(a, grey) && cv::imwrite(w, wide));
  const int p = 224, gap = kMapGap;
  auto height = [&](int blocks, int rows) {
    return blocks * kMapTitleHeight + rows * (kMapCaptionHeight + p) + (rows - blocks) * gap +
           (blocks - 1) * kMapBlockGap;
  };

  const std::string out = dir.file("att.png");
  ToolRun r = run_tool(dir, "attention-map --model " + folder + " --image " + a + " --image " + w +
                                " --query 5 --query 1,2 --output " + out);
  ASSERT_EQ(r.code, 0) << r.stderr_text;
  cv::Mat fig = cv::imread(out);
  EXPECT_EQ(fig.cols, 3 * p + 2 * gap);  // image + 2 queries
  EXPECT_EQ(fig.rows, height(1, 2));

  r = run_tool(dir, "attention-map --per-head --layer 0 --bidirectional --model " + folder + " --model " + folder +
                        " --image " + a + " --query 5 --query 1,2 --output " + out);
  ASSERT_EQ(r.code, 0) << r.stderr_text;
  fig = cv::imread(out);
  EXPECT_EQ(fig.cols, 5 * p + 4 * gap);  // image + 2 queries x 2 heads
  EXPECT_EQ(fig.rows, height(2, 2));

  const std::string sim = dir.file("sim.png");
  r = run_tool(dir, "similarity-map --model " + folder + " --image " + a + " --output " + sim);
  ASSERT_EQ(r.code, 0) << r.stderr_text;
  fig = cv::imread(sim);
  EXPECT_EQ(fig.cols, 5 * p + 4 * gap);  // image + the 4 default queries
  EXPECT_EQ(fig.rows, height(1, 1));

  // Bad input: exit 2, one line naming what is wrong, no figure.
  const std::string none = dir.file("none.png");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"attention-map --model " + dir.file("missing") + " --image " + a, dir.file("missing")},
      {"attention-map --model " + folder + " --image " + a + " --query 16", "--query 16"},
      {"similarity-map --model " + folder + " --image " + a + " --query 4,0", "--query 4,0"},
      {"attention-map --model " + folder + " --image " + a + " --layer 2", "--layer 2"},
      {"attention-map --model " + folder + " --image " + dir.file("nope.png"), "nope.png"},
      {"similarity-map --model " + folder, "no input images"},
  };
  for (const auto& [args, says] : bad) {
    r = run_tool(dir, args + " --output " + none);
    EXPECT_EQ(r.code, 2) << args;
    EXPECT_EQ(lines(r.stderr_text), 1) << r.stderr_text;
    EXPECT_NE(r.stderr_text.find(says), std::string::npos) << r.stderr_text;
    EXPECT_FALSE(std::filesystem::exists(none)) << args;
  }
}
