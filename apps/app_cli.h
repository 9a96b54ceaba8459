// The command line the executables share: the run options of the training executables, and one way to end on a
// bad command line (one line, exit code 2, as a config error), not CLI11's own codes (109 for an unknown flag).
#pragma once

#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace nepa {

struct RunOptions {
  std::string config_path, resume, output_dir;
  std::vector<std::string> sets;
  bool dry_run = false;

  // The --set overrides in order, then the keys that dedicated flags stand for (--output-dir).
  std::vector<std::string> overrides() const {
    std::vector<std::string> all = sets;
    if (!output_dir.empty()) all.push_back("train.output_dir=" + output_dir);
    return all;
  }
};

inline void add_run_options(CLI::App& app, RunOptions& o, const std::string& configs) {
  app.add_option("--config", o.config_path, "experiment YAML (" + configs + ")")->required();
  app.add_option("--set", o.sets, "override a key, e.g. --set data.root=/data/imagenet (repeatable)");
  app.add_option("--resume", o.resume, "auto (latest checkpoint of the run directory, if any) or a checkpoint path");
  app.add_option("--output-dir", o.output_dir, "run directory (overrides train.output_dir)");
  app.add_flag("--dry-run", o.dry_run, "print the effective config and the model size, then exit");
}

// Parses argv into `app`. Returns the exit code when the process should end now: 0 after --help (printed),
// 2 after a bad command line (one line on stderr); nothing when the run goes on.
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << app.get_name() << ": " << e.what() << " (see --help)\n";
    return 2;
  }
}

}  // namespace nepa


#include "nepa/config/config.h"
#include "nepa/config/hf_config.h"

// A run that starts from a backbone folder (`init_key` = finetune.init or seg.init) takes the trunk's architecture
// from its config.json (adopt_backbone_architecture), so that an AIM or ablation export fine-tunes without
// restating its model.* keys; the result is validated again. Returns the changed keys for log_adopted().
inline std::vector<std::string> adopt_init_architecture(nepa::LoadedConfig& loaded, const std::string& init) {
  std::vector<std::string> changed = nepa::adopt_backbone_architecture(loaded.config.model, init);
  if (!changed.empty()) nepa::validate(loaded.config, loaded.origins);
  return changed;
}

// One line naming what adopt_init_architecture() changed, once the run's log is open (or as a comment of
// --dry-run's output).
inline std::string describe_adopted(const std::vector<std::string>& changed, const std::string& init_key) {
  std::string line = "model.* keys taken from " + init_key + "'s config.json (the config said otherwise):";
  for (size_t i = 0; i < changed.size(); ++i) line += (i ? "; " : " ") + changed[i];
  return line;
}
