// Helpers shared by the C++ tests.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>

#include "nepa/config/config.h"

namespace nepa::test {

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// Every "grad.<name>" of a reference fixture against grads[name], within tol relative to the reference's largest
// entry (absolute below 1); every gradient must be compared, none missing or undefined. Prints the count and the
// worst difference.
inline void expect_gradients_match(std::map<std::string, torch::Tensor> grads,
                                   const std::map<std::string, torch::Tensor>& expected, double tol) {
  size_t n = 0;
  double worst = 0;
  for (const auto& [key, value] : expected) {
    if (key.rfind("grad.", 0) != 0) continue;
    const std::string name = key.substr(5);
    ASSERT_TRUE(grads.count(name)) << name;
    ASSERT_TRUE(grads[name].defined()) << name << " has no gradient";
    const double d = max_abs_diff(grads[name], value);
    const double scale = value.abs().max().item<double>();
    EXPECT_LE(d, std::max(tol * std::max(scale, 1.0), 1e-9)) << name << " (max |g| " << scale << ")";
    worst = std::max(worst, d);
    ++n;
  }
  EXPECT_EQ(n, grads.size()) << "every parameter's gradient is compared";
  std::cout << "  " << n << " gradients, worst absolute difference " << worst << "\n";
}

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("nepa_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    std::filesystem::create_directories((path_ / name).parent_path());
    std::ofstream(path_ / name, std::ios::binary) << text;
    return file(name);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs `f` and returns the message of the exception of type E it throws (fails the test if none).
template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

// A 2-block ViT on 16x16 inputs with 4x4 patches (16 patches), width 32, 2 heads, affine QK-Norm.
inline ModelConfig tiny_model_config() {
  ModelConfig c;
  c.image_size = 16;
  c.patch_size = 4;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.qk_norm_affine = true;
  return c;
}

// A TCP port that was free a moment ago (the kernel's pick for port 0), for rendezvous in tests that may run
// in parallel.
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("free_port: no socket");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

inline std::string source_path(const std::string& rel) { return std::string(NEPA_SOURCE_DIR) + "/" + rel; }

// A file's bytes ("" when it cannot be read: the callers compare them).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace nepa::test
