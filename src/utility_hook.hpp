// utility_hook.hpp — the ProcessUtility hook of pg_outbox (utility_hook.cpp): keeps the drain
// workers out of the way of DROP/CREATE/ALTER DATABASE and DROP EXTENSION, and wakes the worker
// or the launcher at commit after CREATE/DROP EXTENSION, CREATE DATABASE and COMMIT PREPARED.
#pragma once

namespace pg_outbox {

// Install the hook (_PG_init; before the change trigger's flush hook, which then runs first).
void install_utility_hook(void);

} // namespace pg_outbox
