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
// Dead letters
// ---------------------------------------------------------------------------------------

// Does this error belong to one event (its data, a constraint or a trigger on the history),
// rather than to the system (locks, resources, shutdown, missing objects, bugs)?
static bool error_of_one_event(int sqlerrcode) {
	// a unique violation is about positions or ids (a counter behind the history, say), never
	// about one event's data: dead-lettering would move the whole backlog away
	if (sqlerrcode == ERRCODE_UNIQUE_VIOLATION)
		return false;
	switch (ERRCODE_TO_CATEGORY(sqlerrcode)) {
	case ERRCODE_DATA_EXCEPTION:                     // 22: bad value
	case ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION:     // 23: CHECK, UNIQUE, FK added by a DBA
	case ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION:    // 27
	case ERRCODE_EXTERNAL_ROUTINE_EXCEPTION:         // 38
	case ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION: // 39
	case ERRCODE_PLPGSQL_ERROR:                      // P0: RAISE in a trigger
	case ERRCODE_TRIGGERED_ACTION_EXCEPTION:         // 09
		return true;
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

static void dead_letter(int64 id, ErrorData *edata);

// dead_letter() in a subtransaction: if even moving the event fails (a foreign key a DBA made
// reference outbox.pending, say), say so and leave the event pending — the events behind it are
// still published.
static void dead_letter_guarded(int64 id, ErrorData *cause) {
	struct Args {
		int64 id;
		ErrorData *cause;
	} args{id, cause};
	ErrorData *edata = run_in_subxact(
	    [](void *p) {
		    Args *a = static_cast<Args *>(p);
		    dead_letter(a->id, a->cause);
	    },
	    &args);
	if (!edata)
		return;
	if (!error_of_one_event(edata->sqlerrcode))
		ReThrowError(edata);
	ereport(WARNING, (errmsg("pg_outbox: event %lld could not be published nor moved to outbox.dead_letters; it "
	                         "stays pending",
	                         (long long)id),
	                  errdetail("Publishing failed with: %s. Moving it failed with: %s (SQLSTATE %s).",
	                            cause->message ? cause->message : "unknown error",
	                            edata->message ? edata->message : "unknown error", unpack_sql_state(edata->sqlerrcode)),
	                  errhint("Remove what keeps the event from being deleted from outbox.pending (a foreign key "
	                          "or trigger on it).")));
	FreeErrorData(edata);
}

// Run drain_batch() in a subtransaction. Returns the count, or -1 with *edata set on error.
static int64 drain_in_subxact(int max_events, int64 only_id, ErrorData **edata) {
	struct Args {
		int max_events;
		int64 only_id, n;
	} args{max_events, only_id, -1};
	*edata = run_in_subxact(
	    [](void *p) {
		    Args *a = static_cast<Args *>(p);
		    a->n = drain_batch(a->max_events, a->only_id);
	    },
	    &args);
	return *edata ? -1 : args.n;
}

static void dead_letter(int64 id, ErrorData *edata) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	Oid types[] = {INT8OID, TEXTOID, TEXTOID};
	Datum args[] = {Int64GetDatum(id), CStringGetTextDatum(edata->message ? edata->message : "unknown error"),
	                CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode))};
	int rc = SPI_execute_with_args("WITH d AS (DELETE FROM outbox.pending WHERE id = $1 RETURNING *)"
	                               " INSERT INTO outbox.dead_letter (id, channel, key, type, payload, created_at,"
	                               "                                 failed_at, error, sqlstate)"
	                               " SELECT id, channel, key, type, payload, created_at, now(), $2, $3 FROM d",
	                               3, types, args, nullptr, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "pg_outbox: moving event %lld to the dead letters failed: %s", (long long)id,
		     SPI_result_code_string(rc));
	uint64 moved = SPI_processed;
	SPI_finish();
	if (moved > 0)
		ereport(WARNING, (errmsg("pg_outbox: event %lld could not be published and was moved to outbox.dead_letters",
		                         (long long)id),
		                  errdetail("%s (SQLSTATE %s)", edata->message ? edata->message : "unknown error",
		                            unpack_sql_state(edata->sqlerrcode)),
		                  errhint("Fix the cause, then call outbox.retry(%lld).", (long long)id)));
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

int64 drain(int max_events) {
	if (!compat::am_background_worker()) // the worker checks once per pass, with its own saved plan
		check_installed_version();
	// The notifications reach listeners at commit: that commit must be durable first, or a
	// crash could hand the same positions out again (SET LOCAL: until the end of the transaction)
	if (!compat::am_background_worker())
		(void)set_config_option("synchronous_commit", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
		                        false);
	ErrorData *edata;
	int64 n = drain_in_subxact(max_events, 0, &edata);
	if (n >= 0)
		return n;
	if (!error_of_one_event(edata->sqlerrcode))
		ReThrowError(edata);

	// Isolate the culprit(s): the same events, one at a time.
	ErrorData *batch_error = edata;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	Oid types[] = {INT4OID};
	Datum args[] = {Int32GetDatum(max_events)};
	int rc = SPI_execute_with_args("SELECT id FROM outbox.pending ORDER BY id LIMIT $1", 1, types, args, nullptr,
	                               true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_outbox: listing pending events failed: %s", SPI_result_code_string(rc));
	uint64 nids = SPI_processed;
	int64 *ids = (int64 *)MemoryContextAlloc(CurTransactionContext, sizeof(int64) * (nids + 1));
	for (uint64 i = 0; i < nids; i++) {
		bool isnull;
		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();

	int64 published = 0;
	for (uint64 i = 0; i < nids; i++) {
		CHECK_FOR_INTERRUPTS();
		int64 one = drain_in_subxact(1, ids[i], &edata);
		if (one >= 0) {
			published += one;
			continue;
		}
		if (!error_of_one_event(edata->sqlerrcode))
			ReThrowError(edata);
		dead_letter_guarded(ids[i], edata);
		FreeErrorData(edata);
	}
	FreeErrorData(batch_error);
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
		if (!seg_null && seg >= 0 && seg < 3)
			summarize_history_guarded(seg);
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

// outbox._check_writable(what text) — check_writable() for the PL/pgSQL functions that write.
PGO_FUNCTION(outbox_check_writable) {
	check_writable(PG_ARGISNULL(0) ? "this function" : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}
