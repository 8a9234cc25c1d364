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
// ---------------------------------------------------------------------------------------
namespace {

struct DbInfo {
	Oid oid;
	char name[NAMEDATALEN];
};

// Launcher-local bookkeeping, indexed like shared->slots.
BackgroundWorkerHandle *handles[kMaxWorkers];
TimestampTz last_start[kMaxWorkers];
uint32 probed_generation[kMaxWorkers];

// Connectable, non-template databases. Allocated in the caller's memory context.
int list_databases(DbInfo **out) {
	int n = 0, cap = 16;
	DbInfo *dbs = (DbInfo *)palloc(cap * sizeof(DbInfo));
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
			dbs = (DbInfo *)repalloc(dbs, cap * sizeof(DbInfo));
		}
		MemoryContextSwitchTo(old);
		dbs[n].oid = db->oid;
		strlcpy(dbs[n].name, NameStr(db->datname), NAMEDATALEN);
		n++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	*out = dbs;
	return n;
}

// Is the database selected by pg_outbox.databases?
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
	} else
		ereport(LOG, (errmsg("pg_outbox: invalid list syntax in pg_outbox.databases: \"%s\"", setting)));
	list_free(names);
	pfree(copy);
	return selected;
}

bool start_worker(int i, Oid dbid) {
	BackgroundWorker bgw;
	memset(&bgw, 0, sizeof bgw);
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART; // the launcher restarts it
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "pg_outbox");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "pg_outbox_drain_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_outbox drain worker for database %u", dbid);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "pg_outbox drain");
	bgw.bgw_main_arg = ObjectIdGetDatum(dbid);
	bgw.bgw_notify_pid = MyProcPid;

	WorkerSlot *slot = &shared->slots[i];
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (slot->dbid == dbid && slot->stop_requested && slot->hold_until != 0 &&
	    GetCurrentTimestamp() < slot->hold_until) {
		LWLockRelease(shared->lock); // DROP DATABASE & co. got in since supervise() looked
		return false;
	}
	slot->dbid = dbid;
	slot->state = WorkerState::Starting;
	slot->exit_reason = ExitReason::None;
	slot->stop_requested = false;
	LWLockRelease(shared->lock);

	if (handles[i]) {
		pfree(handles[i]);
		handles[i] = nullptr;
	}
	last_start[i] = GetCurrentTimestamp();
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	bool ok = RegisterDynamicBackgroundWorker(&bgw, &handles[i]);
	MemoryContextSwitchTo(old);
	if (!ok) {
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		slot->state = WorkerState::Stopped;
		slot->exit_reason = ExitReason::Error;
		strlcpy(slot->last_error, "could not register a background worker (max_worker_processes reached?)",
		        sizeof slot->last_error);
		slot->last_error_at = GetCurrentTimestamp();
		LWLockRelease(shared->lock);
		ereport(WARNING, (errmsg("pg_outbox: could not start a drain worker for database %u", dbid),
		                  errhint("Raise max_worker_processes: pg_outbox needs one worker per database plus "
		                          "its launcher.")));
	}
	return ok;
}

// One supervision pass over the databases.
void supervise(void) {
	DbInfo *dbs;
	int ndbs = list_databases(&dbs);
	TimestampTz now = GetCurrentTimestamp();
	uint32 generation;

	LWLockAcquire(shared->lock, LW_SHARED);
	generation = shared->rescan_generation;
	LWLockRelease(shared->lock);

	// Free the slots of databases that are gone; notice workers that died while starting.
	for (int i = 0; i < kMaxWorkers; i++) {
		WorkerSlot *slot = &shared->slots[i];
		if (slot->dbid == InvalidOid)
			continue;
		if (slot->state == WorkerState::Starting && handles[i]) {
			pid_t pid;
			if (GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED) {
				LWLockAcquire(shared->lock, LW_EXCLUSIVE);
				if (slot->state == WorkerState::Starting) {
					slot->state = WorkerState::Stopped;
					slot->exit_reason = ExitReason::Error;
				}
				LWLockRelease(shared->lock);
			}
		}
		bool exists = false;
		for (int d = 0; d < ndbs; d++)
			exists |= dbs[d].oid == slot->dbid;
		// A database that left the list while its worker runs (ALTER DATABASE ... IS_TEMPLATE
		// true or ALLOW_CONNECTIONS false) keeps no worker: stop it; its slot is freed below
		// once it has exited.
		if (!exists && slot->pid != 0 && !slot->stop_requested) {
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			pid_t pid = slot->pid;
			slot->stop_requested = true;
			slot->hold_until = 0;
			LWLockRelease(shared->lock);
			if (pid != 0)
				kill(pid, SIGTERM);
		}
		if (!exists && slot->pid == 0 && slot->state != WorkerState::Starting) {
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			memset(slot, 0, sizeof *slot);
			LWLockRelease(shared->lock);
			if (handles[i]) {
				pfree(handles[i]);
				handles[i] = nullptr;
			}
		}
	}

	for (int d = 0; d < ndbs; d++) {
		bool selected = database_selected(dbs[d].name);
		int i = -1, free_i = -1;
		for (int k = 0; k < kMaxWorkers; k++) {
			if (shared->slots[k].dbid == dbs[d].oid)
				i = k;
			else if (shared->slots[k].dbid == InvalidOid && free_i < 0)
				free_i = k;
		}
		if (i < 0) {
			if (!selected)
				continue;
			if (free_i < 0) {
				ereport(WARNING, (errmsg("pg_outbox: no free worker slot for database \"%s\"", dbs[d].name),
				                  errdetail("pg_outbox supervises at most %d databases.", kMaxWorkers)));
				continue;
			}
			i = free_i;
			probed_generation[i] = generation;
			start_worker(i, dbs[d].oid);
			continue;
		}
		WorkerSlot *slot = &shared->slots[i];
		bool running = slot->pid != 0 || slot->state == WorkerState::Starting;
		if (running) {
			if (!selected && slot->pid != 0 && !slot->stop_requested) {
				LWLockAcquire(shared->lock, LW_EXCLUSIVE);
				slot->stop_requested = true;
				slot->hold_until = 0;
				LWLockRelease(shared->lock);
				kill(slot->pid, SIGTERM);
			}
			continue;
		}
		if (!selected)
			continue;
		// Held by DROP/RENAME DATABASE or CREATE DATABASE ... TEMPLATE: wait for the hold to end.
		if (slot->stop_requested && slot->hold_until != 0 && now < slot->hold_until)
			continue;
		if (slot->exit_reason == ExitReason::NoExtension && probed_generation[i] == generation)
			continue;
		// crashed or errored: restart, but at most once a second (a re-probe after CREATE
		// EXTENSION goes at once)
		if (slot->exit_reason != ExitReason::NoExtension && now < TimestampTzPlusMilliseconds(last_start[i], 1000))
			continue;
		probed_generation[i] = generation;
		start_worker(i, dbs[d].oid);
	}
	pfree(dbs);
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
			ereport(LOG, (errmsg("pg_outbox drain worker: extension pg_outbox is not installed in this "
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
				ereport(LOG, (errmsg("pg_outbox drain worker started")));
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
