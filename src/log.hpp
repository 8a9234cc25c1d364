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

// Refuse (ERROR) to write into a log restored from a cluster whose transaction counter is ahead of
// this one's: the event would look published already (log_pass.cpp). Reads the log once per process.
void check_log_xids_producer(void);

// Does the database store its events in the log (outbox.log_state.active under snap; false when
// the row is missing)? src/storage_mode.cpp.
bool log_storage_active(Snapshot snap);

// log_storage_active() for the extension's schema nsp, whatever its name now (the DDL check).
bool log_storage_active_in(Oid nsp, Snapshot snap);

// outbox.log_state's OID by name, InvalidOid when the SQL objects are older than 1.3 (remembered
// until that relation or a schema changes). src/storage_mode.cpp.
Oid log_state_relid(void);

// Does this transaction's producer write the log (true) or outbox.pending (false)? Read once per
// transaction: the first call locks outbox.pending (ROW EXCLUSIVE, kept to the transaction's end
// even if a savepoint is rolled back) and only then reads outbox.log_state.active with the latest
// snapshot. The switch (outbox.use_log_storage()) holds EXCLUSIVE on outbox.pending from before
// it reads pending to its commit, so a producer either saw the switch committed (log) or holds
// its lock first and the switch waits for it and moves its rows (src/storage_mode.cpp).
bool producer_writes_log(void);

// End of a transaction (xact_events.cpp): the producer forgets the segment it read.
void log_publish_xact_event(XactEvent event);

} // namespace pg_outbox
