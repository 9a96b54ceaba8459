#include "nepa/sweep/share.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "nepa/io/atomic_file.h"

namespace nepa::sweep {
namespace fs = std::filesystem;

std::string shared_root(const Sweep& sweep) { return (fs::path(sweep.dir).parent_path() / ".shared").string(); }

void register_stage(const Sweep& sweep, const StageRun& s) {
  if (s.identity.empty() || fs::is_symlink(s.dir) || !stage_done(s)) return;
  const fs::path root = shared_root(sweep);
  fs::create_directories(root);
  if (read_text((fs::path(s.dir) / kIdentityFile).string()) != s.identity)
    write_text_atomic((fs::path(s.dir) / kIdentityFile).string(), s.identity);
  const fs::path entry = root / s.identity;
  // The first finished run of an identity stays its registered one: links already made point there.
  if (fs::exists(entry) && fs::exists(fs::path(read_text(entry.string())))) return;
  write_text_atomic(entry.string(), fs::absolute(s.dir).lexically_normal().string());
}

void register_finished(const Sweep& sweep) {
  for (const auto& run : sweep.runs)
    for (const auto& s : run.stages) register_stage(sweep, s);
}

int link_shared(const Sweep& sweep) {
  const fs::path root = shared_root(sweep);
  if (!fs::is_directory(root)) return 0;
  int linked = 0;
  for (const auto& run : sweep.runs)
    for (const auto& s : run.stages) {
      const fs::path dir = s.dir;
      if (fs::is_symlink(dir) && !fs::exists(dir)) {
        spdlog::warn("{}: its shared stage run is gone (the link dangles): removed, the stage runs here", s.dir);
        fs::remove(dir);
      }
      if (s.identity.empty() || fs::exists(dir) || fs::is_symlink(dir)) continue;
      if (s.upstream >= 0 && !stage_done(run.stages[s.upstream])) continue;
      const fs::path entry = root / s.identity;
      if (!fs::exists(entry)) continue;
      const fs::path target = read_text(entry.string());
      if (!fs::exists(target / kDoneMarker) || read_text((target / kIdentityFile).string()) != s.identity) continue;
      fs::create_directories(dir.parent_path());
      fs::create_directory_symlink(target, dir);
      spdlog::info("reuse {}/seed{}/{}: {} (the same effective config{})", run.point, run.seed, s.stage,
                   target.string(), s.upstream >= 0 ? ", from the same upstream run" : "");
      ++linked;
    }
  return linked;
}

}  // namespace nepa::sweep
