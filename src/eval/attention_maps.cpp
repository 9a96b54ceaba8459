#include "nepa/eval/attention_maps.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>

#include "nepa/data/dataset.h"
#include "nepa/data/transforms.h"
#include "nepa/eval/seg_render.h"
#include "nepa/io/hf_checkpoint.h"

namespace fs = std::filesystem;

namespace nepa {
namespace {

// Token indices of the queries: the patches are the last gh*gw tokens (after CLS), as RoPE treats them.
torch::Tensor query_tokens(const std::vector<PatchQuery>& queries, int64_t t, int64_t gh, int64_t gw,
                           const torch::Device& device) {
  std::vector<int64_t> idx;
  for (const auto& q : queries) idx.push_back(t - gh * gw + q.row * gw + q.col);
  return torch::tensor(idx, torch::TensorOptions().dtype(torch::kInt64)).to(device);
}

void check_grid(int64_t t, int64_t gh, int64_t gw, const char* what) {
  if (gh <= 0 || gw <= 0 || t < gh * gw)
    throw std::invalid_argument(fmt::format("{}: {} tokens cannot hold a {}x{} patch grid", what, t, gh, gw));
}

// Pixels as the model reads them: x / 255, normalised with mean 0.5 / std 0.5 per channel (NEPA-SPEC §1).
torch::Tensor to_pixel_values(const std::vector<cv::Mat>& images) {
  const cv::Mat& first = images.front();
  const int c = first.channels();
  torch::Tensor out = torch::empty({static_cast<int64_t>(images.size()), c, first.rows, first.cols});
  const std::vector<double> mean(c, 0.5), std(c, 0.5);
  for (size_t i = 0; i < images.size(); ++i) normalise_into(images[i], mean, std, out[i].data_ptr<float>());
  return out;
}

// The model's input as a picture: RGB, enlarged `scale` times with nearest neighbour so its pixels stay visible.
cv::Mat display_image(const cv::Mat& image, int scale) {
  cv::Mat rgb, big;
  if (image.channels() == 1) cv::cvtColor(image, rgb, cv::COLOR_GRAY2RGB);
  else rgb = image;
  cv::resize(rgb, big, cv::Size(rgb.cols * scale, rgb.rows * scale), 0, 0, cv::INTER_NEAREST);
  return big;
}

// Sets the model's attention mode for a scope and restores its own afterwards, also on an exception.
class CausalScope {
 public:
  CausalScope(ViTNepaModel& model, bool causal) : model_(model), was_(model->is_causal()) { model->set_causal(causal); }
  ~CausalScope() { model_->set_causal(was_); }
  CausalScope(const CausalScope&) = delete;
  CausalScope& operator=(const CausalScope&) = delete;

