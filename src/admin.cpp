// admin.cpp — what a DBA drives from psql: dead letters, retention (segment rotation with
// TRUNCATE), the worker status, pause and resume.
#include "pg_outbox.hpp"
#include "guard.hpp"
#include "pg_compat.hpp"

extern "C" {
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
}

namespace pg_outbox {

constexpr int kSegments = 3;

// ---------------------------------------------------------------------------------------
// Failures, retries and dead letters
//
// Whose fault is a failure? Not the SQLSTATE's to say (a 180 MB payload fails with "out of
// memory", a DBA's trigger with anything): an event is at fault when it fails alone while the
// system works. So a batch that fails is narrowed down (halved until one event is tried alone)
// and every event that fails alone is recorded in outbox.failures; the events behind it are
// published meanwhile. A recorded event is left out of the batches and tried alone again after
// pg_outbox.retry_delay, doubling each time (at most 5 minutes); after pg_outbox.max_attempts
// failures it moves to outbox.dead_letter with its last error. Failures that are the system's
// — serialization and deadlocks (40), lock timeouts and objects in use (55), cancel and
// shutdown (57), disk and I/O (53100, 58), read-only (25), missing objects and privileges (42,
// 3F), unsupported rules (0A), corrupted data (XX001, XX002), a unique violation of positions —
// propagate at once and are retried with no count. And when two or more events each fail alone
// and none at all is published in the pass, the failure is taken as the system's too (a
// broken trigger on the history, say): nothing is counted, the pass fails and is retried, so a
// systemic fault never dead-letters the backlog.
// ---------------------------------------------------------------------------------------

int guc_max_attempts = 5;
int guc_retry_delay_ms = 1000;
constexpr int kMaxRetryDelayMs = 300 * 1000;
constexpr int kMaxLoneFailuresPerPass = 10;

void define_retry_gucs(void) {
	DefineCustomIntVariable("pg_outbox.max_attempts",
	                        "How many times an event that fails alone is tried before it moves to outbox.dead_letter.",
	                        nullptr, &guc_max_attempts, 5, 1, 1000, PGC_SUSET, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("pg_outbox.retry_delay",
	                        "How long an event that failed alone waits before it is tried again (doubling per "
	                        "attempt, at most 5 minutes; 0: at every drain).",
	                        nullptr, &guc_retry_delay_ms, 1000, 0, kMaxRetryDelayMs, PGC_SUSET, GUC_UNIT_MS, nullptr,
	                        nullptr, nullptr);
}

// Is this failure the system's (retried, never counted against an event)?
static bool error_of_system(int sqlerrcode) {
	// a unique violation is about positions or ids (a counter behind the history, say), never
	// about one event's data: dead-lettering would move the whole backlog away
	if (sqlerrcode == ERRCODE_UNIQUE_VIOLATION || sqlerrcode == ERRCODE_DISK_FULL ||
	    sqlerrcode == ERRCODE_TOO_MANY_CONNECTIONS)
		return true;
	switch (ERRCODE_TO_CATEGORY(sqlerrcode)) {
	case ERRCODE_CONNECTION_EXCEPTION:           // 08
	case ERRCODE_INVALID_TRANSACTION_STATE:      // 25: read-only transaction, standby
	case ERRCODE_TRANSACTION_ROLLBACK:           // 40: serialization failure, deadlock
	case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE: // 55: lock timeout, object in use
	case ERRCODE_OPERATOR_INTERVENTION:          // 57: cancel, shutdown
	case ERRCODE_SYSTEM_ERROR:                   // 58: I/O
	case ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION: // 42: a missing object, a privilege
	case ERRCODE_INVALID_SCHEMA_NAME:            // 3F
	case ERRCODE_FEATURE_NOT_SUPPORTED:          // 0A: an INSTEAD rule on our tables, say
		return true;
	case ERRCODE_INTERNAL_ERROR:                 // XX: corrupted data or index is the system's
		return sqlerrcode == ERRCODE_DATA_CORRUPTED || sqlerrcode == ERRCODE_INDEX_CORRUPTED;
	default:
		return false;
	}
}

// Run fn(arg) in a subtransaction: nullptr if it committed, else the error it raised (copied;
// the subtransaction rolled back, the error state flushed). The caller frees it.
static ErrorData *run_in_subxact(void (*fn)(void *), void *arg) {
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData *volatile edata = nullptr;
	BeginInternalSubTransaction(nullptr);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

static void dead_letter(int64 id, ErrorData *edata, int attempts);

// dead_letter() in a subtransaction: if even moving the event fails (a foreign key a DBA made
// reference outbox.pending, say), say so and leave the event pending — the events behind it are
// still published.
static void dead_letter_guarded(int64 id, ErrorData *cause, int attempts) {
	struct Args {
		int64 id;
		ErrorData *cause;
		int attempts;
	} args{id, cause, attempts};
	ErrorData *edata = run_in_subxact(
	    [](void *p) {
		    Args *a = static_cast<Args *>(p);
		    dead_letter(a->id, a->cause, a->attempts);
	    },
	    &args);
	if (!edata)
		return;
	if (error_of_system(edata->sqlerrcode))
		ReThrowError(edata);
	ereport(WARNING, (errmsg("pg_outbox: event %lld could not be published nor moved to outbox.dead_letters; it "
	                         "stays pending",
	                         (long long)id),
	                  errdetail("Publishing failed with: %s. Moving it failed with: %s (SQLSTATE %s).",
	                            cause->message ? cause->message : "unknown error",
	                            edata->message ? edata->message : "unknown error", unpack_sql_state(edata->sqlerrcode)),
	                  errhint("Remove what keeps the event from being moved (a foreign key, trigger or rule on "
	                          "outbox.pending or outbox.dead_letter), or outbox.discard() it.")));
	FreeErrorData(edata);
}

// Run drain_batch() in a subtransaction. Returns the count, or -1 with *edata set on error.
static int64 drain_in_subxact(int max_events, int64 only_id, const int64 *skip, int nskip, ErrorData **edata) {
	struct Args {
		int max_events;
		int64 only_id;
		const int64 *skip;
		int nskip;
		int64 n;
	} args{max_events, only_id, skip, nskip, -1};
	*edata = run_in_subxact(
	    [](void *p) {
		    Args *a = static_cast<Args *>(p);
		    a->n = drain_batch(a->max_events, a->only_id, a->skip, a->nskip);
	    },
	    &args);
	return *edata ? -1 : args.n;
}

static void dead_letter(int64 id, ErrorData *edata, int attempts) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	Oid types[] = {INT8OID, TEXTOID, TEXTOID};
	Datum args[] = {Int64GetDatum(id), CStringGetTextDatum(edata->message ? edata->message : "unknown error"),
	                CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode))};
	// both counts: a DBA's trigger or rule on outbox.dead_letter that skips the row must not make
	// the event vanish
	int rc = SPI_execute_with_args("WITH d AS (DELETE FROM outbox.pending WHERE id = $1 RETURNING *),"
	                               " i AS (INSERT INTO outbox.dead_letter (id, channel, key, type, payload, created_at,"
	                               "                                 failed_at, error, sqlstate)"
	                               "  SELECT id, channel, key, type, payload, created_at, now(), $2, $3 FROM d"
	                               "  RETURNING id)"
	                               " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i)",
	                               3, types, args, nullptr, false, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_outbox: moving event %lld to the dead letters failed: %s", (long long)id,
		     SPI_result_code_string(rc));
	bool isnull;
	int64 deleted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	int64 inserted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (deleted != inserted)
		ereport(ERROR, (errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
		                errmsg("pg_outbox: moving event %lld to outbox.dead_letter stored %lld of %lld rows",
		                       (long long)id, (long long)inserted, (long long)deleted),
		                errhint("A trigger, rule or policy on outbox.dead_letter or outbox.pending skipped the row: "
		                        "drop it.")));
	Datum fargs[] = {Int64GetDatum(id)};
	Oid ftypes[] = {INT8OID};
	rc = SPI_execute_with_args("DELETE FROM outbox.failures WHERE id = $1", 1, ftypes, fargs, nullptr, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "pg_outbox: forgetting the failures of event %lld failed: %s", (long long)id,
		     SPI_result_code_string(rc));
	SPI_finish();
	if (deleted > 0)
		ereport(WARNING, (errmsg("pg_outbox: event %lld could not be published and was moved to outbox.dead_letters "
		                         "after %d attempt%s",
		                         (long long)id, attempts, attempts == 1 ? "" : "s"),
		                  errdetail("%s (SQLSTATE %s)", edata->message ? edata->message : "unknown error",
		                            unpack_sql_state(edata->sqlerrcode)),
		                  errhint("Fix the cause, then call outbox.retry(%lld); or outbox.discard(%lld).",
		                          (long long)id, (long long)id)));
}

