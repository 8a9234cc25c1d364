// wakeup.hpp — commit-time wake-ups (wakeup.cpp; it sees the end of transactions through
// xact_events.cpp). A producer never NOTIFYs: writing an event
// marks "work pending" at the current subtransaction level; when the top transaction commits,
// the XACT_EVENT_COMMIT callback sets the drain worker's latch (or tells the launcher, when the
// database waits for a worker process). A rollback, or the rollback of the only savepoint that
// wrote, wakes nobody; PREPARE TRANSACTION wakes at COMMIT PREPARED (utility_hook.cpp).
#pragma once

namespace pg_outbox {

// Wake the drain worker of this database when the current transaction commits (the write is
// forgotten if the current subtransaction rolls back): a producer's write. A paused worker
// (outbox.pause()) is not woken: it publishes nothing, and each wake-up would cost it a
// transaction and the producer a signal (kill(), 18% of a pgbench backend's time in a profile).
void wake_worker_at_commit(void);
// The same for what a paused worker must see at once too (outbox.resume(), retry(), the switch:
// outbox._wake_at_commit()).
void wake_worker_always_at_commit(void);
// Wake it when the top transaction commits, whatever its subtransactions do, paused or not (the
// utility hook: CREATE/DROP EXTENSION, COMMIT PREPARED).
void wake_worker_at_top_commit(void);
// Ask the launcher to look at the databases again when the current transaction commits
// (CREATE EXTENSION, CREATE DATABASE).
void rescan_at_commit(void);

} // namespace pg_outbox
