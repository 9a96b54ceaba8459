// The paper's analysis figures: where a query patch attends in one layer, and how similar one patch's output
// embedding is to every other patch's, drawn as heat maps over the image (nepa_tool attention-map /
// similarity-map). Everything is the model's own computation: the probabilities come from the attention module
// (NepaSelfAttention::attention_probs, the q and k its forward uses) under the causal flag given, on the hidden
// states of a forward run with that same flag.
#pragma once

#include <opencv2/core/mat.hpp>
#include <torch/types.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "nepa/model/vit_nepa.h"

namespace nepa {

// Bad input to the map commands (a missing model folder, an unreadable image, a query off the grid): the
// commands end with this one line and exit code 2.
class MapInputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A patch on the grid, row-major index = row * grid_w + col; its token index is 1 + index (CLS first).
struct PatchQuery {
  int64_t row = 0, col = 0;
};

// "12" (row-major patch index) or "3,4" (row,col) on a gh x gw grid; MapInputError naming the text when it is
// neither or lies off the grid.
PatchQuery parse_patch_query(const std::string& text, int64_t gh, int64_t gw);

// The default queries: the centre patch, then the centres of the upper-left, upper-right and lower-middle
// parts, in that order, without duplicates (on tiny grids some coincide).
std::vector<PatchQuery> default_patch_queries(int64_t gh, int64_t gw);

// Attention probabilities [B, heads, T, T] (float32, token 0 = CLS, rows = queries) of block `layer` (0-based)
// for pixel_values [B, C, H, W], with attention causal or not (the whole forward runs that way, so the layer's
// input is what that mode computes). Runs under NoGradGuard; the model should be in eval mode (in training mode
// the RoPE tables would be drawn anew). MapInputError when the layer does not exist.
torch::Tensor layer_attention(ViTNepaModel& model, const torch::Tensor& pixel_values, int64_t layer, bool causal);

// The attention of the query patches' tokens over the patch grid: [B, Q, heads, gh, gw], the rows of `probs`
// ([B, heads, T, T] as above) at tokens 1 + index, keys restricted to the patches (the CLS column is left out,
// so a map sums to 1 minus the query's attention to CLS).
torch::Tensor patch_attention_maps(const torch::Tensor& probs, const std::vector<PatchQuery>& queries, int64_t gh,
                                   int64_t gw);

// Cosine similarity of each query patch's last_hidden_state to every patch's: [B, Q, gh, gw] (float32). The
// query's own entry is 1.
torch::Tensor patch_similarity_maps(const torch::Tensor& last_hidden_state, const std::vector<PatchQuery>& queries,
                                    int64_t gh, int64_t gw);

// One heat-map panel: `map` [gh, gw] scaled linearly from [lo, hi] to the colour map (clipped), enlarged to the
// image with nearest neighbour (one flat block per patch, since the model has one value per patch), coloured
// with cv::COLORMAP_JET and blended half and half with `image` (RGB uint8, side a multiple of the grid); the
// query patch is outlined in white. RGB uint8 of the image's size.
cv::Mat heat_panel(const cv::Mat& image, const torch::Tensor& map, double lo, double hi, const PatchQuery& query);

// A figure: blocks (one per model) stacked vertically, each a title strip, then one row per image: the image
// and its panels, each panel with a caption strip above it.
struct MapFigureBlock {
  std::string title;
  std::vector<std::vector<cv::Mat>> rows;         // RGB uint8 panels, all of one size
  std::vector<std::vector<std::string>> captions;  // same shape as rows
};
// Layout, for tests and the docs: panel side P, C columns, R rows per block, K blocks:
//   width  = C * P + (C - 1) * kMapGap
//   height = K * kMapTitleHeight + (sum of R) * (kMapCaptionHeight + P) + (sum of R - K) * kMapGap
//            + (K - 1) * kMapBlockGap
inline constexpr int kMapGap = 4, kMapTitleHeight = 26, kMapCaptionHeight = 18, kMapBlockGap = 12;
cv::Mat compose_map_figure(const std::vector<MapFigureBlock>& blocks);

// The inputs of the commands: image files (PNG/JPEG, decoded as the datasets decode theirs), then Fashion-MNIST
// test images by index, each resized to size x size (antialiased bilinear, as the eval views; a no-op at that
// size). Uint8 HxWxC, C = channels; names for the captions (file name, "test #i <class>"). MapInputError naming
// the file or index that cannot be read.
struct MapImages {
  std::vector<cv::Mat> images;
  std::vector<std::string> names;
};
MapImages load_map_images(const std::vector<std::string>& files, const std::string& fashion_mnist_root,
                          const std::vector<int64_t>& fashion_mnist_test, int channels, int size);

// Options of both commands.
struct MapCommand {
  std::vector<std::string> models;   // backbone folders (model.safetensors + config.json), one block each
  std::vector<std::string> labels;   // block titles (default: the folder names); empty or one per model
  std::vector<std::string> images;   // image files
  std::string fashion_mnist_root;    // empty = the Debian location
  std::vector<int64_t> fashion_mnist_test;  // Fashion-MNIST test indices
  std::vector<std::string> queries;  // parse_patch_query texts; empty = default_patch_queries
  int64_t layer = -1;                // attention-map: block index, -1 = the last
  bool per_head = false;             // attention-map: one panel per head instead of the head mean
  bool bidirectional = false;        // attend bidirectionally whatever the config's is_causal says
  int scale = 0;                     // enlargement of the image (nearest); 0 = the smallest giving >= 224 px
  std::string output;                // PNG path
};

// nepa_tool attention-map / similarity-map: loads each model, computes the maps, writes the figure. Throws
// MapInputError on bad input (checked before any work where possible), std::runtime_error on failures.
void run_attention_map(const MapCommand& command);
void run_similarity_map(const MapCommand& command);

}  // namespace nepa