// The version of the extension's SQL objects in this database (palloc'd), or nullptr if absent.
static char *installed_version(void) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	static SPIPlanPtr plan = nullptr;
	if (!plan)
		plan = keep_plan("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_outbox'", 0, nullptr);
	int rc = SPI_execute_plan(plan, nullptr, nullptr, true, 1);
	char *version = nullptr;
	if (rc == SPI_OK_SELECT && SPI_processed == 1) {
		char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (v) {
			version = (char *)SPI_palloc(strlen(v) + 1); // outlives SPI_finish
			strcpy(version, v);
		}
	}
	SPI_finish();
	return version;
}

// The library publishes only with SQL objects of its own version (PG_OUTBOX_VERSION).
static void check_installed_version(void) {
	char *v = installed_version();
	if (v && strcmp(v, PG_OUTBOX_VERSION) != 0)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox %s cannot publish with version %s of its SQL objects", PG_OUTBOX_VERSION, v),
		                errhint("Run ALTER EXTENSION pg_outbox UPDATE in this database.")));
}

// The events recorded in outbox.failures (sorted), and which of them are due for another try.
struct Failures {
	int64 *ids; // sorted; room for kMaxLoneFailuresPerPass more
	bool *due;
	int n, cap;
};

static void load_failures(Failures *f) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	static SPIPlanPtr plan = nullptr, plan_gone = nullptr;
	if (!plan) {
		plan = keep_plan("SELECT id, next_attempt_at <= now() FROM outbox.failures ORDER BY id", 0, nullptr);
		plan_gone = keep_plan("DELETE FROM outbox.failures f"
		                      " WHERE NOT EXISTS (SELECT FROM outbox.pending p WHERE p.id = f.id)",
		                      0, nullptr);
	}
	int rc = SPI_execute_plan(plan, nullptr, nullptr, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_outbox: reading outbox.failures failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0) {
		// events published, dead-lettered or discarded since: forget them
		rc = SPI_execute_plan(plan_gone, nullptr, nullptr, false, 0);
		if (rc != SPI_OK_DELETE)
			elog(ERROR, "pg_outbox: cleaning outbox.failures failed: %s", SPI_result_code_string(rc));
		rc = SPI_execute_plan(plan, nullptr, nullptr, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "pg_outbox: reading outbox.failures failed: %s", SPI_result_code_string(rc));
	}
	uint64 n = SPI_processed;
	f->cap = (int)n + kMaxLoneFailuresPerPass + 1;
	f->ids = (int64 *)MemoryContextAlloc(CurTransactionContext, f->cap * sizeof(int64));
	f->due = (bool *)MemoryContextAlloc(CurTransactionContext, f->cap * sizeof(bool));
	f->n = 0;
	for (uint64 r = 0; r < n; r++) {
		bool isnull, dnull;
		Datum id = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		Datum due = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &dnull);
		if (isnull)
			continue;
		f->ids[f->n] = DatumGetInt64(id);
		f->due[f->n] = dnull || DatumGetBool(due);
		f->n++;
	}
	SPI_finish();
}

