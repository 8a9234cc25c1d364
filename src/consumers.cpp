// consumers.cpp — consumers that do not LISTEN: outbox.wait() (a statement that blocks until
// events are published, so it works through transaction poolers) and named consumers, whose
// acknowledged position the server keeps and retention respects.
//
// How a waiter sleeps and who wakes it:
//   * Shared memory holds kWaitBuckets condition variables, each with a generation counter; a
//     database uses bucket dbid % kWaitBuckets, and a waiter whose filter is exactly one channel
//     the bucket of (database, channel), so that drains of other channels leave it asleep
//     (waiters that share a bucket only cost each other a spurious wake-up, after which they
//     check again and sleep on).
//   * drain_batch() calls wake_waiters_at_commit(): when the transaction that published events
//     commits (XACT_EVENT_COMMIT runs after ProcArrayEndTransaction, so the events are visible),
//     the callback bumps the generation of the database's bucket and of the bucket of each
//     channel the transaction published on (drain_batch() names them), and broadcasts them. A
//     rolled-back drain (or the rolled-back savepoint it ran in) wakes nobody.
//   * A waiter reads the generation, checks (outbox.replay() itself, in a subtransaction that
//     is rolled back when it found nothing, so that a sleeping waiter holds no lock on the
//     history and retention's TRUNCATE is never kept waiting), joins the condition variable's
//     wait list, and sleeps only if the generation has not moved since it read it: a drain that
//     commits anywhere in between is never missed. Each check is a new statement, so in READ
//     COMMITTED it has a new snapshot and sees what was committed after the call started.
//     REPEATABLE READ and SERIALIZABLE keep one snapshot: wait() and next() refuse to run there.
//   * The sleep is ConditionVariableTimedSleep(): cancel, statement_timeout and
//     pg_terminate_backend() end it at once; a slow safety tick (kSafetyMs, or
//     pg_outbox.idle_interval on a hot standby, where no drain runs to wake anybody) re-checks.
//
// Named consumers (table outbox.consumer): the C functions below are SECURITY INVOKER, check
// that the caller may use the consumer (its owner, a member of the owner, outbox_admin or a
// superuser), then read and write outbox.consumer as the table's owner with search_path pinned
// (readers have no right on the table). next() calls replay() as the caller, so replay's
// privileges apply. Retention (history.cpp) asks consumers_release_segment() before it empties a
// segment: an active consumer that has not acknowledged one of the segment's events keeps it,
// until the segment is older than pg_outbox.consumer_max_retention; then the consumer is marked
// lost (in the transaction that truncates) and its next call raises OB001.
#include "pg_outbox.hpp"
#include "guard.hpp"
#include "log.hpp"
#include "spi_util.hpp"
#include "xact_events.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "common/hashfn.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

