#include "nepa/data/randaugment.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace nepa {

namespace {

constexpr double kLevelDenom = 10.0;  // timm's _LEVEL_DENOM
constexpr AugOp kIncreasingOps[] = {
    AugOp::kAutoContrast,        AugOp::kEqualize,           AugOp::kInvert,           AugOp::kRotate,
    AugOp::kPosterizeIncreasing, AugOp::kSolarizeIncreasing, AugOp::kSolarizeAdd,      AugOp::kColorIncreasing,
    AugOp::kContrastIncreasing,  AugOp::kBrightnessIncreasing, AugOp::kSharpnessIncreasing, AugOp::kShearX,
    AugOp::kShearY,              AugOp::kTranslateXRel,      AugOp::kTranslateYRel};

double randomly_negate(double v, SampleRng& rng) { return rng.uniform() > 0.5 ? -v : v; }

// A per-channel lookup table built by `make(channel_plane)`.
template <class F>
cv::Mat per_channel_lut(const cv::Mat& image, F make) {
  std::vector<cv::Mat> planes, out;
  cv::split(image, planes);
  for (const auto& p : planes) {
    cv::Mat lut(1, 256, CV_8U);
    make(p, lut.ptr<uchar>());
    cv::Mat o;
    cv::LUT(p, lut, o);
    out.push_back(o);
  }
  cv::Mat result;
  cv::merge(out, result);
  return result;
}

cv::Mat apply_lut(const cv::Mat& image, const uchar* table) {
  cv::Mat lut(1, 256, CV_8U, const_cast<uchar*>(table)), out;
  cv::LUT(image, lut, out);
  return out;
}

// PIL's Image.blend(degenerate, image, factor) for uint8: degenerate + factor * (image - degenerate), clipped.
cv::Mat blend(const cv::Mat& degenerate, const cv::Mat& image, double factor) {
  cv::Mat out(image.size(), image.type());
  const int n = image.rows * image.cols * image.channels();
  const uchar* a = degenerate.ptr<uchar>();
  const uchar* b = image.ptr<uchar>();
  uchar* o = out.ptr<uchar>();
  const float f = static_cast<float>(factor);
  for (int i = 0; i < n; ++i) {
    const float v = static_cast<float>(a[i]) + f * (static_cast<float>(b[i]) - static_cast<float>(a[i]));
    o[i] = v <= 0.f ? 0 : v < 256.f ? static_cast<uchar>(v) : 255;
  }
  return out;
}

// PIL's RGB -> L: (R 19595 + G 38470 + B 7471 + 2^15) >> 16.
cv::Mat luminance(const cv::Mat& image) {
  if (image.channels() == 1) return image.clone();
  cv::Mat l(image.size(), CV_8UC1);
  for (int y = 0; y < image.rows; ++y) {
    const uchar* p = image.ptr<uchar>(y);
    uchar* q = l.ptr<uchar>(y);
    for (int x = 0; x < image.cols; ++x, p += 3)
      q[x] = static_cast<uchar>((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
  }
  return l;
}

cv::Mat as_channels(const cv::Mat& gray, int channels) {
  if (channels == 1) return gray;
  cv::Mat out;
  cv::cvtColor(gray, out, cv::COLOR_GRAY2RGB);
  return out;
}

cv::Mat enhance_color(const cv::Mat& image, double f) {
  return blend(as_channels(luminance(image), image.channels()), image, f);
}

cv::Mat enhance_contrast(const cv::Mat& image, double f) {
  const double mean = cv::mean(luminance(image))[0];
  cv::Mat degenerate(image.size(), image.type(), cv::Scalar::all(static_cast<int>(mean + 0.5)));
  return blend(degenerate, image, f);
}

cv::Mat enhance_brightness(const cv::Mat& image, double f) {
  return blend(cv::Mat::zeros(image.size(), image.type()), image, f);
}

cv::Mat enhance_sharpness(const cv::Mat& image, double f) {
  // PIL's SMOOTH filter (3x3, centre 5, others 1, /13), border pixels kept from the original.
  cv::Mat degenerate = image.clone();
  if (image.rows > 2 && image.cols > 2) {
    cv::Mat smooth;
    const cv::Mat kernel = (cv::Mat_<float>(3, 3) << 1, 1, 1, 1, 5, 1, 1, 1, 1) / 13.f;
    cv::filter2D(image, smooth, -1, kernel, cv::Point(-1, -1), 0, cv::BORDER_REPLICATE);
    smooth(cv::Rect(1, 1, image.cols - 2, image.rows - 2)).copyTo(degenerate(cv::Rect(1, 1, image.cols - 2, image.rows - 2)));
  }
  return blend(degenerate, image, f);
}

// PIL Image.transform(AFFINE, (a, b, c, d, e, f)): output pixel (x, y) samples the input at
// (a x + b y + c, d x + e y + f) in PIL's continuous coordinates (pixel centres at +0.5).
cv::Mat affine(const cv::Mat& image, double a, double b, double c, double d, double e, double f,
               const AugParams& params) {
  // In pixel-centre coordinates u = x + 0.5: u_in = a u + b v + c  =>  x_in = a x + b y + c + 0.5 (a + b - 1).
  cv::Mat m = (cv::Mat_<double>(2, 3) << a, b, c + 0.5 * (a + b - 1), d, e, f + 0.5 * (d + e - 1));
  cv::Mat out;
  cv::warpAffine(image, out, m, image.size(), params.interpolation | cv::WARP_INVERSE_MAP, cv::BORDER_CONSTANT,
                 params.fill);
  return out;
}

double enhance_increasing_factor(double m, SampleRng& rng) {
  return std::max(0.1, 1.0 + randomly_negate(m / kLevelDenom * 0.9, rng));
}

}  // namespace

const char* aug_op_name(AugOp op) {
  static const char* names[] = {"AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                                "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                                "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
                                "TranslateYRel"};
  return names[static_cast<int>(op)];
}

RandAugmentSpec RandAugmentSpec::parse(const std::string& text) {
  RandAugmentSpec s;
  size_t pos = 0;
  auto next = [&]() {
    size_t end = text.find('-', pos);
    std::string part = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? text.size() + 1 : end + 1;
    return part;
  };
  if (next() != "rand") throw std::invalid_argument("auto_augment '" + text + "': only rand-... (RandAugment) is supported");
  bool increasing = false;
  while (pos <= text.size()) {
    const std::string part = next();
    auto value = [&](size_t skip) {
      try {
        size_t used = 0;
        const std::string v = part.substr(skip);
        const double d = v == "inf" ? std::numeric_limits<double>::infinity() : std::stod(v, &used);
        if (v != "inf" && used != v.size()) throw std::invalid_argument(v);
        return d;
      } catch (const std::exception&) {
        throw std::invalid_argument("auto_augment '" + text + "': cannot read '" + part + "'");
      }
    };
    if (part.rfind("mstd", 0) == 0) s.magnitude_std = value(4);
    else if (part.rfind("mmax", 0) == 0) s.magnitude_max = value(4);
    else if (part.rfind("inc", 0) == 0) increasing = value(3) != 0;
    else if (part.rfind("m", 0) == 0) s.magnitude = value(1);
    else if (part.rfind("n", 0) == 0) s.num_ops = static_cast<int>(value(1));
    else if (part.rfind("p", 0) == 0) s.prob = value(1);
    else throw std::invalid_argument("auto_augment '" + text + "': unknown part '" + part + "'");
  }
  if (!increasing) throw std::invalid_argument("auto_augment '" + text + "': only the increasing op set (inc1) is offered");
  if (s.num_ops < 1 || s.magnitude < 0 || s.prob < 0 || s.prob > 1 || s.magnitude_std < 0)
    throw std::invalid_argument("auto_augment '" + text + "': n >= 1, m >= 0, mstd >= 0, p in [0, 1]");
  return s;
}

cv::Mat apply_aug_op(const cv::Mat& image, AugOp op, double m, const AugParams& params, SampleRng& rng) {
  switch (op) {
    case AugOp::kAutoContrast:
      return per_channel_lut(image, [](const cv::Mat& p, uchar* lut) {
        double lo, hi;
        cv::minMaxLoc(p, &lo, &hi);
        for (int i = 0; i < 256; ++i) lut[i] = static_cast<uchar>(i);
        if (hi <= lo) return;
        const double scale = 255.0 / (hi - lo), offset = -lo * scale;
        for (int i = 0; i < 256; ++i) lut[i] = static_cast<uchar>(std::clamp(static_cast<int>(i * scale + offset), 0, 255));
      });
    case AugOp::kEqualize:
      return per_channel_lut(image, [](const cv::Mat& p, uchar* lut) {
        // PIL ImageOps.equalize: step = (pixels - count of the last non-empty bin) // 255.
        int64_t hist[256] = {0};
        for (int y = 0; y < p.rows; ++y)
          for (int x = 0; x < p.cols; ++x) ++hist[p.at<uchar>(y, x)];
        int64_t total = 0, last = 0;
        for (int i = 0; i < 256; ++i) {
          total += hist[i];
          if (hist[i]) last = hist[i];
        }
        const int64_t step = (total - last) / 255;
        for (int i = 0; i < 256; ++i) lut[i] = static_cast<uchar>(i);
        if (step == 0) return;
        int64_t n = step / 2;
        for (int i = 0; i < 256; ++i) {
          lut[i] = static_cast<uchar>(std::min<int64_t>(n / step, 255));
          n += hist[i];
        }
      });
    case AugOp::kInvert: {
      cv::Mat out;
      cv::bitwise_not(image, out);
      return out;
    }
    case AugOp::kRotate: {
      const double degrees = randomly_negate(m / kLevelDenom * 30.0, rng);
      cv::Mat r = cv::getRotationMatrix2D(cv::Point2f((image.cols - 1) / 2.f, (image.rows - 1) / 2.f), degrees, 1.0), out;
      cv::warpAffine(image, out, r, image.size(), params.interpolation, cv::BORDER_CONSTANT, params.fill);
      return out;
    }
    case AugOp::kPosterizeIncreasing: {
      const int bits = 4 - static_cast<int>(m / kLevelDenom * 4);
      if (bits >= 8) return image.clone();
      uchar lut[256];
      const int mask = ~((1 << (8 - bits)) - 1) & 0xFF;
      for (int i = 0; i < 256; ++i) lut[i] = static_cast<uchar>(i & mask);
      return apply_lut(image, lut);
    }
    case AugOp::kSolarizeIncreasing: {
      const int thresh = 256 - std::min(256, static_cast<int>(m / kLevelDenom * 256));
      uchar lut[256];
      for (int i = 0; i < 256; ++i) lut[i] = static_cast<uchar>(i >= thresh ? 255 - i : i);
      return apply_lut(image, lut);
    }
    case AugOp::kSolarizeAdd: {
      const int add = std::min(128, static_cast<int>(m / kLevelDenom * 110));
      uchar lut[256];
      for (int i = 0; i < 256; ++i) lut[i] = static_cast<uchar>(i < 128 ? std::min(255, i + add) : i);
      return apply_lut(image, lut);
    }
    case AugOp::kColorIncreasing: return enhance_color(image, enhance_increasing_factor(m, rng));
    case AugOp::kContrastIncreasing: return enhance_contrast(image, enhance_increasing_factor(m, rng));
    case AugOp::kBrightnessIncreasing: return enhance_brightness(image, enhance_increasing_factor(m, rng));
    case AugOp::kSharpnessIncreasing: return enhance_sharpness(image, enhance_increasing_factor(m, rng));
    case AugOp::kShearX: return affine(image, 1, randomly_negate(m / kLevelDenom * 0.3, rng), 0, 0, 1, 0, params);
    case AugOp::kShearY: return affine(image, 1, 0, 0, randomly_negate(m / kLevelDenom * 0.3, rng), 1, 0, params);
    case AugOp::kTranslateXRel:
      return affine(image, 1, 0, randomly_negate(m / kLevelDenom * params.translate_pct, rng) * image.cols, 0, 1, 0,
                    params);
    case AugOp::kTranslateYRel:
      return affine(image, 1, 0, 0, 0, 1, randomly_negate(m / kLevelDenom * params.translate_pct, rng) * image.rows,
                    params);
  }
  throw std::logic_error("apply_aug_op: unknown op");
}

cv::Mat rand_augment(const cv::Mat& image, const RandAugmentSpec& spec, const AugParams& params, SampleRng& rng) {
  constexpr int kOps = sizeof(kIncreasingOps) / sizeof(kIncreasingOps[0]);
  cv::Mat img = image;
  AugOp chosen[16];
  const int n = std::min(spec.num_ops, 16);
  for (int i = 0; i < n; ++i) chosen[i] = kIncreasingOps[rng.randint(0, kOps - 1)];  // with replacement
  for (int i = 0; i < n; ++i) {
    if (spec.prob < 1.0 && rng.uniform() > spec.prob) continue;
    double m = spec.magnitude;
    if (std::isinf(spec.magnitude_std)) {
      m = rng.uniform(0.0, m);
    } else if (spec.magnitude_std > 0) {
      const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
      m += spec.magnitude_std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
    }
    m = std::clamp(m, 0.0, spec.magnitude_max);
    img = apply_aug_op(img, chosen[i], m, params, rng);
  }
  return img;
}

cv::Mat color_jitter(const cv::Mat& image, double strength, SampleRng& rng) {
  if (strength <= 0) return image;
  int order[3] = {0, 1, 2};  // brightness, contrast, saturation in a random order (torchvision's randperm)
  for (int i = 2; i > 0; --i) std::swap(order[i], order[rng.randint(0, i)]);
  cv::Mat img = image;
  for (int k : order) {
    const double f = rng.uniform(std::max(0.0, 1.0 - strength), 1.0 + strength);
    img = k == 0 ? enhance_brightness(img, f) : k == 1 ? enhance_contrast(img, f) : enhance_color(img, f);
  }
  return img;
}

bool random_erase(float* chw, int channels, int height, int width, double prob, SampleRng& rng) {
  if (prob <= 0 || rng.uniform() > prob) return false;
  const double area = static_cast<double>(height) * width;
  const double log_lo = std::log(0.3), log_hi = std::log(1.0 / 0.3);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = rng.uniform(0.02, 1.0 / 3.0) * area;
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int h = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int w = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (w < width && h < height) {
      const int top = static_cast<int>(rng.randint(0, height - h)), left = static_cast<int>(rng.randint(0, width - w));
      for (int c = 0; c < channels; ++c)
        for (int y = top; y < top + h; ++y)
          for (int x = left; x < left + w; ++x) {
            const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
            chw[(static_cast<int64_t>(c) * height + y) * width + x] =
                static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
          }
      return true;
    }
  }
  return false;
}

}  // namespace nepa
