#include "nepa/eval/classification.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "nepa/io/atomic_file.h"

namespace nepa {

int64_t topk_correct(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k) {
  k = std::min<int64_t>(k, logits.size(1));
  torch::Tensor top = std::get<1>(logits.topk(k, 1, /*largest=*/true, /*sorted=*/true));
  return top.eq(labels.view({-1, 1}).to(top.device())).any(1).sum().item<int64_t>();
}

ClassificationResult evaluate_classifier(const std::function<torch::Tensor(const torch::Tensor&)>& logits_of,
                                         DataLoader& loader, int64_t num_classes, dist::Comm* comm) {
  torch::NoGradGuard no_grad;
  ClassificationResult r;
  torch::Tensor confusion = torch::zeros({num_classes * num_classes}, torch::kInt64);
  int64_t counts[3] = {0, 0, 0};
  while (auto batch = loader.next()) {
    if (batch->images.size(0) == 0) continue;
    torch::Tensor logits = logits_of(batch->images).to(torch::kFloat32).cpu();
    torch::Tensor labels = batch->labels.cpu();
    counts[0] += labels.size(0);
    counts[1] += topk_correct(logits, labels, 1);
    counts[2] += topk_correct(logits, labels, 5);
    confusion.index_add_(0, labels * num_classes + logits.argmax(1), torch::ones_like(labels));
  }
  if (comm && comm->world_size() > 1) {
    torch::Tensor all = torch::cat({torch::tensor({counts[0], counts[1], counts[2]}, torch::kInt64), confusion});
    comm->all_reduce(all);
    for (int i = 0; i < 3; ++i) counts[i] = all[i].item<int64_t>();
    confusion = all.narrow(0, 3, confusion.numel()).clone();
  }
  r.count = counts[0];
  r.top1 = counts[1];
  r.top5 = counts[2];
  r.confusion = confusion.view({num_classes, num_classes});
  return r;
}

namespace {
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
std::string name_of(const std::vector<std::string>& names, int64_t c) {
  return c < static_cast<int64_t>(names.size()) ? names[c] : std::to_string(c);
}
}  // namespace

void write_confusion_csv(const ClassificationResult& r, const std::vector<std::string>& names, const std::string& path) {
  const int64_t n = r.confusion.size(0);
  std::string out = "true\\predicted";
  for (int64_t c = 0; c < n; ++c) out += "," + csv_field(name_of(names, c));
  out += "\n";
  auto acc = r.confusion.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    out += csv_field(name_of(names, i));
    for (int64_t j = 0; j < n; ++j) out += fmt::format(",{}", acc[i][j]);
    out += "\n";
  }
  write_text_atomic(path, out);
}

void write_per_class_csv(const ClassificationResult& r, const std::vector<std::string>& names, const std::string& path) {
  std::string out = "class,name,images,correct,accuracy\n";
  auto acc = r.confusion.accessor<int64_t, 2>();
  for (int64_t i = 0; i < r.confusion.size(0); ++i) {
    int64_t total = 0;
    for (int64_t j = 0; j < r.confusion.size(1); ++j) total += acc[i][j];
    out += fmt::format("{},{},{},{},{:.4f}\n", i, csv_field(name_of(names, i)), total, acc[i][i],
                       total ? 100.0 * acc[i][i] / total : 0.0);
  }
  write_text_atomic(path, out);
}

}  // namespace nepa
