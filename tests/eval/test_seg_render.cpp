// Pictures of class maps: the palette is distinct and stable, the paletted PNG holds the class indices and the
// palette exactly (read back with libpng, which keeps the indices), overlays follow the blend formula, and bad
// inputs give one line naming the path or the value.
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <png.h>
#include <torch/torch.h>

#include <csetjmp>
#include <cstdio>
#include <filesystem>

#include "nepa/eval/seg_render.h"
#include "test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

struct PalettedPng {
  int color_type = -1, bit_depth = -1;
  std::vector<std::array<uint8_t, 3>> plte;
  torch::Tensor indices;  // uint8 [H, W]
};

// Read without transforms, so palette indices stay indices. Empty color_type (-1) when libpng fails.
bool read_into(std::FILE* f, png_structp png, png_infop info, PalettedPng* out, std::vector<png_bytep>* rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_init_io(png, f);
  png_read_info(png, info);
  out->color_type = png_get_color_type(png, info);
  out->bit_depth = png_get_bit_depth(png, info);
  png_colorp colours = nullptr;
  int n = 0;
  if (png_get_PLTE(png, info, &colours, &n) & PNG_INFO_PLTE)
    for (int i = 0; i < n; ++i) out->plte.push_back({colours[i].red, colours[i].green, colours[i].blue});
  const int h = static_cast<int>(png_get_image_height(png, info));
  const int w = static_cast<int>(png_get_image_width(png, info));
  if (png_get_rowbytes(png, info) != static_cast<size_t>(w)) return false;
  out->indices = torch::zeros({h, w}, torch::kUInt8);
  for (int y = 0; y < h; ++y) rows->push_back(out->indices[y].data_ptr<uint8_t>());
  png_read_image(png, rows->data());
  return true;
}

PalettedPng read_paletted_png(const std::string& path) {
  PalettedPng out;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    ADD_FAILURE() << "cannot open " << path;
    return out;
  }
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows;
  if (!read_into(f, png, info, &out, &rows)) {
    ADD_FAILURE() << "libpng cannot read " << path;
    out.color_type = -1;
  }
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(f);
  return out;
}

int l1(const std::array<uint8_t, 3>& a, const std::array<uint8_t, 3>& b) {
  return std::abs(a[0] - b[0]) + std::abs(a[1] - b[1]) + std::abs(a[2] - b[2]);
}

TEST(SegRender, PaletteIsStableDistinctAndNeverBlack) {
  const SegPalette p = seg_palette(151);
  ASSERT_EQ(p.size(), 151u);
  EXPECT_EQ(seg_palette(151), p);
  const SegPalette head = seg_palette(11);
  EXPECT_TRUE(std::equal(head.begin(), head.end(), p.begin())) << "a class keeps its colour whatever the count";
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_GE(std::max({p[i][0], p[i][1], p[i][2]}), 150) << "class " << i << " too dark beside ignore's black";
    for (size_t j = 0; j < i; ++j) EXPECT_NE(p[i], p[j]) << i << " " << j;
  }
  // The demo's 11 classes are far apart, not merely different.
  int nearest = 1 << 30;
  for (size_t i = 0; i < head.size(); ++i)
    for (size_t j = 0; j < i; ++j) nearest = std::min(nearest, l1(head[i], head[j]));
  EXPECT_GE(nearest, 60);
  EXPECT_TRUE(seg_palette(0).empty());
  EXPECT_THROW(seg_palette(256), std::invalid_argument);
}

TEST(SegRender, LabelPngHoldsTheClassIndicesAndThePalette) {
  test::TempDir dir;
  const SegPalette palette = seg_palette(20);
  torch::Tensor labels = torch::randint(0, 20, {7, 5}, torch::kLong);
  labels[2][3] = 255;
  labels[6][0] = 255;
  labels[0][0] = 19;
  const std::string path = dir.file("map.png");
  write_label_png(path, labels, palette);
  const PalettedPng png = read_paletted_png(path);
  EXPECT_EQ(png.color_type, PNG_COLOR_TYPE_PALETTE);
  EXPECT_EQ(png.bit_depth, 8);
  ASSERT_EQ(png.plte.size(), 256u);
  for (size_t i = 0; i < 256; ++i)
    EXPECT_EQ(png.plte[i], i < palette.size() ? palette[i] : (std::array<uint8_t, 3>{0, 0, 0})) << i;
  ASSERT_TRUE(png.indices.defined());
  EXPECT_TRUE(torch::equal(png.indices.to(torch::kLong), labels));
  // What a viewer shows: the palette's colours, ignore black (OpenCV expands the palette, in BGR).
  const cv::Mat shown = cv::imread(path, cv::IMREAD_COLOR);
  ASSERT_EQ(shown.size(), cv::Size(5, 7));
  const cv::Vec3b at = shown.at<cv::Vec3b>(0, 0);
  EXPECT_EQ(at, cv::Vec3b(palette[19][2], palette[19][1], palette[19][0]));
  EXPECT_EQ(shown.at<cv::Vec3b>(2, 3), cv::Vec3b(0, 0, 0));

  // uint8 maps and views (a transposed map is not contiguous) are the same class maps.
  write_label_png(path, labels.t().to(torch::kUInt8), palette);
  EXPECT_TRUE(torch::equal(read_paletted_png(path).indices.to(torch::kLong), labels.t()));
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
}

