// log_publish.cpp — the producer of the write-once log (issue #15; doc/storage.md): an event is
// inserted once into outbox.log_<cur_seg>, without the executor (direct.hpp), in the producer's
// transaction: outbox._log_publish(). The row is what outbox._log_insert() (the PL/pgSQL
// reference, src/sql/60_log.sql) inserts: id from outbox.pending_id_seq, xid the producer's
// top-level transaction id (the pass's windows are defined by it), created_at now(). The
// arguments are checked by publish()'s own code (publish.hpp: publish_arguments). With a DBA's
// trigger, rule or generated column on the segment, the row is inserted through SQL instead.
//
// The segment is chosen once per transaction (the first event) and kept to its end: a segment
// chosen just before a rotation is harmless (doc/storage.md, "Rotation and retention": a pass
// scans every segment, and a segment is truncated only under ACCESS EXCLUSIVE, which the
// producer's ROW EXCLUSIVE lock holds off until it ends). Which segment is current is read from
// outbox.log_state once per backend and remembered (known_seg below) until an invalidation says
// it may have moved; the lock on the chosen segment is what makes that safe.
#include "pg_outbox.hpp"
#include "direct.hpp"
#include "guard.hpp"
#include "invalidation.hpp"
#include "log.hpp"
#include "wakeup.hpp"
#include "publish.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "commands/trigger.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"
}

namespace pg_outbox {

enum { kPId, kPXid, kPChannel, kPKey, kPType, kPPayload, kPCreatedAt };
static const ColumnSpec log_pub_cols[] = {{"id", INT8OID},       {"xid", XID8OID},    {"channel", TEXTOID},
                                          {"key", TEXTOID},      {"type", TEXTOID},   {"payload", JSONBOID},
                                          {"created_at", TIMESTAMPTZOID}};
// log_channel_length (1 to 63 bytes) is publish_arguments()'s channel rule, checked again below
static TableLayout log_pub_layout[kLogSegments] = {
    {"log_0", log_pub_cols, lengthof(log_pub_cols), "log_channel_length", nullptr, false, InvalidOid, -1, {}, 0},
    {"log_1", log_pub_cols, lengthof(log_pub_cols), "log_channel_length", nullptr, false, InvalidOid, -1, {}, 0},
    {"log_2", log_pub_cols, lengthof(log_pub_cols), "log_channel_length", nullptr, false, InvalidOid, -1, {}, 0}};

static const ColumnSpec log_state_seg_cols[] = {{"cur_seg", INT4OID}};
static TableLayout log_state_seg_layout = {"log_state", log_state_seg_cols, 1, nullptr, nullptr, false, InvalidOid,
                                           -1,          {},                 0};

static int xact_seg = -1; // the segment this transaction writes (-1: not chosen yet)

// outbox.log_state.cur_seg as this backend last read it (-1: read it again), across transactions.
// What moves cur_seg sends a relcache invalidation that forgets it (log_segment_forget()): a
// rotation TRUNCATEs the segment it makes current (a new relfilenode), and the statement trigger
// log_state_moved (63_log_publish.sql) invalidates outbox.log_state on any INSERT, DELETE or
// UPDATE OF cur_seg (a DBA's, the switch's, a restore's). A rotation sends its invalidations at
// commit before it releases its locks; a backend takes them in at its next transaction start or
// at a lock it did not hold yet, such as the one on the segment it chose (insert_log()).
static int known_seg = -1;
static uint64 seg_forgets = 0; // log_segment_forget() calls that forgot it

void log_segment_forget(Oid relid) {
	bool ours = !OidIsValid(relid) || relid == log_state_seg_layout.relid;
	for (int s = 0; s < kLogSegments && !ours; s++)
		ours = relid == log_pub_layout[s].relid;
	if (!ours)
		return;
	known_seg = -1;
	seg_forgets++;
}

// outbox.pending_id_seq, resolved again whenever a segment's layout is (DDL on it, or a new
// extension: the relids change, so the layouts' generations do)
static Oid id_seq = InvalidOid;
static uint32 id_seq_generation[kLogSegments];

void log_publish_xact_event(XactEvent event) {
	switch (event) {
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
	case XACT_EVENT_PREPARE:
		xact_seg = -1;
		break;
	default:
		break;
	}
}

// outbox.log_state.cur_seg: known_seg, or read with the latest snapshot (the current segment
// now, not as an old REPEATABLE READ snapshot saw it; this transaction's own UPDATE included) and
// remembered unless an invalidation came in meanwhile. *forgets: seg_forgets at the choice.
static int current_segment(uint64 *forgets) {
	*forgets = seg_forgets;
	if (known_seg >= 0)
		return known_seg;
	Relation rel = open_layout(&log_state_seg_layout, AccessShareLock);
	uint64 before = seg_forgets; // the lock above took in what was sent before it: the read is newer
	TableScanDesc scan = table_beginscan(rel, GetLatestSnapshot(), 0, nullptr);
	HeapTuple tup = heap_getnext(scan, ForwardScanDirection);
	bool isnull = true;
	int seg = -1;
	if (tup) {
		Datum d = heap_getattr(tup, log_state_seg_layout.attnum[0], RelationGetDescr(rel), &isnull);
		if (!isnull)
			seg = DatumGetInt32(d);
	}
	table_endscan(scan);
	table_close(rel, NoLock);
	if (!tup)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox: the row of outbox.log_state is missing"), errhint("Reinstall the extension.")));
	if (isnull || seg < 0 || seg >= kLogSegments)
		ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
		                errmsg("pg_outbox: outbox.log_state.cur_seg is %s", isnull ? "NULL" : psprintf("%d", seg)),
		                errhint("Set it to 0, 1 or 2.")));
	*forgets = before;
	if (seg_forgets == before)
		known_seg = seg;
	return seg;
}

