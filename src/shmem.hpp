// shmem.hpp — the shared memory of pg_outbox: one slot per drain worker (which database, its
// process and latch, its state and counters), the launcher's latch, and the databases waiting for
// a worker process; all under one LWLock (shared->lock). shmem.cpp requests and attaches it and
// holds the slot helpers, including stopping a database's worker for a statement that needs the
// database alone (utility_hook.cpp).
#pragma once

extern "C" {
#include "postgres.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
}

namespace pg_outbox {

constexpr int kMaxWorkers = 64;

enum class WorkerState : int {
	Free = 0,      // slot unused
	Starting,      // registered, not yet connected
	Idle,          // waiting for a wake-up
	Draining,      // publishing a batch
	Paused,        // outbox.pause() in effect
	Backpressure,  // NOTIFY queue above pg_outbox.max_queue_usage
	Stopped,       // exited; see exit_reason
	NeedsUpdate,   // the SQL objects are older than the library: ALTER EXTENSION pg_outbox UPDATE
	Waiting,       // (status only, never in a slot) no worker process free: waits for its turn
};
const char *state_name(WorkerState s) noexcept;

enum class ExitReason : int {
	None = 0,    // still running or never ran
	NoExtension, // database has no pg_outbox: do not restart until CREATE EXTENSION
	Requested,   // stopped on purpose (DROP/RENAME DATABASE, CREATE DATABASE TEMPLATE, GUC)
	Error,       // exited after an error; the launcher restarts it
	Signal,      // SIGTERM
	Yielded,     // stepped aside for a database waiting for a worker process (round-robin)
};

struct WorkerSlot {
	Oid dbid;                   // InvalidOid: free
	pid_t pid;                  // 0 when not running
	Latch *latch;               // the worker's process latch, set to wake it
	WorkerState state;
	ExitReason exit_reason;
	bool stop_requested;        // the worker must exit; the launcher must not restart it
	bool yield_requested;       // the worker must exit after its pass: another database's turn
	bool dropped;               // DROP DATABASE succeeded: never start a worker for dbid again
	bool has_extension;         // the worker found pg_outbox installed (a probe that did not exit)
	bool quiet_start;           // a new turn after stepping aside: the worker does not log its start
	bool ignores_commits;       // the worker is paused (outbox.pause()): producers' commits do not wake
	                            // it (written by the worker alone, read without the lock: a stale value
	                            // costs one wake-up or one idle interval, never an event)
	TimestampTz hold_until;     // with stop_requested: restart allowed again after this time
	TimestampTz started_at;
	TimestampTz last_batch_at;
	uint64 published_total;     // events published by this worker process
	int64 last_pos;
	double queue_usage;
	uint64 sec_counts[64];      // events published per second, ring indexed by second % 64
	int64 sec_stamp[64];
	TimestampTz last_error_at;
	char last_error[256];
};

// Databases that should have a worker but got none (no background worker process free, or every
// slot in use): the launcher serves them in turn and publishes the list for outbox.status.
constexpr int kMaxWaiting = 4096;
struct WaitingDb {
	Oid dbid;
	TimestampTz since;
	bool work; // a commit wrote events meanwhile: the launcher serves it sooner
};

struct SharedState {
	LWLock *lock;               // protects everything here
	pid_t launcher_pid;
	Latch *launcher_latch;
	uint32 rescan_generation;   // bumped to make the launcher re-probe databases
	WorkerSlot slots[kMaxWorkers];
	int nwaiting;               // entries in waiting[], written by the launcher only
	WaitingDb waiting[kMaxWaiting];
};

extern SharedState *shared;

// Slot of the worker for dbid, or nullptr. Caller holds shared->lock.
WorkerSlot *find_slot(Oid dbid);
// Ask the launcher to look at the databases again (new extension, new database).
void request_rescan(void);
// SIGTERM the slot's worker, if it runs. Caller holds shared->lock (so the pid cannot be stale:
// a worker clears it under that lock before it exits) — never kill() a pid read before.
void signal_slot_locked(WorkerSlot *slot);
// Is dbid waiting for a worker process (shared->waiting)? Caller holds shared->lock.
bool database_waiting(Oid dbid, TimestampTz *since);
// Stop dbid's worker and keep it stopped for hold_ms (DROP DATABASE and friends). Waits for
// it to exit, up to wait_ms.
void stop_worker(Oid dbid, int hold_ms, int wait_ms);
// Record a published count in the slot's per-second ring.
void note_published(WorkerSlot *slot, uint64 n, int64 last_pos);
// End the hold of stop_worker() early: the statement that needed the database alone is done.
// dropped: the statement was a DROP DATABASE that succeeded; no worker is ever started for it.
void release_worker(Oid dbid, bool dropped = false);

// Install the shmem_request and shmem_startup hooks (_PG_init).
void shmem_install(void);

} // namespace pg_outbox
