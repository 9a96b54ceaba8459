#include "nepa/eval/seg_render.h"

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <png.h>
#include <torch/torch.h>

#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "nepa/io/atomic_file.h"

namespace nepa {
namespace {

constexpr int kIgnore = 255;

std::array<uint8_t, 3> hsv_to_rgb(double h, double s, double v) {
  const double h6 = h * 6.0;
  const int sector = static_cast<int>(h6) % 6;
  const double f = h6 - std::floor(h6);
  const double p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  double r = v, g = t, b = p;
  switch (sector) {
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    case 5: r = v, g = p, b = q; break;
    default: break;
  }
  auto byte = [](double x) { return static_cast<uint8_t>(std::lround(x * 255.0)); };
  return {byte(r), byte(g), byte(b)};
}

// The map as CV_8UC1 class indices, every value < palette.size() or 255; std::runtime_error naming the first
// value that is neither (and where it is), prefixed by `context`.
cv::Mat class_indices(const torch::Tensor& labels, size_t palette_size, const std::string& context) {
  if (!labels.defined() || labels.dim() != 2 || labels.numel() == 0)
    throw std::runtime_error(context + ": a label map must be a non-empty [H, W] tensor (got " +
                             (labels.defined() ? c10::str(labels.sizes()) : std::string("none")) + ")");
  if (!c10::isIntegralType(labels.scalar_type(), /*includeBool=*/false))
    throw std::runtime_error(context + ": a label map must hold integers (got " +
                             std::string(c10::toString(labels.scalar_type())) + ")");
  if (palette_size > kIgnore)
    throw std::runtime_error(fmt::format("{}: a palette of {} colours leaves no room for 255 (ignore)", context,
                                         palette_size));
  const torch::Tensor t = labels.to(torch::kCPU, torch::kLong).contiguous();
  const torch::Tensor bad = ((t < 0) | (t >= static_cast<int64_t>(palette_size))) & (t != kIgnore);
  if (bad.any().item<bool>()) {
    const int64_t at = bad.flatten().nonzero()[0][0].item<int64_t>(), w = t.size(1);
    throw std::runtime_error(fmt::format("{}: label {} at (row {}, column {}) is neither a class of the {}-colour "
                                         "palette nor 255 (ignore)",
                                         context, t.flatten()[at].item<int64_t>(), at / w, at % w, palette_size));
  }
  const torch::Tensor bytes = t.to(torch::kUInt8).contiguous();
  return cv::Mat(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_8UC1, bytes.data_ptr()).clone();
}

cv::Mat as_rgb(const cv::Mat& image, const std::string& context) {
  if (image.depth() != CV_8U || (image.channels() != 1 && image.channels() != 3) || image.empty())
    throw std::runtime_error(context + ": the image must be uint8 with 1 or 3 channels");
  if (image.channels() == 3) return image;
  cv::Mat rgb;
  cv::cvtColor(image, rgb, cv::COLOR_GRAY2RGB);
  return rgb;
}

// libpng reports errors through a callback that must not return: setjmp/longjmp, confined to run_png_write()
// where nothing has a destructor (as png_decode.cpp).
struct PngWriter {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::FILE* file = nullptr;
  int write_errno = 0;
  char message[256] = {};
};

void on_error(png_structp png, png_const_charp msg) {
  auto* w = static_cast<PngWriter*>(png_get_error_ptr(png));
  std::strncpy(w->message, msg ? msg : "unknown error", sizeof(w->message) - 1);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

void write_bytes(png_structp png, png_bytep data, png_size_t n) {
  auto* w = static_cast<PngWriter*>(png_get_io_ptr(png));
  if (std::fwrite(data, 1, n, w->file) != n) {
    w->write_errno = errno;
    png_error(png, "write failed");
  }
}

void flush_bytes(png_structp) {}

// `rows` and `plte` belong to the caller: nothing in here may own memory a longjmp would skip freeing.
bool run_png_write(PngWriter* w, const cv::Mat& indices, const png_color* plte, std::vector<png_bytep>* rows) {
  if (setjmp(png_jmpbuf(w->png))) return false;
  png_set_write_fn(w->png, w, write_bytes, flush_bytes);
  png_set_IHDR(w->png, w->info, static_cast<png_uint_32>(indices.cols), static_cast<png_uint_32>(indices.rows), 8,
               PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_PLTE(w->png, w->info, plte, 256);
  png_write_info(w->png, w->info);
  rows->resize(indices.rows);
  for (int y = 0; y < indices.rows; ++y) (*rows)[y] = const_cast<png_bytep>(indices.ptr<uint8_t>(y));
  png_write_image(w->png, rows->data());
  png_write_end(w->png, nullptr);
  return true;
}

}  // namespace

SegPalette seg_palette(int num_classes) {
  if (num_classes < 0 || num_classes > kIgnore)
    throw std::invalid_argument(fmt::format("seg_palette: {} classes (0-255 fit 8-bit maps with 255 as ignore)",
                                            num_classes));
  // (saturation, value) levels, none dark: black is the ignore colour.
  constexpr double kLevels[3][2] = {{0.85, 0.95}, {0.95, 0.70}, {0.50, 0.90}};
  constexpr double kGoldenStep = 0.6180339887498949;
  SegPalette palette;
  for (int i = 0; i < num_classes; ++i) {
    const double hue = std::fmod(0.05 + i * kGoldenStep, 1.0);
    palette.push_back(hsv_to_rgb(hue, kLevels[i % 3][0], kLevels[i % 3][1]));
  }
  return palette;
}

void write_label_png(const std::string& path, const torch::Tensor& labels, const SegPalette& palette) {
  const cv::Mat indices = class_indices(labels, palette.size(), path);
  png_color plte[256] = {};  // black beyond the palette, 255 (ignore) included
  for (size_t i = 0; i < palette.size(); ++i) plte[i] = {palette[i][0], palette[i][1], palette[i][2]};
  try {
    write_file_atomic(path, [&](std::FILE* f) {
      PngWriter w;
      w.file = f;
      w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, on_error, on_warning);
      if (!w.png) throw std::runtime_error("libpng could not start");
      w.info = png_create_info_struct(w.png);
      std::vector<png_bytep> rows;
      const bool ok = w.info && run_png_write(&w, indices, plte, &rows);
      png_destroy_write_struct(&w.png, w.info ? &w.info : nullptr);
      if (!ok)
        throw std::runtime_error(w.write_errno ? std::string(std::strerror(w.write_errno))
                                               : std::string(w.message[0] ? w.message : "out of memory"));
    });
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("cannot write the label map " + path + ": " + e.what());
  }
}

cv::Mat seg_colorize(const torch::Tensor& labels, const SegPalette& palette) {
  const cv::Mat indices = class_indices(labels, palette.size(), "seg_colorize");
  cv::Mat rgb(indices.size(), CV_8UC3, cv::Scalar::all(0));
  for (int y = 0; y < indices.rows; ++y) {
    const uint8_t* in = indices.ptr<uint8_t>(y);
    cv::Vec3b* out = rgb.ptr<cv::Vec3b>(y);
    for (int x = 0; x < indices.cols; ++x)
      if (in[x] != kIgnore) out[x] = {palette[in[x]][0], palette[in[x]][1], palette[in[x]][2]};
  }
  return rgb;
}

cv::Mat seg_overlay(const cv::Mat& image, const torch::Tensor& labels, const SegPalette& palette, double alpha) {
  if (!(alpha >= 0.0 && alpha <= 1.0))
    throw std::invalid_argument(fmt::format("seg_overlay: alpha {} is not in [0, 1]", alpha));
  const cv::Mat indices = class_indices(labels, palette.size(), "seg_overlay");
  cv::Mat out = as_rgb(image, "seg_overlay").clone();
  if (indices.size() != out.size())
    throw std::runtime_error(fmt::format("seg_overlay: the image is {}x{} but the label map {}x{}", out.cols,
                                         out.rows, indices.cols, indices.rows));
  for (int y = 0; y < out.rows; ++y) {
    const uint8_t* in = indices.ptr<uint8_t>(y);
    uint8_t* px = out.ptr<uint8_t>(y);
    for (int x = 0; x < out.cols; ++x, px += 3) {
      if (in[x] == kIgnore) continue;
      for (int c = 0; c < 3; ++c)
        px[c] = static_cast<uint8_t>(std::floor((1.0 - alpha) * px[c] + alpha * palette[in[x]][c] + 0.5));
    }
  }
  return out;
}

cv::Mat seg_side_by_side(const cv::Mat& image, const torch::Tensor& truth, const torch::Tensor& prediction,
                         const SegPalette& palette, int scale, int gap) {
  if (scale < 1 || gap < 0)
    throw std::invalid_argument(fmt::format("seg_side_by_side: scale {} (>= 1) or gap {} (>= 0) out of range",
                                            scale, gap));
  const std::vector<cv::Mat> panels = {as_rgb(image, "seg_side_by_side"), seg_colorize(truth, palette),
                                       seg_colorize(prediction, palette)};
  for (const cv::Mat& p : panels)
    if (p.size() != panels[0].size())
      throw std::runtime_error(fmt::format("seg_side_by_side: the image is {}x{} but a label map {}x{}",
                                           panels[0].cols, panels[0].rows, p.cols, p.rows));
  const int w = panels[0].cols * scale, h = panels[0].rows * scale;
  cv::Mat strip(h, 3 * w + 2 * gap, CV_8UC3, cv::Scalar::all(255));
  for (int i = 0; i < 3; ++i) {
    cv::Mat big;
    cv::resize(panels[i], big, cv::Size(w, h), 0, 0, cv::INTER_NEAREST);
    big.copyTo(strip(cv::Rect(i * (w + gap), 0, w, h)));
  }
  return strip;
}

void write_rgb_image(const std::string& path, const cv::Mat& rgb) {
  if (rgb.type() != CV_8UC3) throw std::runtime_error("cannot write " + path + ": not an RGB uint8 image");
  const std::string ext = std::filesystem::path(path).extension().string();
  cv::Mat bgr;  // OpenCV's encoders take BGR
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  try {
    if (!cv::imencode(ext, bgr, bytes, {cv::IMWRITE_JPEG_QUALITY, 95}))
      throw std::runtime_error("cannot write " + path + ": OpenCV could not encode it");
  } catch (const cv::Exception& e) {
    throw std::runtime_error("cannot write " + path + ": no encoder for '" + ext + "' (" + e.err + ")");
  }
  write_file_atomic(path, [&](std::FILE* f) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size())
      throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  });
}

}  // namespace nepa
