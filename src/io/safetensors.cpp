#include "nepa/io/safetensors.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "nepa/io/atomic_file.h"

namespace nepa {

namespace {

// The reference implementation refuses headers above 100 MB; so do we (a corrupt length must not make us
// allocate gigabytes).
constexpr uint64_t kMaxHeader = 100ull << 20;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  uint64_t size;
};
const DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2}, {"I8", torch::kInt8, 1}, {"U8", torch::kUInt8, 1}, {"BOOL", torch::kBool, 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw SafetensorsError("safetensors: " + path + ": " + what);
}

using Json = nlohmann::json;

uint64_t as_u64(const Json& n, const std::string& path, const std::string& what) {
  if (!n.is_number_unsigned()) bad(path, what + " must be a non-negative integer");
  return n.get<uint64_t>();
}

SafetensorsHeader parse_entries(const std::string& path, const Json& root, uint64_t data_start, uint64_t data_size);

}  // namespace

std::string safetensors_dtype_name(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw SafetensorsError(std::string("safetensors: no safetensors dtype for ") + c10::toString(t));
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) bad(path, "cannot open file");
  std::fseek(f.get(), 0, SEEK_END);
  long size_l = std::ftell(f.get());
  if (size_l < 0) bad(path, "cannot determine file size");
  uint64_t file_size = static_cast<uint64_t>(size_l);
  std::fseek(f.get(), 0, SEEK_SET);
  if (file_size < 8) bad(path, "file too short for a header length (" + std::to_string(file_size) + " bytes)");
  unsigned char len_bytes[8];
  if (std::fread(len_bytes, 1, 8, f.get()) != 8) bad(path, "cannot read the header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > kMaxHeader) bad(path, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > file_size - 8)
    bad(path, "header length " + std::to_string(n) + " exceeds the file size " + std::to_string(file_size));
  if (n < 2) bad(path, "header length " + std::to_string(n) + " is too small for a JSON object");
  std::string text(n, '\0');
  if (std::fread(text.data(), 1, n, f.get()) != n) bad(path, "cannot read the header");
  std::size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos || text[first] != '{') bad(path, "header is not a JSON object");

  // Strict JSON, as Python's safetensors reads it (a YAML-ish `{format: pt}` is not a header).
  Json root;
  try {
    root = Json::parse(text);
  } catch (const Json::parse_error& e) {
    bad(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!root.is_object()) bad(path, "header is not a JSON object");
  return parse_entries(path, root, 8 + n, file_size - 8 - n);
}

namespace {
SafetensorsHeader parse_entries(const std::string& path, const Json& root, uint64_t data_start, uint64_t data_size) {
  SafetensorsHeader h;
  h.data_start = data_start;
  for (const auto& [name, e] : root.items()) {
    if (name == "__metadata__") {
      if (!e.is_object()) bad(path, "__metadata__ must be an object of strings");
      for (const auto& [key, value] : e.items()) {
        if (!value.is_string()) bad(path, "__metadata__ value of '" + key + "' is not a string");
        h.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    std::string where = "tensor '" + name + "'";
    if (!e.is_object()) bad(path, where + " is not an object");
    auto member = [&](const char* key) { return e.contains(key) ? e.at(key) : Json(); };
    const Json dtype = member("dtype"), shape = member("shape"), offsets = member("data_offsets");
    if (!dtype.is_string()) bad(path, where + " has no dtype");
    const DtypeInfo* info = find_dtype(dtype.get<std::string>());
    if (!info) bad(path, where + " has unknown dtype '" + dtype.get<std::string>() + "'");
    if (!shape.is_array()) bad(path, where + " has no shape list");
    if (!offsets.is_array() || offsets.size() != 2) bad(path, where + " needs data_offsets [begin, end]");
    SafetensorsEntry entry;
    entry.name = name;
    entry.dtype = info->name;
    uint64_t numel = 1;
    for (const auto& d : shape) {
      uint64_t dim = as_u64(d, path, where + " shape entries");
      if (dim > (1ull << 62) || (dim != 0 && numel > (1ull << 62) / dim)) bad(path, where + " shape is too large");
      numel *= dim;
      entry.shape.push_back(static_cast<int64_t>(dim));
    }
    entry.begin = as_u64(offsets[0], path, where + " data_offsets");
    entry.end = as_u64(offsets[1], path, where + " data_offsets");
    if (entry.end < entry.begin)
      bad(path, where + " has data_offsets [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                    "] with end before begin");
    if (entry.end > data_size)
      bad(path, where + " data_offsets end " + std::to_string(entry.end) + " is out of range (data section has " +
                    std::to_string(data_size) + " bytes)");
    if (entry.end - entry.begin != numel * info->size) {
      std::string s;
      for (auto d : entry.shape) s += (s.empty() ? "" : ", ") + std::to_string(d);
      bad(path, where + " shape [" + s + "] of " + entry.dtype + " needs " + std::to_string(numel * info->size) +
                    " bytes but data_offsets span " + std::to_string(entry.end - entry.begin));
    }
    h.entries.push_back(std::move(entry));
  }
  std::sort(h.entries.begin(), h.entries.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (std::size_t i = 1; i < h.entries.size(); ++i)
    if (h.entries[i].begin < h.entries[i - 1].end)
      bad(path, "tensors '" + h.entries[i - 1].name + "' and '" + h.entries[i].name + "' overlap");
  return h;
}
}  // namespace

std::map<std::string, torch::Tensor> load_safetensors(const std::string& path,
                                                      std::map<std::string, std::string>* metadata) {
  SafetensorsHeader h = read_safetensors_header(path);
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) bad(path, "cannot open file");
  std::map<std::string, torch::Tensor> out;
  for (const auto& e : h.entries) {
    const DtypeInfo* info = find_dtype(e.dtype);
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(info->type));
    uint64_t bytes = e.end - e.begin;
    if (bytes > 0) {
      if (std::fseek(f.get(), static_cast<long>(h.data_start + e.begin), SEEK_SET) != 0 ||
          std::fread(t.data_ptr(), 1, bytes, f.get()) != bytes)
        bad(path, "cannot read the data of tensor '" + e.name + "'");
    }
    out.emplace(e.name, std::move(t));
  }
  if (metadata) *metadata = h.metadata;
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> data;
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") throw SafetensorsError("safetensors: " + path + ": '__metadata__' is reserved");
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = t.numel() * t.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned

  write_file_atomic(path, [&](std::FILE* f) {
    errno = 0;
    uint64_t n = text.size();
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    bool ok = std::fwrite(len_bytes, 1, 8, f) == 8 && std::fwrite(text.data(), 1, n, f) == n;
    for (const auto& t : data) {
      std::size_t bytes = t.numel() * t.element_size();
      ok = ok && (bytes == 0 || std::fwrite(t.data_ptr(), 1, bytes, f) == bytes);
    }
    if (!ok) throw SafetensorsError("safetensors: " + path + ": write failed: " + std::strerror(errno));
  });
}

}  // namespace nepa
