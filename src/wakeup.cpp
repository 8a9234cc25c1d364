// wakeup.cpp — commit-time wake-ups (wakeup.hpp). The producer's write (publish(), the change
// trigger, the statement trigger on outbox.pending) calls wake_worker_at_commit(), which records
// the lowest live subtransaction level that wrote events; the XACT_EVENT_COMMIT callback sets the
// drain worker's latch. At that point the commit is already visible (ProcArrayEndTransaction ran
// before the callbacks), so the woken worker sees the rows: the model is ApplyLauncherWakeupAtCommit
// in PostgreSQL's launcher.c.
#include "pg_outbox.hpp"
#include "guard.hpp"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
}

namespace pg_outbox {

static int wake_level = 0;       // lowest live subtransaction level that wrote events; 0: none
static bool rescan_pending = false; // CREATE EXTENSION or CREATE DATABASE: the launcher re-probes at commit

void wake_worker_at_commit(void) {
	int level = GetCurrentTransactionNestLevel();
	if (wake_level == 0 || level < wake_level)
		wake_level = level;
}

static void wake_worker_now(Oid dbid) {
	if (!shared)
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	WorkerSlot *slot = find_slot(dbid);
	bool running = slot && slot->pid != 0;
	if (running && slot->latch)
		SetLatch(slot->latch);
	bool maybe_waiting = !running && shared->nwaiting > 0;
	LWLockRelease(shared->lock);
	if (!maybe_waiting)
		return;
	// no worker process was free for this database: tell the launcher it has work now
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	int n = Min(shared->nwaiting, kMaxWaiting);
	for (int i = 0; i < n; i++)
		if (shared->waiting[i].dbid == dbid) {
			shared->waiting[i].work = true;
			if (shared->launcher_latch)
				SetLatch(shared->launcher_latch);
		}
	LWLockRelease(shared->lock);
}

static void xact_callback(XactEvent event, void *) {
	boundary([&] {
		switch (event) {
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_level != 0)
				wake_worker_now(MyDatabaseId);
			if (rescan_pending)
				request_rescan();
			wake_level = 0;
			rescan_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE: // its events become visible at COMMIT PREPARED, which wakes then
			wake_level = 0;
			rescan_pending = false;
			break;
		default:
			break;
		}
	});
}

static void subxact_callback(SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
	boundary([&] {
		int level = GetCurrentTransactionNestLevel();
		if (event == SUBXACT_EVENT_COMMIT_SUB) {
			if (wake_level == level)
				wake_level = level - 1; // the writes now belong to the parent
		} else if (event == SUBXACT_EVENT_ABORT_SUB) {
			if (wake_level >= level)
				wake_level = 0; // everything written at this level or below is gone
		}
	});
}

void wake_worker_at_top_commit(void) {
	wake_level = 1; // the top level: no subtransaction abort forgets it
}

void rescan_at_commit(void) {
	rescan_pending = true;
}

void wakeups_init(void) {
	RegisterXactCallback(xact_callback, nullptr);
	RegisterSubXactCallback(subxact_callback, nullptr);
}

} // namespace pg_outbox
