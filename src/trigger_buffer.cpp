// trigger_buffer.cpp — the outbox-mode event buffer of the change trigger (trigger_buffer.hpp),
// its transaction and subtransaction callbacks, and the hooks that flush it.
#include "pg_outbox.hpp" // pure C++ (envelope.hpp) first
#include "trigger_buffer.hpp"
#include "guard.hpp"
#include "publish.hpp"
#include "log.hpp"
#include "spi_util.hpp"
#include "xact_events.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "parser/parse_func.h"
#include "tcop/utility.h"
#include "access/xact.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/date.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
}

namespace pg_outbox {

// ---- outbox mode: events are buffered per statement and written 64 at a time ----
//
// A row only appends its event to a buffer (in TopTransactionContext); the events are written
// into outbox.pending or, in log mode, the log (insert_events(), 64 rows per table_multi_insert) at the end of the
// statement that fired the row trigger, in the order the rows were changed:
//   - the statement trigger outbox_flush (AFTER ... FOR EACH STATEMENT, created by attach in
//     outbox mode);
//   - the end of every query (ExecutorFinish hook: its AFTER triggers have all fired by then)
//     and of every utility statement (ProcessUtility hook: COPY, SET CONSTRAINTS, CALL): this
//     covers what fires our row trigger but no statement trigger of ours — a partition written
//     directly (its cloned row trigger; statement triggers are not cloned), COPY into one;
//   - a full buffer (kFlushEvents), and the transaction's pre-commit/pre-prepare (deferred
//     constraint triggers fire just before it).
//
// Subtransactions (savepoints, PL/pgSQL EXCEPTION blocks, psql ON_ERROR_ROLLBACK, JDBC
// autosave): every event records the nesting level of the subtransaction it was made in. A row
// written into outbox.pending belongs to the subtransaction current at that moment, so an event
// is only ever written by a flush at its own level — never into a deeper subtransaction that
// could roll back while its own commits. A rolled-back subtransaction drops its events (a
// flush at that level already wrote some? then its rows are rolled back with it); a released
// one hands them to its parent. The buffer is ordered by level (a new event is always at the
// deepest open level), so a flush writes the whole buffer when every event is at the current
// level, and otherwise waits: the events made inside a subtransaction that began while
// older events were buffered (a DBA's AFTER trigger with an EXCEPTION block running between
// our row trigger's calls) are written when that subtransaction is released, in order with the
// others. Only a level that alone holds kFlushEvents events is written early, out of order
// with the older events (they all commit together, still each exactly once).

struct BufferedEvent {
	int level;
	char *channel; // one palloc with key: pfree'd when the event is written or dropped
	char *key;     // nullptr: NULL
	const char *type;
	Datum payload; // jsonb
};

constexpr int kFlushEvents = 10000;
static MemoryContext buffer_cxt = nullptr;
static BufferedEvent *buffer = nullptr;
static int buffer_len = 0, buffer_cap = 0;
static int flushing_level = 0; // > 0 while flush_events() runs (a DBA's trigger on pending can reenter)

static void free_event(BufferedEvent *e) {
	pfree(e->channel);
	if (e->payload)
		pfree(DatumGetPointer(e->payload));
}

// Write the buffered events from index first on (all of the current level) into
// outbox.pending, as the table's owner: the writer of the row need not have any right on the
// outbox schema (as with foreign-key checks).
static void write_events(int first) {
	Oid save_user;
	int save_sec;
	GetUserIdAndSecContext(&save_user, &save_sec);
	// As the owner, with search_path pinned: a CHECK constraint, an index expression or a trigger
	// a DBA put on outbox.pending runs with the owner's rights, so nothing the writer put in its
	// own search_path may resolve inside it. (Not a security-restricted operation: a deferred
	// trigger of the DBA's, a deferred foreign key say, must be able to fire at commit.) The pin is
	// made where such a thing runs: direct_begin() when the table has one, spi_as_owner() for the
	// SQL path.
	SetUserIdAndSecContext(pending_owner(), save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
	int n = buffer_len - first;
	PendingEvent *ev = (PendingEvent *)palloc(n * sizeof(PendingEvent));
	for (int k = 0; k < n; k++) {
		BufferedEvent *e = &buffer[first + k];
		ev[k].channel = CStringGetTextDatum(e->channel);
		ev[k].key_null = e->key == nullptr;
		ev[k].key = e->key ? CStringGetTextDatum(e->key) : (Datum)0;
		ev[k].type_null = false;
		ev[k].type = CStringGetTextDatum(e->type);
		ev[k].payload_null = false;
		ev[k].payload = e->payload;
	}
	flushing_level = GetCurrentTransactionNestLevel();
	insert_events(ev, n, nullptr); // the log in log mode, outbox.pending in 1.2 mode
	flushing_level = 0;
	for (int k = 0; k < n; k++) {
		pfree(DatumGetPointer(ev[k].channel));
		if (!ev[k].key_null)
			pfree(DatumGetPointer(ev[k].key));
		pfree(DatumGetPointer(ev[k].type));
	}
	pfree(ev);
	SetUserIdAndSecContext(save_user, save_sec);
	// only now: an error above leaves the buffer to the (sub)transaction's abort. Events a DBA's
	// trigger on outbox.pending made meanwhile (appended after first + n) stay buffered: the
	// caller, flush_events(), writes them in its next round.
	for (int k = first; k < first + n; k++)
		free_event(&buffer[k]);
	int added = buffer_len - (first + n);
	if (added > 0)
		memmove(&buffer[first], &buffer[first + n], added * sizeof(BufferedEvent));
	buffer_len = first + added;
	if (buffer_len == 0) {
		MemoryContextReset(buffer_cxt); // a large statement's buffer goes back
		buffer = nullptr;
		buffer_cap = 0;
	}
}

// Write what may be written now (see above): every event, if all are of the current level;
// else the current level's events only if they alone fill the buffer (bounded memory). Again
// while a write left new events of the current level behind (a DBA's trigger on
// outbox.pending that writes an attached table): the flush at pre-commit is the last one, so
// nothing may stay buffered after it (each round writes at least one event; a chain of
// triggers that never ends is the DBA's endless loop, and can be cancelled).
void flush_events(void) {
	if (flushing_level > 0)
		return;
	int level = GetCurrentTransactionNestLevel();
	while (buffer_len > 0) {
		if (buffer[0].level == level) {
			write_events(0);
		} else {
			int first = buffer_len;
			while (first > 0 && buffer[first - 1].level == level)
				first--;
			if (buffer_len - first < kFlushEvents)
				return;
			write_events(first);
		}
		CHECK_FOR_INTERRUPTS();
	}
}

// flush_events() where no statement may be running (commit, the end of a utility statement):
// give the INSERT a snapshot of its own if there is none.
static void flush_events_with_snapshot(void) {
	bool snap = !ActiveSnapshotSet();
	if (snap)
		PushActiveSnapshot(GetTransactionSnapshot());
	flush_events();
	if (snap)
		PopActiveSnapshot();
}

// the end of a transaction (xact_events.cpp)
void trigger_buffer_xact_event(XactEvent event) {
	switch (event) {
	case XACT_EVENT_PRE_COMMIT:
	case XACT_EVENT_PRE_PREPARE:
		// at the top level: every event is of level 1 now. The deferred triggers have fired just
		// before this callback: those this write queues (a DBA's deferred trigger or foreign key
		// on outbox.pending) would be dropped unfired, so fire them here — and write what they
		// buffer in turn (the change trigger made a deferred constraint trigger).
		while (buffer_len > 0) {
			flush_events_with_snapshot();
			if (buffer_len > 0) // a flush left interrupted (cannot be): fail the commit, lose nothing
				elog(ERROR, "pg_outbox: %d buffered events could not be written at commit", buffer_len);
			AfterTriggerFireDeferred();
		}
		break;
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PREPARE:
	case XACT_EVENT_PARALLEL_COMMIT:
	case XACT_EVENT_PARALLEL_ABORT:
		// buffer_cxt lives in TopTransactionContext, which goes away now
		buffer_cxt = nullptr;
		buffer = nullptr;
		buffer_len = buffer_cap = 0;
		flushing_level = 0;
		break;
	default:
		break;
	}
}

void trigger_buffer_subxact_event(SubXactEvent event, int level) {
	if (event == SUBXACT_EVENT_ABORT_SUB) {
		while (buffer_len > 0 && buffer[buffer_len - 1].level >= level)
			free_event(&buffer[--buffer_len]);
		if (flushing_level >= level)
			flushing_level = 0; // the flush that ran at this level was interrupted by the error
	} else if (event == SUBXACT_EVENT_COMMIT_SUB) {
		for (int k = buffer_len - 1; k >= 0 && buffer[k].level >= level; k--)
			buffer[k].level = level - 1;
	}
}

void buffer_event(const char *channel, const char *key, const char *type, const Jsonb *payload) {
	if (!buffer_cxt)
		buffer_cxt = AllocSetContextCreate(TopTransactionContext, "pg_outbox event buffer", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(buffer_cxt);
	if (buffer_len == buffer_cap) {
		int cap = buffer_cap ? buffer_cap * 2 : 64;
		buffer = buffer ? (BufferedEvent *)repalloc(buffer, cap * sizeof(BufferedEvent))
		                : (BufferedEvent *)palloc(cap * sizeof(BufferedEvent));
		buffer_cap = cap;
	}
	size_t clen = strlen(channel), klen = key ? strlen(key) : 0;
	char *strings = (char *)palloc(clen + 1 + (key ? klen + 1 : 0));
	memcpy(strings, channel, clen + 1);
	if (key)
		memcpy(strings + clen + 1, key, klen + 1);
	Jsonb *copy = (Jsonb *)palloc(VARSIZE(payload));
	memcpy(copy, payload, VARSIZE(payload));
	Datum jb = PointerGetDatum(copy);
	MemoryContextSwitchTo(old);
	BufferedEvent *e = &buffer[buffer_len];
	e->level = GetCurrentTransactionNestLevel();
	e->channel = strings;
	e->key = key ? strings + clen + 1 : nullptr;
	e->type = type; // a string constant
	e->payload = jb;
	buffer_len++;
	if (buffer_len >= kFlushEvents)
		flush_events();
}

// The hooks that flush at the end of every query and utility statement.
static ExecutorFinish_hook_type prev_executor_finish = nullptr;
static ProcessUtility_hook_type prev_process_utility = nullptr;

static void flush_executor_finish(QueryDesc *qd) {
	boundary([&] {
		if (prev_executor_finish)
			prev_executor_finish(qd);
		else
			standard_ExecutorFinish(qd);
		if (buffer_len > 0)
			flush_events_with_snapshot();
	});
}

static void flush_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
                                  ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *queryEnv,
                                  DestReceiver *dest, QueryCompletion *qc) {
	boundary([&] {
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		// not after SAVEPOINT/RELEASE/ROLLBACK/COMMIT: the subtransaction callbacks and the commit
		// handle the buffer there
		if (buffer_len > 0 && !IsA(pstmt->utilityStmt, TransactionStmt) && IsTransactionState())
			flush_events_with_snapshot();
	});
}

void install_trigger_hooks(void) {
	prev_executor_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = flush_executor_finish;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = flush_process_utility;
}

} // namespace pg_outbox
