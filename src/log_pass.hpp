// log_pass.hpp — the drain pass over the write-once log (log_pass.cpp; issue #15, doc/storage.md).
#pragma once

extern "C" {
#include "postgres.h"
#include "utils/snapshot.h"
}

namespace pg_outbox {

// One pass over the log in the current transaction (READ COMMITTED): at most max_events events of
// one segment, NOTIFYed and/or written to the WAL by their channels' targets, and one batch row.
// Returns how many. Errors propagate.
int64 log_pass(int max_events);
// The last log_pass() ended its batch cut short (more of its window is committed and waits): the
// drain worker runs the next pass at once.
extern bool log_pass_cut;
// The last position the last log_pass() that published handed out (the worker's status slot).
extern int64 log_pass_last_pos;

// The epoch a pass's batch at first_pos is stamped with, given the current one (log_epoch.cpp): in
// log mode, when the timeline, system identifier or database differs from the one outbox.state
// records, a new epoch begun in the current transaction (outbox._epoch_begin()).
int64 log_pass_epoch(Snapshot snap, int64 first_pos, int64 epoch);

// Until the switch moves producers onto the log (doc/storage.md): does the drain worker also run
// passes over the log? (pg_outbox.drain_log)
extern bool guc_drain_log;

// The most channels a process's seq cache holds (pg_outbox.channel_cache_size); past it, misses
// are looked up in outbox.log_channels.
extern int guc_channel_cache_size;

} // namespace pg_outbox
