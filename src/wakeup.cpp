// wakeup.cpp — commit-time wake-ups (wakeup.hpp). The producer's write (publish(), the change
// trigger, the statement trigger on outbox.pending) calls wake_worker_at_commit(), which records
// the lowest live subtransaction level that wrote events; the XACT_EVENT_COMMIT callback sets the
// drain worker's latch. At that point the commit is already visible (ProcArrayEndTransaction ran
// before the callbacks), so the woken worker sees the rows: the model is ApplyLauncherWakeupAtCommit
// in PostgreSQL's launcher.c.
#include "pg_outbox.hpp"
#include "guard.hpp"
#include "xact_events.hpp"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
}

namespace pg_outbox {

static LevelMark wrote_events; // the live subtransaction levels that wrote events
static bool rescan_pending = false; // CREATE EXTENSION or CREATE DATABASE: the launcher re-probes at commit
static bool wake_always = false;    // wake the worker even while it is paused (wakeup.hpp)

void wake_worker_at_commit(void) {
	wrote_events.mark();
}

void wake_worker_always_at_commit(void) {
	wrote_events.mark();
	wake_always = true;
}

static void wake_worker_now(Oid dbid, bool always) {
	if (!shared)
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	WorkerSlot *slot = find_slot(dbid);
	bool running = slot && slot->pid != 0;
	if (running && slot->latch && (always || !slot->ignores_commits))
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

void wakeup_xact_event(XactEvent event) {
	switch (event) {
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
		if (wrote_events.live())
			wake_worker_now(MyDatabaseId, wake_always);
		if (rescan_pending)
			request_rescan();
		wrote_events.clear();
		rescan_pending = false;
		wake_always = false;
		break;
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
	case XACT_EVENT_PREPARE: // its events become visible at COMMIT PREPARED, which wakes then
		wrote_events.clear();
		rescan_pending = false;
		wake_always = false;
		break;
	default:
		break;
	}
}

void wakeup_subxact_event(SubXactEvent event, int level) {
	wrote_events.subxact(event, level);
}

void wake_worker_at_top_commit(void) {
	wrote_events.mark_top();
	wake_always = true;
}

void rescan_at_commit(void) {
	rescan_pending = true;
}

} // namespace pg_outbox
