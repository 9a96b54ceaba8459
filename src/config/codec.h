// Internal: the YAML <-> struct machinery shared by config.cpp (experiment YAML) and hf_config.cpp
// (official config.json, which yaml-cpp reads as the JSON subset of YAML).
#pragma once

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "nepa/config/config.h"

namespace nepa::config_detail {

[[noreturn]] inline void fail(const std::string& file, const std::string& path, const std::string& what) {
  throw ConfigError("config error: " + file + ": " + path + ": " + what);
}

inline std::string scalar_text(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "null";
}

struct Where {
  std::string file;
  std::string path;
};

inline long long parse_integer(const YAML::Node& n, const Where& w) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    long long value = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return value;
  }
  fail(w.file, w.path, "expected an integer, got " + scalar_text(n));
}

inline double parse_double(const YAML::Node& n, const Where& w) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    double value = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return value;
  }
  fail(w.file, w.path, "expected a number, got " + scalar_text(n));
}

inline void decode_value(const YAML::Node& n, int& out, const Where& w) {
  long long v = parse_integer(n, w);
  if (v < -2147483647LL || v > 2147483647LL) fail(w.file, w.path, "integer out of range: " + n.Scalar());
  out = static_cast<int>(v);
}
inline void decode_value(const YAML::Node& n, long long& out, const Where& w) { out = parse_integer(n, w); }
inline void decode_value(const YAML::Node& n, double& out, const Where& w) { out = parse_double(n, w); }
inline void decode_value(const YAML::Node& n, bool& out, const Where& w) {
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True") { out = true; return; }
    if (s == "false" || s == "False") { out = false; return; }
  }
  fail(w.file, w.path, "expected true or false, got " + scalar_text(n));
}
inline void decode_value(const YAML::Node& n, std::string& out, const Where& w) {
  if (!n.IsScalar()) fail(w.file, w.path, "expected a string, got " + scalar_text(n));
  out = n.Scalar();
}
inline void decode_value(const YAML::Node& n, std::optional<double>& out, const Where& w) {
  if (n.IsNull()) { out.reset(); return; }
  out = parse_double(n, w);
}
inline void decode_value(const YAML::Node& n, std::optional<int>& out, const Where& w) {
  if (n.IsNull()) { out.reset(); return; }
  int v = 0;
  decode_value(n, v, w);
  out = v;
}
inline void decode_value(const YAML::Node& n, std::vector<int>& out, const Where& w) {
  if (!n.IsSequence()) fail(w.file, w.path, "expected a list of integers, got " + scalar_text(n));
  out.assign(n.size(), 0);
  for (std::size_t i = 0; i < n.size(); ++i) decode_value(n[i], out[i], {w.file, w.path + "[" + std::to_string(i) + "]"});
}
inline void decode_value(const YAML::Node& n, std::vector<double>& out, const Where& w) {
  if (!n.IsSequence()) fail(w.file, w.path, "expected a list of numbers, got " + scalar_text(n));
  out.clear();
  for (std::size_t i = 0; i < n.size(); ++i) out.push_back(parse_double(n[i], {w.file, w.path + "[" + std::to_string(i) + "]"}));
}

// Shortest text that reads back to the same double (so a saved config reloads bit-identically).
inline std::string format_double(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, end);
  // Keep it visibly a float for YAML 1.1 readers too (they read "1e-12" as a string, "1.0e-12" as a float).
  auto e = s.find('e');
  if (s.find_first_of(".n") == std::string::npos) s.insert(e == std::string::npos ? s.size() : e, ".0");
  return s;
}

inline std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

inline std::string encode_value(int v) { return std::to_string(v); }
inline std::string encode_value(long long v) { return std::to_string(v); }
inline std::string encode_value(double v) { return format_double(v); }
inline std::string encode_value(bool v) { return v ? "true" : "false"; }
inline std::string encode_value(const std::string& v) { return quote(v); }
inline std::string encode_value(const std::optional<double>& v) { return v ? format_double(*v) : "null"; }
inline std::string encode_value(const std::optional<int>& v) { return v ? std::to_string(*v) : "null"; }
inline std::string encode_value(const std::vector<int>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}
inline std::string encode_value(const std::vector<double>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + format_double(v[i]);
  return s + "]";
}

// A field that is itself a struct with a static `visit` (objective.aim) is a nested mapping of keys.
template <class T, class = void>
struct is_section : std::false_type {};
template <class T>
struct is_section<T, std::void_t<decltype(&T::template visit<T, int>)>> : std::true_type {};

// Decodes the fields of one struct from a mapping node. Unknown keys are an error unless `unknown` is
// given, in which case they are collected there (config.json carries keys that are not model fields).
class FieldDecoder {
 public:
  using OriginFn = std::string (*)(const void* ctx, const std::string& path);
  FieldDecoder(const YAML::Node& node, std::string prefix, OriginFn origin, const void* ctx)
      : node_(node), prefix_(std::move(prefix)), origin_(origin), ctx_(ctx) {}

  template <class T>
  void operator()(const char* key, T& field, const char* /*doc*/) {
    known_.insert(key);
    const YAML::Node& node = node_;
    YAML::Node n = node[key];
    if (!n) return;
    std::string path = prefix_ + key;
    if constexpr (is_section<T>::value) {
      if (n.IsNull()) return;
      if (!n.IsMap()) fail(origin_(ctx_, path), path, "expected a mapping of keys, got " + scalar_text(n));
      FieldDecoder nested(n, path + ".", origin_, ctx_);
      T::visit(field, nested);
      nested.check_unknown(nullptr);
    } else {
      decode_value(n, field, {origin_(ctx_, path), path});
    }
  }

  void check_unknown(std::vector<std::string>* unknown) const {
    for (const auto& kv : node_) {
      std::string key = kv.first.as<std::string>();
      if (known_.count(key)) continue;
      if (unknown) {
        unknown->push_back(key);
        continue;
      }
      std::string path = prefix_ + key;
      // Keys that moved keep working configs from failing without a clue.
      static const std::map<std::string, std::string> moved = {{"finetune.ema", "train.ema"},
                                                               {"finetune.ema_decay", "train.ema_decay"}};
      auto m = moved.find(path);
      fail(origin_(ctx_, path), path, m == moved.end() ? "unknown key" : "unknown key (moved to " + m->second + ")");
    }
  }

 private:
  const YAML::Node& node_;
  std::string prefix_;
  OriginFn origin_;
  const void* ctx_;
  std::set<std::string> known_;
};

// Emits one struct as indented `key: value  # doc` lines.
class FieldEncoder {
 public:
  explicit FieldEncoder(std::string indent) : indent_(std::move(indent)) {}
  template <class T>
  void operator()(const char* key, const T& field, const char* doc) {
    if constexpr (is_section<T>::value) {
      FieldEncoder nested(indent_ + "  ");
      T::visit(field, nested);
      out_ += indent_ + key + ":  # " + doc + "\n" + nested.text();
    } else {
      out_ += indent_ + key + ": " + encode_value(field) + "  # " + doc + "\n";
    }
  }
  const std::string& text() const { return out_; }

 private:
  std::string indent_;
  std::string out_;
};

}  // namespace nepa::config_detail