static void add_failure(Failures *f, int64 id) {
	if (f->n >= f->cap)
		return; // cannot happen: room for the pass's lone failures was made
	int k = f->n;
	while (k > 0 && f->ids[k - 1] > id) {
		f->ids[k] = f->ids[k - 1];
		f->due[k] = f->due[k - 1];
		k--;
	}
	f->ids[k] = id;
	f->due[k] = false;
	f->n++;
}

// Record one more failure of event id alone; returns its attempts so far.
static int record_failure(int64 id, ErrorData *edata) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	static SPIPlanPtr plan = nullptr, plan_next = nullptr;
	if (!plan) {
		Oid types[] = {INT8OID, TEXTOID, TEXTOID};
		plan = keep_plan("INSERT INTO outbox.failures AS f (id, attempts, first_failed_at, last_failed_at,"
		                 "                                 next_attempt_at, error, sqlstate)"
		                 " VALUES ($1, 1, now(), now(), now(), $2, $3)"
		                 " ON CONFLICT (id) DO UPDATE SET attempts = f.attempts + 1, last_failed_at = now(),"
		                 "   error = excluded.error, sqlstate = excluded.sqlstate"
		                 " RETURNING attempts",
		                 3, types);
		Oid ntypes[] = {INT8OID, FLOAT8OID};
		plan_next = keep_plan("UPDATE outbox.failures SET next_attempt_at = now() + $2 * interval '1 ms'"
		                      " WHERE id = $1",
		                      2, ntypes);
	}
	Datum args[] = {Int64GetDatum(id), CStringGetTextDatum(edata->message ? edata->message : "unknown error"),
	                CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode))};
	int rc = SPI_execute_plan(plan, args, nullptr, false, 0);
	int attempts = guc_max_attempts; // a DBA's trigger that skips the row: no count, dead-letter now
	if (rc == SPI_OK_INSERT_RETURNING && SPI_processed == 1) {
		bool isnull;
		Datum a = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			attempts = DatumGetInt32(a);
	} else if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "pg_outbox: recording the failure of event %lld failed: %s", (long long)id,
		     SPI_result_code_string(rc));
	double delay = (double)guc_retry_delay_ms;
	for (int k = 1; k < attempts && delay < kMaxRetryDelayMs; k++)
		delay *= 2;
	delay = Min(delay, (double)kMaxRetryDelayMs);
	Datum nargs[] = {Int64GetDatum(id), Float8GetDatum(delay)};
	rc = SPI_execute_plan(plan_next, nargs, nullptr, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "pg_outbox: recording the failure of event %lld failed: %s", (long long)id,
		     SPI_result_code_string(rc));
	SPI_finish();
	return attempts;
}

