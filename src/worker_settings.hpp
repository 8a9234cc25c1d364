// worker_settings.hpp — what the launcher (launcher.cpp) and the drain workers (worker.cpp) do
// right after connecting: override the database and role settings they depend on
// (worker_settings.cpp lists them and says why).
#pragma once

namespace pg_outbox {

// In a transaction of its own: pin every setting of the list with PGC_S_OVERRIDE (a reload does
// not undo it); FATAL if the process does not run as the bootstrap superuser afterwards.
void pin_worker_settings(void);

} // namespace pg_outbox
