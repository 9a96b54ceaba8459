# Finds LibTorch. Order: an explicit Torch_DIR (a user's own LibTorch 2.x), else the torch wheel of the
# Python given in NEPA_PYTHON (scripts/setup.sh installs one outside the checkout).
if(NOT Torch_DIR AND NEPA_PYTHON)
  execute_process(
    COMMAND ${NEPA_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _nepa_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _nepa_torch_rc ERROR_QUIET)
  if(_nepa_torch_rc EQUAL 0)
    list(APPEND CMAKE_PREFIX_PATH ${_nepa_torch_prefix})
  endif()
endif()

# Without these three, the wheel's CMake files configure with warnings on a machine without a GPU:
# - GPU auto-detection fails here, so name the architectures the release targets (Ampere, Hopper).
if(NOT TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0" CACHE STRING "CUDA architectures for LibTorch's CUDA flags")
endif()
# - CMake >= 3.18 pre-sets CMAKE_CUDA_ARCHITECTURES, which Caffe2's cuda.cmake rejects in favour of the above.
cmake_policy(SET CMP0104 OLD)
# - the wheel links kineto statically into libtorch_cpu; TorchConfig still looks for a separate library.
#   Pointing it at libtorch_cpu (already linked) satisfies the lookup without adding anything.
if(_nepa_torch_prefix)
  get_filename_component(_nepa_torch_root "${_nepa_torch_prefix}/../.." ABSOLUTE)
elseif(Torch_DIR)
  get_filename_component(_nepa_torch_root "${Torch_DIR}/../../.." ABSOLUTE)
endif()
if(_nepa_torch_root AND NOT kineto_LIBRARY AND EXISTS ${_nepa_torch_root}/lib/libtorch_cpu.so
   AND NOT EXISTS ${_nepa_torch_root}/lib/libkineto.a)
  set(kineto_LIBRARY ${_nepa_torch_root}/lib/libtorch_cpu.so CACHE FILEPATH "kineto lives in libtorch_cpu")
endif()

find_package(Torch REQUIRED)
message(STATUS "nepa: LibTorch ${Torch_VERSION} from ${Torch_DIR}")

# CUDA code paths compile whenever LibTorch was built with CUDA; whether a GPU exists is a run-time question.
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(NEPA_TORCH_HAS_CUDA ON)
else()
  set(NEPA_TORCH_HAS_CUDA OFF)
endif()
