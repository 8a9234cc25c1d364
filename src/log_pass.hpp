// log_pass.hpp — the drain pass over the write-once log (log_pass.cpp; issue #15, doc/storage.md).
#pragma once

extern "C" {
#include "postgres.h"
#include "utils/snapshot.h"
}

namespace pg_outbox {

// One pass over the log in the current transaction (READ COMMITTED): at most max_events events of
// one segment, NOTIFYed and/or written to the WAL by their channels' targets, and one batch row.
// Returns how many. An event whose hand-off fails alone is left out of the batch and recorded in
// outbox.failures (drain_failures.cpp: narrowing, retries, dead letters); errors of the system
// propagate.
int64 log_pass(int max_events);

// A row of the log. The rows of one event share its id: a retry copies the row with the drain's xid.
struct LogRow {
	int64 id;
	uint64 xid;
};

// Is r among rows (sorted by (id, xid))?
bool rows_contain(const LogRow *rows, int n, const LogRow &r);

// What the failure path (drain_failures.cpp) tells one batch: rows to leave out of it (failed rows
// waiting for their retry, dead letters and discarded events still in an open window: outbox.withheld)
// and retry copies whose publication it must report. Each sorted by (id, xid); nullptr: none.
struct LogPassKnown {
	const LogRow *skip;
	int nskip;
	const LogRow *watch;
	int nwatch;
};

// What one batch did with them: the skip rows it left out (room for nskip; they are in no later
// window once the batch commits) and the watched rows it published (room for nwatch).
struct LogPassOutcome {
	bool wrote_batch;
	int64 first_pos;
	LogRow *left_out;
	int nleft_out;
	LogRow *published;
	int npublished;
};

// What every pass checks first (READ COMMITTED, writable, synchronous commit), and the batch lock.
void log_pass_prepare(void);

// The batch proper: the checks, the batch lock, the window, the hand-off of each event, the batch row.
// log_pass() runs it in subtransactions.
int64 log_pass_batch(int max_events, const LogPassKnown *known, LogPassOutcome *out);

// The event whose hand-off was under way when the last log_pass_batch() raised its error (id 0: the
// error came from elsewhere), its segment, and how many events of the batch were handed off before it.
struct LogPassFault {
	int64 id;
	uint64 xid;
	int seg;
	int before;
};
extern LogPassFault log_pass_fault;

// Has the current transaction written rows into the log (publish(), the change trigger, an INSERT
// into outbox.pending, retry())? A pass never publishes them: it counts its own transaction as in
// progress. outbox.drain() says so (drain_failures.cpp).
bool log_has_own_rows(void);

// Has outbox.failures or outbox.withheld a row (the failure path has work)? Two heap looks, no SPI.
bool log_failure_rows_exist(void);

// Will a pass still read this row of segment seg (it is in the open window, in no batch yet)? Reads
// the latest batch with the active snapshot.
bool log_row_pending(int seg, uint64 xid, int64 id);
// The last log_pass() ended its batch cut short (more of its window is committed and waits): the
// drain worker runs the next pass at once.
extern bool log_pass_cut;
// The last position the last log_pass() that published handed out (the worker's status slot).
extern int64 log_pass_last_pos;

// The epoch a pass's batch at first_pos is stamped with, given the current one (log_epoch.cpp): in
// log mode, when the timeline, system identifier or database differs from the one outbox.state
// records, a new epoch begun in the current transaction (outbox._epoch_begin()). log_mode:
// outbox.log_state.active as the pass read it under snap.
int64 log_pass_epoch(bool log_mode, Snapshot snap, int64 first_pos, int64 epoch);

// Until the switch moves producers onto the log (doc/storage.md): does the drain worker also run
// passes over the log? (pg_outbox.drain_log)
extern bool guc_drain_log;

// The most channels a process's seq cache holds (pg_outbox.channel_cache_size); past it, misses
// are looked up in outbox.log_channels.
extern int guc_channel_cache_size;

} // namespace pg_outbox
