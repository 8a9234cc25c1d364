// worker.cpp — the drain worker of one database, started by the launcher (launcher.cpp).
//
// A drain worker sleeps on its latch; producers' commits set it (wakeup.cpp); a safety
// tick (pg_outbox.idle_interval) wakes it otherwise. Each pass is one transaction: check the
// extension and the pause flag, check the NOTIFY queue fill (backpressure), drain a batch.
// The drain itself is drain_failures.cpp (drain()) and drain.cpp (one pass); retention is
// history.cpp.
#include "pg_outbox.hpp"
#include "drain.hpp"
#include "drain_failures.hpp"
#include "guard.hpp"
#include "history.hpp"
#include "log.hpp"
#include "log_pass.hpp"
#include "direct.hpp"
#include "spi_util.hpp"
#include "worker_settings.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
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
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void pg_outbox_drain_main(Datum arg);
}

#include <signal.h>

// ---------------------------------------------------------------------------------------
// drain worker
// ---------------------------------------------------------------------------------------
namespace pg_outbox {
namespace {

WorkerSlot *my_slot = nullptr;

void drain_detach(int, Datum) {
	boundary([&] {
		if (!my_slot)
			return;
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		if (my_slot->pid == MyProcPid) {
			my_slot->pid = 0;
			my_slot->latch = nullptr;
			my_slot->state = WorkerState::Stopped;
		}
		LWLockRelease(shared->lock);
	});
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

// [log mode] The wake-up's pass over the write-once log (issue #15, doc/storage.md), in the
// transaction drain_pass() opened and checked (extension, schema, version, pause read): the C pass
// alone, nothing of 1.2 (nothing is in outbox.pending; outbox.history is frozen). Backpressure:
// over pg_outbox.max_queue_usage the worker waits, without asking whether the log holds anything
// (the log's pending count is a recomputation, too dear every 100 ms of a wait). Retention and
// rotation are log_maintenance(), in transactions of their own.
bool pass_log_mode = false; // the last wake-up's pass was over the log
TimestampTz last_log_rotation = 0;

Pass log_drain_pass(bool paused, int64 *published) {
	pass_log_mode = true;
	double usage = notify_queue_usage();
	my_slot->queue_usage = usage;
	if (paused)
		return Pass::Paused;
	if (usage > guc_max_queue_usage)
		return Pass::Backpressure;
	set_state(WorkerState::Draining);
	pgstat_report_activity(STATE_RUNNING, "pg_outbox: draining the log");
	*published = log_pass(guc_batch_size);
	return Pass::Drained;
}

// The extension's row in pg_extension, one index scan per pass: is it installed, and are its SQL
// objects this library's version (else the worker waits for ALTER EXTENSION UPDATE)?
enum class ExtensionCheck { Missing, OtherVersion, ThisVersion };
ExtensionCheck check_extension(void) {
	Relation rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ, CStringGetDatum("pg_outbox"));
	SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
	HeapTuple tup = systable_getnext(scan);
	ExtensionCheck result = ExtensionCheck::Missing;
	if (HeapTupleIsValid(tup)) {
		bool isnull = true;
		Datum v = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
		result = !isnull && strcmp(TextDatumGetCString(v), PG_OUTBOX_VERSION) == 0 ? ExtensionCheck::ThisVersion
		                                                                          : ExtensionCheck::OtherVersion;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

const ColumnSpec state_paused_cols[] = {{"paused", BOOLOID}};
TableLayout state_paused_layout = {"state", state_paused_cols, 1, nullptr, nullptr, false, InvalidOid, -1, {}, 0};

// How long a busy worker lets commits gather before its next pass, in pass times, and at most
// (see the main loop). pgbench, 2 clients, fsync off, log mode, quiet machine: factor 1 gave
// 34,600 and 32,300 TPS (11 events a pass), factor 4 after passes of 3 or more 46,100, 38,000 and
// 41,000 (28 a pass); the worker paused (producers alone) 55,400 and 50,200. drain_bench.sh's
// latency at 2000 events/s (fsync on), log mode, p50 from the commit's acknowledgement: 0.579 ms
// with it, 0.587 ms without any gathering (factor 4 after every pass: 0.906 ms).
constexpr long kGatherFactor = 4;
// ... only after a pass that published this many events or more: at 2000 events/s a pass
// publishes one or two and the next commit is served at once (latency), under load three or more.
constexpr int64 kGatherMinEvents = 3;
constexpr long kMaxGatherUs = 1000;

// One pass in one transaction. *published gets the number of events published.
Pass drain_pass(int64 *published) {
	Pass result = Pass::Drained;
	*published = 0;
	pass_log_mode = false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	ExtensionCheck ext = check_extension();
	if (ext == ExtensionCheck::Missing)
		result = Pass::NoExtension;
	else {
		// nothing runs as this superuser in a schema someone else controls (schema_guard.cpp)
		(void)check_trusted_schema();
		if (!my_slot->has_extension) {
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			my_slot->has_extension = true; // the launcher learns this database has it
			LWLockRelease(shared->lock);
		}
		// read directly, as the pass reads its tables: this was a saved SPI plan joining
		// outbox.state and pg_extension, which cost a busy worker as much as the log pass itself
		bool right_version = ext == ExtensionCheck::ThisVersion;
		bool paused = right_version && single_row_bool(&state_paused_layout, 0, GetActiveSnapshot(), false);
		if (!right_version) {
			result = Pass::NeedsUpdate;
			goto done;
		}
		// [log mode] the database stores its events in the write-once log (issue #15): the pass of
		// this wake-up is the C pass over the log, in this transaction (log_drain_pass).
		// The pass reads outbox.log_state again (log_pass_batch(), once per batch, the epoch's
		// mode from the same row), and this read cannot serve it, nor it this one: this one
		// chooses the pass, under the transaction's snapshot, before the batch lock that only the
		// log's pass takes (a 1.2 pass holding it would keep the log's rotation out, which asks for
		// it NOWAIT); the pass's read comes after that lock, under a snapshot that sees the batches
		// a pass holding it committed meanwhile (outbox._log_pass(), outbox.drain()).
		if (log_storage_active(GetActiveSnapshot())) {
			result = log_drain_pass(paused, published);
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
		if (paused)
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

// A pass over the log with pg_outbox.drain_log in 1.2 mode (development, until the switch): in a
// transaction of its own, after the 1.2 pass of the same round, which checked the extension, its
// version and the pause.
Pass log_dev_pass(int64 *published) {
	*published = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	(void)check_trusted_schema();
	pgstat_report_activity(STATE_RUNNING, "pg_outbox: draining the log");
	*published = log_pass(guc_batch_size);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	return Pass::Drained;
}

// About once a second, after a pass over the log (log mode, or pg_outbox.drain_log): the log's
// rotation (outbox._log_rotate(pg_outbox.retention): NOWAIT, it never waits) and, in log mode, the
// 1.2 retention of the frozen outbox.history, each in a transaction of its own.
Pass log_maintenance(int64 *) {
	TimestampTz now = GetCurrentTimestamp();
	if (now - last_log_rotation < USECS_PER_SEC)
		return Pass::Drained;
	last_log_rotation = now;
	if (pass_log_mode) {
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		(void)check_trusted_schema();
		lock_history_segments(); // as the 1.2 pass: before the state row retention takes
		maintain_retention();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	(void)check_trusted_schema();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT outbox._log_rotate(make_interval(secs => %d))", guc_retention_s);
	int rc = SPI_execute(sql, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_outbox: rotating the log failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	return Pass::Drained;
}

// Run one pass (drain_pass or log_drain_pass) with its errors caught: an error is logged, the
// transaction aborted, and the worker's status shows it. boundary() inside the PG_TRY: a C++
// exception out of a pass becomes an ERROR caught right here (the pass is retried). Thrown
// through this PG_TRY to the boundary() of the main, it would leave PG_exception_stack pointing
// into this frame, gone by the time that boundary() raises the ERROR: a longjmp into a dead frame.
// Returns false when the pass failed.
bool run_pass(Pass (*pass_fn)(int64 *), Pass *pass, int64 *published, MemoryContext loop_cxt) {
	volatile bool failed = false;
	volatile Pass result = Pass::Drained;
	MemoryContext old = MemoryContextSwitchTo(loop_cxt);
	PG_TRY();
	{ result = boundary([&] { return pass_fn(published); }); }
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
		strlcpy(my_slot->last_error, edata->message ? edata->message : "unknown error", sizeof my_slot->last_error);
		my_slot->last_error_at = GetCurrentTimestamp();
		LWLockRelease(shared->lock);
		failed = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(loop_cxt);
	*pass = result;
	return !failed;
}

} // namespace
} // namespace pg_outbox

using namespace pg_outbox;

extern "C" void pg_outbox_drain_main(Datum arg) {
	boundary([&] {
		Oid dbid = DatumGetObjectId(arg);
		pqsignal(SIGHUP, SignalHandlerForConfigReload);
		pqsignal(SIGTERM, handle_worker_sigterm);
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
			my_slot->ignores_commits = false;
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
			// another database's turn (too few worker processes): step aside between passes, nothing is
			// half done; the launcher starts this database's worker again when its turn comes
			if (my_slot->yield_requested) {
				ereport(DEBUG1, (errmsg("pg_outbox drain worker: stepping aside for a database that waits for a worker")));
				exit_worker(ExitReason::Yielded);
			}
			if (ConfigReloadPending) {
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
			}
			CHECK_FOR_INTERRUPTS();

			int64 published = 0;
			Pass pass = Pass::Drained;
			TimestampTz pass_started = GetCurrentTimestamp();
			bool failed = !run_pass(drain_pass, &pass, &published, loop_cxt);
			long pass_us = (long)(GetCurrentTimestamp() - pass_started);
			if (failed)
				published = 0; // its transaction rolled back
			int64 log_published = 0;
			bool log_cut = false; // the log pass's batch was cut: the rest of its window is committed
			int64 noted_pos = last_drained_pos;
			if (pass_log_mode) {
				// log mode: that was the wake-up's one pass, over the log
				log_cut = !failed && log_pass_cut;
				noted_pos = log_pass_last_pos;
			} else if (!failed && pass == Pass::Drained && guc_drain_log) {
				// pg_outbox.drain_log in 1.2 mode: a pass of its own over the log after the 1.2 one (its
				// positions are the log's own space: not the status's)
				Pass log_result;
				failed = !run_pass(log_dev_pass, &log_result, &log_published, loop_cxt);
				log_cut = !failed && log_pass_cut;
			}
			if (published > 0) {
				LWLockAcquire(shared->lock, LW_EXCLUSIVE);
				note_published(my_slot, (uint64)published, noted_pos);
				LWLockRelease(shared->lock);
				if (!pass_log_mode)
					published_since_vacuum += published;
			}
			// Retention goes on whatever the wake-up's pass did in log mode: paused, under backpressure or
			// failing, the worker still removes what retention lets go (as 1.2's drain_pass() does before
			// it looks at the pause); else the log grew without bound while nothing published. A pass that
			// failed before it reached the log (pass_log_mode false: the extension, the schema's trust)
			// rotates nothing. A log restored from a cluster ahead, whose every pass fails, is safe:
			// outbox._log_rotate() defers while the log names transactions this cluster has not reached.
			if (pass_log_mode || (!failed && pass == Pass::Drained && guc_drain_log)) {
				Pass maint_result;
				int64 none = 0;
				bool maintained = run_pass(log_maintenance, &maint_result, &none, loop_cxt);
				failed = failed || !maintained;
			}

			// paused: commits need not wake it (wakeup.hpp); outbox.resume() does
			my_slot->ignores_commits = !failed && pass == Pass::Paused;
			long timeout = guc_idle_interval_ms;
			if (failed) {
				set_state(WorkerState::Idle);
				timeout = 1000; // retry after a second
			} else if (pass == Pass::NoExtension) {
				// DEBUG1: the launcher probes every database this way, a LOG line each would be noise
				ereport(DEBUG1, (errmsg("pg_outbox drain worker: extension pg_outbox is not installed in this "
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
				if (!pass_log_mode)
					maybe_vacuum_pending(); // log mode: nothing writes outbox.pending
				set_state(WorkerState::Idle);
				pgstat_report_activity(STATE_IDLE, "pg_outbox: idle, waiting for commits");
				if (!announced) {
					announced = true;
					// a new turn (too few worker processes, see the launcher) is not worth a LOG line each
					ereport(my_slot->quiet_start ? DEBUG1 : LOG, (errmsg("pg_outbox drain worker started")));
				}
				// more may be waiting: no sleep (a log batch is also cut short where its window goes on
				// into the next segment; the commits' wake-ups were spent on this round)
				if (published >= guc_batch_size || log_published >= guc_batch_size || log_cut)
					continue;
			}
			// Commits that came during the pass set the latch: the worker is busy, and the next pass
			// would publish only what committed while this one ran, paying the pass's fixed cost
			// (transaction, snapshot, catalog checks, batch row, commit) for a handful of events, on
			// the CPUs the producers need. So it first lets the commits gather for kGatherFactor
			// times as long as the last pass took (at most kMaxGatherUs): its CPU share stays at most
			// about 1 / (1 + kGatherFactor) while producers outpace it, each pass publishes several
			// times as many events, and an event waits at most that much longer. Idle or lightly loaded (the latch not set when
			// a pass ends), a commit's wake-up starts the pass at once: latency is not traded.
			if (!failed && pass == Pass::Drained && published >= kGatherMinEvents && MyLatch->is_set && !got_sigterm)
				pg_usleep(Min(kGatherFactor * pass_us, kMaxGatherUs));
			int rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			// Woken by a commit: optionally let more commits gather, so that one drain transaction
			// publishes them together (throughput) instead of one each (latency).
			if ((rc & WL_LATCH_SET) && guc_batch_delay_ms > 0 && !got_sigterm)
				(void)WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, guc_batch_delay_ms, PG_WAIT_EXTENSION);
		}
	});
}
