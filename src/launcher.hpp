// launcher.hpp — the launcher (launcher.cpp): one static background worker that keeps a drain
// worker (worker.cpp) running in each database that has the extension.
#pragma once

namespace pg_outbox {

// Register the launcher (_PG_init, under shared_preload_libraries).
void register_launcher(void);

} // namespace pg_outbox
