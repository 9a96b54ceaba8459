#include "nepa/eval/knn.h"

#include <torch/torch.h>

#include <algorithm>

namespace nepa {

Features extract_features(ViTNepaModel& model, DataLoader& loader) {
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t d = model->config().hidden_size;
  std::vector<torch::Tensor> mean{torch::empty({0, d})}, last{torch::empty({0, d})},
      labels{torch::empty({0}, torch::kInt64)};
  while (auto batch = loader.next()) {
    if (batch->images.size(0) == 0) continue;  // a rank's share of the last, partial batch may be empty
    torch::Tensor h = model->forward(batch->images).last_hidden_state.to(torch::kFloat32);
    mean.push_back(model->patch_tokens(h).mean(1).cpu());
    last.push_back(h.select(1, h.size(1) - 1).cpu());
    labels.push_back(batch->labels.cpu());
  }
  if (was_training) model->train();
  return {torch::cat(mean), torch::cat(last), torch::cat(labels)};
}

Features all_gather(dist::Comm& comm, const Features& local) {
  Features all{comm.all_gather_rows(local.mean_pooled), comm.all_gather_rows(local.last_token),
               comm.all_gather_rows(local.labels)};
  if (all.labels.size(0) == 0) throw std::runtime_error("k-NN: the loaders yielded no images");
  return all;
}

double knn_top1(const torch::Tensor& memory, const torch::Tensor& memory_labels, const torch::Tensor& queries,
                const torch::Tensor& query_labels, int k, int num_classes) {
  TORCH_CHECK(memory.size(0) == memory_labels.size(0) && queries.size(0) == query_labels.size(0),
              "knn_top1: features and labels disagree in length");
  TORCH_CHECK(k >= 1 && k <= memory.size(0), "knn_top1: k = ", k, " with ", memory.size(0), " memory images");
  torch::NoGradGuard no_grad;
  torch::Tensor mem = torch::nn::functional::normalize(memory.to(torch::kFloat32),
                                                       torch::nn::functional::NormalizeFuncOptions().dim(1));
  torch::Tensor q = torch::nn::functional::normalize(queries.to(torch::kFloat32),
                                                     torch::nn::functional::NormalizeFuncOptions().dim(1));
  int64_t correct = 0;
  const int64_t chunk = 512;
  for (int64_t i = 0; i < q.size(0); i += chunk) {
    torch::Tensor qc = q.narrow(0, i, std::min(chunk, q.size(0) - i));
    auto [sim, idx] = qc.matmul(mem.t()).topk(k, 1);
    torch::Tensor neighbour_labels = memory_labels.index_select(0, idx.reshape(-1)).view(idx.sizes());
    // One vote per neighbour; the summed similarity (< k <= 1 vote apart after scaling) only breaks ties.
    torch::Tensor votes = torch::zeros({qc.size(0), num_classes}, torch::kFloat64);
    votes.scatter_add_(1, neighbour_labels, torch::ones_like(sim, torch::kFloat64) + sim.to(torch::kFloat64) / (2.0 * k + 2.0));
    correct += votes.argmax(1).eq(query_labels.narrow(0, i, qc.size(0))).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(q.size(0));
}

}  // namespace nepa
