// Running a sweep on this machine: every stage run whose outcome is not on disk, as child processes of the
// apps, `jobs` at a time, downstream stages after their upstream one. Interrupted stages continue from their
// checkpoint (every command carries --resume auto); finished ones are skipped.
#pragma once

#include <ostream>

#include "nepa/sweep/sweep.h"

namespace nepa::sweep {

// Every stage run with its state (finished / to run) and command line; starts nothing.
void print_plan(const Sweep& sweep, std::ostream& out);

// Runs the sweep. SIGINT/SIGTERM are forwarded to the running stages, which checkpoint and stop; then it
// returns. Exit code: 0 when every stage run has finished, 1 when one failed (the others keep going; its
// downstream stages are blocked), 128 + the signal when stopped by one.
int run_local(const Sweep& sweep, int jobs);

}  // namespace nepa::sweep
