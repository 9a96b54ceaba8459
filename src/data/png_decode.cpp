#include "png_decode.h"

#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstring>

#include "nepa/data/dataset.h"

namespace nepa::data_detail {
namespace {

// libpng reports errors through a callback that must not return: setjmp/longjmp, confined to run_png() where
// nothing has a destructor (as run_jpeg in dataset.cpp).
struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const std::uint8_t* data = nullptr;
  std::size_t size = 0, pos = 0;
  char message[256] = {};
};

void on_error(png_structp png, png_const_charp msg) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  std::strncpy(r->message, msg ? msg : "unknown error", sizeof(r->message) - 1);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // e.g. "iCCP: known incorrect sRGB profile": PIL is silent too

void read_bytes(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "unexpected end of data");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

enum class PngResult { kOk, kLeftToOpenCv, kError };

// `rows` belongs to the caller: nothing in here may own memory a longjmp would skip freeing.
PngResult run_png(PngReader* r, int channels, cv::Mat* out, std::vector<png_bytep>* rows) {
  if (setjmp(png_jmpbuf(r->png))) return PngResult::kError;
  png_set_read_fn(r->png, r, read_bytes);
  png_read_info(r->png, r->info);
  const int color = png_get_color_type(r->png, r->info);
  const int depth = png_get_bit_depth(r->png, r->info);
  const bool grey_source = (color & PNG_COLOR_MASK_COLOR) == 0;
  if (channels == 1 && !grey_source) return PngResult::kLeftToOpenCv;
  // The transforms cv::imdecode sets for 8-bit colour or grey output.
  if (depth == 16) png_set_strip_16(r->png);
  png_set_strip_alpha(r->png);  // also the alpha a palette's tRNS would expand to
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r->png);
  if (grey_source && depth < 8) png_set_expand_gray_1_2_4_to_8(r->png);
  if (grey_source && channels == 3) png_set_gray_to_rgb(r->png);
  png_set_interlace_handling(r->png);
  png_read_update_info(r->png, r->info);
  const png_uint_32 w = png_get_image_width(r->png, r->info), h = png_get_image_height(r->png, r->info);
  if (png_get_channels(r->png, r->info) != channels || png_get_rowbytes(r->png, r->info) != w * channels)
    png_error(r->png, "unexpected layout after expansion");
  out->create(static_cast<int>(h), static_cast<int>(w), channels == 1 ? CV_8UC1 : CV_8UC3);
  rows->resize(h);
  for (png_uint_32 y = 0; y < h; ++y) (*rows)[y] = out->ptr(static_cast<int>(y));
  png_read_image(r->png, rows->data());
  png_read_end(r->png, nullptr);
  return PngResult::kOk;
}

}  // namespace

cv::Mat decode_png(const std::vector<std::uint8_t>& bytes, int channels, const std::string& path) {
  PngReader r;
  r.data = bytes.data();
  r.size = bytes.size();
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, on_error, on_warning);
  if (!r.png) throw DataError(path + ": cannot decode PNG (libpng could not start)");
  r.info = png_create_info_struct(r.png);
  cv::Mat out;
  std::vector<png_bytep> rows;
  const PngResult result = r.info ? run_png(&r, channels, &out, &rows) : PngResult::kError;
  png_destroy_read_struct(&r.png, r.info ? &r.info : nullptr, nullptr);
  if (result == PngResult::kError)
    throw DataError(path + ": cannot decode PNG (" + std::string(r.message[0] ? r.message : "out of memory") + ")");
  return result == PngResult::kOk ? out : cv::Mat();
}

}  // namespace nepa::data_detail