namespace pg_outbox {

int guc_consumer_max_retention_s = 7 * 86400;

#define ERRCODE_OB001 MAKE_SQLSTATE('O', 'B', '0', '0', '1')
#define ERRCODE_OB002 MAKE_SQLSTATE('O', 'B', '0', '0', '2')

constexpr int kWaitBuckets = 128;
constexpr long kSafetyMs = 10000;                     // re-check this often even if nothing woke us
constexpr double kMaxTimeoutUs = 86400.0 * 1000000.0; // timeout: at most a day

struct WaitBucket {
	ConditionVariable cv;
	pg_atomic_uint64 generation; // bumped by every commit that published events in these databases
};
struct WaitShared {
	WaitBucket buckets[kWaitBuckets];
};
static WaitShared *wait_shared = nullptr;

Size waiters_shmem_size(void) {
	return MAXALIGN(sizeof(WaitShared));
}

void waiters_shmem_init(void) {
	bool found = false;
	wait_shared = static_cast<WaitShared *>(ShmemInitStruct("pg_outbox waiters", sizeof(WaitShared), &found));
	if (!found)
		for (int i = 0; i < kWaitBuckets; i++) {
			ConditionVariableInit(&wait_shared->buckets[i].cv);
			pg_atomic_init_u64(&wait_shared->buckets[i].generation, 0);
		}
}

static WaitBucket *bucket_of(Oid dbid) {
	return &wait_shared->buckets[dbid % kWaitBuckets];
}

// The bucket of the waiters of one channel (a waiter whose filter is that one channel): a drain
// of other channels' events does not wake them. (Shares the array with the database buckets: a
// collision only costs a spurious wake-up.)
static int channel_bucket(Oid dbid, const char *channel, size_t len) {
	uint32 h = hash_bytes_extended((const unsigned char *)channel, (int)len, dbid) & 0xffffffff;
	return (int)(h % kWaitBuckets);
}

// ---- wake-ups at commit ----
static LevelMark published; // the live subtransaction levels that published events

void wake_waiters_at_commit(void) {
	published.mark();
}

// Channel buckets to broadcast at commit, besides the database's. Kept across an aborted
// subtransaction (a spurious wake-up at most), cleared at the end of the transaction.
static uint64 channel_mask[kWaitBuckets / 64];

void wake_channel_waiters_at_commit(const char *channel) {
	int i = channel_bucket(MyDatabaseId, channel, strlen(channel));
	channel_mask[i / 64] |= UINT64CONST(1) << (i % 64);
}

void wake_all_channel_waiters_at_commit(void) {
	memset(channel_mask, 0xff, sizeof channel_mask);
}

static void broadcast_bucket(WaitBucket *b) {
	pg_atomic_fetch_add_u64(&b->generation, 1); // a full barrier: before any waiter is woken
	ConditionVariableBroadcast(&b->cv);
}

static void broadcast_waiters(Oid dbid) {
	if (!wait_shared)
		return;
	broadcast_bucket(bucket_of(dbid));
	for (int i = 0; i < kWaitBuckets; i++)
		if (channel_mask[i / 64] & (UINT64CONST(1) << (i % 64)))
			broadcast_bucket(&wait_shared->buckets[i]);
}

static void clear_channel_mask(void) {
	memset(channel_mask, 0, sizeof channel_mask);
}

// the end of a transaction (xact_events.cpp)
void consumers_xact_event(XactEvent event) {
	switch (event) {
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
		if (published.live())
			broadcast_waiters(MyDatabaseId);
		published.clear();
		clear_channel_mask();
		break;
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
		published.clear();
		clear_channel_mask();
		break;
	case XACT_EVENT_PREPARE:
		// its events become visible at COMMIT PREPARED, which broadcasts the database's bucket
		// and, since the channels of the prepared drain are not known in the session that
		// commits it, every channel bucket (a spurious wake-up for the waiters of other channels)
		published.clear();
		clear_channel_mask();
		break;
	default:
		break;
	}
}

void consumers_subxact_event(SubXactEvent event, int level) {
	published.subxact(event, level);
}

void consumers_init(void) {
	DefineCustomIntVariable("pg_outbox.consumer_max_retention",
	                        "How long retention keeps events that a named consumer has not acknowledged; past it "
	                        "the consumer is marked lost.",
	                        "0: named consumers keep nothing beyond pg_outbox.retention.", &guc_consumer_max_retention_s,
	                        7 * 86400, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
}

// ---- arguments ----
static int64 timeout_us_arg(FunctionCallInfo fcinfo, int argno) {
	if (PG_ARGISNULL(argno))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("timeout cannot be NULL"),
		                errhint("Pass an interval such as '30s'; '0' only checks, without waiting.")));
	Interval *iv = PG_GETARG_INTERVAL_P(argno);
	double us = (double)iv->time + (double)iv->day * USECS_PER_DAY + (double)iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
	if (us < 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("timeout cannot be negative"),
		                errhint("Pass an interval such as '30s'; '0' only checks, without waiting.")));
	if (us > kMaxTimeoutUs)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("timeout cannot be longer than 1 day"),
		                errhint("Call again after a timeout: an empty result only means nothing was published.")));
	return (int64)us;
}

static void max_events_arg(FunctionCallInfo fcinfo, int argno) {
	if (PG_ARGISNULL(argno))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("max_events cannot be NULL"),
		                errhint("Pass how many events to return at most, 1 or more, or leave it out for the default (1000).")));
	int32 n = PG_GETARG_INT32(argno);
	if (n < 1)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("max_events must be at least 1, not %d", n),
		                errhint("Replay reads in batches: call it again after the last position it returned.")));
}

static void refuse_snapshot_isolation(const char *fn) {
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
		        (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		         errmsg("%s cannot run in a REPEATABLE READ or SERIALIZABLE transaction", fn),
		         errdetail("The transaction's snapshot never shows events published after it was taken, so the call "
		                   "could only wait for its timeout."),
		         errhint("Call it in autocommit mode or in a READ COMMITTED transaction; outbox.replay() reads what "
		                 "the snapshot shows without waiting.")));
}

// ---- the check and the wait ----
static SPIPlanPtr plan_replay = nullptr;
static SPIPlanPtr plan_head = nullptr;

