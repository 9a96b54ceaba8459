# The NCCL header for src/dist/comm.cpp, checked against the NCCL LibTorch was built with.
#
# ProcessGroupNCCL::Options holds an ncclConfig_t by value and is built inline in our code, so its layout comes
# from the nccl.h we compile against while LibTorch reads it with the layout of its own: NCCL grows that struct
# in minor releases, and a header of another minor version corrupts the options silently. Configure therefore
# fails on a major.minor mismatch (a patch difference is reported, not refused: the wheels pin an NCCL package
# whose patch can differ from the headers LibTorch was compiled with).
#
# Also a script, for the test of this rule (tests/CMakeLists.txt):
#   cmake -DNCCL_INCLUDE_DIR=<dir> -DTORCH_NCCL_VERSION=<a.b.c> -P cmake/NepaNccl.cmake

# "a.b.c" from <dir>/nccl.h, or "" when it defines no version.
function(nepa_nccl_header_version dir out)
  file(STRINGS "${dir}/nccl.h" _defs REGEX "^#define NCCL_(MAJOR|MINOR|PATCH)[ \t]+[0-9]+")
  set(_parts)
  foreach(part MAJOR MINOR PATCH)
    if(NOT _defs MATCHES "NCCL_${part}[ \t]+([0-9]+)")
      set(${out} "" PARENT_SCOPE)
      return()
    endif()
    list(APPEND _parts ${CMAKE_MATCH_1})
  endforeach()
  list(JOIN _parts "." _v)
  set(${out} "${_v}" PARENT_SCOPE)
endfunction()

# FATAL_ERROR unless <dir>/nccl.h has the major.minor of `torch_version` ("a.b.c").
function(nepa_require_nccl_header dir torch_version)
  nepa_nccl_header_version("${dir}" _header)
  if(NOT _header)
    message(FATAL_ERROR "nepa: ${dir}/nccl.h defines no NCCL_MAJOR/MINOR/PATCH: not an NCCL header "
                        "(set NEPA_NCCL_INCLUDE_DIR to the include folder of NCCL ${torch_version})")
  endif()
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _header_mm "${_header}")
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _torch_mm "${torch_version}")
  if(NOT _header_mm STREQUAL _torch_mm)
    message(FATAL_ERROR "nepa: ${dir}/nccl.h is NCCL ${_header}, but LibTorch was built with NCCL "
                        "${torch_version}; compiling against it would corrupt ProcessGroupNCCL's options "
                        "(ncclConfig_t differs between minor releases). Set -DNEPA_NCCL_INCLUDE_DIR=<the include "
                        "folder of NCCL ${_torch_mm}.x> (the nvidia-nccl wheel's nvidia/nccl/include, NCCL's release "
                        "archive, or libnccl-dev of that version).")
  elseif(NOT _header STREQUAL torch_version)
    message(STATUS "nepa: nccl.h is NCCL ${_header}, LibTorch was built with ${torch_version} (same minor release)")
  endif()
endfunction()

# "a.b.c" of the NCCL LibTorch was compiled with (torch::cuda::nccl::version(), from a probe linked against it),
# "" when it has no NCCL; FATAL_ERROR when the probe cannot be built or run.
function(nepa_torch_nccl_version out)
  # The library file itself: LibTorch's imported targets do not carry into a try_run project (their transitive
  # targets, protobuf and the like, are not defined there).
  get_target_property(_lib torch_cuda IMPORTED_LOCATION_RELEASE)
  if(NOT _lib)
    get_target_property(_lib torch_cuda IMPORTED_LOCATION)
  endif()
  if(NOT _lib)
    message(FATAL_ERROR "nepa: cannot locate libtorch_cuda to ask for its NCCL version (target torch_cuda has no "
                        "IMPORTED_LOCATION); -DNEPA_NCCL=OFF builds without NCCL")
  endif()
  try_run(_run _compiled ${CMAKE_BINARY_DIR}/nccl_version_probe ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/nccl_version_probe.cpp
          CMAKE_FLAGS -DCMAKE_CXX_STANDARD=17
          COMPILE_DEFINITIONS ${TORCH_CXX_FLAGS}
          # libtorch_cuda finds its own dependencies at run time (its RUNPATH); the linker need not.
          LINK_OPTIONS -Wl,--allow-shlib-undefined
          LINK_LIBRARIES ${_lib}
          COMPILE_OUTPUT_VARIABLE _compile_log
          RUN_OUTPUT_VARIABLE _version)
  if(NOT _compiled)
    message(FATAL_ERROR "nepa: cannot build the probe that asks ${_lib} for its NCCL version:\n${_compile_log}")
  endif()
  if(NOT _run EQUAL 0)
    message(FATAL_ERROR "nepa: the probe that asks ${_lib} for its NCCL version failed (exit ${_run}): ${_version}")
  endif()
  string(STRIP "${_version}" _version)
  set(${out} "${_version}" PARENT_SCOPE)
endfunction()

if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  nepa_require_nccl_header("${NCCL_INCLUDE_DIR}" "${TORCH_NCCL_VERSION}")
  message(STATUS "nepa: ${NCCL_INCLUDE_DIR}/nccl.h matches NCCL ${TORCH_NCCL_VERSION}")
endif()
