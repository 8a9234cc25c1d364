// launcher.cpp — the launcher: one static background worker for the whole server.
//
// The launcher is a static background worker registered from _PG_init. It connects to no
// database (shared catalogs only), lists the databases every second, and keeps one dynamic
// drain worker per database that has the extension and is selected by pg_outbox.databases.
// Whether a database has the extension is found out by starting its worker, which exits
// (reason NoExtension) if not; the launcher then leaves that database alone until someone
// runs CREATE EXTENSION or CREATE DATABASE (the utility hook bumps rescan_generation).
//
// The drain worker it starts in each database is worker.cpp.
#include "pg_outbox.hpp"
#include "launcher.hpp"
#include "guard.hpp"
#include "worker_settings.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

PGDLLEXPORT void pg_outbox_launcher_main(Datum arg);
}

#include <signal.h>

namespace pg_outbox {

void register_launcher(void) {
	BackgroundWorker bgw;
	memset(&bgw, 0, sizeof bgw);
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_outbox");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "pg_outbox_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_outbox launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_outbox launcher");
	RegisterBackgroundWorker(&bgw);
}

// ---------------------------------------------------------------------------------------
// launcher
//
// Shared slots (shared->slots) are for workers that run (or are starting) and for the short
// holds of DROP/RENAME DATABASE & co. What the launcher knows about each database lives in its
// own memory (dbs below): whether it has the extension (Unknown until a worker connected to
// it), since when it waits for a worker. A worker started in a database without the extension
// exits at once (NoExtension): its slot is freed at once and the database is not probed again
// until rescan_generation moves (CREATE EXTENSION, CREATE DATABASE, reload). At most
// kMaxProbes such probes run at a time, so probing 1000 databases never takes more than two
// background worker processes, even for an instant.
//
// When a worker cannot be had (RegisterDynamicBackgroundWorker fails: max_worker_processes is
// reached; or every shared slot is used), the databases left without one wait in a queue, oldest
// first, published in shared->waiting (outbox.status shows state 'waiting') and logged once each.
// While some wait, a worker that has had kQuantum of service (or is idle after kIdleQuantum)
// is asked to step aside after its current pass; its database joins the end of the queue: every
// database that has the extension is served in turn.
// ---------------------------------------------------------------------------------------
namespace {

struct DbInfo {
	Oid oid;
	char name[NAMEDATALEN];
};

enum class Known : int { Unknown, HasExt, NoExt };

struct DbEntry {
	Oid oid;
	char name[NAMEDATALEN];
	Known known;
	uint32 probed_generation; // with NoExt: the generation it was found without the extension
	uint32 start_generation;  // the generation when its worker was last started: a probe that
	                          // finds no extension proves nothing about later generations
	TimestampTz wait_since;   // when it started waiting for a worker; 0: not waiting
	TimestampTz last_start;   // when a worker was last started for it (restarts: once a second)
	bool reported;            // its wait was logged (once per shortage, however often it waits)
	bool yielded;             // its last worker stepped aside: the next start is just its turn
	bool has_work;            // while waiting, a commit wrote events (shared->waiting[].work)
};

constexpr int kMaxProbes = 2;                              // workers at a time in databases not known to have it
constexpr int64 kQuantum = 10 * USECS_PER_SEC;             // service before a busy worker steps aside
constexpr int64 kIdleQuantum = 2 * USECS_PER_SEC;          // ... an idle one
constexpr int64 kRestartDelay = USECS_PER_SEC;             // restart of a failed worker

// Launcher-local bookkeeping, indexed like shared->slots.
BackgroundWorkerHandle *handles[kMaxWorkers];

// What the launcher knows of each database, sorted by oid (TopMemoryContext).
DbEntry *dbs = nullptr;
int ndbs = 0;
bool shortage_reported = false; // a shortage is going on and was logged
bool unknown_reported = false;  // ... and its databases not yet probed were counted

int cmp_dbinfo(const void *a, const void *b) {
	Oid x = static_cast<const DbInfo *>(a)->oid, y = static_cast<const DbInfo *>(b)->oid;
	return x < y ? -1 : x > y ? 1 : 0;
}

DbEntry *find_db(Oid oid) {
	int lo = 0, hi = ndbs - 1;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		if (dbs[mid].oid == oid)
			return &dbs[mid];
		if (dbs[mid].oid < oid)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return nullptr;
}

// Connectable, non-template databases. Allocated in the caller's memory context.
int list_databases(DbInfo **out) {
	int n = 0, cap = 16;
	DbInfo *list = (DbInfo *)palloc(cap * sizeof(DbInfo));
	MemoryContext caller = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void)GetTransactionSnapshot();
	Relation rel = table_open(DatabaseRelationId, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
	HeapTuple tup;
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
		Form_pg_database db = (Form_pg_database)GETSTRUCT(tup);
		if (db->datistemplate || !db->datallowconn)
			continue;
		MemoryContext old = MemoryContextSwitchTo(caller);
		if (n == cap) {
			cap *= 2;
			list = (DbInfo *)repalloc(list, cap * sizeof(DbInfo));
		}
		MemoryContextSwitchTo(old);
		list[n].oid = db->oid;
		strlcpy(list[n].name, NameStr(db->datname), NAMEDATALEN);
		n++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	qsort(list, n, sizeof(DbInfo), cmp_dbinfo);
	*out = list;
	return n;
}

// Replace dbs by the databases that exist now, keeping what is known of those that stay.
void refresh_databases(void) {
	DbInfo *list;
	int n = list_databases(&list);
	DbEntry *fresh = (DbEntry *)MemoryContextAllocZero(TopMemoryContext, Max(n, 1) * sizeof(DbEntry));
	int j = 0;
	for (int i = 0; i < n; i++) {
		while (j < ndbs && dbs[j].oid < list[i].oid)
			j++;
		if (j < ndbs && dbs[j].oid == list[i].oid)
			fresh[i] = dbs[j];
		else
			fresh[i].oid = list[i].oid;
		strlcpy(fresh[i].name, list[i].name, NAMEDATALEN); // renamed, maybe
	}
	if (dbs)
		pfree(dbs);
	dbs = fresh;
	ndbs = n;
	pfree(list);
}

// Is the database selected by pg_outbox.databases? (The value was checked when it was set.)
bool database_selected(const char *name) {
	const char *setting = guc_databases ? guc_databases : "*";
	if (strcmp(setting, "*") == 0)
		return true;
	char *copy = pstrdup(setting);
	List *names = NIL;
	bool selected = false;
	if (SplitIdentifierString(copy, ',', &names)) {
		ListCell *lc;
		foreach (lc, names)
			if (strcmp((const char *)lfirst(lc), name) == 0 || strcmp((const char *)lfirst(lc), "*") == 0)
				selected = true;
	}
	list_free(names);
	pfree(copy);
	return selected;
}

void free_slot(int i) {
	WorkerSlot *slot = &shared->slots[i];
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	memset(slot, 0, sizeof *slot);
	LWLockRelease(shared->lock);
	if (handles[i]) {
		pfree(handles[i]);
		handles[i] = nullptr;
	}
}

enum class Start { Ok, Held, NoProcess };

// Start a worker for db in slot i (its own, or a free one).
Start start_worker(int i, DbEntry *db, uint32 generation) {
	BackgroundWorker bgw;
	memset(&bgw, 0, sizeof bgw);
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART; // the launcher restarts it
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_outbox");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "pg_outbox_drain_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_outbox drain worker for database %u", db->oid);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_outbox drain");
	bgw.bgw_main_arg = ObjectIdGetDatum(db->oid);
	bgw.bgw_notify_pid = MyProcPid;

