// shmem.cpp — pg_outbox's shared memory (shmem.hpp): requested and attached through the
// shmem_request/shmem_startup hooks, and the helpers that read and change the worker slots under
// shared->lock: find a slot, signal its worker, stop a database's worker for a statement that
// needs the database alone and release it afterwards, record published counts.
#include "pg_outbox.hpp"
#include "guard.hpp"

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
}

#include <signal.h>

namespace pg_outbox {

SharedState *shared = nullptr;

static shmem_request_hook_type prev_shmem_request_hook = nullptr;
static shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

const char *state_name(WorkerState s) noexcept {
	switch (s) {
	case WorkerState::Free:
		return "free";
	case WorkerState::Starting:
		return "starting";
	case WorkerState::Idle:
		return "idle";
	case WorkerState::Draining:
		return "draining";
	case WorkerState::Paused:
		return "paused";
	case WorkerState::Backpressure:
		return "backpressure";
	case WorkerState::Stopped:
		return "stopped";
	case WorkerState::NeedsUpdate:
		return "needs_update";
	case WorkerState::Waiting:
		return "waiting";
	}
	return "unknown";
}

static void shmem_request(void) {
	boundary([] {
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(SharedState)));
	RequestAddinShmemSpace(waiters_shmem_size()); // consumers.cpp
	RequestNamedLWLockTranche("pg_outbox", 1);
	});
}

static void shmem_startup(void) {
	boundary([] {
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	bool found = false;
	shared = static_cast<SharedState *>(ShmemInitStruct("pg_outbox", sizeof(SharedState), &found));
	if (!found) {
		memset(shared, 0, sizeof(SharedState));
		shared->lock = &(GetNamedLWLockTranche("pg_outbox"))->lock;
	}
	waiters_shmem_init(); // consumers.cpp
	LWLockRelease(AddinShmemInitLock);
	});
}

WorkerSlot *find_slot(Oid dbid) {
	for (int i = 0; i < kMaxWorkers; i++)
		if (shared->slots[i].dbid == dbid)
			return &shared->slots[i];
	return nullptr;
}

void signal_slot_locked(WorkerSlot *slot) {
	pid_t pid = slot->pid;
	if (pid > 0 && pid != MyProcPid)
		(void)kill(pid, SIGTERM);
}

bool database_waiting(Oid dbid, TimestampTz *since) {
	int n = Min(shared->nwaiting, kMaxWaiting);
	for (int i = 0; i < n; i++)
		if (shared->waiting[i].dbid == dbid) {
			if (since)
				*since = shared->waiting[i].since;
			return true;
		}
	return false;
}

void request_rescan(void) {
	if (!shared)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->rescan_generation++;
	Latch *latch = shared->launcher_latch;
	if (latch)
		SetLatch(latch);
	LWLockRelease(shared->lock);
}

void note_published(WorkerSlot *slot, uint64 n, int64 last_pos) {
	TimestampTz now = GetCurrentTimestamp();
	int64 sec = now / USECS_PER_SEC;
	int i = static_cast<int>(sec % 64);
	if (slot->sec_stamp[i] != sec) {
		slot->sec_stamp[i] = sec;
		slot->sec_counts[i] = 0;
	}
	slot->sec_counts[i] += n;
	slot->published_total += n;
	slot->last_pos = last_pos;
	slot->last_batch_at = now;
}

// Stopping a database's worker for DROP DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE
// RENAME/SET TABLESPACE: those refuse to run while any other process is connected.
void stop_worker(Oid dbid, int hold_ms, int wait_ms) {
	if (!shared || !OidIsValid(dbid))
		return;
	pid_t pid = 0;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	WorkerSlot *slot = find_slot(dbid);
	if (!slot) {
		// no worker yet (a database just created, say): claim a slot with the hold, so that the
		// launcher does not start one in the middle of the statement
		slot = find_slot(InvalidOid);
		if (slot) {
			memset(slot, 0, sizeof *slot);
			slot->dbid = dbid;
			slot->state = WorkerState::Stopped;
			slot->exit_reason = ExitReason::Requested;
		}
	}
	if (slot) {
		slot->stop_requested = true;
		slot->yield_requested = false;
		slot->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), hold_ms);
		pid = slot->pid;
		signal_slot_locked(slot); // under the lock: the pid is the live worker's, never a stale one
	}
	LWLockRelease(shared->lock);
	if (pid == 0)
		return;
	for (int waited = 0; waited < wait_ms; waited += 10) {
		LWLockAcquire(shared->lock, LW_SHARED);
		bool gone = slot->dbid != dbid || slot->pid == 0;
		LWLockRelease(shared->lock);
		if (gone)
			return;
		(void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

// End the hold of stop_worker() early: the statement that needed the database alone is done.
// dropped: the statement was a DROP DATABASE that succeeded; no worker is ever started for it.
void release_worker(Oid dbid, bool dropped) {
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	WorkerSlot *slot = find_slot(dbid);
	if (slot && dropped)
		slot->dropped = true;
	if (slot && slot->stop_requested)
		slot->hold_until = GetCurrentTimestamp();
	Latch *latch = shared->launcher_latch;
	if (latch)
		SetLatch(latch);
	LWLockRelease(shared->lock);
}

void shmem_install(void) {
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

} // namespace pg_outbox
