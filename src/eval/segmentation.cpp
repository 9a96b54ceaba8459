#include "nepa/eval/segmentation.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "nepa/io/atomic_file.h"

namespace nepa {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Throws naming the first out-of-range value, so that a mislabelled dataset (e.g. ADE20K labels not shifted by
// reduce_zero_label, or the wrong class count) is caught by what is wrong rather than by a corrupt matrix.
void check_range(const torch::Tensor& values, int64_t num_classes, int64_t ignore_index, const char* what) {
  if (values.numel() == 0) return;
  const int64_t lo = values.min().item<int64_t>(), hi = values.max().item<int64_t>();
  if (lo >= 0 && hi < num_classes) return;
  throw std::runtime_error(fmt::format("segmentation {} {} is out of range for {} classes (ignore_index {})", what,
                                       lo < 0 ? lo : hi, num_classes, ignore_index));
}

double nanmean(const std::vector<double>& v) {
  double sum = 0;
  int64_t n = 0;
  for (double x : v)
    if (!std::isnan(x)) sum += x, ++n;
  return n ? sum / n : kNaN;
}

std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

double ratio_pct(int64_t num, int64_t den) { return den ? 100.0 * num / den : kNaN; }

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string md_field(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

std::string name_of(const std::vector<std::string>& names, size_t c) {
  return c < names.size() ? names[c] : std::to_string(c);
}

// fmt already prints NaN as "nan", but spelling it out keeps the files' contract independent of fmt's choice.
std::string num(double x, int decimals) { return std::isnan(x) ? "nan" : fmt::format("{:.{}f}", x, decimals); }

}  // namespace

SegConfusion::SegConfusion(int64_t num_classes, int64_t ignore_index)
    : num_classes_(num_classes), ignore_index_(ignore_index) {
  if (num_classes <= 0) throw std::runtime_error(fmt::format("SegConfusion: {} classes", num_classes));
  matrix = torch::zeros({num_classes, num_classes}, torch::kInt64);
}

void SegConfusion::add(const torch::Tensor& pred, const torch::Tensor& label) {
  if (pred.sizes() != label.sizes())
    throw std::runtime_error(fmt::format("SegConfusion::add: prediction shape {} differs from label shape {}",
                                         shape_of(pred), shape_of(label)));
  const torch::Tensor l = label.to(torch::kCPU, torch::kInt64).reshape({-1});
  const torch::Tensor p = pred.to(torch::kCPU, torch::kInt64).reshape({-1});
  const torch::Tensor keep = l.ne(ignore_index_);
  const torch::Tensor lk = l.masked_select(keep), pk = p.masked_select(keep);
  check_range(lk, num_classes_, ignore_index_, "label");
  check_range(pk, num_classes_, ignore_index_, "prediction");
  // One bincount over the flattened (true, pred) pairs instead of a loop over classes: a 512x512 map against
  // 150 classes is a single pass.
  const int64_t cc = num_classes_ * num_classes_;
  matrix.add_(torch::bincount(lk * num_classes_ + pk, /*weights=*/{}, cc).view({num_classes_, num_classes_}));
}

void SegConfusion::all_reduce(dist::Comm* comm) {
  if (!comm || comm->world_size() <= 1) return;
  matrix = matrix.contiguous();
  comm->all_reduce(matrix);
}

SegMetrics segmentation_metrics(const torch::Tensor& confusion) {
  const torch::Tensor m = confusion.to(torch::kCPU, torch::kInt64).contiguous();
  if (m.dim() != 2 || m.size(0) != m.size(1))
    throw std::runtime_error(fmt::format("segmentation_metrics: confusion must be [C, C], got {}",
                                         shape_of(m)));
  const int64_t n = m.size(0);
  const torch::Tensor intersect = m.diagonal(), area_label = m.sum(1), area_pred = m.sum(0);
  auto in = intersect.accessor<int64_t, 1>();
  auto al = area_label.accessor<int64_t, 1>();
  auto ap = area_pred.accessor<int64_t, 1>();
  SegMetrics r;
  int64_t total_intersect = 0, total_label = 0;
  for (int64_t c = 0; c < n; ++c) {
    r.iou.push_back(ratio_pct(in[c], al[c] + ap[c] - in[c]));
    r.acc.push_back(ratio_pct(in[c], al[c]));
    total_intersect += in[c];
    total_label += al[c];
  }
  r.miou = nanmean(r.iou);
  r.macc = nanmean(r.acc);
  r.aacc = ratio_pct(total_intersect, total_label);
  return r;
}

void write_segmentation_csv(const SegMetrics& m, const std::vector<std::string>& names, const std::string& path) {
  std::string out = "class,name,iou,acc\n";
  for (size_t c = 0; c < m.iou.size(); ++c)
    out += fmt::format("{},{},{},{}\n", c, csv_field(name_of(names, c)), num(m.iou[c], 4), num(m.acc[c], 4));
  write_text_atomic(path, out);
}

void write_segmentation_markdown(const SegMetrics& m, const std::vector<std::string>& names,
                                 const std::string& path) {
  std::string out = "| Class | IoU | Acc |\n|:--|--:|--:|\n";
  for (size_t c = 0; c < m.iou.size(); ++c)
    out += fmt::format("| {} | {} | {} |\n", md_field(name_of(names, c)), num(m.iou[c], 2), num(m.acc[c], 2));
  out += fmt::format("\nmIoU: {} | mAcc: {} | aAcc: {}\n", num(m.miou, 2), num(m.macc, 2), num(m.aacc, 2));
  write_text_atomic(path, out);
}

std::vector<SlideWindow> slide_windows(int64_t height, int64_t width, int64_t crop, int64_t stride) {
  if (crop <= 0 || stride <= 0 || height <= 0 || width <= 0)
    throw std::runtime_error(fmt::format("slide_windows: image {}x{}, crop {}, stride {} (all must be positive)",
                                         height, width, crop, stride));
  const int64_t h_grids = std::max<int64_t>(height - crop + stride - 1, 0) / stride + 1;
  const int64_t w_grids = std::max<int64_t>(width - crop + stride - 1, 0) / stride + 1;
  std::vector<SlideWindow> out;
  for (int64_t h = 0; h < h_grids; ++h)
    for (int64_t w = 0; w < w_grids; ++w) {
      const int64_t y2 = std::min(h * stride + crop, height), x2 = std::min(w * stride + crop, width);
      out.push_back({std::max<int64_t>(y2 - crop, 0), y2, std::max<int64_t>(x2 - crop, 0), x2});
    }
  return out;
}

torch::Tensor slide_inference(const torch::Tensor& image, const LogitsFn& logits_of, int64_t crop, int64_t stride,
                              torch::Tensor* count) {
  if (image.dim() != 4)
    throw std::runtime_error(fmt::format("slide_inference: image must be [N, 3, H, W], got {}",
                                         shape_of(image)));
  const int64_t n = image.size(0), height = image.size(2), width = image.size(3);
  torch::Tensor sum, counts = torch::zeros({height, width}, image.options().dtype(torch::kFloat32));
  for (const SlideWindow& win : slide_windows(height, width, crop, stride)) {
    const int64_t h = win.y2 - win.y1, w = win.x2 - win.x1;
    const torch::Tensor logits = logits_of(image.narrow(2, win.y1, h).narrow(3, win.x1, w));
    if (logits.dim() != 4 || logits.size(0) != n || logits.size(2) != h || logits.size(3) != w)
      throw std::runtime_error(fmt::format("slide_inference: logits for a {}x{}x{} crop came back as {}", n, h, w,
                                           shape_of(logits)));
    // Summed in float32 at least: bf16 sums of up to (crop/stride)^2 windows would lose the average's precision.
    if (!sum.defined())
      sum = torch::zeros({n, logits.size(1), height, width},
                         logits.options().dtype(logits.scalar_type() == torch::kFloat64 ? torch::kFloat64
                                                                                          : torch::kFloat32));
    sum.narrow(2, win.y1, h).narrow(3, win.x1, w).add_(logits);
    counts.narrow(0, win.y1, h).narrow(1, win.x1, w).add_(1);
  }
  if (count) *count = counts;
  return sum / counts.to(sum.device(), sum.scalar_type());
}

torch::Tensor whole_inference(const torch::Tensor& image, const LogitsFn& logits_of) { return logits_of(image); }

torch::Tensor segmentation_prediction(const torch::Tensor& logits, int64_t height, int64_t width) {
  if (logits.dim() != 4 || logits.size(0) != 1)
    throw std::runtime_error(fmt::format("segmentation_prediction: logits must be [1, C, H, W], got {}",
                                         shape_of(logits)));
  torch::Tensor x = logits;
  if (x.size(2) != height || x.size(3) != width) {
    // Bilinear kernels are not available for every reduced-precision dtype on every device; float32 is.
    if (x.scalar_type() != torch::kFloat64) x = x.to(torch::kFloat32);
    namespace F = torch::nn::functional;
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{height, width})
                              .mode(torch::kBilinear)
                              .align_corners(false));
  }
  return x.argmax(1).squeeze(0);
}

}  // namespace nepa