// The first pending event after after_id that is not in f (0: none).
static int64 first_pending_id(const Failures *f, int64 after_id) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	Datum *sk = (Datum *)palloc(Max(f->n, 1) * sizeof(Datum));
	for (int k = 0; k < f->n; k++)
		sk[k] = Int64GetDatum(f->ids[k]);
	Oid types[] = {INT8ARRAYOID, INT8OID};
	Datum args[] = {PointerGetDatum(construct_array(sk, f->n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
	                Int64GetDatum(after_id)};
	int rc = SPI_execute_with_args("SELECT id FROM outbox.pending WHERE id <> ALL ($1) AND id > $2 ORDER BY id LIMIT 1",
	                               2, types, args, nullptr, true, 1);
	int64 id = 0;
	if (rc == SPI_OK_SELECT && SPI_processed == 1) {
		bool isnull;
		Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			id = DatumGetInt64(d);
	} else if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_outbox: listing pending events failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	return id;
}

struct LoneFailure {
	int64 id;
	ErrorData *edata;
};

int64 drain(int max_events) {
	if (!compat::am_background_worker()) // the worker checks once per pass, with its own saved plan
		check_installed_version();
	// The notifications reach listeners at commit: that commit must be durable first, or a
	// crash could hand the same positions out again (SET LOCAL: until the end of the transaction)
	if (!compat::am_background_worker())
		(void)set_config_option("synchronous_commit", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
		                        false);
	Failures f;
	load_failures(&f);
	int64 published = 0;
	LoneFailure lone[kMaxLoneFailuresPerPass + 1];
	int nlone = 0, nknown = 0; // lone failures, of which nknown were recorded before
	ErrorData *edata;

	// 1. the events being retried whose time has come, one at a time
	for (int k = 0; k < f.n && nlone < kMaxLoneFailuresPerPass; k++) {
		if (!f.due[k])
			continue;
		CHECK_FOR_INTERRUPTS();
		int64 one = drain_in_subxact(1, f.ids[k], nullptr, 0, &edata);
		if (one > 0)
			published += one; // its row in outbox.failures goes with the next load_failures()
		else if (one < 0) {
			if (error_of_system(edata->sqlerrcode))
				ReThrowError(edata);
			lone[nlone++] = {f.ids[k], edata};
			nknown++;
		}
	}

	// 2. batches without them; a batch that fails is halved until one event fails alone
	int size = max_events;
	int64 after_id = 0;
	while (published < max_events && nlone < kMaxLoneFailuresPerPass) {
		CHECK_FOR_INTERRUPTS();
		int want = (int)Min((int64)size, (int64)max_events - published);
		if (want > 1) {
			int64 n = drain_in_subxact(want, 0, f.ids, f.n, &edata);
			if (n >= 0) {
				published += n;
				if (n < want)
					break; // nothing more to take
				size = max_events; // past the culprit: whole batches again
				continue;
			}
			if (error_of_system(edata->sqlerrcode))
				ReThrowError(edata);
			FreeErrorData(edata);
			size = want / 2;
			continue;
		}
		// one event alone: the first one the batches would take
		int64 id = first_pending_id(&f, after_id);
		if (id == 0)
			break;
		int64 one = drain_in_subxact(1, id, nullptr, 0, &edata);
		if (one >= 0) {
			published += one;
			if (one == 0)
				after_id = id; // taken by a concurrent drain meanwhile: look further
			size = max_events;
			continue;
		}
		if (error_of_system(edata->sqlerrcode))
			ReThrowError(edata);
		lone[nlone++] = {id, edata};
		add_failure(&f, id);
		size = max_events;
	}

	// 3. count the lone failures — unless nothing at all worked and several new ones failed (an
	// event recorded before was found to fail alone while others worked, or while it was alone)
	if (nlone == 0)
		return published;
	if (published == 0 && nlone - nknown >= 2)
		ReThrowError(lone[nknown].edata); // the system's fault, not each event's: retried, not counted
	for (int k = 0; k < nlone; k++) {
		int attempts = record_failure(lone[k].id, lone[k].edata);
		if (attempts >= guc_max_attempts)
			dead_letter_guarded(lone[k].id, lone[k].edata, attempts);
		else
			ereport(LOG, (errmsg("pg_outbox: event %lld failed (attempt %d of %d), publishing the events behind it",
			                     (long long)lone[k].id, attempts, guc_max_attempts),
			              errdetail("%s (SQLSTATE %s)", lone[k].edata->message ? lone[k].edata->message : "unknown error",
			                        unpack_sql_state(lone[k].edata->sqlerrcode))));
		FreeErrorData(lone[k].edata);
	}
	return published;
}

// ---------------------------------------------------------------------------------------
// Retention: the history is three segments (outbox.history_0..2). New events go to the current
// one; every pg_outbox.retention / 2 the worker makes the oldest segment current, after
// emptying it with TRUNCATE (its newest event is then at least pg_outbox.retention old). A
// TRUNCATE leaves no dead tuples behind, unlike DELETE. Events are kept between retention and
// 1.5 × retention. outbox.purge(older_than) does the same by hand.
// ---------------------------------------------------------------------------------------
struct Segment {
	bool empty;
	int64 min_pos, max_pos;
	TimestampTz newest; // published_at of the newest event
};

static Segment segment_info(int s) {
	Segment seg{true, 0, 0, 0};
	char sql[256];
	snprintf(sql, sizeof sql,
	         "SELECT (SELECT pos FROM outbox.history_%d ORDER BY pos LIMIT 1),"
	         " h.pos, h.published_at FROM outbox.history_%d h ORDER BY h.pos DESC LIMIT 1",
	         s, s);
	// The latest snapshot, not the statement's: purge() may have waited for a drain that
	// committed events into this segment meanwhile, and a TRUNCATE removes those too.
	PushActiveSnapshot(GetLatestSnapshot());
	int rc = SPI_execute(sql, true, 1);
	PopActiveSnapshot();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_outbox: reading segment %d failed: %s", s, SPI_result_code_string(rc));
	if (SPI_processed == 1) {
		bool isnull;
		HeapTuple t = SPI_tuptable->vals[0];
		TupleDesc d = SPI_tuptable->tupdesc;
		seg.empty = false;
		seg.min_pos = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		seg.max_pos = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
		seg.newest = DatumGetTimestampTz(SPI_getbinval(t, d, 3, &isnull));
	}
	return seg;
}

// Lock segment s for TRUNCATE: wait, or give up at once if it is in use (worker).
static bool lock_segment(int s, bool wait) {
	char name[NAMEDATALEN];
	snprintf(name, sizeof name, "history_%d", s);
	Oid relid = get_relname_relid(name, get_namespace_oid("outbox", false));
	if (!OidIsValid(relid))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("relation \"outbox.%s\" does not exist", name),
		                errhint("Reinstall the extension: the history segments are part of it.")));
	if (wait) {
		LockRelationOid(relid, AccessExclusiveLock);
		return true;
	}
	return ConditionalLockRelationOid(relid, AccessExclusiveLock);
}

