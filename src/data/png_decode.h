// PNG decoding through libpng directly, with its messages caught: libpng prints warnings and errors to stderr
// by default (as it does inside cv::imdecode), raw lines beside ours. Internal to src/data.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace nepa::data_detail {

// The PNG in `bytes` as 8-bit RGB (channels 3) or grey (channels 1), pixel for pixel what cv::imdecode gives
// (and PIL's convert): 16-bit samples keep their high byte, palettes expand, alpha is dropped (not composited).
// An empty Mat for the one case left to OpenCV (a colour PNG read as grey). Throws DataError naming `path` with
// libpng's message; libpng's warnings are dropped, as PIL drops them.
cv::Mat decode_png(const std::vector<std::uint8_t>& bytes, int channels, const std::string& path);

}  // namespace nepa::data_detail
