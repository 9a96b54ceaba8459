// Pictures of class maps: a palette, the class map as a paletted PNG (viewable, and the class indices themselves
// for any PNG reader that keeps the palette indices, as PIL's mode "P"), colour overlays on the image and the
// image | truth | prediction strip of the README. Label maps are int64 or uint8 [H, W] with 255 = ignore.
#pragma once

#include <opencv2/core/mat.hpp>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace nepa {

using SegPalette = std::vector<std::array<uint8_t, 3>>;  // RGB per class

// `num_classes` colours (0-255), the same for every call: hues a golden-ratio step apart, so neighbouring class
// indices (often related classes) get far-apart hues, cycling through three saturation/value levels, so classes
// whose hues come close again differ in brightness.
SegPalette seg_palette(int num_classes);

// Writes `labels` as an 8-bit paletted PNG whose pixel values are the class indices and whose 256-entry PLTE is
// `palette` (at most 255 colours) followed by black, so 255 (ignore) shows black. Atomic (io/atomic_file.h).
// Throws std::runtime_error naming the path and the system's reason when it cannot be written, and naming the value
// for a label that is neither < palette.size() nor 255.
void write_label_png(const std::string& path, const torch::Tensor& labels, const SegPalette& palette);

// The class map in colour: RGB uint8 [H, W, 3], ignore pixels black.
cv::Mat seg_colorize(const torch::Tensor& labels, const SegPalette& palette);

// RGB uint8 blend of `image` (uint8 HxWx1 or HxWx3 in RGB order, as Dataset::load gives) and the class colours,
// per channel round((1 - alpha) * image + alpha * colour) (halves up); ignore pixels keep the image. The map must
// have the image's size.
cv::Mat seg_overlay(const cv::Mat& image, const torch::Tensor& labels, const SegPalette& palette, double alpha = 0.5);

// image | truth | prediction (the maps in plain colour), each panel enlarged `scale` times (nearest, so pixels stay
// visible on small scenes) and separated by `gap` white columns: RGB uint8.
cv::Mat seg_side_by_side(const cv::Mat& image, const torch::Tensor& truth, const torch::Tensor& prediction,
                         const SegPalette& palette, int scale = 1, int gap = 4);

// Writes an RGB uint8 image (as the functions above return) to `path` in the format of its extension (.png, .jpg),
// atomically; throws std::runtime_error naming the path.
void write_rgb_image(const std::string& path, const cv::Mat& rgb);

}  // namespace nepa
