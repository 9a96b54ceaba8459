// Prints the NCCL version LibTorch was compiled with as "major.minor.patch" (nothing without NCCL), for the
// configure-time header check in cmake/NepaNccl.cmake. The one function is declared here rather than through
// torch/csrc/cuda/nccl.h, so that the probe needs only libtorch_cuda and no CUDA headers.
#include <cstdint>
#include <cstdio>

namespace torch::cuda::nccl {
std::uint64_t version();  // (major << 32) | (minor << 16) | patch; 0 = built without NCCL
}

int main() {
  const std::uint64_t v = torch::cuda::nccl::version();
  if (v == 0) return 0;
  std::printf("%llu.%llu.%llu\n", static_cast<unsigned long long>(v >> 32),
              static_cast<unsigned long long>((v >> 16) & 0xffff), static_cast<unsigned long long>(v & 0xffff));
  return 0;
}
