// worker_settings.hpp — what the launcher (launcher.cpp) and the drain workers (worker.cpp) share
// when they start: their SIGTERM handler, and the override of the database and role settings they
// depend on right after connecting (worker_settings.cpp lists them and says why).
#pragma once

extern "C" {
#include "postgres.h"
}

#include <csignal>

namespace pg_outbox {

// Set by handle_worker_sigterm(): the process is asked to exit; each loop checks it at its top and
// exits cleanly there (exit code 1: the postmaster restarts the process unless it shuts down).
extern volatile sig_atomic_t got_sigterm;

// The SIGTERM handler of both processes (pqsignal): sets got_sigterm and the latch, and also asks
// for die() (ProcDiePending), so that a process waiting for a lock (a session holding
// pg_database, the state row, a history segment) ends at once instead of holding up
// pg_terminate_backend(), a shutdown or DROP DATABASE. A signal handler: no C++ that can throw.
void handle_worker_sigterm(SIGNAL_ARGS);

// In a transaction of its own: pin every setting of the list with PGC_S_OVERRIDE (a reload does
// not undo it); FATAL if the process does not run as the bootstrap superuser afterwards.
void pin_worker_settings(void);

} // namespace pg_outbox