	WorkerSlot *slot = &shared->slots[i];
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (slot->dbid == db->oid &&
	    (slot->dropped || (slot->stop_requested && slot->hold_until != 0 && GetCurrentTimestamp() < slot->hold_until))) {
		LWLockRelease(shared->lock); // DROP DATABASE & co. got in since supervise() looked
		return Start::Held;
	}
	if (slot->dbid != InvalidOid && slot->dbid != db->oid) {
		LWLockRelease(shared->lock); // a backend claimed the free slot for a hold meanwhile
		return Start::Held;
	}
	if (slot->dbid != db->oid)
		memset(slot, 0, sizeof *slot);
	slot->dbid = db->oid;
	slot->state = WorkerState::Starting;
	slot->exit_reason = ExitReason::None;
	slot->stop_requested = false;
	slot->yield_requested = false;
	slot->has_extension = false;
	slot->quiet_start = db->yielded;
	slot->ignores_commits = false;
	LWLockRelease(shared->lock);

	if (handles[i]) {
		pfree(handles[i]);
		handles[i] = nullptr;
	}
	db->last_start = GetCurrentTimestamp();
	db->start_generation = generation;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	bool ok = RegisterDynamicBackgroundWorker(&bgw, &handles[i]);
	MemoryContextSwitchTo(old);
	if (ok)
		return Start::Ok;
	// no background worker process free: give the slot back, the database waits for its turn
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (slot->dbid == db->oid && slot->pid == 0)
		memset(slot, 0, sizeof *slot);
	LWLockRelease(shared->lock);
	return Start::NoProcess;
}

// The queue's order: the longest waiting first, where a database that has events to publish
// counts as waiting kWorkBoost longer (served sooner, but one without does not starve).
constexpr int64 kWorkBoost = 20 * USECS_PER_SEC;
TimestampTz queue_key(const DbEntry *db) {
	return db->has_work ? db->wait_since - kWorkBoost : db->wait_since;
}
int cmp_waiting(const void *a, const void *b) {
	const DbEntry *x = *static_cast<DbEntry *const *>(a), *y = *static_cast<DbEntry *const *>(b);
	TimestampTz kx = queue_key(x), ky = queue_key(y);
	if (kx != ky)
		return kx < ky ? -1 : 1;
	return x->oid < y->oid ? -1 : x->oid > y->oid ? 1 : 0;
}

// Carry the work flags committers set in shared->waiting over to dbs. Caller holds shared->lock.
void collect_work_flags(void) {
	int n = Min(shared->nwaiting, kMaxWaiting);
	for (int i = 0; i < n; i++)
		if (shared->waiting[i].work) {
			DbEntry *db = find_db(shared->waiting[i].dbid);
			if (db)
				db->has_work = true;
		}
}

// One supervision pass over the databases.
void supervise(void) {
	refresh_databases();
	TimestampTz now = GetCurrentTimestamp();
	uint32 generation;
	LWLockAcquire(shared->lock, LW_SHARED);
	generation = shared->rescan_generation;
	collect_work_flags();
	LWLockRelease(shared->lock);

	// 1. The slots: notice workers that died while starting, learn what the workers found, stop
	//    workers of databases that are gone or deselected, free the slots nobody needs.
	int probes = 0, running = 0;
	Oid exiting[kMaxWorkers]; // databases whose last worker has not been reaped yet
	int nexiting = 0;
	for (int i = 0; i < kMaxWorkers; i++) {
		WorkerSlot *slot = &shared->slots[i];
		if (slot->dbid == InvalidOid)
			continue;
		if (slot->state == WorkerState::Starting && slot->pid == 0) {
			pid_t pid;
			if (!handles[i] || GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED) {
				LWLockAcquire(shared->lock, LW_EXCLUSIVE);
				if (slot->state == WorkerState::Starting && slot->pid == 0) {
					slot->state = WorkerState::Stopped;
					if (slot->exit_reason == ExitReason::None)
						slot->exit_reason = ExitReason::Error;
				}
				LWLockRelease(shared->lock);
			}
		}
		DbEntry *db = find_db(slot->dbid);
		bool alive = slot->pid != 0 || slot->state == WorkerState::Starting;
		bool held = slot->dropped || (slot->stop_requested && slot->hold_until != 0 && now < slot->hold_until);
		if (db && slot->has_extension)
			db->known = Known::HasExt;
		bool wanted = db && !slot->dropped && database_selected(db->name);
		if (alive) {
			if (!wanted && !slot->stop_requested) {
				// gone (DROP, IS_TEMPLATE, ALLOW_CONNECTIONS false) or deselected: stop it
				LWLockAcquire(shared->lock, LW_EXCLUSIVE);
				slot->stop_requested = true;
				slot->hold_until = 0;
				signal_slot_locked(slot);
				LWLockRelease(shared->lock);
			}
			running++;
			if (db && db->known == Known::Unknown)
				probes++;
			if (db)
				db->wait_since = 0, db->has_work = false;
			continue;
		}
		// exited. Until the postmaster has reaped the process, its background worker slot is still
		// taken: count it as running, or a round of probes would briefly take more processes.
		pid_t gone_pid;
		if (handles[i] && GetBackgroundWorkerPid(handles[i], &gone_pid) != BGWH_STOPPED) {
			exiting[nexiting++] = slot->dbid;
			running++;
			if (db && db->known == Known::Unknown && slot->exit_reason == ExitReason::NoExtension)
				probes++;
			continue;
		}
		if (db && slot->exit_reason == ExitReason::NoExtension) {
			db->known = Known::NoExt;
			db->probed_generation = db->start_generation;
		}
		if (db && slot->exit_reason == ExitReason::Yielded) {
			if (db->wait_since == 0)
				db->wait_since = now; // the end of the queue
			db->yielded = true;
		}
		if (held && db)
			continue; // keep the hold
		// keep the slot of a worker that failed (its last_error stays visible; restarted below)
		if (wanted && (slot->exit_reason == ExitReason::Error || slot->exit_reason == ExitReason::Signal ||
		               slot->exit_reason == ExitReason::Requested))
			continue;
		free_slot(i);
	}

	// 2. Who needs a worker: selected databases without a running worker, not known to lack the
	//    extension (or re-probed since), not held. Oldest waiting first.
	DbEntry **queue = (DbEntry **)palloc(Max(ndbs, 1) * sizeof(DbEntry *));
	int nqueue = 0;
	for (int d = 0; d < ndbs; d++) {
		DbEntry *db = &dbs[d];
		if (db->known == Known::NoExt && db->probed_generation != generation)
			db->known = Known::Unknown; // CREATE EXTENSION somewhere, a reload: look again
		WorkerSlot *slot = find_slot(db->oid);
		if (slot && (slot->pid != 0 || slot->state == WorkerState::Starting))
			continue;
		bool still_exiting = false;
		for (int e = 0; e < nexiting; e++)
			still_exiting |= exiting[e] == db->oid;
		if (still_exiting)
			continue; // what it found is known once the postmaster has reaped it
		if (slot && (slot->dropped || (slot->stop_requested && slot->hold_until != 0 && now < slot->hold_until)))
			continue;
		if (!database_selected(db->name) || db->known == Known::NoExt) {
			db->wait_since = 0;
			db->reported = false;
			continue;
		}
		if (db->wait_since == 0)
			db->wait_since = now;
		queue[nqueue++] = db;
	}
	qsort(queue, nqueue, sizeof(DbEntry *), cmp_waiting);

	// 3. Start workers, in queue order, while processes and slots last.
	bool shortage = false;
	int nwaiting = 0;
	for (int q = 0; q < nqueue; q++) {
		DbEntry *db = queue[q];
		bool probe = db->known == Known::Unknown;
		int i = -1;
		LWLockAcquire(shared->lock, LW_SHARED);
		WorkerSlot *own = find_slot(db->oid);
		WorkerSlot *free_one = own ? own : find_slot(InvalidOid);
		LWLockRelease(shared->lock);
		if (free_one)
			i = static_cast<int>(free_one - shared->slots);
		bool restart_too_soon = own && now < db->last_start + kRestartDelay;
		if (shortage || i < 0 || restart_too_soon || (probe && probes >= kMaxProbes)) {
			if (i < 0 && !restart_too_soon)
				shortage = true; // every slot in use
			queue[nwaiting++] = db;
			continue;
		}
		Start st = start_worker(i, db, generation);
		if (st == Start::Ok) {
			db->wait_since = 0;
			db->yielded = false;
			db->has_work = false;
			running++;
			if (probe)
				probes++;
			continue;
		}
		if (st == Start::NoProcess)
			shortage = true;
		queue[nwaiting++] = db;
	}

	// 4. Report the waiting databases (each once), publish the list for outbox.status.
	int unknown_waiting = 0;
	for (int q = 0; q < nwaiting; q++) {
		DbEntry *db = queue[q];
		if (!shortage)
			continue; // only waiting for its turn to be probed, or to restart: not worth a word
		if (db->known == Known::Unknown) {
			unknown_waiting++;
			continue;
		}
		if (!db->reported) {
			db->reported = true;
			ereport(LOG, (errmsg("pg_outbox: no background worker process free for database \"%s\": it waits for "
			                     "its turn",
			                     db->name),
			              errdetail("%d drain workers run; pg_outbox serves the waiting databases in turn, each "
			                        "for about %d s.",
			                        running, (int)(kQuantum / USECS_PER_SEC)),
			              errhint("Raise max_worker_processes (restart): pg_outbox needs one worker per database "
			                      "with the extension, plus its launcher.")));
		}
	}
	if (shortage && unknown_waiting > 0 && !unknown_reported) {
		unknown_reported = true;
		ereport(LOG, (errmsg("pg_outbox: %d databases wait to be checked for the extension: no background worker "
		                     "process free",
		                     unknown_waiting)));
	}
	if (shortage)
		shortage_reported = true;
	else if (nwaiting == 0 && shortage_reported) {
		// the shortage is over: say so once; a new shortage is reported again
		shortage_reported = unknown_reported = false;
		for (int d = 0; d < ndbs; d++)
			dbs[d].reported = false;
		ereport(LOG, (errmsg("pg_outbox: every database with the extension has a drain worker again")));
	}
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	collect_work_flags(); // set since the pass began: keep them
	int published = 0;
	for (int q = 0; q < nwaiting && published < kMaxWaiting; q++)
		if (shortage) {
			shared->waiting[published].dbid = queue[q]->oid;
			shared->waiting[published].since = queue[q]->wait_since;
			shared->waiting[published].work = queue[q]->has_work;
			published++;
		}
	shared->nwaiting = published;
	LWLockRelease(shared->lock);

	// 5. Round-robin: while databases wait for a process, the workers that had their share step
	//    aside (after their current pass), the longest-serving first, one per waiting database.
	if (shortage && nwaiting > 0) {
		int want = nwaiting;
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		for (int i = 0; i < kMaxWorkers; i++)
			if (shared->slots[i].yield_requested && shared->slots[i].pid != 0)
				want--;
		while (want > 0) {
			WorkerSlot *best = nullptr;
			for (int i = 0; i < kMaxWorkers; i++) {
				WorkerSlot *slot = &shared->slots[i];
				if (slot->pid == 0 || slot->yield_requested || slot->stop_requested || slot->started_at == 0)
					continue;
				int64 served = now - slot->started_at;
				bool idle = slot->state == WorkerState::Idle &&
				            (slot->last_batch_at == 0 || now - slot->last_batch_at >= kIdleQuantum);
				if (served < kQuantum && !(idle && served >= kIdleQuantum))
					continue;
				if (!best || slot->started_at < best->started_at)
					best = slot;
			}
			if (!best)
				break;
			best->yield_requested = true;
			if (best->latch)
				SetLatch(best->latch);
			want--;
		}
		LWLockRelease(shared->lock);
	}
	pfree(queue);
}

void launcher_detach(int, Datum) {
	boundary([&] {
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		if (shared->launcher_pid == MyProcPid) {
			shared->launcher_pid = 0;
			shared->launcher_latch = nullptr;
		}
		LWLockRelease(shared->lock);
	});
}

} // namespace

} // namespace pg_outbox

