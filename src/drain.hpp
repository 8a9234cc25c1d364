// drain.hpp — one drain pass (drain.cpp): take a batch from outbox.pending, stamp positions and
// per-channel sequence numbers, write the history, and hand each event off (NOTIFY and/or a WAL
// message, by its channel's target), all in the current transaction. What retries a failed
// pass and dead-letters an event is drain_failures.hpp.
#pragma once

extern "C" {
#include "postgres.h"
#include "lib/stringinfo.h"
}

namespace pg_outbox {

// Publish up to max_events pending events (or only the event only_id) in the current
// transaction, leaving alone the nskip events of skip_ids (sorted); returns how many. Errors
// propagate.
int64 drain_batch(int max_events, int64 only_id = 0, const int64 *skip_ids = nullptr, int nskip = 0);

// The last position drain_batch() handed out in this process.
extern int64 last_drained_pos;

// Where a channel's events go (outbox.channel_targets.target: 'notify', 'wal' or 'both').
enum : int { kTargetNotify = 1, kTargetWal = 2 };

// One published event, stamped, as the pass hands it off (the Datums as stored: sizes are read
// before anything is detoasted).
struct OutgoingEvent {
	const char *channel;
	int targets; // kTargetNotify | kTargetWal
	int64 id, pos, seq;
	Datum key;
	bool key_null;
	Datum type;
	bool type_null;
	Datum payload;
	bool payload_null;
	int64 epoch;
};

// Queue its NOTIFY (size-checked envelope; id_only: read rights are enforced) and/or write its
// WAL message, in the current transaction. payload_text: a buffer reused across events.
void hand_off_event(const OutgoingEvent &ev, bool id_only, StringInfo payload_text);

// NOTIFY queue usage, 0..1.
double notify_queue_usage(void);

} // namespace pg_outbox
