// Stage runs shared between sweeps. A stage run is identified by what decides its result: the app, its process
// count, the settings of its effective config that differ from the defaults (config_fingerprint; train.output_dir
// left out) and, downstream, the identity of the stage it starts
// from and which export it takes (StageRun::identity, set by check_configs). Finished stage runs are registered by
// identity under <sweeps root>/.shared/ (the sweep directory's parent); a sweep about to start a stage run whose
// identity is registered links its stage directory to the finished one (a symlink) instead of training it again.
// So the NEPA baseline that most ablation sweeps share is trained once per seed, not once per sweep. Local runs
// only (`nepa_sweep slurm` runs every stage of its own sweep).
#pragma once

#include <string>

#include "nepa/sweep/sweep.h"

namespace nepa::sweep {

// Where finished stage runs are registered for `sweep`: <parent of the sweep directory>/.shared.
std::string shared_root(const Sweep& sweep);

// Registers every finished stage run of `sweep` that is its own (not a link), and writes its identity file.
void register_finished(const Sweep& sweep);
// Registers one stage run that has just finished.
void register_stage(const Sweep& sweep, const StageRun& stage);

// Links each stage run of `sweep` that has not started (no directory, or a dangling link) and whose upstream is
// finished to a registered finished stage run with the same identity. Returns how many were linked (each logged).
int link_shared(const Sweep& sweep);

// The identity file nepa_sweep keeps in a registered stage run's directory (its text is StageRun::identity).
inline constexpr const char* kIdentityFile = ".sweep_identity";

}  // namespace nepa::sweep