using namespace pg_outbox;

extern "C" void pg_outbox_launcher_main(Datum) {
	boundary([&] {
		pqsignal(SIGHUP, SignalHandlerForConfigReload);
		pqsignal(SIGTERM, handle_worker_sigterm);
		BackgroundWorkerUnblockSignals();
		BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
		pin_worker_settings();
		pgstat_report_appname("pg_outbox launcher");

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		shared->launcher_pid = MyProcPid;
		shared->launcher_latch = MyLatch;
		// A previous launcher's handles are gone: a worker it registered that never attached would
		// look "starting" for ever. Count it as stopped; supervise() starts it again if needed.
		for (int i = 0; i < kMaxWorkers; i++)
			if (shared->slots[i].state == WorkerState::Starting && shared->slots[i].pid == 0) {
				shared->slots[i].state = WorkerState::Stopped;
				shared->slots[i].exit_reason = ExitReason::Error;
			}
		LWLockRelease(shared->lock);
		before_shmem_exit(launcher_detach, 0);
		ereport(LOG, (errmsg("pg_outbox launcher started")));

		MemoryContext loop_cxt = AllocSetContextCreate(TopMemoryContext, "pg_outbox launcher", ALLOCSET_DEFAULT_SIZES);
		while (!got_sigterm) {
			if (ConfigReloadPending) {
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
				// a reload also makes the launcher look again at databases found without the extension
				LWLockAcquire(shared->lock, LW_EXCLUSIVE);
				shared->rescan_generation++;
				LWLockRelease(shared->lock);
			}
			MemoryContext old = MemoryContextSwitchTo(loop_cxt);
			supervise();
			MemoryContextSwitchTo(old);
			MemoryContextReset(loop_cxt);
			pgstat_report_activity(STATE_IDLE, nullptr);
			(void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			if (got_sigterm)
				break; // a clean exit between passes; in a lock wait, die() ends the process at once
			CHECK_FOR_INTERRUPTS();
		}
		// got_sigterm came with a die() request (handle_worker_sigterm): hold it, or the
		// CHECK_FOR_INTERRUPTS() at the end of the next ereport() would turn this clean exit into
		// a FATAL.
		HOLD_INTERRUPTS();
		ereport(LOG, (errmsg("pg_outbox launcher shutting down")));
		// Exit code 1, as the logical replication launcher does: the postmaster restarts the
		// launcher after bgw_restart_time when someone terminates it (pg_terminate_backend),
		// and does not during a shutdown. Exit code 0 would unregister it for good: nothing
		// would supervise the drain workers until the next server restart.
		proc_exit(1);
	});
}
