// log_publish.cpp — the producer of the write-once log (issue #15; doc/storage.md): an event is
// inserted once into outbox.log_<cur_seg>, without the executor (direct.hpp), in the producer's
// transaction: outbox._log_publish(). The row is what outbox._log_insert() (the PL/pgSQL
// reference, src/sql/60_log.sql) inserts: id from outbox.pending_id_seq, xid the producer's
// top-level transaction id (the pass's windows are defined by it), created_at now(). The
// arguments are checked by publish()'s own code (publish.hpp: publish_arguments). With a DBA's
// trigger, rule or generated column on the segment, the row is inserted through SQL instead.
//
// cur_seg is read once per transaction (the first event) and kept to its end: a segment read
// just before a rotation is harmless (doc/storage.md, "Rotation and retention": a pass scans
// every segment, and a segment is truncated only under ACCESS EXCLUSIVE, which the producer's
// ROW EXCLUSIVE lock holds off until it ends).
#include "pg_outbox.hpp"
#include "direct.hpp"
#include "guard.hpp"
#include "log.hpp"
#include "wakeup.hpp"
#include "publish.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "fmgr.h"
#include "utils/builtins.h"
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

static int xact_seg = -1; // cur_seg as this transaction first read it (-1: not read yet)

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

// outbox.log_state.cur_seg, read with the statement's snapshot (as _log_insert's SELECT reads it).
static int current_segment(void) {
	if (xact_seg >= 0)
		return xact_seg;
	Relation rel = open_layout(&log_state_seg_layout, AccessShareLock);
	Snapshot snap = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
	TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
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
	xact_seg = seg;
	return seg;
}

void insert_log(const PendingEvent *ev, int n, int64 *ids) {
	check_events_encoding(ev, n);
	wake_worker_at_commit(); // the drain worker publishes the log with pg_outbox.drain_log on
	int seg = current_segment();
	check_log_xids_producer();
	TableLayout *layout = &log_pub_layout[seg];
	DirectInsert d;
	direct_begin(&d, layout, n > 1 ? kMultiInsertRows : 0);
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

// outbox._log_publish(channel text, payload jsonb, key text, type text) RETURNS bigint
PGO_FUNCTION(outbox_log_publish) {
	PendingEvent e = publish_arguments(fcinfo, "outbox._log_publish()");
	int64 id;
	insert_log(&e, 1, &id);
	if (id == 0) // a BEFORE trigger a DBA put on the segment skipped the event
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}
