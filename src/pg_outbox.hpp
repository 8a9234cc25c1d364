// pg_outbox.hpp — what the Postgres-facing modules share: the GUCs defined at module start
// (pg_outbox.cpp), check_writable(), and the declarations of the drain domain (publish, the
// drain, retention, consumers, the workers, the schema guard). Shared memory and slots are in
// shmem.hpp, commit-time wake-ups in wakeup.hpp; both are included here for the drain's files.
#pragma once

#include "envelope.hpp" // pure C++, must come before the Postgres headers
#include "shmem.hpp"
#include "wakeup.hpp"
#include "jsonb_text.hpp"

extern "C" {
#include "postgres.h"
#include "executor/spi.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
}

namespace pg_outbox {

static_assert(kMaxChannelBytes == NAMEDATALEN - 1, "channel limit must match NAMEDATALEN");
static_assert(kMaxPayloadBytes == BLCKSZ - NAMEDATALEN - 128 - 1, "payload limit must match NOTIFY_PAYLOAD_MAX_LENGTH");

// ---- GUCs (pg_outbox.*) ----
extern int guc_batch_size;        // events per drain transaction
extern int guc_idle_interval_ms;  // safety tick when nothing wakes the worker
extern int guc_batch_delay_ms;    // after a wake-up, wait this long for more commits before draining
extern double guc_max_queue_usage; // NOTIFY queue fill above which the worker waits
extern char *guc_databases;       // comma-separated list; empty = every database with the extension
extern int guc_retention_s;       // how long published history is kept

// The most events one outbox.drain() call publishes (its memory grows with the batch).
constexpr int kMaxDrainEvents = 1000000;

// ---- limits.cpp (the rules themselves: limits.hpp) ----
// The channel rule: raise 22023 with the one message of limits.hpp if channel (len bytes) breaks
// it; what names the value in the message ("channel name").
void check_channel_or_error(const char *channel, size_t len, const char *what);

// ---- pg_outbox.cpp ----
// Fail with 25006 (read_only_sql_transaction) when what (e.g. "outbox.publish()") would write
// but cannot: on a hot standby, or in a read-only transaction. The error says what to do.
// read_only_ok: only the standby is refused (NOTIFY is allowed in read-only transactions).
void check_writable(const char *what, bool read_only_ok = false);

// ---- outbox.cpp ----
// SPI_prepare + SPI_keepplan, with an error naming the statement if it cannot be prepared.
SPIPlanPtr keep_plan(const char *sql, int nargs, Oid *types);
// Set search_path to 'pg_catalog, pg_temp' in a new GUC nest level (undo with AtEOXact_GUC(true,
// level); an error undoes it with the transaction): for SQL run with another role's rights.
int pin_search_path(void);
// One event to store in outbox.pending (text channel, key, type; jsonb payload).
struct PendingEvent {
	Datum channel;
	Datum key;
	Datum type;
	Datum payload;
	bool key_null, type_null, payload_null;
};
// The owner of outbox.pending (the table opened, and locked as for an insert, to find it).
Oid pending_owner(void);
// Store n events in outbox.pending in the current transaction, without the executor (direct.hpp),
// and wake the drain worker at commit. ids, if given, receives each event's id.
void insert_pending(const PendingEvent *ev, int n, int64 *ids);
// Lock the history segments the way purge() and retention do, before a drain locks anything else.
void lock_history_segments(void);
// Publish up to max_events pending events (or only the event only_id) in the current
// transaction, leaving alone the nskip events of skip_ids (sorted); returns how many. Errors
// propagate.
int64 drain_batch(int max_events, int64 only_id = 0, const int64 *skip_ids = nullptr, int nskip = 0);
// What the worker and outbox.drain() run: drain_batch() in subtransactions. A batch that fails
// is narrowed down to the event that fails alone; that event is recorded in outbox.failures,
// left out of the batches and retried (pg_outbox.retry_delay, doubling) up to
// pg_outbox.max_attempts times, then moved to outbox.dead_letter with its error; the events
// behind it are published meanwhile. Errors of the system (locks, serialization, shutdown, disk,
// read-only) propagate uncounted (admin.cpp has the rules).
int64 drain(int max_events);
// The last position drain_batch() handed out in this process.
extern int64 last_drained_pos;
// NOTIFY queue usage, 0..1.
double notify_queue_usage(void);

// ---- admin.cpp ----
// Rotate and empty history segments per pg_outbox.retention (drain worker, own transaction).
void maintain_retention(void);
// pg_outbox.max_attempts and pg_outbox.retry_delay (called from _PG_init).
void define_retry_gucs(void);
extern int guc_max_attempts;
extern int guc_retry_delay_ms;

// ---- health.cpp ----
// The thresholds of outbox.health(), pg_outbox.health_* (called from _PG_init).
void define_health_gucs(void);

// ---- consumers.cpp ----
extern int guc_consumer_max_retention_s; // pg_outbox.consumer_max_retention
// Shared memory of the waiters (outbox.wait(), outbox.next()); init runs under AddinShmemInitLock.
Size waiters_shmem_size(void);
void waiters_shmem_init(void);
// GUC and transaction callbacks of the consumers, from _PG_init.
void consumers_init(void);
// Wake the backends waiting in this database when the current transaction commits (a drain
// that published events calls it).
void wake_waiters_at_commit(void);
// ... and those that wait for this channel alone (the drain calls it for each channel it published on).
void wake_channel_waiters_at_commit(const char *channel);
// ... and the waiters of every channel (COMMIT PREPARED: the channels of the prepared drain are
// not known in the committing session)
void wake_all_channel_waiters_at_commit(void);
// May retention TRUNCATE history segment seg, whose newest event was published at newest? false
// while an active named consumer has not acknowledged one of its events and the segment is
// younger than pg_outbox.consumer_max_retention; past that, with mark, those consumers are marked
// lost. SPI connected by the caller.
bool consumers_release_segment(int seg, TimestampTz newest, bool mark);

// ---- worker.cpp ----
void register_launcher(void);

// ---- schema_guard.cpp: pg_outbox trusts its own schema only ----
// CREATE EXTENSION pg_outbox: refuse an existing schema "outbox" that is not as good as new
// (owned by a superuser, empty, no one else may create objects in it). Utility hook.
void check_new_extension_schema(void);
// ALTER SCHEMA ... RENAME: a non-superuser may not rename the extension's schema. Utility hook.
void check_schema_rename(const char *schema);
// Before SQL that runs as a superuser names the extension's objects: the schema named "outbox"
// is the extension's, owned by a superuser, no one else may create in it, and the relations
// pg_outbox names there are extension members; else ERROR (55000). Cached. Returns the schema.
Oid check_trusted_schema(void);
// The extension's schema (pg_extension.extnamespace), InvalidOid if not installed. Cached.
Oid extension_namespace(void);
// The relation relname of the extension's schema (InvalidOid if missing); ERROR if it exists
// but is not a member of the extension.
Oid extension_relation(const char *relname);
// ALTER EXTENSION pg_outbox ADD/DROP changed what belongs to the extension: make every backend
// check again (utility hook).
void forget_extension_trust(void);
// Register the fmgr hook that runs check_trusted_schema() before the extension's SECURITY
// DEFINER functions (_PG_init).
void install_schema_guard(void);

} // namespace pg_outbox