// One check in a subtransaction: outbox.replay(after, channels, max_events) as the caller. Rows
// found go into ts and the subtransaction commits (replay's lock on the history stays until the
// end of the transaction, as for a direct call); nothing found: it rolls back, releasing that
// lock. *head (filtered checks only) gets the latest position read before the replay: no event
// of the channels lies between after and it. Errors of replay (OB001, OB002, permission) are
// raised again as they are; but with behind, OB001 (after lies behind the retention horizon) sets
// *behind and the check returns 0 (next(): the consumer may have been acknowledged past it since).
static uint64 check_once(int64 after, Datum channels, bool channels_null, int32 max_events, Tuplestorestate *ts,
                         int64 *head, bool *behind) {
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile uint64 n = 0;
	BeginInternalSubTransaction(nullptr);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "pg_outbox: SPI_connect failed");
		if (!plan_replay) {
			Oid types[] = {INT8OID, TEXTARRAYOID, INT4OID};
			plan_replay = keep_plan("SELECT * FROM outbox.replay($1, $2, $3)", 3, types);
			plan_head = keep_plan("SELECT outbox.head()", 0, nullptr);
		}
		if (head && !channels_null) {
			int rc = SPI_execute_plan(plan_head, nullptr, nullptr, false, 1);
			if (rc != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "pg_outbox: reading outbox.head() failed: %s", SPI_result_code_string(rc));
			bool isnull;
			Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			*head = isnull ? 0 : DatumGetInt64(d);
		}
		Datum args[] = {Int64GetDatum(after), channels, Int32GetDatum(max_events)};
		char nulls[] = {' ', channels_null ? 'n' : ' ', ' '};
		int rc = SPI_execute_plan(plan_replay, args, nulls, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "pg_outbox: outbox.replay() failed: %s", SPI_result_code_string(rc));
		n = SPI_processed;
		for (uint64 i = 0; i < n; i++)
			tuplestore_puttuple(ts, SPI_tuptable->vals[i]); // copied into the tuplestore's context
		SPI_finish();
		if (n > 0)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		ErrorData *edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (!behind || edata->sqlerrcode != ERRCODE_OB001)
			ReThrowError(edata);
		FreeErrorData(edata);
		*behind = true;
		n = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return n;
}

// Wait for events after *after (of channels) until deadline (at least one check, even past it);
// the rows go into the SRF's tuplestore. Returns how many. For a filtered wait that found nothing,
// *after is moved to the latest position up to which the channels had no event (what next()
// records). behind: as for check_once(), the wait ends at once with *behind set. The caller's
// timeout is one deadline for all its waits: next() waits again after a false OB001, and each
// wait with a timeout of its own made a call wait up to 4 times the timeout it was given.
static uint64 wait_for_events(FunctionCallInfo fcinfo, int64 *after, Datum channels, bool channels_null,
                              int32 max_events, TimestampTz deadline, bool *behind = nullptr) {
	ReturnSetInfo *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;
	if (!wait_shared)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox must be loaded via shared_preload_libraries")));
	// a waiter of exactly one channel sleeps in that channel's bucket, every other in the database's
	WaitBucket *b = bucket_of(MyDatabaseId);
	if (!channels_null) {
		ArrayType *arr = DatumGetArrayTypeP(channels);
		if (ARR_NDIM(arr) == 1 && ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)) == 1 && !array_contains_nulls(arr)) {
			Datum *elems;
			bool *enulls;
			int nelems;
			deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nelems);
			text *t = DatumGetTextPP(elems[0]);
			b = &wait_shared->buckets[channel_bucket(MyDatabaseId, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t))];
		}
	}
	uint64 n = 0;
	for (;;) {
		uint64 gen = pg_atomic_read_u64(&b->generation);
		pg_memory_barrier();
		int64 head = 0;
		n = check_once(*after, channels, channels_null, max_events, rsinfo->setResult, &head, behind);
		if (n > 0 || (behind && *behind))
			break;
		if (!channels_null && head > *after)
			*after = head; // nothing of these channels up to head: the next check starts there
		TimestampTz now = GetCurrentTimestamp();
		if (now >= deadline)
			break;
		ConditionVariablePrepareToSleep(&b->cv);
		pg_memory_barrier();
		if (pg_atomic_read_u64(&b->generation) != gen)
			continue; // a drain committed since the check started: check again
		long ms = (long)Min((deadline - now + 999) / 1000, (TimestampTz)(RecoveryInProgress() ? guc_idle_interval_ms : kSafetyMs));
		(void)ConditionVariableTimedSleep(&b->cv, Max(ms, 1L), PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return n;
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox.wait(after_pos bigint, channels text[], timeout interval, max_events integer)
PGO_FUNCTION(outbox_wait) {
	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("after_pos cannot be NULL"),
		                errhint("Pass the last position the consumer has processed, 0 for the beginning, or "
		                        "outbox.head() to start from now.")));
	int64 after = PG_GETARG_INT64(0);
	int64 timeout_us = timeout_us_arg(fcinfo, 2);
	max_events_arg(fcinfo, 3);
	refuse_snapshot_isolation("outbox.wait()");
	(void)wait_for_events(fcinfo, &after, PG_ARGISNULL(1) ? (Datum)0 : PG_GETARG_DATUM(1), PG_ARGISNULL(1),
	                      PG_GETARG_INT32(3), GetCurrentTimestamp() + timeout_us);
	return (Datum)0;
}

