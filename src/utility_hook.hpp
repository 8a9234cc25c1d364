// utility_hook.hpp — the ProcessUtility hook of pg_outbox (utility_hook.cpp): keeps the drain
// workers out of the way of DROP/CREATE/ALTER DATABASE and DROP EXTENSION, and wakes the worker
// or the launcher at commit after CREATE/DROP EXTENSION, CREATE DATABASE and COMMIT PREPARED.
#pragma once

struct Node; // nodes/nodes.h

namespace pg_outbox {

// Install the hook (_PG_init; before the change trigger's flush hook, which then runs first).
void install_utility_hook(void);

// In log mode, refuse (ERROR 55000) a statement that would add to outbox.pending a trigger, rule,
// constraint, unique index, parent table, row level security or policy: producers no longer write
// that table, so it would never apply (pending_ddl.cpp). The extension's own scripts pass.
void check_pending_ddl(Node *stmt);

} // namespace pg_outbox
