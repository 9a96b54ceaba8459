# Debian's -dev packages: yaml-cpp, nlohmann-json, spdlog (built against Debian's fmt 9), OpenCV, CLI11, zlib.
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json 3 REQUIRED)  # JSON: safetensors headers, config.json (YAML stays for configs)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs)
find_package(CLI11 CONFIG REQUIRED)
find_package(ZLIB REQUIRED)
find_package(Threads REQUIRED)

# The fmt clash (third_party/NOTES.md): the torch wheel ships fmt 12 headers in torch/include/fmt, and
# LibTorch's include directory is searched before /usr/include. spdlog and libfmt.so from Debian were built
# against fmt 9, so a TU that sees torch's <fmt/...> through <spdlog/...> compiles against the wrong fmt and
# fails or misbehaves. We put a directory holding links to Debian's fmt and spdlog headers in front of every
# other include path; LibTorch's public headers that we include do not use fmt, so they do not care.
find_path(NEPA_FMT_INCLUDE_DIR fmt/core.h PATHS /usr/include NO_CMAKE_PATH NO_CMAKE_ENVIRONMENT_PATH)
find_path(NEPA_SPDLOG_INCLUDE_DIR spdlog/spdlog.h PATHS /usr/include NO_CMAKE_PATH NO_CMAKE_ENVIRONMENT_PATH)
set(NEPA_INCLUDE_SHIM ${CMAKE_BINARY_DIR}/include-shim)
file(MAKE_DIRECTORY ${NEPA_INCLUDE_SHIM})
foreach(_lib fmt spdlog)
  string(TOUPPER ${_lib} _up)
  if(NOT EXISTS ${NEPA_INCLUDE_SHIM}/${_lib})
    file(CREATE_LINK ${NEPA_${_up}_INCLUDE_DIR}/${_lib} ${NEPA_INCLUDE_SHIM}/${_lib} SYMBOLIC)
  endif()
endforeach()

# Flags for our own targets (not for third-party code).
function(nepa_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  target_include_directories(${target} BEFORE PRIVATE ${NEPA_INCLUDE_SHIM})
endfunction()
