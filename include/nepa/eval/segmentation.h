// Semantic-segmentation evaluation as mmsegmentation's ADE20K protocol does it: sliding-window inference
// (mmseg's slide_inference), logits resized to the label's size before the argmax, one confusion matrix summed
// over the whole set (and over ranks), and IoUMetric's figures computed from it once at the end. Per-image
// IoUs are never averaged: a class's IoU is its pixels over the whole set, which is what the published
// mIoU numbers mean.
#pragma once

#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "nepa/dist/comm.h"

namespace nepa {

// Pixel counts over a set of label maps. The matrix is int64 on CPU so that counts over a whole validation
// set (ADE20K: ~1e9 pixels) neither overflow nor lose precision, and so that ranks can sum it exactly.
struct SegConfusion {
  explicit SegConfusion(int64_t num_classes, int64_t ignore_index = 255);

  // `pred` and `label`: integer maps of the same shape (any leading dims, any device). Pixels whose label is
  // ignore_index are skipped whatever their prediction. Throws std::runtime_error when a counted pixel's label
  // or prediction lies outside [0, num_classes): silently dropping it would bias every figure.
  void add(const torch::Tensor& pred, const torch::Tensor& label);

  // Sums the matrix over the ranks of `comm` (nothing for nullptr or a world of one); every rank must call it.
  void all_reduce(dist::Comm* comm);

  int64_t num_classes() const { return num_classes_; }
  int64_t ignore_index() const { return ignore_index_; }

  torch::Tensor matrix;  // int64 [C, C], CPU: rows = true class, columns = predicted

 private:
  int64_t num_classes_, ignore_index_;
};

// mmseg IoUMetric's figures, in percent. NaN marks a class the formula leaves undefined: IoU when the class is
// in neither prediction nor label, Acc when it is absent from the labels. The means skip NaNs (np.nanmean).
struct SegMetrics {
  std::vector<double> iou, acc;  // per class
  double miou = 0, macc = 0, aacc = 0;
};

// From an int64 [C, C] confusion (rows = true, columns = predicted).
SegMetrics segmentation_metrics(const torch::Tensor& confusion);

// "class,name,iou,acc" rows (4 decimals, NaN as "nan"); `names` may be shorter than C (the index stands in).
void write_segmentation_csv(const SegMetrics& m, const std::vector<std::string>& names, const std::string& path);
// mmseg's per-class table as Markdown (Class | IoU | Acc, 2 decimals), then a line "mIoU: .. | mAcc: .. | aAcc: ..".
void write_segmentation_markdown(const SegMetrics& m, const std::vector<std::string>& names, const std::string& path);

using LogitsFn = std::function<torch::Tensor(const torch::Tensor&)>;

// One window of slide inference: rows [y1, y2), columns [x1, x2) of the image.
struct SlideWindow {
  int64_t y1, y2, x1, x2;
  bool operator==(const SlideWindow& o) const { return y1 == o.y1 && y2 == o.y2 && x1 == o.x1 && x2 == o.x2; }
};

// mmseg's window grid, row-major: the last window of a row/column is shifted back to end at the border, so
// every window is crop x crop unless the image itself is smaller.
std::vector<SlideWindow> slide_windows(int64_t height, int64_t width, int64_t crop, int64_t stride);

// `image` [N, 3, H, W] (resized and normalised by the caller); `logits_of` maps a crop [N, 3, h, w] to
// [N, C, h, w]. Returns the per-pixel mean of the windows' logits, [N, C, H, W] (float32, or float64 for
// float64 logits). `count`, when given, receives how many windows covered each pixel, float [H, W].
torch::Tensor slide_inference(const torch::Tensor& image, const LogitsFn& logits_of, int64_t crop, int64_t stride,
                              torch::Tensor* count = nullptr);
torch::Tensor whole_inference(const torch::Tensor& image, const LogitsFn& logits_of);

// `logits` [1, C, H, W] resized to height x width (bilinear, align_corners=false, as mmseg's postprocess) and
// argmaxed over C: int64 [height, width] on the logits' device.
torch::Tensor segmentation_prediction(const torch::Tensor& logits, int64_t height, int64_t width);

}  // namespace nepa
