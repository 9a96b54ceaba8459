#include "nepa/eval/seg_evaluate.h"

#include <torch/torch.h>

#include <algorithm>

#include "nepa/data/seg_transforms.h"
#include "nepa/data/transforms.h"

namespace nepa {
namespace F = torch::nn::functional;

namespace {

torch::Tensor resized(const torch::Tensor& logits, int64_t h, int64_t w) {
  if (logits.size(2) == h && logits.size(3) == w) return logits;
  return F::interpolate(logits.to(torch::kFloat32), F::InterpolateFuncOptions()
                                                        .size(std::vector<int64_t>{h, w})
                                                        .mode(torch::kBilinear)
                                                        .align_corners(false));
}

// A window's logits at its own size: the window padded with 0 (normalised units, as training crops are padded)
// to a multiple of the patch, the model, its logits resized to the padded size and cut back.
torch::Tensor window_logits(const torch::Tensor& crop, const SegModelFn& model, int patch) {
  const int64_t h = crop.size(2), w = crop.size(3);
  const int64_t ph = (h + patch - 1) / patch * patch, pw = (w + patch - 1) / patch * patch;
  const torch::Tensor input = ph == h && pw == w ? crop : F::pad(crop, F::PadFuncOptions({0, pw - w, 0, ph - h}));
  const torch::Tensor logits = resized(model(input), ph, pw);
  return logits.narrow(2, 0, h).narrow(3, 0, w);
}

}  // namespace

torch::Tensor segment_image(const cv::Mat& image, const SegModelFn& model, const SegEvalOptions& o) {
  const cv::Mat view = seg_eval_resize(image, o.scale_long, o.scale_short);
  torch::Tensor x = torch::empty({1, view.channels(), view.rows, view.cols});
  normalise_into(view, o.mean, o.std, x.data_ptr<float>());
  x = x.to(o.device);
  const LogitsFn logits_of = [&](const torch::Tensor& crop) { return window_logits(crop, model, o.patch); };
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = o.crop > 0 ? slide_inference(x, logits_of, o.crop, o.stride) : whole_inference(x, logits_of);
  return segmentation_prediction(logits, image.rows, image.cols).cpu();
}

SegConfusion evaluate_segmentation(const Dataset& dataset, const SegModelFn& model, const SegEvalOptions& o,
                                   dist::Comm* comm, int64_t limit) {
  const int64_t n = limit > 0 ? std::min(limit, dataset.size()) : dataset.size();
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world_size() : 1;
  SegConfusion confusion(dataset.num_classes());
  for (int64_t i = rank; i < n; i += world) {
    const DenseSample s = load_dense_sample(dataset, i, o.channels);
    const torch::Tensor labels = torch::from_blob(s.labels.data, {s.labels.rows, s.labels.cols},
                                                  {static_cast<int64_t>(s.labels.step[0]), 1}, torch::kUInt8)
                                     .to(torch::kInt64);
    confusion.add(segment_image(s.image, model, o), labels);
  }
  confusion.all_reduce(comm);
  return confusion;
}

}  // namespace nepa
