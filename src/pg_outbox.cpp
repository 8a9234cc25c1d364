// pg_outbox.cpp — module load: GUCs, shared memory, commit-time wake-ups and the utility
// hook that keeps the drain workers out of the way of DROP/CREATE/ALTER DATABASE.
#include "pg_outbox.hpp"
#include "guard.hpp"
#include "pg_compat.hpp"
#include "rights.hpp"

extern "C" {
#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/varlena.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "access/htup_details.h"
#include "catalog/pg_database.h"
#include "utils/acl.h"
#include "utils/syscache.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;
void _PG_init(void);
}

#include <signal.h>

namespace pg_outbox {

int guc_batch_size = 1000;
int guc_idle_interval_ms = 1000;
int guc_batch_delay_ms = 0;
double guc_max_queue_usage = 0.5;
char *guc_databases = nullptr;
int guc_retention_s = 86400;

SharedState *shared = nullptr;

static shmem_request_hook_type prev_shmem_request_hook = nullptr;
static shmem_startup_hook_type prev_shmem_startup_hook = nullptr;
static ProcessUtility_hook_type prev_utility_hook = nullptr;

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
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(SharedState)));
	RequestAddinShmemSpace(waiters_shmem_size()); // consumers.cpp
	RequestNamedLWLockTranche("pg_outbox", 1);
}

static void shmem_startup(void) {
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

void check_writable(const char *what, bool read_only_ok) {
	if (RecoveryInProgress())
		ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION), errmsg("cannot execute %s during recovery", what),
		                errdetail("This server is a hot standby: it has the primary's events but writes none."),
		                errhint("Run %s on the primary server. On a standby, outbox.replay(), outbox.event(), "
		                        "outbox.head() and outbox.status can be read.",
		                        what)));
	if (XactReadOnly && !read_only_ok)
		ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
		                errmsg("cannot execute %s in a read-only transaction", what),
		                errhint("Run it in a read-write transaction (BEGIN READ WRITE; or SET "
		                        "default_transaction_read_only = off).")));
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

// ---------------------------------------------------------------------------------------
// Commit-time wake-ups. A producer never NOTIFYs: the statement trigger on outbox.pending
// (or publish) marks "work pending" at the current subtransaction level; when the top
// transaction commits, the XACT_EVENT_COMMIT callback sets the drain worker's latch. At that
// point the commit is already visible (ProcArrayEndTransaction ran), so the woken worker sees
// the rows. A rollback, or the rollback of the only savepoint that wrote, wakes nobody.
// ---------------------------------------------------------------------------------------
static int wake_level = 0;       // lowest live subtransaction level that wrote events; 0: none
static bool rescan_at_commit = false;

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
	switch (event) {
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
		if (wake_level != 0)
			wake_worker_now(MyDatabaseId);
		if (rescan_at_commit)
			request_rescan();
		wake_level = 0;
		rescan_at_commit = false;
		break;
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
	case XACT_EVENT_PREPARE: // its events become visible at COMMIT PREPARED, which wakes then
		wake_level = 0;
		rescan_at_commit = false;
		break;
	default:
		break;
	}
}

static void subxact_callback(SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
	int level = GetCurrentTransactionNestLevel();
	if (event == SUBXACT_EVENT_COMMIT_SUB) {
		if (wake_level == level)
			wake_level = level - 1; // the writes now belong to the parent
	} else if (event == SUBXACT_EVENT_ABORT_SUB) {
		if (wake_level >= level)
			wake_level = 0; // everything written at this level or below is gone
	}
}

// ---------------------------------------------------------------------------------------
// Stopping a database's worker for DROP DATABASE, CREATE DATABASE ... TEMPLATE, ALTER
// DATABASE RENAME/SET TABLESPACE: those refuse to run while any other process is connected.
// ---------------------------------------------------------------------------------------
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
static void release_worker(Oid dbid, bool dropped = false) {
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

// The database whose worker a statement needs stopped, if the current user may run that
// statement on it at all (otherwise the statement fails by itself, and no unprivileged role can
// stop another database's publishing by trying): the owner, or for CREATE DATABASE ... TEMPLATE
// a role with CREATEDB and a template it may copy. InvalidOid: leave the worker alone.
static Oid stoppable(Oid dbid, bool as_template) {
	if (!OidIsValid(dbid) || superuser())
		return dbid;
	if (compat::database_ownercheck(dbid, GetUserId()))
		return as_template ? (have_createdb_privilege() ? dbid : InvalidOid) : dbid;
	if (!as_template || !have_createdb_privilege())
		return InvalidOid;
	HeapTuple tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dbid));
	bool is_template = false;
	if (HeapTupleIsValid(tup)) {
		is_template = ((Form_pg_database)GETSTRUCT(tup))->datistemplate;
		ReleaseSysCache(tup);
	}
	return is_template ? dbid : InvalidOid;
}

