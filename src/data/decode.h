// Image decoding shared by the datasets of src/data (internal): JPEG through libjpeg, PNG through libpng, the
// rest through OpenCV; truncated files are refused before decoding.
#pragma once

#include <opencv2/core.hpp>

#include <string>
#include <vector>

namespace nepa::data_detail {

// The image at `path` as 8-bit RGB (channels 3) or grey (channels 1). Throws DataError naming the file, and
// std::invalid_argument for another channel count.
cv::Mat decode_image_file(const std::string& path, int channels);

// The whole file. Throws DataError naming it with the system's reason.
std::vector<unsigned char> read_file(const std::string& path);

}  // namespace nepa::data_detail