// purged_pos of a one-row table under the latest snapshot, whatever the transaction's snapshot.
static int64 latest_purged_pos(const char *query) {
	(void)check_trusted_schema(); // SQL by name, as the callers' definer
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	PushActiveSnapshot(GetLatestSnapshot());
	int rc = SPI_execute(query, true, 1);
	PopActiveSnapshot();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_outbox: reading the retention horizon failed: %s", SPI_result_code_string(rc));
	int64 purged = 0;
	if (SPI_processed == 1) {
		bool isnull;
		Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			purged = DatumGetInt64(d);
	}
	SPI_finish();
	return purged;
}

// outbox._purged_pos() — outbox.state.purged_pos under the latest snapshot (see 40_replay.sql).
PGO_FUNCTION(outbox_purged_pos) {
	PG_RETURN_INT64(latest_purged_pos("SELECT purged_pos FROM outbox.state"));
}

// outbox._log_purged_pos() — outbox.log_state.purged_pos under the latest snapshot (60_log.sql,
// _log_replay: a REPEATABLE READ snapshot older than a rotation's TRUNCATE sees the segment empty).
PGO_FUNCTION(outbox_log_purged_pos) {
	PG_RETURN_INT64(latest_purged_pos("SELECT purged_pos FROM outbox.log_state"));
}

// ---------------------------------------------------------------------------------------
// Named consumers
// ---------------------------------------------------------------------------------------
namespace pg_outbox {

struct Consumer {
	bool found;
	Oid owner;
	int64 acked_pos;
	bool lost;
	char *lost_reason; // palloc'd or nullptr
	Datum channels;    // text[] (copied out of SPI) or 0
	bool channels_null;
	TimestampTz created_at; // with name and channels: this consumer, not one dropped and created again
	int64 purged_pos;       // the retention horizon, read in the same snapshot as the rest
};

static const char *consumer_name_arg(FunctionCallInfo fcinfo, int argno) {
	if (PG_ARGISNULL(argno))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("consumer name cannot be NULL"),
		                errhint("Pass the name the consumer was registered with (outbox.consumers lists them).")));
	text *t = PG_GETARG_TEXT_PP(argno);
	size_t len = VARSIZE_ANY_EXHDR(t);
	if (len == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("consumer name cannot be empty"),
		                errhint("A consumer name is 1 to 63 bytes long.")));
	if (len > 63)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("consumer name is too long: %zu bytes, the limit is 63 bytes", len)));
	return text_to_cstring(t);
}

