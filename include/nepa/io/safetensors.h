// The safetensors format, written here (NEPA-SPEC §7): 8-byte little-endian header length N, N bytes of
// JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then raw
// little-endian data; offsets are relative to the end of the header. Malformed files are rejected with a
// message naming the file and the problem, before any tensor byte is read.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace nepa {

class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // in data order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

// Parses and validates the header of `path` (length, JSON, dtypes, shapes, offsets in range, no overlap).
SafetensorsHeader read_safetensors_header(const std::string& path);

// Loads every tensor (CPU, the file's dtype). Throws SafetensorsError.
std::map<std::string, torch::Tensor> load_safetensors(const std::string& path,
                                                      std::map<std::string, std::string>* metadata = nullptr);

// Writes tensors (any device; made contiguous on CPU) atomically: temp file, fsync, rename.
void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

std::string safetensors_dtype_name(torch::ScalarType t);

}  // namespace nepa