static void truncate_segment(int s, const Segment &seg) {
	char sql[128];
	snprintf(sql, sizeof sql, "TRUNCATE outbox.history_%d", s);
	int rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "pg_outbox: %s failed: %s", sql, SPI_result_code_string(rc));
	Oid types[] = {INT8OID};
	Datum args[] = {Int64GetDatum(seg.max_pos)};
	rc = SPI_execute_with_args("UPDATE outbox.state SET purged_pos = greatest(purged_pos, $1)", 1, types, args,
	                           nullptr, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "pg_outbox: recording the purge failed: %s", SPI_result_code_string(rc));
}

static void make_current(int s) {
	Oid types[] = {INT4OID};
	Datum args[] = {Int32GetDatum(s)};
	int rc = SPI_execute_with_args("UPDATE outbox.state SET cur_seg = $1, seg_started_at = now()", 1, types, args,
	                               nullptr, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "pg_outbox: switching the history segment failed: %s", SPI_result_code_string(rc));
}

static bool read_state(int *cur, TimestampTz *started) {
	// FOR UPDATE: drains wait for the rotation, so none inserts into a segment being emptied
	int rc = SPI_execute("SELECT cur_seg, seg_started_at FROM outbox.state FOR UPDATE", false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	bool isnull;
	*cur = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*started = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return *cur >= 0 && *cur < kSegments;
}

// Remove whole segments whose events are all older than threshold, oldest first, never leaving
// a hole: the oldest segment first, then the middle one, and never a segment younger than one
// kept. Then make the oldest (now empty) segment current: when force_rotate (the worker, every
// retention / 2), or when the current segment is old as well (purge). Returns the number of
// events removed, or -1 if a segment was in use and wait is false.
//
// Locks: a drain takes the segments (ACCESS SHARE, its plan reads outbox.history) before the
// state row. With wait (purge by hand) the segments are locked first as well, with a 5 s lock
// timeout so that a long replay cannot hold publishing up behind the waiting purge; the worker
// (no wait) takes the state row first and only tries the segment locks.
static int64 purge_segments(TimestampTz threshold, bool force_rotate, bool wait) {
	if (wait) {
		int level = NewGUCNestLevel();
		(void)set_config_option("lock_timeout", "5s", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		for (int s = 0; s < kSegments; s++)
			(void)lock_segment(s, true);
		AtEOXact_GUC(true, level);
	}
	int cur;
	TimestampTz started;
	if (!read_state(&cur, &started))
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox: the row of outbox.state is missing or damaged")));
	int64 removed = 0;
	for (int round = 0; round < kSegments; round++) {
		int oldest = (cur + 1) % kSegments, middle = (cur + 2) % kSegments;
		Segment o = segment_info(oldest);
		if (!o.empty) {
			if (o.newest >= threshold)
				break; // even the oldest segment holds younger events: nothing to remove, no rotation
			// [consumers] kept for a named consumer that has not acknowledged its events (asked
			// again once the segment is locked: a consumer created meanwhile is seen then)
			if (!consumers_release_segment(oldest, o.newest, false))
				break;
			if (!lock_segment(oldest, wait))
				return -1;
			if (!consumers_release_segment(oldest, o.newest, true))
				break;
			truncate_segment(oldest, o);
			removed += o.max_pos - o.min_pos + 1;
		}
		Segment m = segment_info(middle);
		bool middle_kept = false;
		if (!m.empty) {
			if (m.newest < threshold && consumers_release_segment(middle, m.newest, false)) { // [consumers]
				if (!lock_segment(middle, wait))
					return -1;
				if (consumers_release_segment(middle, m.newest, true)) {
					truncate_segment(middle, m);
					removed += m.max_pos - m.min_pos + 1;
				} else
					middle_kept = true;
			} else
				middle_kept = true;
		}
		Segment c = segment_info(cur);
		bool rotate = force_rotate || (!middle_kept && !c.empty && c.newest < threshold);
		if (!rotate)
			break;
		make_current(oldest); // emptied above
		cur = oldest;
		force_rotate = false;
		if (c.empty)
			break;
	}
	return removed;
}

// The history's event-id index is BRIN: ranges of pages filled since the last summarization are
// read whole by every outbox.event() lookup. Summarize the current segment's new ranges (the
// worker does this about once a second); skip a round if VACUUM or the like holds the table.
static void summarize_history(int seg) {
	char relname[NAMEDATALEN];
	snprintf(relname, sizeof relname, "history_%d", seg);
	Oid nsp = get_namespace_oid("outbox", true);
	Oid relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;
	if (!OidIsValid(relid) || !ConditionalLockRelationOid(relid, ShareUpdateExclusiveLock))
		return;
	Relation rel = table_open(relid, NoLock);
	List *indexes = RelationGetIndexList(rel);
	ListCell *lc;
	foreach (lc, indexes) {
		Oid index = lfirst_oid(lc);
		HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(index));
		bool brin = HeapTupleIsValid(tup) && ((Form_pg_class)GETSTRUCT(tup))->relam == BRIN_AM_OID;
		if (HeapTupleIsValid(tup))
			ReleaseSysCache(tup);
		if (brin)
			(void)DirectFunctionCall1(brin_summarize_new_values, ObjectIdGetDatum(index));
	}
	list_free(indexes);
	table_close(rel, NoLock);
}

// summarize_history() in a subtransaction: a failure (an index being rebuilt, say) is logged and
// must not stop the worker's pass, which publishes events in the same transaction.
static void summarize_history_guarded(int seg) {
	ErrorData *edata = run_in_subxact([](void *p) { summarize_history(*static_cast<int *>(p)); }, &seg);
	if (!edata)
		return;
	ereport(WARNING, (errmsg("pg_outbox: could not summarize the BRIN index of outbox.history_%d: %s", seg,
	                         edata->message ? edata->message : "unknown error"),
	                  errhint("outbox.event() reads more of the history until the index is summarized; VACUUM "
	                          "summarizes it too.")));
	FreeErrorData(edata);
}

// Called by the drain worker about once a second, in its own transaction.
void maintain_retention(void) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	int rc = SPI_execute("SELECT cur_seg, seg_started_at FROM outbox.state", true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1) {
		bool isnull, seg_null;
		int seg = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &seg_null));
		TimestampTz started = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (!seg_null && seg >= 0 && seg < 3) {
			summarize_history_guarded(seg);
			// and the segment that was current before the last rotation: the ranges filled just
			// before it would otherwise stay unsummarized until a VACUUM
			summarize_history_guarded((seg + kSegments - 1) % kSegments);
		}
		TimestampTz now = GetCurrentTransactionStartTimestamp();
		int64 retention_us = (int64)guc_retention_s * USECS_PER_SEC;
		if (now - started >= retention_us / 2) {
			int64 removed = purge_segments(now - retention_us, true, false);
			if (removed > 0)
				ereport(LOG, (errmsg("pg_outbox: retention removed %lld published events", (long long)removed)));
		}
	}
	SPI_finish();
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox.purge(older_than interval) RETURNS bigint
PGO_FUNCTION(outbox_purge) {
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("older_than cannot be NULL"),
		                errhint("Pass an interval such as '1 hour'.")));
	Interval *iv = PG_GETARG_INTERVAL_P(0);
	// an explicit range, checked before any timestamp arithmetic (which would fail with 22008)
	constexpr int64 kMaxYears = 1000;
	int64 approx_days = (int64)iv->month * DAYS_PER_MONTH + iv->day + iv->time / USECS_PER_DAY;
	if (approx_days > kMaxYears * 366 || approx_days < -kMaxYears * 366)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("older_than is out of range"),
		                errdetail("older_than can be at most %lld years.", (long long)kMaxYears),
		                errhint("Pass an interval such as '1 hour'; '0' removes every published event.")));
	check_writable("outbox.purge()");
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz threshold =
	    DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(now), IntervalPGetDatum(iv)));
	if (threshold > now)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("older_than cannot be negative"),
		                errhint("Pass an interval such as '1 hour'; '0' removes every published event.")));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	int64 removed = purge_segments(threshold == now ? DT_NOEND : threshold, false, true);
	SPI_finish();
	PG_RETURN_INT64(removed);
}