// The role that owns outbox.consumer (the extension's owner): the consumer functions read and
// write the table as it.
static Oid consumer_table_owner(void) {
	// SQL by name, as the owner: only in the extension's own, trusted schema (schema_guard.cpp)
	(void)check_trusted_schema();
	Oid relid = extension_relation("consumer");
	if (!OidIsValid(relid))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("relation \"outbox.consumer\" does not exist"),
		                errhint("Run ALTER EXTENSION pg_outbox UPDATE in this database.")));
	HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "pg_outbox: cache lookup failed for relation %u", relid);
	Oid owner = ((Form_pg_class)GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

struct AsOwner {
	Oid save_user;
	int save_sec;
	int guc_level;
};

// Act as the table's owner, search_path pinned, SPI connected. An error undoes all of it with
// the (sub)transaction.
static void become_owner(AsOwner *s) {
	Oid owner = consumer_table_owner();
	GetUserIdAndSecContext(&s->save_user, &s->save_sec);
	SetUserIdAndSecContext(owner, s->save_sec | SECURITY_LOCAL_USERID_CHANGE);
	s->guc_level = pin_search_path();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
}

static void end_owner(AsOwner *s) {
	SPI_finish();
	AtEOXact_GUC(true, s->guc_level);
	SetUserIdAndSecContext(s->save_user, s->save_sec);
}

static void spi_ok(int rc, int expected, const char *what) {
	if (rc != expected)
		elog(ERROR, "pg_outbox: %s failed: %s", what, SPI_result_code_string(rc));
}

// Does the database have the log's tables (SQL objects of 1.3 or later)?
static bool has_log_tables(void) {
	return OidIsValid(log_state_relid());
}

// Read a consumer (SPI connected, as the owner). for_update: lock its row.
static Consumer read_consumer(const char *name, bool for_update) {
	Consumer c{};
	Oid types[] = {TEXTOID};
	Datum args[] = {CStringGetTextDatum(name)};
	// purged_pos in the same statement, hence the same snapshot: retention (and in log mode a
	// rotation of the log, outbox._log_consumers_release()) marks the consumers it removes
	// unacknowledged events of lost in the transaction that moves purged_pos (next())
	const char *horizon = has_log_tables() ? " greatest((SELECT s.purged_pos FROM outbox.state s),"
	                                         " (SELECT l.purged_pos FROM outbox.log_state l WHERE l.active))"
	                                       : " (SELECT s.purged_pos FROM outbox.state s)";
	char *sql = psprintf("SELECT owner::oid, acked_pos, state = 'lost', lost_reason, channels, created_at,%s"
	                     " FROM outbox.consumer WHERE name = $1%s",
	                     horizon, for_update ? " FOR UPDATE" : "");
	spi_ok(SPI_execute_with_args(sql, 1, types, args, nullptr, false, 1), SPI_OK_SELECT, "reading the consumer");
	if (SPI_processed != 1)
		return c;
	HeapTuple t = SPI_tuptable->vals[0];
	TupleDesc d = SPI_tuptable->tupdesc;
	bool isnull;
	c.found = true;
	c.owner = DatumGetObjectId(SPI_getbinval(t, d, 1, &isnull));
	c.acked_pos = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
	c.lost = DatumGetBool(SPI_getbinval(t, d, 3, &isnull));
	char *reason = SPI_getvalue(t, d, 4);
	if (reason) {
		c.lost_reason = (char *)SPI_palloc(strlen(reason) + 1);
		strcpy(c.lost_reason, reason);
	}
	Datum ch = SPI_getbinval(t, d, 5, &c.channels_null);
	if (!c.channels_null)
		c.channels = SPI_datumTransfer(ch, false, -1);
	c.created_at = DatumGetTimestampTz(SPI_getbinval(t, d, 6, &isnull));
	Datum purged = SPI_getbinval(t, d, 7, &isnull);
	c.purged_pos = isnull ? 0 : DatumGetInt64(purged);
	return c;
}

static void consumer_missing(const char *name) {
	ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("consumer \"%s\" does not exist", name),
	                errhint("outbox.create_consumer() registers one; SELECT name FROM outbox.consumers lists them.")));
}

// May the calling role (saved_user: the user before become_owner) use this consumer?
static void check_may_use(const char *name, const Consumer &c, Oid caller, const char *action) {
	if (superuser_arg(caller) || has_privs_of_role(caller, c.owner))
		return;
	Oid admin = get_role_oid("outbox_admin", true);
	if (OidIsValid(admin) && has_privs_of_role(caller, admin))
		return;
	char *owner = GetUserNameFromId(c.owner, true);
	ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("permission denied for consumer \"%s\"", name),
	                errdetail("Consumer \"%s\" belongs to role \"%s\".", name, owner ? owner : "(dropped role)"),
	                errhint("Only its owner, members of the owner role and outbox_admin may %s it.", action)));
}

static void consumer_lost(const char *name, const Consumer &c) {
	ereport(ERROR, (errcode(ERRCODE_OB001),
	                errmsg("consumer \"%s\" is lost: events it had not acknowledged have been removed", name),
	                c.lost_reason ? errdetail("%s", c.lost_reason) : 0,
	                errhint("Resynchronise it from the source of truth, then drop it and create it again "
	                        "(outbox.drop_consumer, outbox.create_consumer).")));
}

// The latest published position and the retention horizon, under the latest snapshot (SPI
// connected, as the owner, the history locked by the caller if it needs the horizon stable).
static void read_positions(int64 *head, int64 *purged) {
	PushActiveSnapshot(GetLatestSnapshot());
	// in log mode (issue #15) the log's head and horizon are above 1.2's (SQL objects older than
	// 1.3 have no log, and their history table is still named outbox.history: 1.3 made that a view
	// of outbox.history_frozen and the log)
	bool has_log = has_log_tables();
	int rc = SPI_execute(!has_log ? "SELECT greatest(s.last_pos, (SELECT coalesce(max(h.pos), 0) FROM outbox.history h)),"
	                                " s.purged_pos FROM outbox.state s"
	                              : "SELECT greatest(s.last_pos, (SELECT coalesce(max(h.pos), 0) FROM outbox.history_frozen h),"
	                     "                CASE WHEN l.active THEN outbox._log_head() ELSE 0 END),"
	                     " greatest(s.purged_pos, CASE WHEN l.active THEN l.purged_pos ELSE 0 END)"
	                     " FROM outbox.state s LEFT JOIN outbox.log_state l ON true",
	                     true, 1);
	PopActiveSnapshot();
	spi_ok(rc, SPI_OK_SELECT, "reading outbox.state");
	if (SPI_processed != 1)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), errmsg("the row of outbox.state is missing"),
		                errhint("Recreate it with INSERT INTO outbox.state DEFAULT VALUES, or reinstall the extension.")));
	bool isnull;
	*head = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*purged = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}

