// Segmentation scenes composed from Fashion-MNIST items, written in the ADE20K release layout (ade20k.h) so that
// nepa_seg's CPU demo trains and evaluates on real pixels through the same reader, reduce_zero_label included.
#pragma once

#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <string>

#include "nepa/data/dataset.h"

namespace nepa {

struct SceneOptions {
  // 56 = two items side by side: the demo backbone was pretrained on 28x28 with 4x4 patches, so a scene is a 14x14
  // grid, and 1-4 items of 28x28 on it touch and occlude one another without filling it.
  int size = 56;
  int items_min = 1;
  int items_max = 4;
  // Each item is resized by a factor ~ U[scale_min, scale_max] (bilinear). 1-1 by default: the pretrained backbone
  // has seen items at 28 px only, so the demo measures what pretraining buys for locating and naming items, not
  // for scale; the segmentation views' random resize (0.5-2) varies the scale already.
  double scale_min = 1.0;
  double scale_max = 1.0;
  uint64_t seed = 0;
  int train_count = 4000;
  int val_count = 500;
  // Item pixels >= fg_threshold get the item's class, pixels below bg_threshold are the item's black surround
  // (transparent), those in between are ambiguous (raw 0, ignored after reduce_zero_label). 64 rather than the
  // midpoint 128: on the Fashion-MNIST test items, 128 ignores 30 % of every item's visible pixels, half of them
  // inside faint (light-coloured) garments; 64 ignores 8.6 %, two thirds of them on the outline.
  int fg_threshold = 64;
  int bg_threshold = 32;
};

// Throws std::invalid_argument with one line naming the first bad field (counts and sizes >= 1, items_min <=
// items_max, 1 <= scale_min <= scale_max, the largest item fitting the canvas, 0 < bg_threshold < fg_threshold
// <= 255).
void check_scene_options(const SceneOptions& options);

// One scene before encoding: `image` CV_8UC1 size x size, `labels` CV_8UC1 raw annotation values (before
// reduce_zero_label): 1 background, c + 2 item class c, 0 ambiguous.
struct Scene {
  cv::Mat image;
  cv::Mat labels;
};

// Scene `index` of the training (validation = false) or validation stream of options.seed, from the labelled
// single-channel images of `items` (at most 253 classes): a function of (seed, stream, index) and the options
// only, so scene i is the same whatever the counts. Items are pasted in order on a black canvas, each fully inside
// it; an item covers the pixels where its own intensity is >= bg_threshold and leaves the rest to what lies
// beneath (later items occlude earlier ones along their silhouette, faint outline included, as a pasted cut-out
// would). Every pixel's label follows from the item visible there: background where none is, else the item's
// class or ambiguous by its intensity. An item with fewer than 16 foreground pixels is redrawn, so the last item
// (never occluded) makes every scene show at least one class.
Scene make_scene(const Dataset& items, const SceneOptions& options, bool validation, int64_t index);

// Writes <out_dir>/images/{training,validation}/scene_NNNNNN.jpg (grey, JPEG quality 95),
// <out_dir>/annotations/{training,validation}/scene_NNNNNN.png (raw labels, 8-bit grey PNG), classes.txt
// ("background" and the ten Fashion-MNIST names, the label order after reduce_zero_label) and scenes.json (the
// options and the source). Training scenes take items from Fashion-MNIST's train split, validation scenes from its
// test split (`fashion_mnist_root` empty = the Debian location). The set is built in <out_dir>.tmp-<pid> and
// renamed into place, so <out_dir> is either absent or complete. Returns false (and writes nothing) when <out_dir>
// already holds a finished set of the same options and source; throws std::runtime_error naming out_dir when it
// exists and is anything else but an empty directory, std::invalid_argument for bad options.
bool write_fmnist_scenes(const std::string& fashion_mnist_root, const std::string& out_dir,
                         const SceneOptions& options);

}  // namespace nepa
