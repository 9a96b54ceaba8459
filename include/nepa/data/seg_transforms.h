// Joint image + label-map transforms for semantic segmentation, following mmsegmentation's ADE20K pipeline
// (configs/_base_/datasets/ade20k.py):
//   train: RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)
//          -> RandomCrop(crop_size=(512, 512), cat_max_ratio=0.75) -> RandomFlip(prob=0.5)
//          -> PhotoMetricDistortion -> (data preprocessor) normalise, pad to crop x crop (image 0, labels 255)
//   test:  Resize(scale=(2048, 512), keep_ratio=True)
// Images are uint8 RGB (HxWx3) or grey (HxWx1); label maps are uint8 HxW (CV_8UC1) with ignore_index (255) for
// pixels that carry no label. Loading (and ADE20K's reduce_zero_label) happens before these functions.
//
// Randomness comes only from the SampleRng passed in, drawn in a fixed order (resize ratio, crop offsets row then
// column for each box tried, flip, photometric draws), so a sample's view is a pure function of its generator.
// SampleRng::randint(lo, hi) draws nothing when hi <= lo (a zero crop margin), which numpy would; the view is
// still deterministic.
#pragma once

#include <opencv2/core/mat.hpp>

#include "nepa/data/transforms.h"

namespace nepa {

struct SegTrainOptions {
  int scale_long = 2048;  // the (long, short) edge limits of the keep-ratio resize at ratio 1 (any order: max/min)
  int scale_short = 512;
  double ratio_lo = 0.5;  // resize ratio r ~ U[ratio_lo, ratio_hi); target = (int(long * r), int(short * r))
  double ratio_hi = 2.0;
  int crop = 512;               // crop (and pad) size, square
  double cat_max_ratio = 0.75;  // >= 1 disables the class-balance re-draws of the crop box
  double flip_prob = 0.5;
  bool photometric = true;
  int ignore_index = 255;
};

struct SegView {
  cv::Mat image;   // uint8, same channels as the input
  cv::Mat labels;  // CV_8UC1, same size as image
};

// mmcv.rescale_size with a (long, short) scale tuple: factor = min(max(long, short) / max(h, w),
// min(long, short) / min(h, w)); new size = (int(w * factor + 0.5), int(h * factor + 0.5)) as cv::Size(w, h).
cv::Size rescale_size(int width, int height, int scale_long, int scale_short);

// Step 1 (mmcv RandomResize with keep_ratio): r = rng.uniform(ratio_lo, ratio_hi), target (int(scale_long * r),
// int(scale_short * r)), size by rescale_size; the image is resized with cv::resize INTER_LINEAR (mmcv.imresize's
// 'bilinear'; not resize_image's antialiased filter), the labels with INTER_NEAREST. One uniform draw.
SegView seg_random_resize(const cv::Mat& image, const cv::Mat& labels, const SegTrainOptions& options, SampleRng& rng);

// Step 2 (mmseg RandomCrop.crop_bbox): a box of min(crop, h) x min(crop, w) at offset_h = rng.randint(0, max(h -
// crop, 0)), then offset_w = rng.randint(0, max(w - crop, 0)). If cat_max_ratio < 1 the box is checked up to 10
// times: the label counts in the box, ignore excluded, must hold more than one class and max / sum <
// cat_max_ratio; each failed check draws a new box, so after 10 failures the 11th box is used.
cv::Rect seg_crop_box(const cv::Mat& labels, int crop, double cat_max_ratio, int ignore_index, SampleRng& rng);

// mmseg PhotoMetricDistortion.convert: float32(x) * alpha + beta, clipped to [0, 255], truncated to uint8.
cv::Mat photometric_convert(const cv::Mat& image, double alpha, double beta);
// mmseg saturation step (without its draws): RGB -> HSV (OpenCV 8-bit), S = convert(S, alpha), -> RGB.
cv::Mat adjust_saturation(const cv::Mat& rgb, double alpha);
// mmseg hue step (without its draws): RGB -> HSV, H = (H + delta) mod 180 (non-negative, as Python's %), -> RGB.
cv::Mat shift_hue(const cv::Mat& rgb, int delta);

// Step 4, mmseg PhotoMetricDistortion on a uint8 RGB (or grey) image, draws in mmseg's order:
//   brightness: if randint(0, 1): beta = uniform(-32, 32)
//   mode = randint(0, 1); if mode == 1: contrast: if randint(0, 1): alpha = uniform(0.5, 1.5)
//   saturation: if randint(0, 1): alpha = uniform(0.5, 1.5)   (its own HSV round trip, as mmseg)
//   hue: if randint(0, 1): delta = randint(-18, 17)          (numpy randint(-18, 18) excludes 18; own round trip)
//   if mode == 0: contrast as above.
// A grey (1-channel) image skips saturation and hue, drawing nothing for them.
cv::Mat photometric_distortion(const cv::Mat& image, SampleRng& rng);

// Steps 1-4: resize, crop, flip (rng.uniform() < flip_prob, image and labels together), photometric distortion
// (image only, when options.photometric). Returns the unpadded uint8 view (at most crop x crop). The caller pads:
// pad_labels for the label map (ignore_index), and the normalised float image with 0 at the bottom/right, as
// mmseg's SegDataPreProcessor does after normalisation. Throws std::invalid_argument when the image and labels
// differ in size (naming both) or have the wrong types.
SegView seg_train_view(const cv::Mat& image, const cv::Mat& labels, const SegTrainOptions& options, SampleRng& rng);

// Step 5 for labels: pads at the bottom/right with ignore_index to at least crop x crop (a larger side is kept).
cv::Mat pad_labels(const cv::Mat& labels, int crop, int ignore_index = 255);

// Evaluation resize (mmseg test pipeline Resize(scale, keep_ratio=True)): rescale_size with (scale_long,
// scale_short) and cv::resize INTER_LINEAR; no randomness. Labels are left at the original size (mmseg evaluates
// against the original annotation).
cv::Mat seg_eval_resize(const cv::Mat& image, int scale_long = 2048, int scale_short = 512);

}  // namespace nepa
