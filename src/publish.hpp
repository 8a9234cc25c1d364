// publish.hpp — storing events in outbox.pending (publish.cpp): outbox.publish() and the change
// trigger's outbox mode end here; the drain (drain.hpp) takes them from there.
#pragma once

#include "direct.hpp"

extern "C" {
#include "postgres.h"
#include "executor/spi.h"
#include "fmgr.h"
}

namespace pg_outbox {

// One event to store in outbox.pending (text channel, key, type; jsonb payload).
struct PendingEvent {
	Datum channel;
	Datum key;
	Datum type;
	Datum payload;
	bool key_null, type_null, payload_null;
};

// The layout of outbox.pending (id, channel, key, type, payload, created_at, in that order of
// attnum[]): written by insert_pending(), read and emptied by the drain's take_batch().
extern TableLayout pending_layout;

// The owner of outbox.pending (remembered until the table's relcache invalidation; found by opening
// the table, locked as for an insert).
Oid pending_owner(void);

// Store n events in outbox.pending in the current transaction, without the executor (direct.hpp),
// and wake the drain worker at commit. ids, if given, receives each event's id (0 for an event a
// DBA's BEFORE trigger on outbox.pending skipped).
void insert_pending(const PendingEvent *ev, int n, int64 *ids);

// What every producer calls (publish(), the change trigger): insert_log() (log.hpp) in log mode,
// insert_pending() in 1.2 mode (producer_writes_log(), once per transaction).
void insert_events(const PendingEvent *ev, int n, int64 *ids);

// The arguments (channel text, payload jsonb, key text, type text) of outbox.publish() and of the
// functions that publish as it does (outbox._log_publish()), checked as publish() checks them: the
// channel (NULL, its rule), a writable transaction (what names the function in the error), the
// channel rights.
PendingEvent publish_arguments(FunctionCallInfo fcinfo, const char *what);

// Every text of the events is text of the database encoding (22021 otherwise).
void check_events_encoding(const PendingEvent *ev, int n);

// Refuse (0A000) to write a table with row-level security enabled (d is ended first).
void refuse_row_security(DirectInsert *d);

// The identity sequence of outbox.pending's id (outbox.pending_id_seq: the log's id default too).
Oid pending_id_sequence(void);

// Write n events through SQL, as the table's owner with search_path pinned (a DBA's trigger, rule
// or generated column on it: direct.hpp's use_sql). sql inserts (channel, key, type, payload) as
// $1..$4 RETURNING id; *plan keeps its plan. ids[i] is 0 for an event a BEFORE trigger skipped.
void insert_events_sql(Oid owner, SPIPlanPtr *plan, const char *sql, const PendingEvent *ev, int n, int64 *ids);

} // namespace pg_outbox
