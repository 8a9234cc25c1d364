// health.cpp — what outbox.health() (src/sql/96_observe.sql) needs from C: its thresholds, as
// GUCs checked when they are set, and the launcher's list of databases that wait for a worker
// process (shared memory).
//
// Each threshold GUC holds two values, "warning,critical" (pg_outbox.health_pending =
// '10000,100000'), each with the unit the GUC names ('1min,5min', '1GB,10GB'). A check hook
// parses them once, when the value is set or reloaded: a value that does not parse, is
// negative, or has a warning above its critical is refused with a detail saying why (at SET,
// or at reload, where the old value stays). health() reads the parsed pairs through
// outbox._health_threshold(name); a check is 'warning' at or above the first value, 'critical'
// at or above the second.
#include "pg_outbox.hpp"
#include "guard.hpp"
#include "pg_compat.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace pg_outbox {

namespace {

struct Pair {
	double warning;
	double critical;
};

// One threshold GUC: its name after "pg_outbox.health_", its unit (GUC_UNIT_* for parse_real), an
// upper bound for its values, the factor that turns the parsed value into the value health()
// compares (MB -> bytes), and the live pair.
struct Threshold {
	const char *name;
	const char *boot;
	const char *description;
	int unit;
	double max;
	double scale;
	char *value; // the GUC's string
	Pair pair;
};

Threshold thresholds[] = {
    {"pending", "10000,100000", "Pending events at which outbox.health() warns, and at which it is critical.", 0, 1e15,
     1, nullptr, {10000, 100000}},
    {"pending_age", "1min,5min",
     "Age of the oldest pending event at which outbox.health() warns, and at which it is critical.", GUC_UNIT_S, 1e12,
     1, nullptr, {60, 300}},
    {"queue_usage", "0.2,0.5", "NOTIFY queue usage (0..1) at which outbox.health() warns, and at which it is critical.",
     0, 1, 1, nullptr, {0.2, 0.5}},
    {"dead_letters", "1,100",
     "Dead letters within pg_outbox.health_dead_letter_window at which outbox.health() warns, and at which it is "
     "critical.",
     0, 1e15, 1, nullptr, {1, 100}},
    {"consumer_lag", "5min,1h",
     "Age of a named consumer's oldest unacknowledged event at which outbox.health() warns, and at which it is "
     "critical.",
     GUC_UNIT_S, 1e12, 1, nullptr, {300, 3600}},
    {"wal_retained", "1GB,10GB",
     "WAL retained by a logical replication slot of this database at which outbox.health() warns, and at which it is "
     "critical.",
     GUC_UNIT_MB, 1e12, 1024.0 * 1024.0, nullptr, {1024.0 * 1024 * 1024, 10240.0 * 1024 * 1024}},
};
constexpr int kThresholds = sizeof thresholds / sizeof thresholds[0];

int guc_dead_letter_window_s = 3600;

// Parse one "warning,critical" value of t. No Postgres error is raised here (a check hook
// reports through GUC_check_errdetail), and nothing here owns a destructor.
bool parse_pair(const Threshold &t, const char *value, Pair *out) {
	const char *comma = value ? strchr(value, ',') : nullptr;
	if (!comma || strchr(comma + 1, ',')) {
		GUC_check_errdetail("Two values are expected, \"warning,critical\" (for example \"%s\").", t.boot);
		return false;
	}
	char part[2][128];
	size_t len0 = (size_t)(comma - value);
	size_t len1 = strlen(comma + 1);
	if (len0 >= sizeof part[0] || len1 >= sizeof part[1]) {
		GUC_check_errdetail("A value is too long.");
		return false;
	}
	memcpy(part[0], value, len0);
	part[0][len0] = '\0';
	memcpy(part[1], comma + 1, len1 + 1);
	double v[2];
	for (int i = 0; i < 2; i++) {
		const char *hint = nullptr;
		if (!parse_real(part[i], &v[i], t.unit, &hint) || std::isnan(v[i]) || std::isinf(v[i])) {
			GUC_check_errdetail("The %s value \"%s\" is not a number%s.", i == 0 ? "warning" : "critical", part[i],
			                    t.unit ? " with a valid unit" : "");
			if (hint)
				GUC_check_errhint("%s", hint);
			return false;
		}
		if (v[i] < 0 || v[i] > t.max) {
			GUC_check_errdetail("The %s value must be between 0 and %g.", i == 0 ? "warning" : "critical", t.max);
			return false;
		}
	}
	if (v[0] > v[1]) {
		GUC_check_errdetail("The warning value (%s) must not be above the critical value (%s).", part[0], part[1]);
		return false;
	}
	out->warning = v[0] * t.scale;
	out->critical = v[1] * t.scale;
	return true;
}

// GUC hooks get no context argument: one pair of hooks per threshold, by index.
template <int I> bool check_threshold(char **newval, void **extra, GucSource) {
	return boundary([&]() -> bool {
		Pair p;
		if (!parse_pair(thresholds[I], *newval, &p))
			return false;
		Pair *e = (Pair *)compat::guc_extra_alloc(sizeof(Pair)); // GUC extra: freed by guc.c
		if (!e) {
			GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
			return false;
		}
		*e = p;
		*extra = e;
		return true;
	});
}

template <int I> void assign_threshold(const char *, void *extra) {
	boundary([&] {
		if (extra)
			thresholds[I].pair = *(Pair *)extra;
	});
}

template <int I> void define_threshold() {
	Threshold &t = thresholds[I];
	char *name = psprintf("pg_outbox.health_%s", t.name);
	DefineCustomStringVariable(name, t.description,
	                           t.unit == GUC_UNIT_S    ? "Two values, warning and critical, in seconds unless a unit is "
	                                                     "given (s, min, h, d)."
	                           : t.unit == GUC_UNIT_MB ? "Two values, warning and critical, in megabytes unless a unit "
	                                                     "is given (kB, MB, GB, TB)."
	                                                   : "Two values, warning and critical.",
	                           &t.value, t.boot, PGC_USERSET, 0, check_threshold<I>, assign_threshold<I>, nullptr);
}

template <int... I> void define_all(std::integer_sequence<int, I...>) {
	(define_threshold<I>(), ...);
}

} // namespace

