// worker.cpp — the launcher and the per-database drain workers.
//
// The launcher is a static background worker registered from _PG_init. It connects to no
// database (shared catalogs only), lists the databases every second, and keeps one dynamic
// drain worker per database that has the extension and is selected by pg_outbox.databases.
// Whether a database has the extension is found out by starting its worker, which exits
// (reason NoExtension) if not; the launcher then leaves that database alone until someone
// runs CREATE EXTENSION or CREATE DATABASE (the utility hook bumps rescan_generation).
//
// A drain worker sleeps on its latch; producers' commits set it (pg_outbox.cpp); a safety
// tick (pg_outbox.idle_interval) wakes it otherwise. Each pass is one transaction: check the
// extension and the pause flag, check the NOTIFY queue fill (backpressure), drain a batch.
#include "pg_outbox.hpp"
#include "guard.hpp"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "commands/vacuum.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "executor/spi.h"
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
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

PGDLLEXPORT void pg_outbox_launcher_main(Datum arg);
PGDLLEXPORT void pg_outbox_drain_main(Datum arg);
}

#include <signal.h>

namespace pg_outbox {

static volatile sig_atomic_t got_sigterm = false;

static void handle_sigterm(SIGNAL_ARGS) {
	int save_errno = errno;
	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

// The drain worker's SIGTERM: also a die() request, so that a worker waiting for a lock (a
// session holding the state row, a purge) ends at once instead of holding up shutdown or
// DROP DATABASE; a worker between passes exits cleanly at the top of its loop.
static void handle_drain_sigterm(SIGNAL_ARGS) {
	int save_errno = errno;
	got_sigterm = true;
	if (!proc_exit_inprogress) {
		InterruptPending = true;
		ProcDiePending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

// ALTER DATABASE ... SET and ALTER ROLE ... SET settings (even role and session_authorization)
// apply to a background worker's connection as to any other (process_settings() in
// InitPostgres). The database owner may set most of them. None of them may stop, slow or subvert
// the launcher and the drain workers, which run as the bootstrap superuser: after connecting,
// each worker overrides what it depends on (PGC_S_OVERRIDE: a reload does not undo it either).
struct PinnedSetting {
	const char *name;
	const char *value; // nullptr: the bootstrap superuser's name
};
static const PinnedSetting kPinnedSettings[] = {
    // who the worker is: the bootstrap superuser, never a role a database or role setting names
    {"session_authorization", nullptr},
    {"role", "none"},
    // transactions the drain can commit, at the isolation its take-a-batch logic assumes
    {"default_transaction_read_only", "off"},
    {"default_transaction_isolation", "read committed"},
    {"default_transaction_deferrable", "off"},
    // (transaction_read_only and transaction_isolation start from these in every transaction)
    // no timeout cuts a drain short (transaction_timeout exists from PostgreSQL 17 on)
    {"statement_timeout", "0"},
    {"lock_timeout", "0"},
    {"idle_in_transaction_session_timeout", "0"},
    {"idle_session_timeout", "0"},
    {"transaction_timeout", "0"},
    // its SQL resolves only pg_catalog objects (and the schema-qualified outbox ones)
    {"search_path", "pg_catalog, pg_temp"},
    // a drain's notifications reach listeners at commit: the commit must be durable before that,
    // or a crash could hand the same positions out again to other events
    {"synchronous_commit", "on"},
    // the DBA's triggers on the history fire; the pending_wake trigger fires
    {"session_replication_role", "origin"},
    // nothing makes every drain slower: JIT compilation, forced parallel plans, cost-based
    // VACUUM delays in the worker's own VACUUM of outbox.pending, generic plans re-planned
    {"jit", "off"},
    {"force_parallel_mode", "off"},
    {"debug_parallel_query", "off"},
    {"max_parallel_workers_per_gather", "0"},
    {"plan_cache_mode", "auto"},
    {"vacuum_cost_delay", "0"},
    {"enable_seqscan", "on"},
    {"enable_indexscan", "on"},
    {"enable_indexonlyscan", "on"},
    {"enable_bitmapscan", "on"},
    {"enable_tidscan", "on"},
    {"enable_sort", "on"},
    {"enable_hashagg", "on"},
    {"enable_nestloop", "on"},
    {"enable_hashjoin", "on"},
    {"enable_mergejoin", "on"},
    {"enable_material", "on"},
};

static void pin_worker_settings(void) {
	// role and session_authorization look their value up in the catalogs: in a transaction (a
	// plain SET made in a transaction outlives its commit)
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	const char *superuser_name = GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false);
	for (const PinnedSetting &s : kPinnedSettings) {
		if (!GetConfigOption(s.name, true, false))
			continue; // not in this PostgreSQL version
		SetConfigOption(s.name, s.value ? s.value : superuser_name, PGC_SUSET, PGC_S_OVERRIDE);
	}
	CommitTransactionCommand();
	if (GetUserId() != BOOTSTRAP_SUPERUSERID || GetSessionUserId() != BOOTSTRAP_SUPERUSERID)
		ereport(FATAL, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
		                errmsg("pg_outbox: the worker does not run as the bootstrap superuser"),
		                errdetail("A database or role setting changed its role, and overriding it failed.")));
}

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
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->launcher_pid == MyProcPid) {
		shared->launcher_pid = 0;
		shared->launcher_latch = nullptr;
	}
	LWLockRelease(shared->lock);
}

} // namespace

} // namespace pg_outbox

