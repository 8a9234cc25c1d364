// drain_failures.cpp — drain(): what the worker and outbox.drain() run. It runs drain_batch()
// (drain.cpp) in subtransactions and, when a pass fails, finds the event at fault, records it in
// outbox.failures, retries it later and finally moves it to outbox.dead_letter.
#include "pg_outbox.hpp"
#include "drain_failures.hpp"
#include "drain.hpp"
#include "guard.hpp"
#include "log.hpp"
#include "log_pass.hpp"
#include "pg_compat.hpp"
#include "spi_util.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"
}

namespace pg_outbox {

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

// pg_outbox._fail_event_ids: "id[:SQLSTATE]" separated by commas, at most kMaxFaults (tests only)
constexpr int kMaxFaults = 32;
static char *guc_fail_event_ids = nullptr;
static struct {
	int64 id;
	int sqlstate;
} faults[kMaxFaults];
static int nfaults = 0;
bool fault_hook_armed = false;

// Parse s into out (nullptr: only check); the number of entries, or -1 if s is not such a list.
static int parse_faults(const char *s, decltype(faults) *out) {
	int n = 0;
	const char *p = s ? s : "";
	while (*p == ' ')
		p++;
	while (*p) {
		char *end;
		errno = 0;
		long long id = strtoll(p, &end, 10);
		if (end == p || errno != 0 || id < 1 || n == kMaxFaults)
			return -1;
		p = end;
		int code = ERRCODE_DATA_EXCEPTION;
		if (*p == ':') {
			p++;
			for (int i = 0; i < 5; i++)
				if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'Z')))
					return -1;
			code = MAKE_SQLSTATE(p[0], p[1], p[2], p[3], p[4]);
			p += 5;
		}
		if (out) {
			(*out)[n].id = id;
			(*out)[n].sqlstate = code;
		}
		n++;
		while (*p == ' ')
			p++;
		if (*p == ',') {
			p++;
			while (*p == ' ')
				p++;
			if (!*p)
				return -1;
		} else if (*p)
			return -1;
	}
	return n;
}

static bool check_fail_event_ids(char **newval, void **, GucSource) {
	return boundary([&]() -> bool {
		if (parse_faults(*newval, nullptr) >= 0)
			return true;
		GUC_check_errdetail("A comma-separated list of event ids, each optionally followed by :SQLSTATE "
		                    "(five digits or capital letters), at most %d, is expected.",
		                    kMaxFaults);
		return false;
	});
}

static void assign_fail_event_ids(const char *newval, void *) {
	boundary([&] {
		nfaults = Max(parse_faults(newval, &faults), 0);
		fault_hook_armed = nfaults > 0;
	});
}

void fault_hook(int64 id) {
	for (int i = 0; i < nfaults; i++)
		if (faults[i].id == id)
			ereport(ERROR, (errcode(faults[i].sqlstate),
			                errmsg("pg_outbox: the hand-off of event %lld failed by pg_outbox._fail_event_ids",
			                       (long long)id),
			                errdetail("A fault injected for tests."),
			                errhint("RESET pg_outbox._fail_event_ids.")));
}

