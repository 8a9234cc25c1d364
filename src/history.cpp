// history.cpp — the published history: kSegments tables outbox.history_0..2 (history.hpp), their
// layout for the drain's direct inserts, the lock order every drain and purge follows,
// retention by segment rotation with TRUNCATE, outbox.purge(), and the BRIN summarization the
// worker runs about once a second.
#include "pg_outbox.hpp"
#include "history.hpp"
#include "log.hpp"
#include "guard.hpp"
#include "pg_compat.hpp"
#include "spi_util.hpp"

extern "C" {
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
}

namespace pg_outbox {

// The three layouts below, the oldest/middle/current walk of purge_segments() and the SQL that
// creates the tables (src/sql/20_outbox.sql, one CREATE TABLE per segment) are written for three.
static_assert(kSegments == 3, "history.cpp and src/sql/20_outbox.sql are written for three history segments");

static const ColumnSpec history_cols[] = {{"pos", INT8OID},        {"seq", INT8OID},       {"id", INT8OID},
                                          {"channel", TEXTOID},    {"key", TEXTOID},       {"type", TEXTOID},
                                          {"payload", JSONBOID},   {"created_at", TIMESTAMPTZOID},
                                          {"published_at", TIMESTAMPTZOID}};
TableLayout history_layout[kSegments] = {
    {"history_0", history_cols, lengthof(history_cols), nullptr, nullptr, false, InvalidOid, -1, {}, 0},
    {"history_1", history_cols, lengthof(history_cols), nullptr, nullptr, false, InvalidOid, -1, {}, 0},
    {"history_2", history_cols, lengthof(history_cols), nullptr, nullptr, false, InvalidOid, -1, {}, 0}};

void lock_history_segments(void) {
	for (int s = 0; s < kSegments; s++)
		table_close(open_layout(&history_layout[s], RowExclusiveLock), NoLock);
}

// ---------------------------------------------------------------------------------------
// Retention: the history is kSegments (three) segments, outbox.history_0..2. New events go to the current
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
// Locks (the order of lock_history_segments(), history.hpp): segments first, in segment order,
// then the state row. With wait (purge by hand) the segments are locked ACCESS EXCLUSIVE first,
// with a 5 s lock timeout so that a long replay cannot hold publishing up behind the waiting
// purge. The worker (no wait) comes here from its pass, which already holds every segment ROW
// EXCLUSIVE (lock_history_segments()); it takes the state row, then only tries the ACCESS
// EXCLUSIVE lock of a segment it empties, and gives up the round (-1) if a drain or a reader
// holds it.
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
		if (!seg_null && seg >= 0 && seg < kSegments) {
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
	// log mode (issue #15): the history is frozen (purged above); the log's old segments go by
	// rotation, with its rules (outbox._log_purge(), 98_observe_log.sql), read with the latest
	// snapshot as the history's segments are
	if (log_storage_active(GetLatestSnapshot())) {
		Oid types[] = {INTERVALOID};
		Datum args[] = {IntervalPGetDatum(iv)};
		int rc = SPI_execute_with_args("SELECT outbox._log_purge($1)", 1, types, args, nullptr, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "pg_outbox: purging the log failed: %s", SPI_result_code_string(rc));
		bool isnull;
		removed += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	PG_RETURN_INT64(removed);
}