using namespace pg_outbox;

extern "C" void pg_outbox_launcher_main(Datum) {
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, handle_sigterm);
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
		CHECK_FOR_INTERRUPTS();
	}
	ereport(LOG, (errmsg("pg_outbox launcher shutting down")));
	// Exit code 1, as the logical replication launcher does: the postmaster restarts the
	// launcher after bgw_restart_time when someone terminates it (pg_terminate_backend),
	// and does not during a shutdown. Exit code 0 would unregister it for good: nothing
	// would supervise the drain workers until the next server restart.
	proc_exit(1);
}

// ---------------------------------------------------------------------------------------
// drain worker
// ---------------------------------------------------------------------------------------
namespace pg_outbox {
namespace {

WorkerSlot *my_slot = nullptr;

void drain_detach(int, Datum) {
	if (!my_slot)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (my_slot->pid == MyProcPid) {
		my_slot->pid = 0;
		my_slot->latch = nullptr;
		my_slot->state = WorkerState::Stopped;
	}
	LWLockRelease(shared->lock);
}

void set_state(WorkerState s) {
	if (my_slot->state == s)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot->state = s;
	LWLockRelease(shared->lock);
}

[[noreturn]] void exit_worker(ExitReason why) {
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot->exit_reason = why;
	LWLockRelease(shared->lock);
	proc_exit(0);
}

enum class Pass { Drained, NoExtension, Paused, Backpressure, NeedsUpdate };

// Is anything waiting to be published? (Only asked when the NOTIFY queue is over the limit.)
bool pending_exists(void) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	int rc = SPI_execute("SELECT 1 FROM outbox.pending LIMIT 1", true, 1);
	bool exists = rc == SPI_OK_SELECT && SPI_processed > 0;
	SPI_finish();
	return exists;
}
TimestampTz last_maintenance = 0;

// The pending table gets a DELETE for every published event. Autovacuum wakes once a minute
// (autovacuum_naptime): at 25k events/s that is 1.5M dead tuples and a table that never
// shrinks back. So the worker vacuums it itself, every kVacuumEvery published events (or
// every 10 s after at least 1000): a VACUUM of a few thousand dead tuples takes milliseconds
// and keeps the table at a few MB.
constexpr int64 kVacuumEvery = 20000;
int64 published_since_vacuum = 0;
TimestampTz last_vacuum = 0;

void vacuum_pending(void) {
	// VACUUM commits and starts transactions of its own: what it is given must live outside them
	static MemoryContext vac_cxt = nullptr;
	if (!vac_cxt)
		vac_cxt = AllocSetContextCreate(TopMemoryContext, "pg_outbox vacuum", ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(vac_cxt);
	VacuumStmt *stmt = makeNode(VacuumStmt);
	// skip_locked: never wait; truncate off: truncating the heap's empty tail needs an
	// ACCESS EXCLUSIVE lock, which would block producers (and VACUUM would wait up to 5 s for it)
	stmt->options = list_make2(makeDefElem(pstrdup("skip_locked"), (Node *)makeBoolean(true), -1),
	                           makeDefElem(pstrdup("truncate"), (Node *)makeBoolean(false), -1));
	stmt->rels = list_make1(makeVacuumRelation(makeRangeVar(pstrdup("outbox"), pstrdup("pending"), -1), InvalidOid, NIL));
	stmt->is_vacuumcmd = true;
	ParseState *pstate = make_parsestate(nullptr);
	MemoryContextSwitchTo(old);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "pg_outbox: VACUUM outbox.pending");
	ExecVacuum(pstate, stmt, true);
	CommitTransactionCommand();
	MemoryContextReset(vac_cxt);
	published_since_vacuum = 0;
	last_vacuum = GetCurrentTimestamp();
}

void maybe_vacuum_pending(void) {
	if (published_since_vacuum < kVacuumEvery &&
	    (published_since_vacuum < 1000 || GetCurrentTimestamp() - last_vacuum < 10 * USECS_PER_SEC))
		return;
	PG_TRY();
	{ vacuum_pending(); }
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		EmitErrorReport();
		AbortCurrentTransaction();
		FlushErrorState();
		RESUME_INTERRUPTS();
		published_since_vacuum = 0;
		last_vacuum = GetCurrentTimestamp();
	}
	PG_END_TRY();
}