void define_retry_gucs(void) {
	DefineCustomStringVariable("pg_outbox._fail_event_ids",
	                           "Tests only: the hand-off of these events over the log fails (id[:SQLSTATE],...).",
	                           nullptr, &guc_fail_event_ids, "", PGC_SUSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
	                           check_fail_event_ids, assign_fail_event_ids, nullptr);
	DefineCustomIntVariable("pg_outbox.max_attempts",
	                        "How many times an event that fails alone is tried before it moves to outbox.dead_letter.",
	                        nullptr, &guc_max_attempts, 5, 1, 1000, PGC_SUSET, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("pg_outbox.retry_delay",
	                        "How long an event that failed alone waits before it is tried again (doubling per "
	                        "attempt, at most 5 minutes; 0: at every drain).",
	                        nullptr, &guc_retry_delay_ms, 1000, 0, kMaxRetryDelayMs, PGC_SUSET, GUC_UNIT_MS, nullptr,
	                        nullptr, nullptr);
}

bool error_of_system(int sqlerrcode) {
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

// An event that failed alone in a pass: in log mode also the row of the log that failed (row, seg).
struct LoneFailure {
	int64 id;
	ErrorData *edata;
	bool known; // it had failed before (a retry that failed again)
	bool log;
	LogRow row;
	int seg;
};

static void dead_letter(const LoneFailure *f, int attempts);

// dead_letter() in a subtransaction: if even moving the event fails (a foreign key a DBA made
// reference outbox.pending, say), say so and leave the event pending — the events behind it are
// still published.
static void dead_letter_guarded(const LoneFailure *f, int attempts) {
	int64 id = f->id;
	ErrorData *cause = f->edata;
	struct Args {
		const LoneFailure *f;
		int attempts;
	} args{f, attempts};
	ErrorData *edata = run_in_subxact(
	    [](void *p) {
		    Args *a = static_cast<Args *>(p);
		    dead_letter(a->f, a->attempts);
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

// Run drain_batch() (drain.cpp) in a subtransaction. Returns the count, or -1 with *edata set on error.
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

static void dead_letter(const LoneFailure *f, int attempts) {
	int64 id = f->id;
	ErrorData *edata = f->edata;
	// [log mode] the row stays in the log, left out of its batch: withheld while a pass would still
	// read it (it failed in a window no batch was written for)
	bool withhold = false;
	if (f->log) {
		CommandCounterIncrement(); // the batches this transaction wrote
		PushActiveSnapshot(GetTransactionSnapshot());
		withhold = log_row_pending(f->seg, f->row.xid, f->row.id);
		PopActiveSnapshot();
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	Oid types[] = {INT8OID, TEXTOID, TEXTOID, XID8OID, INT4OID};
	Datum args[] = {Int64GetDatum(id), CStringGetTextDatum(edata->message ? edata->message : "unknown error"),
	                CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode)),
	                FullTransactionIdGetDatum(FullTransactionIdFromU64(f->row.xid)), Int32GetDatum(f->seg)};
	char log_sql[640];
	if (f->log)
		snprintf(log_sql, sizeof log_sql,
		         "WITH d AS (SELECT l.* FROM outbox.log_%d l WHERE l.xid = $4 AND l.id = $1),"
		         " w AS (INSERT INTO outbox.withheld (id, xid, seg) SELECT $1, $4, $5 WHERE %s"
		         "  ON CONFLICT DO NOTHING),"
		         " i AS (INSERT INTO outbox.dead_letter (id, channel, key, type, payload, created_at,"
		         "                                 failed_at, error, sqlstate)"
		         "  SELECT id, channel, key, type, payload, created_at, now(), $2, $3 FROM d"
		         "  RETURNING id)"
		         " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i)",
		         f->seg, withhold ? "true" : "false");
	// both counts: a DBA's trigger or rule on outbox.dead_letter that skips the row must not make
	// the event vanish
	int rc = SPI_execute_with_args(f->log ? log_sql
	                                      : "WITH d AS (DELETE FROM outbox.pending WHERE id = $1 RETURNING *),"
	                                        " i AS (INSERT INTO outbox.dead_letter (id, channel, key, type, payload,"
	                                        "                                 created_at, failed_at, error, sqlstate)"
	                                        "  SELECT id, channel, key, type, payload, created_at, now(), $2, $3 FROM d"
	                                        "  RETURNING id)"
	                                        " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i)",
	                               f->log ? 5 : 3, types, args, nullptr, false, 0);
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

// Record one more failure of event id alone; returns its attempts so far. [log mode] The failures
// row names the row of the log that failed (xid, seg), which the passes leave out until it is due.
static int record_failure(const LoneFailure *lf) {
	int64 id = lf->id;
	ErrorData *edata = lf->edata;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	static SPIPlanPtr plan = nullptr, plan_next = nullptr;
	if (!plan) {
		Oid types[] = {INT8OID, TEXTOID, TEXTOID, XID8OID, INT4OID};
		plan = keep_plan("INSERT INTO outbox.failures AS f (id, attempts, first_failed_at, last_failed_at,"
		                 "                                 next_attempt_at, error, sqlstate, xid, seg, copied)"
		                 " VALUES ($1, 1, now(), now(), now(), $2, $3, $4, $5, false)"
		                 " ON CONFLICT (id) DO UPDATE SET attempts = f.attempts + 1, last_failed_at = now(),"
		                 "   error = excluded.error, sqlstate = excluded.sqlstate, xid = excluded.xid,"
		                 "   seg = excluded.seg, copied = false"
		                 " RETURNING attempts",
		                 5, types);
		Oid ntypes[] = {INT8OID, FLOAT8OID};
		plan_next = keep_plan("UPDATE outbox.failures SET next_attempt_at = now() + $2 * interval '1 ms'"
		                      " WHERE id = $1",
		                      2, ntypes);
	}
	Datum args[] = {Int64GetDatum(id), CStringGetTextDatum(edata->message ? edata->message : "unknown error"),
	                CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode)),
	                FullTransactionIdGetDatum(FullTransactionIdFromU64(lf->row.xid)), Int32GetDatum(lf->seg)};
	const char nulls[] = {' ', ' ', ' ', lf->log ? ' ' : 'n', lf->log ? ' ' : 'n'};
	int rc = SPI_execute_plan(plan, args, nulls, false, 0);
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

// Count the lone failures of a pass — unless nothing at all was published and two or more events
// that had not failed before failed alone (a retry that fails again while others work, or while
// it is alone, is the event's): the system's fault, not each event's, retried and not counted.
static void count_lone_failures(LoneFailure *lone, int nlone, int64 published) {
	int first_new = -1, nnew = 0;
	for (int k = 0; k < nlone; k++)
		if (!lone[k].known && nnew++ == 0)
			first_new = k;
	if (published == 0 && nnew >= 2)
		ReThrowError(lone[first_new].edata);
	for (int k = 0; k < nlone; k++) {
		int attempts = record_failure(&lone[k]);
		if (attempts >= guc_max_attempts)
			dead_letter_guarded(&lone[k], attempts);
		else
			ereport(LOG, (errmsg("pg_outbox: event %lld failed (attempt %d of %d), publishing the events behind it",
			                     (long long)lone[k].id, attempts, guc_max_attempts),
			              errdetail("%s (SQLSTATE %s)", lone[k].edata->message ? lone[k].edata->message : "unknown error",
			                        unpack_sql_state(lone[k].edata->sqlerrcode))));
		FreeErrorData(lone[k].edata);
	}
}

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
	LoneFailure lone[kMaxLoneFailuresPerPass + 1] = {};
	int nlone = 0; // lone failures
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
			lone[nlone++] = {f.ids[k], edata, true, false, {}, -1};
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
		lone[nlone++] = {id, edata, false, false, {}, -1};
		add_failure(&f, id);
		size = max_events;
	}

	// 3. count the lone failures
	count_lone_failures(lone, nlone, published);
	return published;
}

// ---------------------------------------------------------------------------------------
// [log mode] The same failure path over the write-once log (issue #15; doc/storage.md, "Failures,
// retries, dead letters, discard")
//
// log_pass() runs the batch (log_pass_batch(), log_pass.cpp) in a subtransaction. When the hand-off
// of an event fails, the pass knows which event it was (log_pass_fault): no halving is needed (1.2
// halves because its set-based statements do not say which row failed). The events before it go
// out first, in a batch cut before it; the event is then the first of the next batch, and if it
// fails there too it fails alone: the batch is run again with its row left out (its id in the
// batch's skipped; positions stay gap-free), and it is counted as in 1.2 (count_lone_failures():
// the same rules, the same systemic exception, the same error_of_system()). A failed row stays in
// its segment; when it is due, outbox._log_retry_due() copies it into the current segment with the
// pass's own xid (a later window tries the copy, the copy gets the event's one position) and the
// failures row follows the copy (copied). A failed row that a pass would still read (no batch was
// written for its window: it had no other event) is withheld (outbox.withheld) once it is copied,
// dead-lettered or discarded; a batch that leaves it out retires it. The normal path reads none of
// this: one look at each of the two tables, and a pass without SPI when both are empty.
// ---------------------------------------------------------------------------------------

static LogRow row_of(HeapTuple tup, TupleDesc desc) {
	bool isnull;
	LogRow r;
	r.id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	r.xid = U64FromFullTransactionId(DatumGetFullTransactionId(SPI_getbinval(tup, desc, 2, &isnull)));
	return r;
}

// The due retries copied, stale withheld rows gone; then the rows the batches must leave out
// (failed rows not yet copied, withheld rows) and the copies to watch, each sorted by (id, xid).
// skip has room for `room` more.
static void load_known(LogPassKnown *k, LogRow **skip, int room) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	int rc = SPI_execute("SELECT outbox._log_retry_due()", false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_outbox: copying the retries that are due failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute("DELETE FROM outbox.withheld w WHERE NOT outbox._log_row_pending(w.seg, w.xid, w.id)", false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "pg_outbox: cleaning outbox.withheld failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute("SELECT f.id, f.xid, f.copied FROM outbox.failures f WHERE f.xid IS NOT NULL"
	                 " UNION ALL SELECT w.id, w.xid, false FROM outbox.withheld w ORDER BY 1, 2",
	                 false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_outbox: reading outbox.failures failed: %s", SPI_result_code_string(rc));
	int n = (int)SPI_processed;
	LogRow *sk = (LogRow *)MemoryContextAlloc(CurTransactionContext, sizeof(LogRow) * (n + room + 1));
	LogRow *wa = (LogRow *)MemoryContextAlloc(CurTransactionContext, sizeof(LogRow) * (n + 1));
	int nsk = 0, nwa = 0;
	for (int r = 0; r < n; r++) {
		HeapTuple tup = SPI_tuptable->vals[r];
		bool isnull;
		bool copied = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
		if (copied)
			wa[nwa++] = row_of(tup, SPI_tuptable->tupdesc);
		else
			sk[nsk++] = row_of(tup, SPI_tuptable->tupdesc);
	}
	SPI_finish();
	*skip = sk;
	k->skip = sk;
	k->nskip = nsk;
	k->watch = wa;
	k->nwatch = nwa;
}

static void insert_row(LogRow *rows, int *n, LogRow r) {
	int k = *n;
	while (k > 0 && (rows[k - 1].id > r.id || (rows[k - 1].id == r.id && rows[k - 1].xid > r.xid))) {
		rows[k] = rows[k - 1];
		k--;
	}
	rows[k] = r;
	(*n)++;
}

static Datum rows_array(const LogRow *rows, int n, bool xids) {
	Datum *d = (Datum *)palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
		d[i] = xids ? FullTransactionIdGetDatum(FullTransactionIdFromU64(rows[i].xid)) : Int64GetDatum(rows[i].id);
	return PointerGetDatum(construct_array(d, n, xids ? XID8OID : INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

// What the committed batches did: withheld rows they left out are retired, and the events whose
// watched copy they published leave outbox.failures.
static void forget_known(const LogRow *left_out, int nleft, const LogRow *published, int npub) {
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	Oid types[] = {INT8ARRAYOID, XID8ARRAYOID};
	Datum a[] = {rows_array(left_out, nleft, false), rows_array(left_out, nleft, true)};
	int rc = SPI_execute_with_args("DELETE FROM outbox.withheld w USING unnest($1, $2) u(id, xid)"
	                               " WHERE w.id = u.id AND w.xid = u.xid",
	                               2, types, a, nullptr, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "pg_outbox: cleaning outbox.withheld failed: %s", SPI_result_code_string(rc));
	Datum b[] = {rows_array(published, npub, false), rows_array(published, npub, true)};
	rc = SPI_execute_with_args("DELETE FROM outbox.failures f USING unnest($1, $2) u(id, xid)"
	                           " WHERE f.id = u.id AND f.xid = u.xid AND f.copied",
	                           2, types, b, nullptr, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "pg_outbox: cleaning outbox.failures failed: %s", SPI_result_code_string(rc));
	SPI_finish();
}

// log_pass_batch() in a subtransaction. Returns the count, or -1 with *edata set on error.
static int64 batch_in_subxact(int max_events, const LogPassKnown *known, LogPassOutcome *out, ErrorData **edata) {
	struct Args {
		int max_events;
		const LogPassKnown *known;
		LogPassOutcome *out;
		int64 n;
	} args{max_events, known, out, -1};
	*edata = run_in_subxact(
	    [](void *p) {
		    Args *a = static_cast<Args *>(p);
		    a->n = log_pass_batch(a->max_events, a->known, a->out);
	    },
	    &args);
	return *edata ? -1 : args.n;
}

// The drain worker's passes run without a subtransaction while nothing fails: a one-event pass
// costs about 330,000 instructions with its commit in a subtransaction, 15,000 of them the
// subtransaction itself and its xid (callgrind, one-event passes in a single-user backend). A
// pass that fails then aborts the worker's transaction (logged, retried after a second, as any
// failed pass), and the worker's next pass, not having seen this one end, runs in
// subtransactions, as outbox.drain() and outbox._log_pass() always do.
static bool worker_pass_unfinished = false;

int64 log_pass(int max_events) {
	log_pass_prepare(); // the checks, the batch lock: held across the batches below
	bool worker = compat::am_background_worker();
	bool known_rows = log_failure_rows_exist();
	if (worker && !known_rows && !worker_pass_unfinished) {
		worker_pass_unfinished = true; // until it returns
		LogPassOutcome none{};
		int64 n = log_pass_batch(max_events, nullptr, &none);
		worker_pass_unfinished = false;
		return n;
	}
	if (worker)
		worker_pass_unfinished = true;
	LogPassKnown known{nullptr, 0, nullptr, 0};
	LogRow *skip = nullptr;
	if (known_rows)
		load_known(&known, &skip, kMaxLoneFailuresPerPass);
	else {
		skip = (LogRow *)palloc(sizeof(LogRow) * (kMaxLoneFailuresPerPass + 1));
		known.skip = skip;
	}
	int room = known.nskip + kMaxLoneFailuresPerPass + 1;
	LogPassOutcome out;
	out.left_out = (LogRow *)palloc(sizeof(LogRow) * room);
	out.published = (LogRow *)palloc(sizeof(LogRow) * (known.nwatch + 1));
	// what the batches that stay did with the known rows (a row is left out or published once)
	LogRow *left_all = (LogRow *)palloc(sizeof(LogRow) * room);
	LogRow *pub_all = (LogRow *)palloc(sizeof(LogRow) * (known.nwatch + 1));
	int nleft_all = 0, npub_all = 0;

	LoneFailure lone[kMaxLoneFailuresPerPass + 1] = {};
	int nlone = 0;
	int64 published = 0;
	int cap = max_events;
	bool cut_before_culprit = false;
	bool failed_last = false;
	while (published < max_events && nlone < kMaxLoneFailuresPerPass) {
		CHECK_FOR_INTERRUPTS();
		ErrorData *edata;
		int64 n = batch_in_subxact(cap, &known, &out, &edata);
		failed_last = edata != nullptr;
		if (!edata) {
			published += n;
			if (out.wrote_batch) {
				memcpy(left_all + nleft_all, out.left_out, sizeof(LogRow) * out.nleft_out);
				nleft_all += out.nleft_out;
				memcpy(pub_all + npub_all, out.published, sizeof(LogRow) * out.npublished);
				npub_all += out.npublished;
			}
			if (!cut_before_culprit || n < cap)
				break;
			cut_before_culprit = false; // the failing event comes first in the next batch
			cap = (int)(max_events - published);
			continue;
		}
		if (error_of_system(edata->sqlerrcode) || log_pass_fault.id == 0)
			ReThrowError(edata); // the system's, or no event's (the batch row, the channels): retried
		LogPassFault f = log_pass_fault;
		if (f.before > 0) { // publish the events before it first
			cap = f.before;
			cut_before_culprit = true;
			FreeErrorData(edata);
			continue;
		}
		LogRow r{f.id, f.xid};
		lone[nlone++] = {f.id, edata, rows_contain(known.watch, known.nwatch, r), true, r, f.seg};
		insert_row(skip, &known.nskip, r);
		cut_before_culprit = false;
		cap = (int)(max_events - published);
	}
	if (failed_last)
		log_pass_cut = true; // stopped at kMaxLoneFailuresPerPass: the worker comes back at once
	if (nleft_all > 0 || npub_all > 0)
		forget_known(left_all, nleft_all, pub_all, npub_all);
	count_lone_failures(lone, nlone, published);
	worker_pass_unfinished = false;
	return published;
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox.drain(max_events int DEFAULT 1000) RETURNS bigint
PGO_FUNCTION(outbox_drain) {
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("max_events cannot be NULL")));
	int32 max_events = PG_GETARG_INT32(0);
	if (max_events < 1)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("max_events must be at least 1, not %d", max_events)));
	if (max_events > kMaxDrainEvents)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("max_events must be at most %d, not %d", kMaxDrainEvents, max_events),
		                errhint("One call publishes at most %d events in one transaction: call it again for more.",
		                        kMaxDrainEvents)));
	check_writable("outbox.drain()");
	// [log mode] the database stores its events in the write-once log (issue #15): one C pass over
	// it (log_pass.cpp), as the drain worker runs; the log's failure path is not built yet
	check_installed_version();
	if (log_storage_active(GetActiveSnapshot())) {
		if (XactIsoLevel != XACT_READ_COMMITTED)
			ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			                errmsg("outbox.drain() cannot run in a REPEATABLE READ or SERIALIZABLE transaction"),
			                errdetail("This database stores its events in the write-once log, whose pass takes its "
			                          "snapshot after the batch lock."),
			                errhint("Call it in autocommit mode or in a READ COMMITTED transaction.")));
		bool own_rows = log_has_own_rows();
		int64 n = log_pass(max_events);
		if (own_rows)
			ereport(NOTICE,
			        (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			         errmsg("outbox.drain() did not publish the events of its own transaction"),
			         errdetail("This database stores its events in the write-once log: a pass publishes the events "
			                   "of committed transactions only, and counts the calling transaction as in progress."),
			         errhint("Commit the events first, then call outbox.drain() in another transaction (the drain "
			                 "worker publishes them after the commit by itself).")));
		PG_RETURN_INT64(n);
	}
	PG_RETURN_INT64(drain(max_events));
}