 private:
  ViTNepaModel& model_;
  bool was_;
};

std::string query_text(const PatchQuery& q) { return fmt::format("({},{})", q.row, q.col); }

void check_model_folder(const std::string& folder) {
  if (!fs::is_directory(folder))
    throw MapInputError("model folder " + folder + " does not exist (expected model.safetensors + config.json)");
  for (const char* name : {"config.json", "model.safetensors"})
    if (!fs::exists(fs::path(folder) / name)) throw MapInputError("model folder " + folder + " has no " + name);
}

void check_command(const MapCommand& c) {
  if (c.models.empty()) throw MapInputError("--model: give at least one backbone folder");
  if (!c.labels.empty() && c.labels.size() != c.models.size())
    throw MapInputError(fmt::format("--label: {} labels for {} models (give none or one per --model)",
                                    c.labels.size(), c.models.size()));
  if (c.images.empty() && c.fashion_mnist_test.empty())
    throw MapInputError("no input images: give --image FILE and/or --fashion-mnist-test INDICES");
  if (c.scale < 0) throw MapInputError(fmt::format("--scale {}: must be positive (0 = automatic)", c.scale));
  const std::string ext = fs::path(c.output).extension().string();
  if (ext != ".png" && ext != ".jpg" && ext != ".jpeg")
    throw MapInputError("--output " + c.output + ": the figure is written as .png (or .jpg)");
  for (const auto& m : c.models) check_model_folder(m);
}

// What both commands share: per model, load it, read the queries and images at its size, run `panels` for
// the panels of each image (one row each), and stack the blocks into one figure.
using PanelFn = std::function<void(ViTNepaModel&, const torch::Tensor& pixel_values, const std::vector<PatchQuery>&,
                                   int64_t gh, int64_t gw, const std::vector<cv::Mat>& shown, MapFigureBlock&)>;

void run_maps(const MapCommand& command, const PanelFn& panels) {
  check_command(command);
  std::vector<MapFigureBlock> blocks;
  for (size_t m = 0; m < command.models.size(); ++m) {
    // Not strict about extra tensors, so that a fine-tuned classifier's folder (backbone + head) draws too; every
    // backbone weight must be there.
    LoadedModel loaded = load_hf_model(command.models[m], "", /*strict=*/false);
    if (!loaded.report.missing.empty() || !loaded.report.mismatched.empty())
      throw std::runtime_error(loaded.weights_path + ": not this backbone's weights: " + loaded.report.summary());
    if (!loaded.report.unexpected.empty())
      spdlog::info("{}: {} tensors that are not the backbone's are not used (e.g. {})", loaded.weights_path,
                   loaded.report.unexpected.size(), loaded.report.unexpected.front());
    ViTNepaModel& model = loaded.model;
    model->eval();
    const ModelConfig& cfg = model->config();
    const int64_t gh = cfg.image_size / cfg.patch_size, gw = gh;
    std::vector<PatchQuery> queries;
    for (const auto& q : command.queries) queries.push_back(parse_patch_query(q, gh, gw));
    if (queries.empty()) queries = default_patch_queries(gh, gw);

    auto [images, names] = load_map_images(command.images, command.fashion_mnist_root, command.fashion_mnist_test,
                                           cfg.num_channels, cfg.image_size);
    const int scale = command.scale > 0 ? command.scale : std::max(1, (224 + cfg.image_size - 1) / cfg.image_size);
    std::vector<cv::Mat> shown;
    for (const auto& im : images) shown.push_back(display_image(im, scale));

    MapFigureBlock block;
    block.title = command.labels.empty() ? fs::path(command.models[m]).lexically_normal().filename().string()
                                         : command.labels[m];
    if (block.title.empty()) block.title = command.models[m];
    panels(model, to_pixel_values(images), queries, gh, gw, shown, block);
    for (size_t i = 0; i < names.size(); ++i) block.captions[i][0] = names[i];  // the image column: its name
    blocks.push_back(std::move(block));
  }
  write_rgb_image(command.output, compose_map_figure(blocks));
  spdlog::info("wrote {}", command.output);
}

}  // namespace

PatchQuery parse_patch_query(const std::string& text, int64_t gh, int64_t gw) {
  auto number = [&](const std::string& s) -> int64_t {
    size_t used = 0;
    int64_t v = -1;
    try {
      v = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (s.empty() || used != s.size())
      throw MapInputError("--query " + text + ": not a patch index N or ROW,COL");
    return v;
  };
  PatchQuery q;
  const size_t comma = text.find(',');
  if (comma == std::string::npos) {
    const int64_t index = number(text);
    if (index < 0 || index >= gh * gw)
      throw MapInputError(fmt::format("--query {}: patch index out of range (the grid is {}x{}: 0..{})", text, gh,
                                      gw, gh * gw - 1));
    q = {index / gw, index % gw};
  } else {
    q = {number(text.substr(0, comma)), number(text.substr(comma + 1))};
    if (q.row < 0 || q.row >= gh || q.col < 0 || q.col >= gw)
      throw MapInputError(fmt::format("--query {}: row,col off the {}x{} patch grid (rows 0..{}, columns 0..{})",
                                      text, gh, gw, gh - 1, gw - 1));
  }
  return q;
}

std::vector<PatchQuery> default_patch_queries(int64_t gh, int64_t gw) {
  std::vector<PatchQuery> out;
  for (PatchQuery q : {PatchQuery{gh / 2, gw / 2}, PatchQuery{gh / 4, gw / 4}, PatchQuery{gh / 4, (3 * gw) / 4},
                       PatchQuery{(3 * gh) / 4, gw / 2}}) {
    bool seen = std::any_of(out.begin(), out.end(), [&](const PatchQuery& o) { return o.row == q.row && o.col == q.col; });
    if (!seen) out.push_back(q);
  }
  return out;
}

torch::Tensor layer_attention(ViTNepaModel& model, const torch::Tensor& pixel_values, int64_t layer, bool causal) {
  const int64_t blocks = model->config().num_hidden_layers;
  if (layer < 0 || layer >= blocks)
    throw MapInputError(fmt::format("layer {}: the model has {} blocks (0..{})", layer, blocks, blocks - 1));
  torch::NoGradGuard no_grad;
  // The whole forward runs in the requested mode, so the layer's input is what that mode computes.
  CausalScope scope(model, causal);
  ForwardOptions options;
  options.output_hidden_states = true;
  NepaOutputs out = model->forward(pixel_values, options);
  auto* block = model->encoder->layer[layer]->as<NepaLayer>();
  const int64_t p = model->config().patch_size;
  auto [cos, sin] = model->rope_tables(pixel_values.size(2) / p, pixel_values.size(3) / p, pixel_values.device());
  // hidden_states[layer] is the input of block `layer`; its attention sees it after layernorm_before.
  torch::Tensor x = block->layernorm_before->forward(out.hidden_states[layer]);
  return block->attention->attention->attention_probs(x, cos, sin, causal);
}

torch::Tensor patch_attention_maps(const torch::Tensor& probs, const std::vector<PatchQuery>& queries, int64_t gh,
                                   int64_t gw) {
  const int64_t t = probs.size(-1);
  check_grid(t, gh, gw, "patch_attention_maps");
  torch::Tensor rows = probs.index_select(2, query_tokens(queries, t, gh, gw, probs.device()));  // [B, H, Q, T]
  torch::Tensor keys = rows.narrow(3, t - gh * gw, gh * gw);
  return keys.reshape({probs.size(0), probs.size(1), static_cast<int64_t>(queries.size()), gh, gw})
      .permute({0, 2, 1, 3, 4})
      .contiguous();
}

torch::Tensor patch_similarity_maps(const torch::Tensor& last_hidden_state, const std::vector<PatchQuery>& queries,
                                    int64_t gh, int64_t gw) {
  const int64_t t = last_hidden_state.size(1);
  check_grid(t, gh, gw, "patch_similarity_maps");
  torch::Tensor patches = last_hidden_state.narrow(1, t - gh * gw, gh * gw).to(torch::kFloat32);
  torch::Tensor unit = torch::nn::functional::normalize(patches, torch::nn::functional::NormalizeFuncOptions().dim(-1));
  torch::Tensor q = unit.index_select(1, query_tokens(queries, t, gh, gw, unit.device()) - (t - gh * gw));
  return torch::matmul(q, unit.transpose(1, 2)).reshape({unit.size(0), static_cast<int64_t>(queries.size()), gh, gw});
}

cv::Mat heat_panel(const cv::Mat& image, const torch::Tensor& map, double lo, double hi, const PatchQuery& query) {
  const int gh = static_cast<int>(map.size(0)), gw = static_cast<int>(map.size(1));
  if (image.type() != CV_8UC3 || image.rows % gh || image.cols % gw)
    throw std::invalid_argument(fmt::format("heat_panel: the image ({}x{}, type {}) must be RGB uint8 and a "
                                            "multiple of the {}x{} grid", image.cols, image.rows, image.type(), gh, gw));
  torch::Tensor level = ((map.to(torch::kFloat64).cpu() - lo) / std::max(hi - lo, 1e-12)).clamp(0, 1);
  level = (level * 255).round().to(torch::kUInt8).contiguous();
  cv::Mat small(gh, gw, CV_8UC1, level.data_ptr<uint8_t>()), big, bgr, rgb, out;
  cv::resize(small, big, image.size(), 0, 0, cv::INTER_NEAREST);
  cv::applyColorMap(big, bgr, cv::COLORMAP_JET);
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  cv::addWeighted(image, 0.5, rgb, 0.5, 0.0, out);
  const int ch = image.rows / gh, cw = image.cols / gw;
  const cv::Rect cell(static_cast<int>(query.col) * cw, static_cast<int>(query.row) * ch, cw, ch);
  cv::rectangle(out, cell, cv::Scalar(255, 255, 255), 2);
  return out;
}

cv::Mat compose_map_figure(const std::vector<MapFigureBlock>& blocks) {
  if (blocks.empty() || blocks[0].rows.empty() || blocks[0].rows[0].empty())
    throw std::invalid_argument("compose_map_figure: nothing to draw");
  const cv::Mat& first = blocks[0].rows[0][0];
  const int p = first.rows;
  size_t cols = 0;
  int total_rows = 0;
  for (const auto& b : blocks) {
    total_rows += static_cast<int>(b.rows.size());
    for (const auto& r : b.rows) cols = std::max(cols, r.size());
  }
  const int k = static_cast<int>(blocks.size()), c = static_cast<int>(cols);
  const int width = c * p + (c - 1) * kMapGap;
  const int height = k * kMapTitleHeight + total_rows * (kMapCaptionHeight + p) + (total_rows - k) * kMapGap +
                     (k - 1) * kMapBlockGap;
  cv::Mat fig(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  const cv::Scalar ink(0, 0, 0);
  int y = 0;
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    const auto& b = blocks[bi];
    cv::putText(fig, b.title, cv::Point(2, y + kMapTitleHeight - 8), cv::FONT_HERSHEY_SIMPLEX, 0.55, ink, 1,
                cv::LINE_AA);
    y += kMapTitleHeight;
    for (size_t r = 0; r < b.rows.size(); ++r) {
      for (size_t j = 0; j < b.rows[r].size(); ++j) {
        const cv::Mat& panel = b.rows[r][j];
        if (panel.type() != CV_8UC3 || panel.rows != p || panel.cols != p)
          throw std::invalid_argument("compose_map_figure: panels must be RGB uint8 squares of one size");
        const int x = static_cast<int>(j) * (p + kMapGap);
        const std::string& caption = b.captions.at(r).at(j);
        cv::putText(fig, caption, cv::Point(x + 2, y + kMapCaptionHeight - 5), cv::FONT_HERSHEY_SIMPLEX, 0.4, ink, 1,
                    cv::LINE_AA);
        panel.copyTo(fig(cv::Rect(x, y + kMapCaptionHeight, p, p)));
      }
      y += kMapCaptionHeight + p + (r + 1 < b.rows.size() ? kMapGap : 0);
    }
    y += kMapBlockGap;
  }
  return fig;
}

MapImages load_map_images(const std::vector<std::string>& files, const std::string& fashion_mnist_root,
                          const std::vector<int64_t>& fashion_mnist_test, int channels, int size) {
  std::vector<cv::Mat> raw;
  MapImages out;
  for (const auto& f : files) {
    if (!fs::is_regular_file(f)) throw MapInputError("--image " + f + ": no such file");
    try {
      raw.push_back(read_image(f, channels));
    } catch (const DataError& e) {
      throw MapInputError(std::string("--image: ") + e.what());
    }
    out.names.push_back(fs::path(f).filename().string());
  }
  if (!fashion_mnist_test.empty()) {
    std::shared_ptr<Dataset> test;
    try {
      test = make_fashion_mnist(fashion_mnist_root, "test");
    } catch (const std::exception& e) {
      throw MapInputError(std::string("--fashion-mnist-test: ") + e.what());
    }
    for (int64_t i : fashion_mnist_test) {
      if (i < 0 || i >= test->size())
        throw MapInputError(fmt::format("--fashion-mnist-test {}: the test split has images 0..{}", i, test->size() - 1));
      raw.push_back(test->load(i, channels));
      const auto classes = test->class_names();
      const int64_t label = test->label(i);
      out.names.push_back(label >= 0 && label < static_cast<int64_t>(classes.size())
                              ? fmt::format("test #{} {}", i, classes[label])
                              : fmt::format("test #{}", i));
    }
  }
  for (auto& im : raw)
    out.images.push_back(im.rows == size && im.cols == size ? im : resize_image(im, size, size, "bilinear"));
  return out;
}

void run_attention_map(const MapCommand& command) {
  run_maps(command, [&](ViTNepaModel& model, const torch::Tensor& pixels, const std::vector<PatchQuery>& queries,
                        int64_t gh, int64_t gw, const std::vector<cv::Mat>& shown, MapFigureBlock& block) {
    const int64_t blocks = model->config().num_hidden_layers;
    if (command.layer < -1 || command.layer >= blocks)
      throw MapInputError(fmt::format("--layer {}: the model has {} blocks (0..{}; -1 = the last)", command.layer,
                                      blocks, blocks - 1));
    const int64_t layer = command.layer < 0 ? blocks - 1 : command.layer;
    const bool causal = command.bidirectional ? false : model->is_causal();
    torch::Tensor probs = layer_attention(model, pixels, layer, causal);
    torch::Tensor maps = patch_attention_maps(probs, queries, gh, gw);  // [B, Q, heads, gh, gw]
    const int64_t heads = maps.size(2);
    block.title += fmt::format(": block {} attention, {}, {}", layer, causal ? "causal" : "bidirectional",
                               command.per_head ? "per head" : fmt::format("mean of {} heads", heads));
    // What the maps leave out: the share of the queries' attention that goes to the tokens before the patches.
    const double to_prefix = 1.0 - maps.sum({3, 4}).mean().item<double>();
    spdlog::info("attention-map: {}: the queries give {:.1f} % of their attention to CLS (not drawn)", block.title,
                 100.0 * to_prefix);
    for (int64_t b = 0; b < maps.size(0); ++b) {
      std::vector<cv::Mat> row{shown[b]};
      std::vector<std::string> captions{""};
      for (size_t q = 0; q < queries.size(); ++q) {
        auto add = [&](const torch::Tensor& map, const std::string& what) {
          const double hi = map.max().item<double>();
          row.push_back(heat_panel(shown[b], map, 0.0, hi, queries[q]));
          captions.push_back(fmt::format("q{} {} 0..{:.2f}", query_text(queries[q]), what, hi));
        };
        if (command.per_head)
          for (int64_t h = 0; h < heads; ++h) add(maps[b][q][h], fmt::format("h{}", h));
        else add(maps[b][q].mean(0), "mean");
      }
      block.rows.push_back(std::move(row));
      block.captions.push_back(std::move(captions));
    }
  });
}

void run_similarity_map(const MapCommand& command) {
  run_maps(command, [&](ViTNepaModel& model, const torch::Tensor& pixels, const std::vector<PatchQuery>& queries,
                        int64_t gh, int64_t gw, const std::vector<cv::Mat>& shown, MapFigureBlock& block) {
    torch::NoGradGuard no_grad;
    const bool causal = command.bidirectional ? false : model->is_causal();
    CausalScope scope(model, causal);
    torch::Tensor maps = patch_similarity_maps(model->forward(pixels).last_hidden_state, queries, gh, gw);
    block.title += fmt::format(": cosine similarity of last_hidden_state, {}, colour -1..1",
                               causal ? "causal" : "bidirectional");
    for (int64_t b = 0; b < maps.size(0); ++b) {
      std::vector<cv::Mat> row{shown[b]};
      std::vector<std::string> captions{""};
      for (size_t q = 0; q < queries.size(); ++q) {
        const torch::Tensor map = maps[b][q];
        row.push_back(heat_panel(shown[b], map, -1.0, 1.0, queries[q]));
        captions.push_back(fmt::format("q{} min {:.2f}", query_text(queries[q]), map.min().item<double>()));
      }
      block.rows.push_back(std::move(row));
      block.captions.push_back(std::move(captions));
    }
  });
}

}  // namespace nepa
