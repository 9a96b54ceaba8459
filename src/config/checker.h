// Internal: how config checks name the key and the file that set it, shared by config.cpp and
// objective_config.cpp.
#pragma once

#include <string>

#include "codec.h"
#include "nepa/config/config.h"

namespace nepa::config_detail {

// The origin of a key is the file that set it, or of its nearest ancestor that was set as a whole.
inline std::string origin_of(const ConfigOrigins& origins, const std::string& path) {
  std::string p = path;
  while (true) {
    auto it = origins.find(p);
    if (it != origins.end()) return it->second;
    auto dot = p.rfind('.');
    if (dot == std::string::npos) break;
    p = p.substr(0, dot);
  }
  auto it = origins.find("");
  return it != origins.end() ? it->second : "defaults";
}


// Validation helpers: each failure names the key and the file that set it (or `where` without origins).
struct Checker {
  const ConfigOrigins* origins;
  std::string where;  // used when origins is null
  void require(bool ok, const std::string& path, const std::string& what) const {
    if (!ok) fail(origins ? origin_of(*origins, path) : where, path, what);
  }
  std::string origin(const std::string& path) const { return origins ? origin_of(*origins, path) : where; }
};

// The objective section: the selected objective's own checks, and no key of another objective set.
void validate_objective(const Config& config, const Checker& c);

}  // namespace nepa::config_detail
