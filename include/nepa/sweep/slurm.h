// The SLURM script set of a sweep: per stage one job array over the runs (task i = run i, the same index in
// every stage), each task running the command line of the local run; a submit.sh chains the stages.
#pragma once

#include <string>
#include <vector>

#include "nepa/sweep/sweep.h"

namespace nepa::sweep {

// Writes <out_dir>/<stage>.sbatch for each stage, tasks.tsv (array index -> point, seed, run directory) and
// submit.sh. Returns the paths written.
std::vector<std::string> write_slurm(const Sweep& sweep, const std::string& out_dir);

}  // namespace nepa::sweep