// outbox._worker_status() — this database's drain worker as shared memory sees it.
PGO_FUNCTION(outbox_worker_status) {
	TupleDesc tupdesc;
	if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_outbox: return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	Datum values[8];
	bool nulls[8] = {true, true, true, true, true, true, true, true};
	if (shared) {
		LWLockAcquire(shared->lock, LW_SHARED);
		WorkerSlot *slot = find_slot(MyDatabaseId);
		if (slot) {
			bool running = slot->pid != 0;
			if (running) {
				values[0] = Int32GetDatum(slot->pid);
				nulls[0] = false;
			}
			values[1] = CStringGetTextDatum(state_name(running ? slot->state : WorkerState::Stopped));
			nulls[1] = false;
			// events/s over the last full minute
			int64 now_s = GetCurrentTimestamp() / USECS_PER_SEC;
			uint64 sum = 0;
			for (int i = 0; i < 64; i++)
				if (slot->sec_stamp[i] >= now_s - 60 && slot->sec_stamp[i] < now_s)
					sum += slot->sec_counts[i];
			values[2] = Float8GetDatum((double)sum / 60.0);
			nulls[2] = false;
			if (slot->last_error[0]) {
				values[3] = CStringGetTextDatum(slot->last_error);
				values[4] = TimestampTzGetDatum(slot->last_error_at);
				nulls[3] = nulls[4] = false;
			}
			if (running) {
				values[5] = TimestampTzGetDatum(slot->started_at);
				nulls[5] = false;
			}
			if (slot->last_batch_at) {
				values[6] = TimestampTzGetDatum(slot->last_batch_at);
				nulls[6] = false;
			}
			values[7] = Int64GetDatum((int64)slot->published_total);
			nulls[7] = false;
		}
		// a hot standby publishes nothing: its worker starts when it is promoted
		if (!(slot && slot->pid != 0) && RecoveryInProgress()) {
			values[1] = CStringGetTextDatum("standby");
			nulls[1] = false;
		} else
		// no worker process was free for this database: it waits for its turn (worker.cpp)
		if (!(slot && slot->pid != 0) && database_waiting(MyDatabaseId, nullptr)) {
			values[1] = CStringGetTextDatum(state_name(WorkerState::Waiting));
			nulls[1] = false;
		}
		LWLockRelease(shared->lock);
	}
	if (nulls[1]) {
		values[1] = CStringGetTextDatum("stopped");
		nulls[1] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

// outbox._wake_at_commit() — wake this database's drain worker when the transaction commits.
PGO_FUNCTION(outbox_wake_at_commit) {
	wake_worker_at_commit();
	PG_RETURN_VOID();
}

// outbox.worker_pids() — the PIDs of the processes that may send pg_outbox envelopes in this
// database now: its running drain worker(s). A consumer trusts a notification only when its
// be_pid is in this list; anything else (any role may NOTIFY any payload) is a doorbell.
PGO_FUNCTION(outbox_worker_pids) {
	Datum pids[kMaxWorkers];
	int n = 0;
	if (shared) {
		LWLockAcquire(shared->lock, LW_SHARED);
		for (int i = 0; i < kMaxWorkers; i++) {
			const WorkerSlot *slot = &shared->slots[i];
			if (slot->dbid == MyDatabaseId && slot->pid != 0)
				pids[n++] = Int32GetDatum((int32)slot->pid);
		}
		LWLockRelease(shared->lock);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(pids, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
}

// outbox._check_writable(what text) — check_writable() for the PL/pgSQL functions that write.
PGO_FUNCTION(outbox_check_writable) {
	check_writable(PG_ARGISNULL(0) ? "this function" : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}