// One pass in one transaction. *published gets the number of events published.
Pass drain_pass(int64 *published) {
	Pass result = Pass::Drained;
	*published = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!OidIsValid(get_extension_oid("pg_outbox", true)))
		result = Pass::NoExtension;
	else {
		// nothing runs as this superuser in a schema someone else controls (schema_guard.cpp)
		(void)check_trusted_schema();
		if (!my_slot->has_extension) {
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			my_slot->has_extension = true; // the launcher learns this database has it
			LWLockRelease(shared->lock);
		}
		// one saved plan per pass for what the worker must know before it drains
		static SPIPlanPtr plan_state = nullptr;
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "pg_outbox: SPI_connect failed");
		if (!plan_state)
			plan_state = keep_plan("SELECT s.paused, e.extversion FROM outbox.state s, pg_catalog.pg_extension e"
			                       " WHERE e.extname = 'pg_outbox'",
			                       0, nullptr);
		int rc = SPI_execute_plan(plan_state, nullptr, nullptr, true, 1);
		bool paused = false, isnull = true, right_version = true;
		if (rc == SPI_OK_SELECT && SPI_processed == 1) {
			paused = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
			right_version = v && strcmp(v, PG_OUTBOX_VERSION) == 0;
		}
		SPI_finish();
		if (!right_version) {
			result = Pass::NeedsUpdate;
			goto done;
		}
		// the history segments first, as every drain and purge() lock them: retention below takes
		// the state row, and a purge() waiting for a segment between the two would deadlock
		lock_history_segments();
		// retention, about once a second
		TimestampTz now = GetCurrentTimestamp();
		if (now - last_maintenance >= USECS_PER_SEC) {
			last_maintenance = now;
			maintain_retention();
		}
		double usage = notify_queue_usage();
		my_slot->queue_usage = usage;
		if (paused && !isnull)
			result = Pass::Paused;
		else if (usage > guc_max_queue_usage && pending_exists())
			result = Pass::Backpressure;
		else {
			set_state(WorkerState::Draining);
			pgstat_report_activity(STATE_RUNNING, "pg_outbox: draining the outbox");
			*published = drain(guc_batch_size);
		}
	}
done:
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	return result;
}

} // namespace
} // namespace pg_outbox

