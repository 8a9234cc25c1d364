// drain.hpp — one drain pass (drain.cpp): take a batch from outbox.pending, stamp positions and
// per-channel sequence numbers, write the history, and hand each event off (NOTIFY and/or a WAL
// message, by its channel's target), all in the current transaction. What retries a failed
// pass and dead-letters an event is drain_failures.hpp.
#pragma once

extern "C" {
#include "postgres.h"
}

namespace pg_outbox {

// Publish up to max_events pending events (or only the event only_id) in the current
// transaction, leaving alone the nskip events of skip_ids (sorted); returns how many. Errors
// propagate.
int64 drain_batch(int max_events, int64 only_id = 0, const int64 *skip_ids = nullptr, int nskip = 0);

// The last position drain_batch() handed out in this process.
extern int64 last_drained_pos;

// NOTIFY queue usage, 0..1.
double notify_queue_usage(void);

} // namespace pg_outbox