void insert_log(const PendingEvent *ev, int n, int64 *ids) {
	check_events_encoding(ev, n);
	wake_worker_at_commit(); // the drain worker publishes the log with pg_outbox.drain_log on
	check_log_xids_producer();
	int seg = xact_seg;
	TableLayout *layout;
	DirectInsert d;
	for (int attempt = 0;; attempt++) {
		uint64 forgets = seg_forgets;
		if (seg < 0)
			seg = current_segment(&forgets);
		layout = &log_pub_layout[seg];
		direct_begin(&d, layout, n > 1 ? kMultiInsertRows : 0);
		// The first lock on the segment in this transaction took in the invalidations sent before
		// it: a rotation committed since the choice (whose TRUNCATE had held the lock off, if it
		// emptied this very segment) makes the transaction choose again, once. Chosen, the segment
		// is kept to the transaction's end, locked.
		if (xact_seg >= 0 || seg_forgets == forgets || attempt > 0)
			break;
		direct_end(&d);
		seg = -1;
	}
	xact_seg = seg;
	refuse_row_security(&d);
	if (d.use_sql) {
		static SPIPlanPtr plans[kLogSegments];
		static const char *const sql[kLogSegments] = {
		    "INSERT INTO outbox.log_0 (channel, key, type, payload) VALUES ($1, $2, $3, $4) RETURNING id",
		    "INSERT INTO outbox.log_1 (channel, key, type, payload) VALUES ($1, $2, $3, $4) RETURNING id",
		    "INSERT INTO outbox.log_2 (channel, key, type, payload) VALUES ($1, $2, $3, $4) RETURNING id"};
		static_assert(kLogSegments == 3, "one INSERT per segment");
		Oid owner = d.rel->rd_rel->relowner;
		direct_end(&d);
		insert_events_sql(owner, &plans[seg], sql[seg], ev, n, ids);
		return;
	}
	if (!OidIsValid(id_seq) || id_seq_generation[seg] != layout->generation) {
		id_seq = pending_id_sequence();
		for (int s = 0; s < kLogSegments; s++)
			id_seq_generation[s] = log_pub_layout[s].generation;
	}
	Datum xid = FullTransactionIdGetDatum(GetTopFullTransactionId()); // assigns one if needed
	Datum now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	for (int i = 0; i < n; i++) {
		// the table's CHECK constraint (publish_arguments() checked it with a better message)
		int len = VARSIZE_ANY_EXHDR(DatumGetTextPP(ev[i].channel));
		if (len < 1 || len > (int)kMaxChannelBytes)
			elog(ERROR, "pg_outbox: channel of %d bytes for outbox.%s", len, layout->relname);
		int64 id = nextval_internal(id_seq, false);
		Datum vals[] = {Int64GetDatum(id), xid, ev[i].channel, ev[i].key, ev[i].type, ev[i].payload, now};
		bool nulls[] = {false, false, false, ev[i].key_null, ev[i].type_null, ev[i].payload_null, false};
		direct_row(&d, vals, nulls);
		if (ids)
			ids[i] = id;
	}
	direct_end(&d);
}

} // namespace pg_outbox

using namespace pg_outbox;

// AFTER INSERT OR DELETE OR UPDATE OF cur_seg ON outbox.log_state FOR EACH STATEMENT
// (log_state_moved, 63_log_publish.sql): every backend forgets the segment it remembered
// (log_segment_forget()) when this transaction commits, and this one at once.
PGO_FUNCTION(outbox_log_state_moved) {
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("outbox._log_state_moved() must be called as a trigger")));
	CacheInvalidateRelcache(((TriggerData *)fcinfo->context)->tg_relation);
	return PointerGetDatum(nullptr);
}

// outbox._log_publish(channel text, payload jsonb, key text, type text) RETURNS bigint
PGO_FUNCTION(outbox_log_publish) {
	PendingEvent e = publish_arguments(fcinfo, "outbox._log_publish()");
	int64 id;
	insert_log(&e, 1, &id);
	if (id == 0) // a BEFORE trigger a DBA put on the segment skipped the event
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}
