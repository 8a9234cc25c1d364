// utility_hook.cpp — the ProcessUtility hook (utility_hook.hpp). Before a statement that needs a
// database alone (DROP DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE RENAME or SET
// TABLESPACE, DROP EXTENSION pg_outbox), it stops that database's drain worker, and releases it
// when the statement ends or fails. It also checks the extension's schema at CREATE EXTENSION and
// ALTER SCHEMA RENAME (schema_guard.cpp), warns about the pending events a DROP EXTENSION
// discards, and wakes the worker or the launcher at commit where a statement changes what they
// have to do (CREATE/DROP EXTENSION, CREATE DATABASE, COMMIT PREPARED).
#include "utility_hook.hpp"
#include "pg_outbox.hpp"
#include "guard.hpp"
#include "pg_compat.hpp"
#include "log.hpp"
#include "spi_util.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
}

namespace pg_outbox {

static ProcessUtility_hook_type prev_utility_hook = nullptr;

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
// The log's relations next, in the order a log-mode producer takes them (outbox.log_state to read
// the mode and the current segment, then the segment, then the id sequence) and a log pass takes
// them (the batch lock before outbox.log_state): left to itself the DROP took a segment before
// outbox.log_state and the sequence before the segments, and deadlocked with publish() in log
// mode (test/t/159_log_drop_extension_load.pl: deadlocks in 2 of 3 runs, once the DROP aborted; 0 of 3 after).
static const char *const kDropLockOrder[] = {"batches",   "batches_0", "batches_1", "batches_2", "log_state",
                                             "log",       "log_0",     "log_1",     "log_2",     "pending_id_seq"};

static int64 count_discarded_events(void) {
	Oid nsp = get_namespace_oid("outbox", true);
	Oid relid = OidIsValid(nsp) ? get_relname_relid("pending", nsp) : InvalidOid;
	if (!OidIsValid(relid))
		return -1;
	LockRelationOid(relid, AccessExclusiveLock);
	for (const char *name : kDropLockOrder) { // missing ones (SQL objects older than 1.3) skipped
		Oid other = get_relname_relid(name, nsp);
		if (OidIsValid(other))
			LockRelationOid(other, AccessExclusiveLock);
	}
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

// In log mode, the log's events that no committed batch has published, and those being retried:
// outbox.status's pending figure (outbox._pending_summary()), counted as the DROP's user after
// pending's lock. -1: 1.2 mode (or SQL objects older than 1.3); -2: they could not be counted (a
// log a DBA or a restore left odd, a schema pg_outbox does not trust): the DROP goes on, and says
// so. In a subtransaction, so that nothing of it can make the DROP fail; a cancel (statement_timeout
// included) still cancels the DROP, as it cancels the scan of outbox.pending.
static void count_log_pending(void *out) {
	int64 *n = static_cast<int64 *>(out);
	if (!log_storage_active(GetLatestSnapshot()))
		return;
	check_trusted_schema(); // SQL of the extension's schema, run as the DROP's user
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	int rc = SPI_execute("SELECT pending FROM outbox._pending_summary()", false, 1);
	bool isnull = true;
	Datum d = rc == SPI_OK_SELECT && SPI_processed == 1
	              ? SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)
	              : (Datum)0;
	if (isnull)
		elog(ERROR, "pg_outbox: counting the log's pending events failed: %s", SPI_result_code_string(rc));
	*n = DatumGetInt64(d);
	SPI_finish();
}

static int64 count_unpublished_log_events(void) {
	int64 n = -1;
	ErrorData *edata = run_in_subxact(count_log_pending, &n);
	if (!edata)
		return n;
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED || edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
		ReThrowError(edata);
	FreeErrorData(edata);
	return -2;
}

// count_discarded_events() (*in_log: count_unpublished_log_events()); if either fails, the worker
// stopped for the DROP may start again at once.
static int64 count_discarded_events_or_release(int64 *in_log) {
	int64 n = -1;
	PG_TRY();
	{
		n = count_discarded_events();
		*in_log = n < 0 ? -1 : count_unpublished_log_events();
	}
	PG_CATCH();
	{
		release_worker(MyDatabaseId);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return n;
}

// The WARNING of DROP EXTENSION pg_outbox: pending events never published (in outbox.pending,
// and in log mode in the log), if any.
static void warn_discarded(int64 in_table, int64 in_log) {
	int64 table = Max(in_table, 0);
	const char *detail = "and its dead letters and history); ROLLBACK keeps them.";
	const char *log_hint = "Before dropping, let the worker publish the backlog (outbox.status shows pending = 0), or "
	                       "copy the log's pending events elsewhere (SELECT * FROM outbox._log_pending(), as a "
	                       "superuser).";
	if (in_log == -2)
		ereport(WARNING, (errmsg("dropping extension pg_outbox discarded %lld pending events in outbox.pending and an "
		                         "unknown number in the write-once log",
		                         (long long)table),
		                  errdetail("The log's unpublished events could not be counted (outbox.status failed); they "
		                            "are gone with the extension (%s",
		                            detail),
		                  errhint("%s", log_hint)));
	else if (in_log > 0)
		ereport(WARNING, (errmsg("dropping extension pg_outbox discarded %lld pending events that were never published "
		                         "(%lld of them in the write-once log)",
		                         (long long)(table + in_log), (long long)in_log),
		                  errdetail("The events of the log in no committed batch (or being retried) and the rows of "
		                            "outbox.pending are gone with the extension (%s",
		                            detail),
		                  errhint("%s", log_hint)));
	else if (table > 0)
		ereport(WARNING, (errmsg("dropping extension pg_outbox discarded %lld pending events that were never published",
		                         (long long)table),
		                  errdetail("Their rows in outbox.pending are gone with the extension (%s", detail),
		                  errhint("Before dropping, let the worker publish the backlog (outbox.status shows "
		                          "pending = 0), or copy outbox.pending elsewhere.")));
}

static void utility_hook_body(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree, ProcessUtilityContext context,
                         ParamListInfo params, QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc) {
	Node *stmt = pstmt->utilityStmt;
	check_pending_ddl(stmt); // in log mode, nothing added to outbox.pending that would never apply
	bool ext_created = false, ext_dropped = false, db_created = false, commit_prepared = false, db_dropped = false;
	bool had_extension = false;
	Oid released_db = InvalidOid; // a database whose worker was stopped for this statement
	int64 discarded = -1;         // DROP EXTENSION pg_outbox: the pending events it discards
	int64 discarded_log = -1;     // ... of them in the log (log mode; -2: could not be counted)
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
		discarded = count_discarded_events_or_release(&discarded_log);
	run_utility(released_db, pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);

	if (released_db != InvalidOid)
		release_worker(released_db, db_dropped); // the statement is done: no need to wait for the hold
	if (IsA(stmt, CreateExtensionStmt))
		ext_created = !had_extension && OidIsValid(get_extension_oid("pg_outbox", true));
	if (ext_dropped && !OidIsValid(get_extension_oid("pg_outbox", true)))
		warn_discarded(discarded, discarded_log);
	if (ext_created || db_created)
		rescan_at_commit();
	if (nodeTag(stmt) == T_AlterExtensionContentsStmt &&
	    strcmp(castNode(AlterExtensionContentsStmt, stmt)->extname, "pg_outbox") == 0)
		forget_extension_trust();
	if (ext_created || ext_dropped || commit_prepared)
		wake_worker_at_top_commit(); // the worker re-checks the extension (or drains) when it wakes
	if (commit_prepared) {
		wake_waiters_at_commit();             // consumers.cpp: a drain that was prepared publishes now,
		wake_all_channel_waiters_at_commit(); // on channels this session cannot know
	}
	if (db_created)
		request_rescan(); // CREATE DATABASE is not transactional: tell the launcher now
}

static void utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree, ProcessUtilityContext context,
                         ParamListInfo params, QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc) {
	boundary([&] { utility_hook_body(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc); });
}

void install_utility_hook(void) {
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = utility_hook;
}

} // namespace pg_outbox
