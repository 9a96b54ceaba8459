// SIGINT / SIGTERM / SIGUSR1 (SLURM sends SIGUSR1 or SIGTERM before preemption) ask the training loop to stop:
// after the current micro-batch (a partial step is dropped and redone on resume), or before the first step when
// the signal comes during start-up; it then writes a checkpoint (if a step was trained) and exits 0. A second SIGINT or SIGTERM kills the
// process the default way, so a stuck run can still be interrupted.
#pragma once

namespace nepa {

// Installs the handlers (idempotent). Only sets a flag: all work happens in the loop.
void install_stop_handlers();

// The signal that requested a stop, or 0.
int stop_requested();

// Clears the flag (tests; and after a handled stop, so a later loop in the same process can run).
void clear_stop_request();

// Human name of a signal number ("SIGTERM").
const char* signal_name(int sig);

}  // namespace nepa
