// pg_outbox.hpp — what the Postgres-facing modules share: the GUCs defined at module start
// (pg_outbox.cpp), check_writable(), the channel rule's error, and the entry points of the parts
// several files call (health, consumers, the schema guard). Shared memory and slots are in
// shmem.hpp, commit-time wake-ups in wakeup.hpp; both are included here. Each step of the drain
// domain has its own header: publish.hpp, drain.hpp, drain_failures.hpp, history.hpp,
// spi_util.hpp, launcher.hpp, worker_settings.hpp (doc/design.md has the file map).
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

// ---- limits.cpp (the rules themselves: limits.hpp) ----
// The channel rule: raise 22023 with the one message of limits.hpp if channel (len bytes) breaks
// it; what names the value in the message ("channel name").
void check_channel_or_error(const char *channel, size_t len, const char *what);

// ---- pg_outbox.cpp ----
// Fail with 25006 (read_only_sql_transaction) when what (e.g. "outbox.publish()") would write
// but cannot: on a hot standby, or in a read-only transaction. The error says what to do.
// read_only_ok: only the standby is refused (NOTIFY is allowed in read-only transactions).
void check_writable(const char *what, bool read_only_ok = false);

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