TEST(SegRender, BadLabelsAndUnwritablePathsAreOneLine) {
  test::TempDir dir;
  const SegPalette palette = seg_palette(20);
  torch::Tensor labels = torch::zeros({4, 6}, torch::kLong);
  const std::string missing = (dir.path() / "no" / "such" / "map.png").string();
  std::string msg = test::error_of<std::runtime_error>([&] { write_label_png(missing, labels, palette); });
  EXPECT_TRUE(contains(msg, missing)) << msg;
  EXPECT_TRUE(contains(msg, "No such file or directory")) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);

  const std::string path = dir.file("map.png");
  labels[1][4] = 37;
  msg = test::error_of<std::runtime_error>([&] { write_label_png(path, labels, palette); });
  EXPECT_EQ(msg, path + ": label 37 at (row 1, column 4) is neither a class of the 20-colour palette nor 255 "
                        "(ignore)");
  EXPECT_FALSE(fs::exists(path));
  labels[1][4] = -1;
  EXPECT_TRUE(contains(test::error_of<std::runtime_error>([&] { write_label_png(path, labels, palette); }),
                       "label -1 at"));
  labels[1][4] = 20;  // one past the palette
  EXPECT_TRUE(contains(test::error_of<std::runtime_error>([&] { seg_colorize(labels, palette); }), "label 20 at"));
  EXPECT_TRUE(contains(test::error_of<std::runtime_error>([&] { write_label_png(path, torch::zeros({3}), palette); }),
                       "a label map must be a non-empty [H, W] tensor"));
  EXPECT_TRUE(contains(test::error_of<std::runtime_error>([&] {
                         write_label_png(path, torch::zeros({2, 2}, torch::kFloat32), palette);
                       }),
                       "must hold integers"));
  EXPECT_THROW(seg_overlay(cv::Mat(3, 3, CV_8UC1), torch::zeros({4, 6}, torch::kLong), palette),
               std::runtime_error);
}

// Every pixel of the overlay is round((1 - alpha) * image + alpha * colour) per channel, ignore keeps the image;
// grey images are replicated to RGB first.
TEST(SegRender, OverlayIsTheBlendAndIgnoreKeepsTheImage) {
  const SegPalette palette = seg_palette(5);
  torch::manual_seed(3);
  const torch::Tensor labels = torch::randint(0, 5, {6, 9}, torch::kLong);
  labels[0][0] = 255;
  labels[5][8] = 255;
  cv::Mat grey(6, 9, CV_8UC1), rgb(6, 9, CV_8UC3);
  cv::randu(grey, 0, 256);
  cv::randu(rgb, cv::Scalar::all(0), cv::Scalar::all(256));
  for (const double alpha : {0.5, 0.3}) {
    for (const cv::Mat& image : {grey, rgb}) {
      const cv::Mat out = seg_overlay(image, labels.to(torch::kUInt8), palette, alpha);
      ASSERT_EQ(out.type(), CV_8UC3);
      for (int y = 0; y < 6; ++y)
        for (int x = 0; x < 9; ++x)
          for (int c = 0; c < 3; ++c) {
            const int v = image.channels() == 1 ? image.at<uint8_t>(y, x) : image.at<cv::Vec3b>(y, x)[c];
            const int l = static_cast<int>(labels[y][x].item<int64_t>());
            const int want =
                l == 255 ? v : static_cast<int>(std::floor((1 - alpha) * v + alpha * palette[l][c] + 0.5));
            ASSERT_EQ(out.at<cv::Vec3b>(y, x)[c], want) << alpha << " " << x << "," << y << "," << c;
          }
    }
  }
  EXPECT_THROW(seg_overlay(grey, labels, palette, 1.5), std::invalid_argument);
}

TEST(SegRender, SideBySideIsImageTruthPredictionEnlarged) {
  const SegPalette palette = seg_palette(3);
  const torch::Tensor truth = torch::tensor({{0, 1}, {2, 255}}, torch::kLong);
  const torch::Tensor pred = torch::tensor({{2, 2}, {0, 1}}, torch::kLong);
  cv::Mat image(2, 2, CV_8UC1, cv::Scalar(77));
  const cv::Mat strip = seg_side_by_side(image, truth, pred, palette, /*scale=*/3, /*gap=*/2);
  ASSERT_EQ(strip.size(), cv::Size(3 * 6 + 2 * 2, 6));
  auto rgb = [](const std::array<uint8_t, 3>& c) { return cv::Vec3b(c[0], c[1], c[2]); };
  EXPECT_EQ(strip.at<cv::Vec3b>(5, 5), cv::Vec3b(77, 77, 77));
  EXPECT_EQ(strip.at<cv::Vec3b>(0, 6), cv::Vec3b(255, 255, 255)) << "gap";
  EXPECT_EQ(strip.at<cv::Vec3b>(2, 8 + 4), rgb(palette[1])) << "truth (0, 1)";
  EXPECT_EQ(strip.at<cv::Vec3b>(4, 8 + 4), cv::Vec3b(0, 0, 0)) << "truth ignore";
  EXPECT_EQ(strip.at<cv::Vec3b>(5, 16 + 0), rgb(palette[0])) << "prediction (1, 0)";

  // Written as a file, the colours come back (RGB in memory, BGR on OpenCV's side).
  test::TempDir dir;
  write_rgb_image(dir.file("strip.png"), strip);
  cv::Mat back = cv::imread(dir.file("strip.png"), cv::IMREAD_COLOR);
  cv::cvtColor(back, back, cv::COLOR_BGR2RGB);
  EXPECT_EQ(cv::norm(back, strip, cv::NORM_INF), 0.0);
  EXPECT_TRUE(contains(test::error_of<std::runtime_error>([&] { write_rgb_image(dir.file("strip.xyz"), strip); }),
                       "strip.xyz"));
}

}  // namespace
}  // namespace nepa