// ---- retention (history.cpp) ----
bool consumers_release_segment(int seg, TimestampTz newest, bool mark) {
	// (SPI connected by the caller)
	Oid nsp = get_namespace_oid("outbox", true);
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("consumer", nsp)))
		return true; // SQL objects older than 1.2: no consumers
	char need[512];
	snprintf(need, sizeof need,
	         "c.state = 'active' AND EXISTS (SELECT 1 FROM outbox.history_%d h WHERE h.pos > c.acked_pos"
	         " AND (c.channels IS NULL OR h.channel = ANY (c.channels)))",
	         seg);
	char sql[768];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox.consumer c WHERE %s", need);
	PushActiveSnapshot(GetLatestSnapshot());
	int rc = SPI_execute(sql, true, 1);
	PopActiveSnapshot();
	spi_ok(rc, SPI_OK_SELECT, "reading the consumers");
	bool isnull;
	int64 needing = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (needing == 0)
		return true;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	if (newest >= now - (int64)guc_consumer_max_retention_s * USECS_PER_SEC)
		return false; // held for the consumers
	if (!mark)
		return true;
	// Past the cap: mark them lost. Rows locked by an ack() in progress are skipped, and then
	// the segment is kept this round (never truncated under a consumer that is not marked).
	snprintf(sql, sizeof sql, "SELECT c.name FROM outbox.consumer c WHERE %s FOR UPDATE SKIP LOCKED", need);
	spi_ok(SPI_execute(sql, false, 0), SPI_OK_SELECT, "locking the consumers");
	if ((int64)SPI_processed < needing)
		return false;
	snprintf(sql, sizeof sql,
	         "UPDATE outbox.consumer c SET state = 'lost', lost_at = now(),"
	         " lost_reason = format('Retention removed the events it had not acknowledged (positions %%s to %%s):"
	         " they were older than pg_outbox.consumer_max_retention.', c.acked_pos + 1,"
	         " (SELECT max(h.pos) FROM outbox.history_%d h))"
	         " WHERE %s RETURNING c.name, c.acked_pos",
	         seg, need);
	spi_ok(SPI_execute(sql, false, 0), SPI_OK_UPDATE_RETURNING, "marking consumers lost");
	for (uint64 i = 0; i < SPI_processed; i++)
		ereport(WARNING,
		        (errmsg("pg_outbox: consumer \"%s\" is lost: retention removed events it had not acknowledged",
		                SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)),
		         errdetail("Its acknowledged position is %s; the events were older than "
		                   "pg_outbox.consumer_max_retention (%d s).",
		                   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2), guc_consumer_max_retention_s),
		         errhint("Its next call raises OB001; resynchronise it, then drop it and create it again.")));
	return true;
}

} // namespace pg_outbox

