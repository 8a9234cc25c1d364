// admin.cpp — what a DBA reads about the drain worker: its status as shared memory sees it
// (outbox._worker_status(), outbox.worker_pids()), the NOTIFY queue usage, and the small SQL
// helpers of the PL/pgSQL functions (wake at commit, check writable). Dead letters and retries
// are drain_failures.cpp; retention and purge() are history.cpp; pause and resume are SQL
// (they set outbox.state.paused, which the worker reads each pass).
#include "pg_outbox.hpp"
#include "drain.hpp"
#include "guard.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
}

using namespace pg_outbox;

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
		// no worker process was free for this database: it waits for its turn (launcher.cpp)
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
	wake_worker_always_at_commit();
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

// outbox.notify_queue_usage() — pg_notification_queue_usage(), for the status view.
PGO_FUNCTION(outbox_queue_usage) {
	PG_RETURN_FLOAT8(notify_queue_usage());
}
