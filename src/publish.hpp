// publish.hpp — storing events in outbox.pending (publish.cpp): outbox.publish() and the change
// trigger's outbox mode end here; the drain (drain.hpp) takes them from there.
#pragma once

#include "direct.hpp"

extern "C" {
#include "postgres.h"
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

// The owner of outbox.pending (the table opened, and locked as for an insert, to find it).
Oid pending_owner(void);

// Store n events in outbox.pending in the current transaction, without the executor (direct.hpp),
// and wake the drain worker at commit. ids, if given, receives each event's id (0 for an event a
// DBA's BEFORE trigger on outbox.pending skipped).
void insert_pending(const PendingEvent *ev, int n, int64 *ids);

} // namespace pg_outbox
