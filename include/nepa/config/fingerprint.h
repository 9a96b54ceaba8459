// A config's identity as text, for nepa_sweep's reuse of finished runs (sweep/share.h).
#pragma once

#include <string>

#include "nepa/config/config.h"

namespace nepa {

// What decides a run: one "section.key: value" line per setting that differs from Config{}'s, in the config's
// order. Unlike to_yaml it does not change when a doc comment is edited or a key is added (new keys default to
// the behaviour from before them), so a finished run keeps its identity across versions. A changed default
// would go unseen: defaults that change behaviour are breaking changes, named in the commit that makes them.
std::string config_fingerprint(const Config& config);

}  // namespace nepa