extern "C" void pg_outbox_drain_main(Datum arg) {
	Oid dbid = DatumGetObjectId(arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, handle_drain_sigterm);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot = find_slot(dbid);
	if (my_slot && my_slot->pid != 0 && my_slot->pid != MyProcPid)
		my_slot = nullptr; // another worker already serves this database
	if (my_slot && my_slot->stop_requested) {
		// DROP DATABASE (or the like) asked for this database to be left alone while this worker
		// was starting: do not connect at all
		my_slot->state = WorkerState::Stopped;
		my_slot->exit_reason = ExitReason::Requested;
		my_slot = nullptr;
	}
	if (my_slot) {
		my_slot->pid = MyProcPid;
		my_slot->latch = MyLatch;
		my_slot->state = WorkerState::Starting;
		my_slot->exit_reason = ExitReason::Error; // replaced on a clean exit
		my_slot->started_at = GetCurrentTimestamp();
		my_slot->published_total = 0;
	}
	LWLockRelease(shared->lock);
	if (!my_slot)
		proc_exit(0);
	before_shmem_exit(drain_detach, 0);

	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	pgstat_report_appname("pg_outbox drain");
	// whatever the database and its roles set (ALTER DATABASE/ROLE ... SET): see kPinnedSettings
	pin_worker_settings();

	MemoryContext loop_cxt = AllocSetContextCreate(TopMemoryContext, "pg_outbox drain", ALLOCSET_DEFAULT_SIZES);
	bool in_backpressure = false;
	bool announced = false;
	for (;;) {
		if (got_sigterm)
			exit_worker(my_slot->stop_requested ? ExitReason::Requested : ExitReason::Signal);
		// another database's turn (too few worker processes): step aside between passes, nothing is
		// half done; the launcher starts this database's worker again when its turn comes
		if (my_slot->yield_requested) {
			ereport(DEBUG1, (errmsg("pg_outbox drain worker: stepping aside for a database that waits for a worker")));
			exit_worker(ExitReason::Yielded);
		}
		if (ConfigReloadPending) {
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		CHECK_FOR_INTERRUPTS();

		int64 published = 0;
		volatile Pass pass = Pass::Drained;
		volatile bool failed = false;
		MemoryContext old = MemoryContextSwitchTo(loop_cxt);
		PG_TRY();
		{ pass = drain_pass(&published); }
		PG_CATCH();
		{
			MemoryContextSwitchTo(loop_cxt);
			ErrorData *edata = CopyErrorData();
			HOLD_INTERRUPTS();
			EmitErrorReport();
			AbortCurrentTransaction();
			FlushErrorState();
			RESUME_INTERRUPTS();
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			strlcpy(my_slot->last_error, edata->message ? edata->message : "unknown error",
			        sizeof my_slot->last_error);
			my_slot->last_error_at = GetCurrentTimestamp();
			LWLockRelease(shared->lock);
			failed = true;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_cxt);

		long timeout = guc_idle_interval_ms;
		if (failed) {
			set_state(WorkerState::Idle);
			timeout = 1000; // retry after a second
		} else if (pass == Pass::NoExtension) {
			// DEBUG1: the launcher probes every database this way, a LOG line each would be noise
			ereport(DEBUG1, (errmsg("pg_outbox drain worker: extension pg_outbox is not installed in this "
			                        "database, exiting")));
			exit_worker(ExitReason::NoExtension);
		} else if (pass == Pass::NeedsUpdate) {
			if (my_slot->state != WorkerState::NeedsUpdate)
				ereport(LOG, (errmsg("pg_outbox: the extension's SQL objects in this database are older than the library "
				                     "(%s): not publishing until ALTER EXTENSION pg_outbox UPDATE",
				                     PG_OUTBOX_VERSION)));
			set_state(WorkerState::NeedsUpdate);
			pgstat_report_activity(STATE_IDLE, "pg_outbox: waiting for ALTER EXTENSION pg_outbox UPDATE");
		} else if (pass == Pass::Paused) {
			set_state(WorkerState::Paused);
			pgstat_report_activity(STATE_IDLE, "pg_outbox: paused (outbox.resume() to continue)");
		} else if (pass == Pass::Backpressure) {
			set_state(WorkerState::Backpressure);
			if (!in_backpressure)
				ereport(LOG, (errmsg("pg_outbox: NOTIFY queue usage %g is above pg_outbox.max_queue_usage (%g): "
				                     "waiting for listeners to catch up",
				                     my_slot->queue_usage, guc_max_queue_usage),
				              errhint("A session that LISTENs and stays in a long transaction keeps the queue "
				                      "from draining.")));
			in_backpressure = true;
			pgstat_report_activity(STATE_IDLE, "pg_outbox: waiting, NOTIFY queue above max_queue_usage");
			timeout = Min(timeout, 100);
		} else {
			if (my_slot->last_error[0]) {
				// publishing works again: the error is history (the server log keeps it)
				LWLockAcquire(shared->lock, LW_EXCLUSIVE);
				my_slot->last_error[0] = '\0';
				my_slot->last_error_at = 0;
				LWLockRelease(shared->lock);
			}
			if (in_backpressure)
				ereport(LOG, (errmsg("pg_outbox: NOTIFY queue below pg_outbox.max_queue_usage again, publishing")));
			in_backpressure = false;
			if (published > 0) {
				LWLockAcquire(shared->lock, LW_EXCLUSIVE);
				note_published(my_slot, (uint64)published, last_drained_pos);
				LWLockRelease(shared->lock);
				published_since_vacuum += published;
			}
			maybe_vacuum_pending();
			set_state(WorkerState::Idle);
			pgstat_report_activity(STATE_IDLE, "pg_outbox: idle, waiting for commits");
			if (!announced) {
				announced = true;
				// a new turn (too few worker processes, see the launcher) is not worth a LOG line each
				ereport(my_slot->quiet_start ? DEBUG1 : LOG, (errmsg("pg_outbox drain worker started")));
			}
			if (published >= guc_batch_size)
				continue; // more may be waiting: no sleep
		}
		int rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		// Woken by a commit: optionally let more commits gather, so that one drain transaction
		// publishes them together (throughput) instead of one each (latency).
		if ((rc & WL_LATCH_SET) && guc_batch_delay_ms > 0 && !got_sigterm)
			(void)WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, guc_batch_delay_ms, PG_WAIT_EXTENSION);
	}
}