static bool is_our_extension_list(List *objects) {
	ListCell *lc;
	foreach (lc, objects) {
		Node *n = static_cast<Node *>(lfirst(lc));
		if (IsA(n, String) && strcmp(strVal(n), "pg_outbox") == 0)
			return true;
	}
	return false;
}

static bool has_option(List *options, const char *name) {
	ListCell *lc;
	foreach (lc, options) {
		DefElem *d = static_cast<DefElem *>(lfirst(lc));
		if (strcmp(d->defname, name) == 0)
			return true;
	}
	return false;
}

static const char *option_string(List *options, const char *name) {
	ListCell *lc;
	foreach (lc, options) {
		DefElem *d = static_cast<DefElem *>(lfirst(lc));
		if (strcmp(d->defname, name) == 0 && d->arg)
			return defGetString(d);
	}
	return nullptr;
}

// Run the statement; if it fails after the worker of released_db was stopped for it, let the
// worker start again at once.
static void run_utility(Oid released_db, PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
                        ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *queryEnv,
                        DestReceiver *dest, QueryCompletion *qc) {
	PG_TRY();
	{
		if (prev_utility_hook)
			prev_utility_hook(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	}
	PG_CATCH();
	{
		if (OidIsValid(released_db))
			release_worker(released_db);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

// May the current user drop extension pg_outbox (its owner, or a member of the owner's role)?
// Only then is the worker stopped for the DROP: nobody else can pause publishing by trying.
static bool may_drop_extension(void) {
	if (superuser())
		return true;
	Relation rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ, CStringGetDatum("pg_outbox"));
	SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
	HeapTuple tup = systable_getnext(scan);
	Oid owner = HeapTupleIsValid(tup) ? ((Form_pg_extension)GETSTRUCT(tup))->extowner : InvalidOid;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return OidIsValid(owner) && has_privs_of_role(GetUserId(), owner);
}

// Before DROP EXTENSION pg_outbox: lock outbox.pending as the DROP would (ACCESS EXCLUSIVE), so no
// event can be added or published any more, and count what the DROP discards (a plain scan: no
// SQL, so no privilege, policy or rule of the table can make the DROP fail). -1: no such table.
// Locking pending first also puts the DROP's locks in a producer's order (pending, then its id
// sequence): left to itself the DROP locked the sequence first and deadlocked with publish()
// (test/t/113_drop_extension_load.pl: 2 of 6 DROPs under load on 1.1).
static int64 count_discarded_events(void) {
	Oid nsp = get_namespace_oid("outbox", true);
	Oid relid = OidIsValid(nsp) ? get_relname_relid("pending", nsp) : InvalidOid;
	if (!OidIsValid(relid))
		return -1;
	LockRelationOid(relid, AccessExclusiveLock);
	Relation rel = table_open(relid, NoLock);
	Snapshot snap = RegisterSnapshot(GetLatestSnapshot());
	TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
	TupleTableSlot *slot = table_slot_create(rel, nullptr);
	int64 n = 0;
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		if (++n % 4096 == 0)
			CHECK_FOR_INTERRUPTS();
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return n;
}

// count_discarded_events(); if it fails, the worker stopped for the DROP may start again at once.
static int64 count_discarded_events_or_release(void) {
	int64 n = -1;
	PG_TRY();
	{ n = count_discarded_events(); }
	PG_CATCH();
	{
		release_worker(MyDatabaseId);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return n;
}

static void utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree, ProcessUtilityContext context,
                         ParamListInfo params, QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc) {
	Node *stmt = pstmt->utilityStmt;
	bool ext_created = false, ext_dropped = false, db_created = false, commit_prepared = false, db_dropped = false;
	bool had_extension = false;
	Oid released_db = InvalidOid; // a database whose worker was stopped for this statement
	int64 discarded = -1;         // DROP EXTENSION pg_outbox: the pending events it discards
	constexpr int wait_ms = 10000;
	int hold_ms = 5000;

	switch (nodeTag(stmt)) {
	case T_CreateExtensionStmt:
		ext_created = strcmp(castNode(CreateExtensionStmt, stmt)->extname, "pg_outbox") == 0;
		if (ext_created)
			check_new_extension_schema(); // before PostgreSQL installs into an existing schema
		// pg_outbox itself, or an extension that requires it (CREATE EXTENSION x CASCADE): whether
		// pg_outbox is new in this database is seen after the statement
		had_extension = OidIsValid(get_extension_oid("pg_outbox", true));
		break;
	case T_DropStmt: {
		DropStmt *d = castNode(DropStmt, stmt);
		ext_dropped = d->removeType == OBJECT_EXTENSION && is_our_extension_list(d->objects);
		// The worker is stopped (and held) for the DROP: it takes the tables the DROP locks in
		// another order, so that the two would deadlock. The hold lasts until the statement ends.
		if (ext_dropped && OidIsValid(get_extension_oid("pg_outbox", true)) && may_drop_extension()) {
			released_db = MyDatabaseId;
			hold_ms = 60 * 1000; // released when the statement ends; bounded if the backend dies first
		}
		break;
	}
	case T_TransactionStmt:
		// A prepared transaction's events become visible when COMMIT PREPARED commits, maybe
		// in another session: wake this database's worker then (it may have published nothing).
		commit_prepared = castNode(TransactionStmt, stmt)->kind == TRANS_STMT_COMMIT_PREPARED;
		break;
	case T_DropdbStmt:
		released_db = stoppable(get_database_oid(castNode(DropdbStmt, stmt)->dbname, true), false);
		db_dropped = OidIsValid(released_db);
		break;
	case T_CreatedbStmt: {
		const char *tmpl = option_string(castNode(CreatedbStmt, stmt)->options, "template");
		if (tmpl)
			released_db = stoppable(get_database_oid(tmpl, true), true);
		db_created = true;
		break;
	}
	case T_RenameStmt: {
		RenameStmt *r = castNode(RenameStmt, stmt);
		if (r->renameType == OBJECT_DATABASE)
			released_db = stoppable(get_database_oid(r->subname, true), false);
		else if (r->renameType == OBJECT_SCHEMA)
			check_schema_rename(r->subname);
		break;
	}
	case T_AlterDatabaseStmt: {
		AlterDatabaseStmt *a = castNode(AlterDatabaseStmt, stmt);
		if (has_option(a->options, "tablespace"))
			released_db = stoppable(get_database_oid(a->dbname, true), false);
		break;
	}
	default:
		break;
	}

	if (OidIsValid(released_db))
		stop_worker(released_db, hold_ms, wait_ms);
	if (ext_dropped && released_db == MyDatabaseId)
		discarded = count_discarded_events_or_release();
	run_utility(released_db, pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);

	if (released_db != InvalidOid)
		release_worker(released_db, db_dropped); // the statement is done: no need to wait for the hold
	if (IsA(stmt, CreateExtensionStmt))
		ext_created = !had_extension && OidIsValid(get_extension_oid("pg_outbox", true));
	if (ext_dropped && discarded > 0 && !OidIsValid(get_extension_oid("pg_outbox", true)))
		ereport(WARNING, (errmsg("dropping extension pg_outbox discarded %lld pending events that were never published",
		                         (long long)discarded),
		                  errdetail("Their rows in outbox.pending are gone with the extension (and its dead letters "
		                            "and history); ROLLBACK keeps them."),
		                  errhint("Before dropping, let the worker publish the backlog (outbox.status shows "
		                          "pending = 0), or copy outbox.pending elsewhere.")));
	if (ext_created || db_created)
		rescan_at_commit = true;
	if (nodeTag(stmt) == T_AlterExtensionContentsStmt &&
	    strcmp(castNode(AlterExtensionContentsStmt, stmt)->extname, "pg_outbox") == 0)
		forget_extension_trust();
	if (ext_created || ext_dropped || commit_prepared)
		wake_level = 1; // the worker re-checks the extension (or drains) when it wakes
	if (commit_prepared) {
		wake_waiters_at_commit();             // consumers.cpp: a drain that was prepared publishes now,
		wake_all_channel_waiters_at_commit(); // on channels this session cannot know
	}
	if (db_created)
		request_rescan(); // CREATE DATABASE is not transactional: tell the launcher now
}

// pg_outbox.databases: '*', '' or a list of names SplitIdentifierString accepts (no empty name,
// quotes closed). Refused when set; a bad value in postgresql.conf keeps the old one at reload.
static bool check_databases(char **newval, void **, GucSource source) {
	if (!*newval || strcmp(*newval, "*") == 0)
		return true;
	char *copy = pstrdup(*newval);
	List *names = NIL;
	bool ok = SplitIdentifierString(copy, ',', &names);
	if (!ok)
		GUC_check_errdetail("A comma-separated list of database names is expected (no empty name, "
		                    "double quotes closed), or '*' for every database with the extension, or '' for none.");
	// A reload (postmaster, configuration file) reports a refused value at LOG only: say at WARNING,
	// once (the postmaster, not every backend), which value stays in effect.
	if (!ok && source == PGC_S_FILE && !IsUnderPostmaster && guc_databases)
		ereport(WARNING, (errmsg("pg_outbox.databases = \"%s\" in the configuration file is invalid: the value "
		                         "\"%s\" stays in effect",
		                         *newval, guc_databases),
		                  errhint("Write a comma-separated list of database names, '*' or ''; then reload.")));
	list_free(names);
	pfree(copy);
	return ok;
}

static void define_gucs(void) {
	DefineCustomIntVariable("pg_outbox.batch_size", "Events published per drain transaction.", nullptr,
	                        &guc_batch_size, 1000, 1, 100000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("pg_outbox.idle_interval",
	                        "Safety tick: how long an idle drain worker sleeps when no commit wakes it.", nullptr,
	                        &guc_idle_interval_ms, 1000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
	                        nullptr);
	DefineCustomIntVariable("pg_outbox.batch_delay",
	                        "After a commit wakes the drain worker, how long it waits for more commits before "
	                        "draining (0: drain at once).",
	                        "Trades latency for fewer, larger drain transactions under heavy load.", &guc_batch_delay_ms,
	                        0, 0, 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
	DefineCustomRealVariable("pg_outbox.max_queue_usage",
	                         "NOTIFY queue fill (0..1) above which drain workers wait instead of publishing.", nullptr,
	                         &guc_max_queue_usage, 0.5, 0.0, 1.0, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomStringVariable("pg_outbox.databases",
	                           "Databases that get a drain worker: '*' (every database with the extension), "
	                           "a comma-separated list of names, or '' (none).",
	                           nullptr, &guc_databases, "*", PGC_SIGHUP, 0, check_databases, nullptr, nullptr);
	DefineCustomIntVariable("pg_outbox.retention", "How long published events are kept for replay.", nullptr,
	                        &guc_retention_s, 86400, 1, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
	MarkGUCPrefixReserved("pg_outbox");
}

} // namespace pg_outbox

extern "C" void _PG_init(void) {
	using namespace pg_outbox;
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox must be loaded via shared_preload_libraries"),
		                errdetail("Its drain workers and commit-time wake-ups are set up when the server starts."),
		                errhint("Add pg_outbox to shared_preload_libraries in postgresql.conf and restart the "
		                        "server.")));

	define_retry_gucs(); // admin.cpp: pg_outbox.max_attempts, pg_outbox.retry_delay (before the prefix is reserved)
	define_health_gucs(); // health.cpp: pg_outbox.health_* (before the prefix is reserved)
	define_gucs();
	consumers_init(); // consumers.cpp: its GUC and the wake-ups of waiters

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = utility_hook;
	RegisterXactCallback(xact_callback, nullptr);
	RegisterSubXactCallback(subxact_callback, nullptr);
	install_schema_guard();
	rights_init(); // channel rights: the fmgr hook that tells who called, the rules' invalidation
	install_trigger_hooks(); // trigger.cpp: outbox-mode events are written at each statement's end

	if (!IsBinaryUpgrade)
		register_launcher();
}