void define_health_gucs(void) {
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext); // the names outlive this call
	define_all(std::make_integer_sequence<int, kThresholds>{});
	MemoryContextSwitchTo(old);
	DefineCustomIntVariable("pg_outbox.health_dead_letter_window",
	                        "How far back outbox.health() counts dead letters as recent.", nullptr,
	                        &guc_dead_letter_window_s, 3600, 1, INT_MAX, PGC_USERSET, GUC_UNIT_S, nullptr, nullptr,
	                        nullptr);
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox._health_threshold(name text, OUT warning double precision, OUT critical double precision)
// — the parsed values of pg_outbox.health_<name> (bytes for wal_retained, seconds for ages);
// dead_letter_window gives the window in seconds as both.
PGO_FUNCTION(outbox_health_threshold) {
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("threshold name cannot be NULL")));
	char *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Pair p;
	bool found = false;
	if (strcmp(name, "dead_letter_window") == 0) {
		p.warning = p.critical = guc_dead_letter_window_s;
		found = true;
	}
	for (int i = 0; i < kThresholds && !found; i++)
		if (strcmp(name, thresholds[i].name) == 0) {
			p = thresholds[i].pair;
			found = true;
		}
	if (!found)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("no health threshold \"%s\"", name),
		                errhint("The thresholds are the settings pg_outbox.health_*.")));
	TupleDesc tupdesc;
	if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_outbox: return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	Datum values[2] = {Float8GetDatum(p.warning), Float8GetDatum(p.critical)};
	bool nulls[2] = {false, false};
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

// outbox._waiting_databases() RETURNS TABLE (database oid, since timestamptz) — the databases
// (of the whole cluster) that have the extension and wait for a drain worker because no
// background worker process was free (the launcher's list, shared->waiting; launcher.cpp).
PGO_FUNCTION(outbox_waiting_databases) {
	InitMaterializedSRF(fcinfo, 0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;
	if (!shared)
		PG_RETURN_NULL();
	int n = 0;
	WaitingDb *copy = (WaitingDb *)palloc(sizeof(WaitingDb) * kMaxWaiting);
	LWLockAcquire(shared->lock, LW_SHARED);
	n = shared->nwaiting;
	if (n > kMaxWaiting)
		n = kMaxWaiting;
	if (n > 0)
		memcpy(copy, shared->waiting, sizeof(WaitingDb) * n);
	LWLockRelease(shared->lock);
	for (int i = 0; i < n; i++) {
		Datum values[2] = {ObjectIdGetDatum(copy[i].dbid), TimestampTzGetDatum(copy[i].since)};
		bool nulls[2] = {false, copy[i].since == 0};
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_NULL();
}