// outbox.create_consumer(name text, channels text[], start text) RETURNS bigint
PGO_FUNCTION(outbox_create_consumer) {
	const char *name = consumer_name_arg(fcinfo, 0);
	bool channels_null = PG_ARGISNULL(1);
	Datum channels = channels_null ? (Datum)0 : PG_GETARG_DATUM(1);
	if (!channels_null) {
		ArrayType *arr = PG_GETARG_ARRAYTYPE_P(1);
		Datum *elems;
		bool *enulls;
		int nelems;
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nelems);
		if (nelems == 0)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("channels cannot be an empty array"),
			                errhint("Pass NULL for every channel.")));
		for (int i = 0; i < nelems; i++) {
			if (enulls[i])
				ereport(ERROR,
				        (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("channel name in channels cannot be NULL"),
				         errhint("Leave NULL elements out of channels; channels => NULL waits for every channel.")));
			text *t = DatumGetTextPP(elems[i]);
			check_channel_or_error(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), "channel name in channels");
		}
		channels = PointerGetDatum(arr);
	}
	if (PG_ARGISNULL(2))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("start cannot be NULL"),
		                errhint("Pass 'now', 'earliest' or a position.")));
	char *start = text_to_cstring(PG_GETARG_TEXT_PP(2));
	enum { Now, Earliest, Position } mode;
	int64 start_pos = 0;
	if (strcmp(start, "now") == 0)
		mode = Now;
	else if (strcmp(start, "earliest") == 0)
		mode = Earliest;
	else {
		char *end = nullptr;
		errno = 0;
		long long v = strtoll(start, &end, 10);
		if (start[0] < '0' || start[0] > '9' || *end != '\0' || errno != 0)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("invalid start \"%s\"", start),
			                errhint("Pass 'now' (events published from now on), 'earliest' (every event still kept) "
			                        "or a position (the events after it).")));
		mode = Position;
		start_pos = (int64)v;
	}
	Oid caller = GetUserId();

	AsOwner as;
	become_owner(&as);
	// the history (and the log) locked before the positions are read: no TRUNCATE can remove
	// events between the horizon read here and the consumer's row becoming visible to retention
	// or to a rotation of the log
	spi_ok(SPI_execute(has_log_tables() ? "LOCK TABLE outbox.history_frozen, outbox.log, outbox.batches IN ACCESS SHARE MODE"
	                                    : "LOCK TABLE outbox.history IN ACCESS SHARE MODE",
	                   false, 0),
	       SPI_OK_UTILITY, "locking the history");
	int64 head, purged;
	read_positions(&head, &purged);
	if (mode == Now)
		start_pos = head;
	else if (mode == Earliest)
		start_pos = purged;
	else if (start_pos < purged)
		ereport(ERROR, (errcode(ERRCODE_OB001),
		                errmsg("cannot start consumer \"%s\" after position %lld: the events up to position %lld have "
		                       "been removed",
		                       name, (long long)start_pos, (long long)purged),
		                errhint("Resynchronise from the source of truth, then start it 'now'.")));
	else if (start_pos > head)
		ereport(ERROR, (errcode(ERRCODE_OB002),
		                errmsg("cannot start consumer \"%s\" after position %lld: the latest published position is "
		                       "%lld",
		                       name, (long long)start_pos, (long long)head),
		                errdetail("The outbox was reset or restored from an older backup, so positions are being "
		                          "handed out again."),
		                errhint("Resynchronise from the source of truth, then start it 'now'.")));
	Oid types[] = {TEXTOID, TEXTARRAYOID, OIDOID, INT8OID};
	Datum args[] = {CStringGetTextDatum(name), channels, ObjectIdGetDatum(caller), Int64GetDatum(start_pos)};
	char nulls[] = {' ', channels_null ? 'n' : ' ', ' ', ' '};
	spi_ok(SPI_execute_with_args("INSERT INTO outbox.consumer (name, channels, owner, acked_pos)"
	                             " VALUES ($1, (SELECT array_agg(DISTINCT u ORDER BY u) FROM unnest($2) u),"
	                             "         $3::regrole, $4)"
	                             " ON CONFLICT (name) DO NOTHING",
	                             4, types, args, nulls, false, 0),
	       SPI_OK_INSERT, "registering the consumer");
	if (SPI_processed != 1)
		ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT), errmsg("consumer \"%s\" already exists", name),
		                errhint("Use it with outbox.next(), or drop it first with outbox.drop_consumer().")));
	end_owner(&as);
	PG_RETURN_INT64(start_pos);
}

