// log.hpp — the write-once log of issue #15 (doc/storage.md): what its producer (log_publish.cpp)
// and its drain pass (log_pass.cpp) share.
#pragma once

extern "C" {
#include "postgres.h"
#include "access/xact.h"
#include "utils/snapshot.h"
}

namespace pg_outbox {

// outbox._log_segments(): 60_log.sql creates log_0..2 and batches_0..2.
constexpr int kLogSegments = 3;

struct PendingEvent; // publish.hpp

// Insert n events into the log's current segment in the current transaction, without the
// executor (through SQL as the segment's owner when a DBA put a trigger, rule or generated column
// on it); ids (if given) receives their ids (0 for an event a DBA's BEFORE trigger skipped).
// Callers have checked the events as publish_arguments() does.
void insert_log(const PendingEvent *ev, int n, int64 *ids);

// pg_outbox._log_producer (internal, for the benchmarks of issue #15 until the switch): the
// change trigger's outbox mode writes its events into the log (insert_log) instead of
// outbox.pending. Nothing drains the log but outbox._log_pass() yet.
extern bool guc_log_producer;

// Does the database store its events in the log (outbox.log_state.active under snap; false when
// the row is missing)? src/storage_mode.cpp.
bool log_storage_active(Snapshot snap);

// End of a transaction (xact_events.cpp): the producer forgets the segment it read.
void log_publish_xact_event(XactEvent event);

} // namespace pg_outbox