// outbox.next(name text, max_events integer, timeout interval)
PGO_FUNCTION(outbox_next) {
	InitMaterializedSRF(fcinfo, 0);
	const char *name = consumer_name_arg(fcinfo, 0);
	max_events_arg(fcinfo, 1);
	int64 timeout_us = timeout_us_arg(fcinfo, 2);
	refuse_snapshot_isolation("outbox.next()");
	Oid caller = GetUserId();

	AsOwner as;
	become_owner(&as);
	Consumer c = read_consumer(name, false);
	end_owner(&as);
	if (!c.found)
		consumer_missing(name);
	check_may_use(name, c, caller, "read");
	if (c.lost)
		consumer_lost(name, c);

	int64 from = c.acked_pos;
	// A filtered consumer behind the retention horizon lost nothing: it is still active in the
	// snapshot that shows the horizon, and retention marks lost, in the transaction that moves the
	// horizon, every active consumer that had not acknowledged an event of its channels it
	// removed. Only other channels' events are gone: replay from the horizon (after the acked
	// position, replay would raise OB001 for them). An unfiltered consumer is never there unless
	// the history was cut by hand: replay says OB001.
	if (!c.channels_null && c.purged_pos > from)
		from = c.purged_pos;
	// Behind the retention horizon at the replay, though not when the consumer was read: another
	// client of this consumer acknowledged past from meanwhile and a rotation (retention) removed
	// what it acknowledged (a consumer it removed unacknowledged events of is lost in the same
	// transaction). Read the consumer again and go on after what it has acknowledged now; OB001
	// ("resynchronise") only when that did not move (the history cut by hand).
	bool behind = false;
	TimestampTz deadline = GetCurrentTimestamp() + timeout_us; // every wait below: the call's timeout
	uint64 n = wait_for_events(fcinfo, &from, c.channels, c.channels_null, PG_GETARG_INT32(1), deadline, &behind);
	for (int again = 0; behind; again++) {
		become_owner(&as);
		Consumer now = read_consumer(name, false);
		end_owner(&as);
		if (!now.found || now.created_at != c.created_at)
			consumer_missing(name); // dropped (and created again) meanwhile
		if (now.lost)
			consumer_lost(name, now);
		behind = false;
		int64 after = now.acked_pos;
		if (!now.channels_null && now.purged_pos > after)
			after = now.purged_pos; // as above: a filtered consumer lost only other channels' events
		bool moved = after > from && again < 3;
		if (moved) {
			from = after;
			c.acked_pos = now.acked_pos;
		}
		// not moved: the check again, raising the horizon's error as it is
		n = wait_for_events(fcinfo, &from, c.channels, c.channels_null, PG_GETARG_INT32(1), deadline,
		                    moved ? &behind : nullptr);
	}
	if (n == 0 && from > c.acked_pos) {
		// nothing of its channels up to from: record that, so that retention need not keep the
		// events of other channels for it (an implicit acknowledgement of nothing)
		// (only the consumer read above: not one dropped and created again meanwhile, whose
		// channels may differ)
		become_owner(&as);
		Oid types[] = {TEXTOID, INT8OID, TEXTARRAYOID, TIMESTAMPTZOID};
		Datum args[] = {CStringGetTextDatum(name), Int64GetDatum(from), c.channels, TimestampTzGetDatum(c.created_at)};
		char nulls[] = {' ', ' ', c.channels_null ? 'n' : ' ', ' '};
		spi_ok(SPI_execute_with_args("UPDATE outbox.consumer SET acked_pos = $2"
		                             " WHERE name = $1 AND state = 'active' AND acked_pos < $2"
		                             "   AND channels IS NOT DISTINCT FROM $3 AND created_at = $4",
		                             4, types, args, nulls, false, 0),
		       SPI_OK_UPDATE, "advancing the consumer");
		end_owner(&as);
	}
	return (Datum)0;
}

// outbox.ack(name text, pos bigint) RETURNS bigint
PGO_FUNCTION(outbox_ack) {
	const char *name = consumer_name_arg(fcinfo, 0);
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("pos cannot be NULL"),
		                errhint("Pass the position of the last event the consumer has processed.")));
	int64 pos = PG_GETARG_INT64(1);
	if (pos < 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("pos must be 0 or more, not %lld", (long long)pos),
		                errhint("Pass the position of the last event the consumer has processed (positions start at 1).")));
	Oid caller = GetUserId();

	AsOwner as;
	become_owner(&as);
	Consumer c = read_consumer(name, true);
	if (!c.found)
		consumer_missing(name);
	check_may_use(name, c, caller, "acknowledge");
	if (c.lost)
		consumer_lost(name, c);
	int64 head, purged;
	read_positions(&head, &purged);
	if (pos > head)
		ereport(ERROR, (errcode(ERRCODE_OB002),
		                errmsg("cannot acknowledge position %lld for consumer \"%s\": the latest published position "
		                       "is %lld",
		                       (long long)pos, name, (long long)head),
		                errdetail("A consumer acknowledges positions it has received; a higher one means the outbox "
		                          "was reset or restored from an older backup."),
		                errhint("Resynchronise from the source of truth, then drop the consumer and create it again.")));
	int64 acked = Max(pos, c.acked_pos); // an older position is a no-op: acknowledgements are monotonic
	Oid types[] = {TEXTOID, INT8OID};
	Datum args[] = {CStringGetTextDatum(name), Int64GetDatum(acked)};
	spi_ok(SPI_execute_with_args("UPDATE outbox.consumer SET acked_pos = $2, last_ack_at = now() WHERE name = $1", 2,
	                             types, args, nullptr, false, 0),
	       SPI_OK_UPDATE, "acknowledging");
	end_owner(&as);
	PG_RETURN_INT64(acked);
}

// outbox.drop_consumer(name text) RETURNS void
PGO_FUNCTION(outbox_drop_consumer) {
	const char *name = consumer_name_arg(fcinfo, 0);
	Oid caller = GetUserId();
	AsOwner as;
	become_owner(&as);
	Consumer c = read_consumer(name, true);
	if (!c.found)
		consumer_missing(name);
	check_may_use(name, c, caller, "drop");
	Oid types[] = {TEXTOID};
	Datum args[] = {CStringGetTextDatum(name)};
	spi_ok(SPI_execute_with_args("DELETE FROM outbox.consumer WHERE name = $1", 1, types, args, nullptr, false, 0),
	       SPI_OK_DELETE, "dropping the consumer");
	end_owner(&as);
	PG_RETURN_VOID();
}
