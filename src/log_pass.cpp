// log_pass.cpp — the drain pass over the write-once log (issue #15; doc/storage.md), in C, without
// SPI: outbox._log_pass(max_events). It does what the reference pass outbox._log_pass_sql()
// (src/sql/60_log.sql) does, and regress log_pass_c / isolation log_pass_c check that the two
// publish the same batches, positions, seqs and envelopes:
//   1. lock outbox.batches (and its segments' tables) in SHARE ROW EXCLUSIVE mode: passes run one
//      at a time, readers are not blocked; then take a fresh snapshot (READ COMMITTED only: with a
//      transaction snapshot a pass that waited for another would hand out its positions again);
//   2. read outbox.log_state and the latest batch (a backward scan of each batches_N's primary key);
//   3. choose the window: the rest of the latest batch's window if it was cut, else (latest hi,
//      current snapshot with this transaction counted as in progress];
//   4. read its rows from one segment, oldest segment first, in (xid, id) order, with the segment's
//      (xid, id) btree: an exact probe per xid of lo's xip that hi sees committed, then the range
//      [max(lo.xmax, after), hi.xmax) — each a keyset continuation, never a re-scan;
//   5. stamp positions (first_pos + k) and seqs (per channel, from the seq cache below), NOTIFY
//      each event with the 1.2 drain's envelope (drain.hpp: hand_off_event), and insert the batch row
//      (direct.hpp: no executor; through SQL when a DBA put triggers on the table).
// Everything is in the caller's transaction: the batch row and the NOTIFYs commit or roll back
// together.
//
// The seq cache: last_seq of every channel this process has seen, complete (a miss is a new
// channel) because it is loaded from outbox.log_channels plus every batch after
// channels_flushed_pos, then kept up to date from the batches other processes wrote (those after
// the position it covers). It is dropped when that cannot be shown: a batch table or log_channels
// was truncated or rewritten (rotation, DROP/CREATE EXTENSION), the batches after it are not
// contiguous, or a transaction that ran a pass ended in anything but a commit.
#include "pg_outbox.hpp"
#include "direct.hpp"
#include "drain.hpp"
#include "guard.hpp"
#include "log.hpp"
#include "pg_compat.hpp"
#include "rights.hpp"
#include "spi_util.hpp"
#include "xact_events.hpp"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"
}

namespace pg_outbox {


// The stored form of pg_snapshot (xid8funcs.c). It is written into tables as it is, so pg_upgrade
// keeps it and it cannot change between majors; xip is sorted ascending without duplicates
// (pg_current_snapshot and pg_snapshot_in both make it so).
struct PgSnapshot {
	int32 vl_len_;
	uint32 nxip;
	FullTransactionId xmin;
	FullTransactionId xmax;
	FullTransactionId xip[FLEXIBLE_ARRAY_MEMBER];
};

static inline uint64 fxid(FullTransactionId x) {
	return U64FromFullTransactionId(x);
}

// pg_visible_in_snapshot(x, s)
static bool visible_in(const PgSnapshot *s, uint64 x) {
	if (x < fxid(s->xmin))
		return true;
	if (x >= fxid(s->xmax))
		return false;
	uint32 lo = 0, hi = s->nxip;
	while (lo < hi) {
		uint32 mid = lo + (hi - lo) / 2;
		uint64 m = fxid(s->xip[mid]);
		if (m == x)
			return false;
		if (m < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return true;
}

// The snapshot a pass records as its hi: the current one, with this transaction in progress
// (outbox._log_pass_snapshot(): a snapshot leaves its own xid out of xip).
static PgSnapshot *pass_snapshot(void) {
	PgSnapshot *snap = (PgSnapshot *)DatumGetPointer(DirectFunctionCall1(pg_current_snapshot, (Datum)0));
	FullTransactionId own = GetTopFullTransactionIdIfAny();
	if (!FullTransactionIdIsValid(own) || fxid(own) >= fxid(snap->xmax))
		return snap;
	for (uint32 i = 0; i < snap->nxip; i++)
		if (fxid(snap->xip[i]) == fxid(own))
			return snap;
	Size size = offsetof(PgSnapshot, xip) + sizeof(FullTransactionId) * (snap->nxip + 1);
	PgSnapshot *out = (PgSnapshot *)palloc0(size);
	SET_VARSIZE(out, size);
	out->nxip = snap->nxip + 1;
	out->xmin = fxid(own) < fxid(snap->xmin) ? own : snap->xmin;
	out->xmax = snap->xmax;
	uint32 k = 0, i = 0;
	bool placed = false;
	while (k < out->nxip) {
		if (!placed && (i == snap->nxip || fxid(own) < fxid(snap->xip[i]))) {
			out->xip[k++] = own;
			placed = true;
		} else
			out->xip[k++] = snap->xip[i++];
	}
	return out;
}

// ---------------------------------------------------------------------------------------
// The tables
// ---------------------------------------------------------------------------------------
enum { kLogId, kLogXid, kLogChannel, kLogKey, kLogType, kLogPayload };
static const ColumnSpec log_cols[] = {{"id", INT8OID},  {"xid", XID8OID},  {"channel", TEXTOID},
                                      {"key", TEXTOID}, {"type", TEXTOID}, {"payload", JSONBOID}};
static TableLayout log_layout[kLogSegments] = {
    {"log_0", log_cols, lengthof(log_cols), "log_channel_length", nullptr, false, InvalidOid, -1, {}, 0},
    {"log_1", log_cols, lengthof(log_cols), "log_channel_length", nullptr, false, InvalidOid, -1, {}, 0},
    {"log_2", log_cols, lengthof(log_cols), "log_channel_length", nullptr, false, InvalidOid, -1, {}, 0}};

enum {
	kBFirstPos, kBN, kBSeg, kBLo, kBHi, kBAfterXid, kBAfterId, kBUptoXid, kBUptoId, kBCut, kBSkipped,
	kBChannels, kBFirstSeqs, kBCounts, kBEpoch, kBatchCols
};
static_assert(kBatchCols <= kMaxLayoutColumns, "direct.hpp: a layout maps at most kMaxLayoutColumns");
static const ColumnSpec batch_cols[] = {
    {"first_pos", INT8OID},    {"n", INT4OID},          {"seg", INT4OID},        {"lo_snap", PG_SNAPSHOTOID},
    {"hi_snap", PG_SNAPSHOTOID}, {"after_xid", XID8OID}, {"after_id", INT8OID},   {"upto_xid", XID8OID},
    {"upto_id", INT8OID},      {"cut", BOOLOID},        {"skipped", INT8ARRAYOID}, {"channels", TEXTARRAYOID},
    {"first_seqs", INT8ARRAYOID}, {"counts", INT4ARRAYOID}, {"epoch", INT8OID}};
static_assert(lengthof(batch_cols) == kBatchCols, "one column spec per batch column");
static TableLayout batch_layout[kLogSegments] = {
    {"batches_0", batch_cols, lengthof(batch_cols), nullptr, nullptr, false, InvalidOid, -1, {}, 0},
    {"batches_1", batch_cols, lengthof(batch_cols), nullptr, nullptr, false, InvalidOid, -1, {}, 0},
    {"batches_2", batch_cols, lengthof(batch_cols), nullptr, nullptr, false, InvalidOid, -1, {}, 0}};

enum { kSCurSeg, kSBasePos, kSBaseSnap, kSPurgedPos, kSFlushedPos };
static const ColumnSpec log_state_cols[] = {{"cur_seg", INT4OID},
                                            {"base_pos", INT8OID},
                                            {"base_snap", PG_SNAPSHOTOID},
                                            {"purged_pos", INT8OID},
                                            {"channels_flushed_pos", INT8OID}};
static TableLayout log_state_layout = {"log_state", log_state_cols, lengthof(log_state_cols), nullptr, nullptr, false,
                                       InvalidOid,  -1,             {},                       0};

static const ColumnSpec log_channels_cols[] = {{"channel", TEXTOID}, {"last_seq", INT8OID}};
static TableLayout log_channels_layout = {"log_channels", log_channels_cols, lengthof(log_channels_cols), nullptr,
                                          nullptr,        false,             InvalidOid,                  -1,
                                          {},             0};

static const ColumnSpec state_epoch_cols[] = {{"epoch", INT8OID}};
static TableLayout state_epoch_layout = {"state", state_epoch_cols, 1, nullptr, nullptr, false, InvalidOid, -1, {}, 0};
static TableLayout epochs_layout = {"epochs", state_epoch_cols, 1, nullptr, nullptr, false, InvalidOid, -1, {}, 0};

// The one row of a one-row table (outbox.log_state, outbox.state), copied; errors if missing.
static HeapTuple single_row(TableLayout *t, Snapshot snap, TupleDesc *desc) {
	Relation rel = open_layout(t, AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
	HeapTuple tup = heap_getnext(scan, ForwardScanDirection);
	HeapTuple copy = tup ? heap_copytuple(tup) : nullptr;
	table_endscan(scan);
	*desc = RelationGetDescr(rel);
	table_close(rel, NoLock);
	if (!copy)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox: the row of outbox.%s is missing", t->relname),
		                errhint("Reinstall the extension.")));
	return copy;
}

static Datum col_notnull(HeapTuple tup, TupleDesc desc, const TableLayout *t, int c) {
	bool isnull;
	Datum d = heap_getattr(tup, t->attnum[c], desc, &isnull);
	if (isnull)
		ereport(ERROR, (errcode(ERRCODE_NOT_NULL_VIOLATION),
		                errmsg("pg_outbox: column \"%s\" of outbox.%s is NULL", t->cols[c].name, t->relname),
		                errhint("Reinstall the extension.")));
	return d;
}

// The index of rel whose key columns are exactly (a1[, a2]), in that order (btree).
static Oid index_on(Relation rel, AttrNumber a1, AttrNumber a2, const char *what) {
	List *indexes = RelationGetIndexList(rel);
	ListCell *lc;
	Oid found = InvalidOid;
	foreach (lc, indexes) {
		Oid ix = lfirst_oid(lc);
		Relation irel = index_open(ix, AccessShareLock);
		Form_pg_index form = irel->rd_index;
		bool match = irel->rd_rel->relam == BTREE_AM_OID && form->indisvalid && form->indnkeyatts == (a2 ? 2 : 1) &&
		             form->indkey.values[0] == a1 && (!a2 || form->indkey.values[1] == a2) &&
		             RelationGetIndexPredicate(irel) == NIL;
		index_close(irel, NoLock);
		if (match) {
			found = ix;
			break;
		}
	}
	list_free(indexes);
	if (!OidIsValid(found))
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox: table %s has no btree index on %s", RelationGetRelationName(rel), what),
		                errhint("Reinstall the extension.")));
	return found;
}

static int64 read_epoch(Snapshot snap) {
	TupleDesc desc;
	HeapTuple st = single_row(&state_epoch_layout, snap, &desc);
	int64 epoch = DatumGetInt64(col_notnull(st, desc, &state_epoch_layout, 0));
	// greatest(state.epoch, max(epochs.epoch)), as outbox.epoch(): the newest epochs row
	Relation rel = open_layout(&epochs_layout, AccessShareLock);
	Oid pk = compat::primary_key_index(rel);
	if (OidIsValid(pk)) {
		Relation idx = index_open(pk, AccessShareLock);
		IndexScanDesc scan = compat::index_beginscan(rel, idx, snap, 0, 0);
		index_rescan(scan, nullptr, 0, nullptr, 0);
		TupleTableSlot *slot = table_slot_create(rel, nullptr);
		if (index_getnext_slot(scan, BackwardScanDirection, slot)) {
			bool isnull;
			Datum d = slot_getattr(slot, epochs_layout.attnum[0], &isnull);
			if (!isnull && DatumGetInt64(d) > epoch)
				epoch = DatumGetInt64(d);
		}
		index_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
		index_close(idx, NoLock);
	}
	table_close(rel, NoLock);
	return epoch;
}

// ---------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------
struct Batch {
	int64 first_pos;
	int32 n;
	int seg;
	PgSnapshot *lo, *hi;
	uint64 after_xid, upto_xid;
	int64 after_id, upto_id;
	bool cut;
};

static Batch read_batch(HeapTuple tup, TupleDesc desc, const TableLayout *t) {
	Batch b;
	b.first_pos = DatumGetInt64(col_notnull(tup, desc, t, kBFirstPos));
	b.n = DatumGetInt32(col_notnull(tup, desc, t, kBN));
	b.seg = DatumGetInt32(col_notnull(tup, desc, t, kBSeg));
	b.lo = (PgSnapshot *)PG_DETOAST_DATUM_COPY(col_notnull(tup, desc, t, kBLo));
	b.hi = (PgSnapshot *)PG_DETOAST_DATUM_COPY(col_notnull(tup, desc, t, kBHi));
	b.after_xid = fxid(DatumGetFullTransactionId(col_notnull(tup, desc, t, kBAfterXid)));
	b.after_id = DatumGetInt64(col_notnull(tup, desc, t, kBAfterId));
	b.upto_xid = fxid(DatumGetFullTransactionId(col_notnull(tup, desc, t, kBUptoXid)));
	b.upto_id = DatumGetInt64(col_notnull(tup, desc, t, kBUptoId));
	b.cut = DatumGetBool(col_notnull(tup, desc, t, kBCut));
	if (b.seg < 0 || b.seg >= kLogSegments)
		ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
		                errmsg("pg_outbox: batch at position %lld names segment %d", (long long)b.first_pos, b.seg),
		                errhint("Reinstall the extension.")));
	return b;
}

// A scan of one batch table in first_pos order (its primary key), from after (or from the start).
struct BatchScan {
	Relation rel, idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	const TableLayout *t;
};

static void batch_scan_begin(BatchScan *b, int s, Snapshot snap, const int64 *after) {
	b->t = &batch_layout[s];
	b->rel = open_layout(&batch_layout[s], AccessShareLock);
	b->idx = index_open(index_on(b->rel, batch_layout[s].attnum[kBFirstPos], 0, "first_pos"), AccessShareLock);
	ScanKeyData key;
	if (after)
		ScanKeyInit(&key, 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(*after));
	b->scan = compat::index_beginscan(b->rel, b->idx, snap, after ? 1 : 0, 0);
	index_rescan(b->scan, after ? &key : nullptr, after ? 1 : 0, nullptr, 0);
	b->slot = table_slot_create(b->rel, nullptr);
}

// The next batch row in direction (nullptr: none); *should_free as ExecFetchSlotHeapTuple's.
static HeapTuple batch_scan_next(BatchScan *b, ScanDirection direction, bool *should_free) {
	if (!index_getnext_slot(b->scan, direction, b->slot))
		return nullptr;
	return ExecFetchSlotHeapTuple(b->slot, false, should_free);
}

static void batch_scan_end(BatchScan *b) {
	index_endscan(b->scan);
	ExecDropSingleTupleTableSlot(b->slot);
	index_close(b->idx, NoLock);
	table_close(b->rel, NoLock);
}

// The batch with the highest first_pos (false: none yet).
static bool latest_batch(Snapshot snap, Batch *out) {
	bool found = false;
	for (int s = 0; s < kLogSegments; s++) {
		BatchScan bs;
		batch_scan_begin(&bs, s, snap, nullptr);
		bool should_free;
		HeapTuple tup = batch_scan_next(&bs, BackwardScanDirection, &should_free);
		if (tup) {
			TupleDesc desc = RelationGetDescr(bs.rel);
			int64 fp = DatumGetInt64(col_notnull(tup, desc, bs.t, kBFirstPos));
			if (!found || fp > out->first_pos) {
				*out = read_batch(tup, desc, bs.t);
				found = true;
			}
			if (should_free)
				heap_freetuple(tup);
		}
		batch_scan_end(&bs);
	}
	return found;
}

// ---------------------------------------------------------------------------------------
// The seq cache
// ---------------------------------------------------------------------------------------
struct SeqEntry {
	char name[NAMEDATALEN]; // hash key
	int64 last_seq;
};

static struct {
	MemoryContext cxt;
	HTAB *seqs;
	bool valid;
	int64 upto_pos;                   // the cache has every batch up to this position
	Oid filenode[kLogSegments + 1];   // batches_0..N-1 and log_channels when it was loaded
	bool pass_in_xact;                // a pass ran in the current transaction
} cache;

static void cache_drop(void) {
	if (cache.cxt)
		MemoryContextReset(cache.cxt);
	cache.seqs = nullptr;
	cache.valid = false;
}

void log_pass_xact_event(XactEvent event) {
	if (!cache.pass_in_xact)
		return;
	switch (event) {
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_PARALLEL_COMMIT:
		cache.pass_in_xact = false;
		break;
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PARALLEL_ABORT:
	case XACT_EVENT_PREPARE: // it may still be rolled back, by anyone
		cache.pass_in_xact = false;
		cache_drop();
		break;
	default:
		break;
	}
}

void log_pass_subxact_event(SubXactEvent event, int) {
	if (cache.pass_in_xact && event == SUBXACT_EVENT_ABORT_SUB)
		cache_drop(); // the pass may have run in the subtransaction rolled back
}

// A hash table keyed by a channel name (a string below NAMEDATALEN bytes) in cxt.
static HTAB *name_hash(const char *what, Size entrysize, long size, MemoryContext cxt) {
	HASHCTL ctl;
	memset(&ctl, 0, sizeof ctl);
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = entrysize;
	ctl.hcxt = cxt;
	return hash_create(what, size, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

static SeqEntry *seq_entry(const char *name, bool *found) {
	return (SeqEntry *)hash_search(cache.seqs, name, HASH_ENTER, found);
}

static void seq_raise(const char *name, int64 last) {
	bool found;
	SeqEntry *e = seq_entry(name, &found);
	if (!found || e->last_seq < last)
		e->last_seq = last;
}

// Apply every batch with first_pos > after to the cache; returns the positions they cover (sum of n)
// and their highest end in *end.
static int64 apply_batches_after(int64 after, Snapshot snap, int64 *end) {
	int64 covered = 0;
	*end = after;
	for (int s = 0; s < kLogSegments; s++) {
		BatchScan bs;
		batch_scan_begin(&bs, s, snap, &after);
		TupleDesc desc = RelationGetDescr(bs.rel);
		const TableLayout *t = bs.t;
		bool should_free;
		for (HeapTuple tup; (tup = batch_scan_next(&bs, ForwardScanDirection, &should_free)) != nullptr;) {
			int64 fp = DatumGetInt64(col_notnull(tup, desc, t, kBFirstPos));
			int32 n = DatumGetInt32(col_notnull(tup, desc, t, kBN));
			ArrayType *chs = DatumGetArrayTypeP(col_notnull(tup, desc, t, kBChannels));
			ArrayType *firsts = DatumGetArrayTypeP(col_notnull(tup, desc, t, kBFirstSeqs));
			ArrayType *counts = DatumGetArrayTypeP(col_notnull(tup, desc, t, kBCounts));
			Datum *cv, *fv, *nv;
			bool *cn, *fn, *nn;
			int nc, nf, nn_;
			deconstruct_array(chs, TEXTOID, -1, false, TYPALIGN_INT, &cv, &cn, &nc);
			deconstruct_array(firsts, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &fv, &fn, &nf);
			deconstruct_array(counts, INT4OID, 4, true, TYPALIGN_INT, &nv, &nn, &nn_);
			if (nc != nf || nc != nn_)
				ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
				                errmsg("pg_outbox: batch at position %lld has %d channels, %d first seqs and %d counts",
				                       (long long)fp, nc, nf, nn_)));
			MemoryContext old = MemoryContextSwitchTo(cache.cxt);
			for (int c = 0; c < nc; c++) {
				if (cn[c] || fn[c] || nn[c])
					continue;
				char *name = TextDatumGetCString(cv[c]);
				if (strlen(name) < NAMEDATALEN)
					seq_raise(name, DatumGetInt64(fv[c]) + DatumGetInt32(nv[c]) - 1);
				pfree(name);
			}
			MemoryContextSwitchTo(old);
			covered += n;
			if (fp + n - 1 > *end)
				*end = fp + n - 1;
			if (should_free)
				heap_freetuple(tup);
		}
		batch_scan_end(&bs);
	}
	return covered;
}

static void cache_filenodes(Oid *out) {
	for (int s = 0; s < kLogSegments; s++) {
		Relation rel = open_layout(&batch_layout[s], AccessShareLock);
		out[s] = rel->rd_rel->relfilenode;
		table_close(rel, NoLock);
	}
	Relation rel = open_layout(&log_channels_layout, AccessShareLock);
	out[kLogSegments] = rel->rd_rel->relfilenode;
	table_close(rel, NoLock);
}

// Make the cache cover every batch up to head (the latest batch's end, or base_pos).
static void cache_bring_up_to(int64 head, int64 flushed_pos, Snapshot snap) {
	Oid nodes[kLogSegments + 1];
	cache_filenodes(nodes);
	if (cache.valid && memcmp(nodes, cache.filenode, sizeof nodes) == 0) {
		if (cache.upto_pos == head)
			return;
		if (cache.upto_pos < head) {
			int64 end;
			int64 covered = apply_batches_after(cache.upto_pos, snap, &end);
			if (covered == head - cache.upto_pos && end == head) { // contiguous: nothing missed
				cache.upto_pos = head;
				return;
			}
		}
	}
	// (re)load: outbox.log_channels, then every batch after channels_flushed_pos
	if (!cache.cxt)
		cache.cxt = AllocSetContextCreate(TopMemoryContext, "pg_outbox log seq cache", ALLOCSET_DEFAULT_SIZES);
	cache_drop();
	cache.seqs = name_hash("pg_outbox log seqs", sizeof(SeqEntry), 256, cache.cxt);
	Relation rel = open_layout(&log_channels_layout, AccessShareLock);
	TupleDesc desc = RelationGetDescr(rel);
	TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
	for (HeapTuple tup; (tup = heap_getnext(scan, ForwardScanDirection)) != nullptr;) {
		char *name = TextDatumGetCString(col_notnull(tup, desc, &log_channels_layout, 0));
		int64 last = DatumGetInt64(col_notnull(tup, desc, &log_channels_layout, 1));
		if (strlen(name) < NAMEDATALEN)
			seq_raise(name, last);
		pfree(name);
	}
	table_endscan(scan);
	table_close(rel, NoLock);
	int64 end;
	(void)apply_batches_after(flushed_pos, snap, &end);
	memcpy(cache.filenode, nodes, sizeof nodes);
	cache.upto_pos = head;
	cache.valid = true;
}

// ---------------------------------------------------------------------------------------
// The window scan
// ---------------------------------------------------------------------------------------
struct LogRow {
	HeapTuple tup;
	uint64 xid;
	int64 id;
};

struct WindowReader {
	Relation rel, idx;
	TupleDesc desc;
	const TableLayout *t;
	Snapshot snap;
	TupleTableSlot *slot;
	LogRow *rows;
	int n, cap, alloc;
	bool store; // false: only count (is there a row?)
};

// One index scan: xid = eq (and id > after_id when with_id), or eq_or_from <= / < xid < below.
// Appends the rows hi sees committed; stops at cap.
static void scan_keys(WindowReader *w, const ScanKeyData *keys, int nkeys, const PgSnapshot *hi) {
	IndexScanDesc scan = compat::index_beginscan(w->rel, w->idx, w->snap, nkeys, 0);
	index_rescan(scan, const_cast<ScanKey>(keys), nkeys, nullptr, 0);
	while (w->n < w->cap && index_getnext_slot(scan, ForwardScanDirection, w->slot)) {
		CHECK_FOR_INTERRUPTS();
		bool isnull;
		uint64 x = fxid(DatumGetFullTransactionId(slot_getattr(w->slot, w->t->attnum[kLogXid], &isnull)));
		if (isnull || !visible_in(hi, x))
			continue; // in progress in hi: a later window's
		int64 id = DatumGetInt64(slot_getattr(w->slot, w->t->attnum[kLogId], &isnull));
		if (w->store) {
			if (w->n == w->alloc) {
				w->alloc = Min(w->cap, w->alloc * 2);
				w->rows = (LogRow *)repalloc(w->rows, sizeof(LogRow) * w->alloc);
			}
			w->rows[w->n].tup = ExecCopySlotHeapTuple(w->slot);
			w->rows[w->n].xid = x;
			w->rows[w->n].id = id;
		}
		w->n++;
	}
	index_endscan(scan);
}

static void key_xid(ScanKeyData *k, StrategyNumber strategy, RegProcedure proc, uint64 x) {
	ScanKeyInit(k, 1, strategy, proc, FullTransactionIdGetDatum(FullTransactionIdFromU64(x)));
}

// The rows of segment seg in the window (lo, hi] after (a_xid, a_id), in (xid, id) order, at most
// cap (outbox._log_window()).
static void read_window(WindowReader *w, const PgSnapshot *lo, const PgSnapshot *hi, uint64 a_xid, int64 a_id) {
	ScanKeyData keys[2];
	// the xids of lo's xip that hi sees committed (all below lo.xmax): one exact probe each
	for (uint32 i = 0; i < lo->nxip && w->n < w->cap; i++) {
		uint64 x = fxid(lo->xip[i]);
		if (x < a_xid || !visible_in(hi, x))
			continue;
		key_xid(&keys[0], BTEqualStrategyNumber, F_XID8EQ, x);
		if (x == a_xid) {
			ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(a_id));
			scan_keys(w, keys, 2, hi);
		} else
			scan_keys(w, keys, 1, hi);
	}
	// the range [lo.xmax, hi.xmax), from the key on
	uint64 lo_xmax = fxid(lo->xmax), hi_xmax = fxid(hi->xmax);
	if (w->n >= w->cap || lo_xmax >= hi_xmax)
		return;
	if (a_xid >= lo_xmax) {
		if (a_xid >= hi_xmax)
			return;
		key_xid(&keys[0], BTEqualStrategyNumber, F_XID8EQ, a_xid);
		ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(a_id));
		scan_keys(w, keys, 2, hi);
		if (w->n >= w->cap)
			return;
		key_xid(&keys[0], BTGreaterStrategyNumber, F_XID8GT, a_xid);
	} else
		key_xid(&keys[0], BTGreaterEqualStrategyNumber, F_XID8GE, lo_xmax);
	key_xid(&keys[1], BTLessStrategyNumber, F_XID8LT, hi_xmax);
	scan_keys(w, keys, 2, hi);
}

static void reader_open(WindowReader *w, int seg, Snapshot snap, int cap, bool store) {
	w->t = &log_layout[seg];
	w->rel = open_layout(&log_layout[seg], AccessShareLock);
	w->desc = RelationGetDescr(w->rel);
	w->idx = index_open(index_on(w->rel, log_layout[seg].attnum[kLogXid], log_layout[seg].attnum[kLogId], "(xid, id)"),
	                    AccessShareLock);
	w->snap = snap;
	w->slot = table_slot_create(w->rel, nullptr);
	w->cap = cap;
	w->n = 0;
	w->store = store;
	w->alloc = Min(cap, 1024);
	w->rows = store ? (LogRow *)palloc(sizeof(LogRow) * w->alloc) : nullptr;
}

static void reader_close(WindowReader *w) {
	ExecDropSingleTupleTableSlot(w->slot);
	index_close(w->idx, NoLock);
	table_close(w->rel, NoLock);
}

// Does segment seg have a row of the window after the key?
static bool window_has_rows(int seg, Snapshot snap, const PgSnapshot *lo, const PgSnapshot *hi, uint64 a_xid,
                            int64 a_id) {
	WindowReader w;
	reader_open(&w, seg, snap, 1, false);
	read_window(&w, lo, hi, a_xid, a_id);
	reader_close(&w);
	return w.n > 0;
}

// ---------------------------------------------------------------------------------------
// The pass
// ---------------------------------------------------------------------------------------
struct PassChannel {
	char name[NAMEDATALEN]; // hash key
	int64 first_seq;
	int32 count;
	int64 next_seq;
};

static int compare_names(const void *a, const void *b) {
	return strcmp((*(PassChannel *const *)a)->name, (*(PassChannel *const *)b)->name);
}

static void insert_batch_sql(int seg, const Datum *vals, const bool *nulls) {
	char sql[512];
	snprintf(sql, sizeof sql,
	         "INSERT INTO outbox.batches_%d (first_pos, n, seg, lo_snap, hi_snap, after_xid, after_id, upto_xid,"
	         " upto_id, cut, skipped, channels, first_seqs, counts, epoch)"
	         " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
	         seg);
	Oid types[kBatchCols];
	char cnulls[kBatchCols];
	for (int c = 0; c < kBatchCols; c++) {
		types[c] = batch_cols[c].type;
		cnulls[c] = nulls[c] ? 'n' : ' ';
	}
	(void)check_trusted_schema();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	int rc = SPI_execute_with_args(sql, kBatchCols, types, const_cast<Datum *>(vals), cnulls, false, 0);
	if (rc != SPI_OK_INSERT || SPI_processed != 1)
		ereport(ERROR, (errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
		                errmsg("pg_outbox: the batch at position %lld stored no row in outbox.batches_%d",
		                       (long long)DatumGetInt64(vals[kBFirstPos]), seg),
		                errdetail("A trigger, rule or policy on outbox.batches_%d skipped the row; the positions of "
		                          "its events would be handed out again.",
		                          seg),
		                errhint("Drop what was added to outbox.batches_%d.", seg)));
	SPI_finish();
}

static int64 log_pass(int max_events) {
	if (XactIsoLevel != XACT_READ_COMMITTED)
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		                errmsg("outbox._log_pass() cannot run in a REPEATABLE READ or SERIALIZABLE transaction"),
		                errhint("Call it in autocommit mode or in a READ COMMITTED transaction.")));
	// 1. the batch lock (as LOCK TABLE outbox.batches IN SHARE ROW EXCLUSIVE MODE, which the SQL
	//    pass takes: the parent, then its segments), then a snapshot taken after it
	Oid parent = extension_relation("batches");
	if (!OidIsValid(parent))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("table outbox.batches does not exist"),
		                errhint("Update or reinstall the extension.")));
	LockRelationOid(parent, ShareRowExclusiveLock);
	for (int s = 0; s < kLogSegments; s++)
		table_close(open_layout(&batch_layout[s], ShareRowExclusiveLock), NoLock);
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	Snapshot snap = GetActiveSnapshot();

	// 2. the log's state, the latest batch
	TupleDesc sdesc;
	HeapTuple st = single_row(&log_state_layout, snap, &sdesc);
	int cur_seg = DatumGetInt32(col_notnull(st, sdesc, &log_state_layout, kSCurSeg));
	int64 base_pos = DatumGetInt64(col_notnull(st, sdesc, &log_state_layout, kSBasePos));
	int64 flushed_pos = DatumGetInt64(col_notnull(st, sdesc, &log_state_layout, kSFlushedPos));
	if (cur_seg < 0 || cur_seg >= kLogSegments)
		ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED), errmsg("pg_outbox: outbox.log_state.cur_seg is %d", cur_seg),
		                errhint("Set it to 0, 1 or 2.")));
	int oldest = (cur_seg + 1) % kLogSegments;
	Batch b;
	bool have_b = latest_batch(snap, &b);

	// 3. the window, and where in it to start
	int64 first_pos;
	PgSnapshot *lo, *hi;
	int start; // the segment order index (0: oldest) to start at
	uint64 ax = 0;
	int64 ai = 0;
	bool next_window;
	if (!have_b) {
		first_pos = base_pos + 1;
		lo = (PgSnapshot *)PG_DETOAST_DATUM_COPY(col_notnull(st, sdesc, &log_state_layout, kSBaseSnap));
		hi = nullptr;
		next_window = true;
	} else {
		first_pos = b.first_pos + b.n;
		lo = b.lo;
		hi = b.hi;
		next_window = !b.cut;
	}
	start = 0;
	if (!next_window) { // continue the cut window where it stopped
		start = (b.seg - oldest + kLogSegments) % kLogSegments;
		ax = b.upto_xid;
		ai = b.upto_id;
	}
	cache.pass_in_xact = true;
	cache_bring_up_to(first_pos - 1, flushed_pos, snap);

	int cap = max_events + 1; // one more: is the batch cut?
	WindowReader w;
	int seg = -1;
	for (int attempt = 0; attempt < 2 && seg < 0; attempt++) {
		if (next_window) {
			if (have_b)
				lo = b.hi;
			hi = pass_snapshot();
			start = 0;
			ax = 0;
			ai = 0;
		}
		for (int k = start; k < kLogSegments; k++) {
			int s = (oldest + k) % kLogSegments;
			reader_open(&w, s, snap, cap, true);
			read_window(&w, lo, hi, k == start ? ax : 0, k == start ? ai : 0);
			if (w.n > 0) {
				seg = s;
				if (k != start) {
					ax = 0;
					ai = 0;
				}
				start = k;
				break;
			}
			reader_close(&w);
		}
		if (seg < 0 && next_window)
			break; // the new window is empty
		next_window = true; // the cut window had nothing left: open the next one
	}
	if (seg < 0) {
		PopActiveSnapshot();
		return 0;
	}
	bool cut = w.n > max_events;
	int n = cut ? max_events : w.n;
	LogRow *rows = w.rows;
	if (!cut) // rows of this window in a newer segment?
		for (int k = start + 1; k < kLogSegments && !cut; k++)
			cut = window_has_rows((oldest + k) % kLogSegments, snap, lo, hi, 0, 0);

	// 4. seqs per channel
	HTAB *chans = name_hash("pg_outbox pass channels", sizeof(PassChannel), 16, CurrentMemoryContext);
	PassChannel **entry = (PassChannel **)palloc(sizeof(PassChannel *) * n);
	int nchannels = 0;
	PassChannel *prev = nullptr;
	for (int i = 0; i < n; i++) {
		bool isnull;
		text *ct = DatumGetTextPP(heap_getattr(rows[i].tup, w.t->attnum[kLogChannel], w.desc, &isnull));
		size_t len = VARSIZE_ANY_EXHDR(ct);
		if (len >= NAMEDATALEN || len == 0) // the table's CHECK makes this impossible
			ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
			                errmsg("pg_outbox: event %lld has a channel of %zu bytes", (long long)rows[i].id, len)));
		PassChannel *e = prev;
		if (!e || strlen(e->name) != len || memcmp(e->name, VARDATA_ANY(ct), len) != 0) {
			char key[NAMEDATALEN];
			memcpy(key, VARDATA_ANY(ct), len);
			key[len] = '\0';
			bool found;
			e = (PassChannel *)hash_search(chans, key, HASH_ENTER, &found);
			if (!found) {
				SeqEntry *se = (SeqEntry *)hash_search(cache.seqs, key, HASH_FIND, nullptr);
				e->first_seq = (se ? se->last_seq : 0) + 1;
				e->next_seq = e->first_seq;
				e->count = 0;
				nchannels++;
			}
			prev = e;
		}
		e->count++;
		entry[i] = e;
	}

	// 5. hand off, in position order
	int64 epoch = read_epoch(snap);
	bool id_only = notifications_id_only();
	StringInfo payload_text = makeStringInfo();
	for (int i = 0; i < n; i++) {
		PassChannel *e = entry[i];
		HeapTuple t = rows[i].tup;
		OutgoingEvent ev;
		ev.channel = e->name;
		ev.targets = kTargetNotify;
		ev.id = rows[i].id;
		ev.pos = first_pos + i;
		ev.seq = e->next_seq++;
		ev.key = heap_getattr(t, w.t->attnum[kLogKey], w.desc, &ev.key_null);
		ev.type = heap_getattr(t, w.t->attnum[kLogType], w.desc, &ev.type_null);
		ev.payload = heap_getattr(t, w.t->attnum[kLogPayload], w.desc, &ev.payload_null);
		ev.epoch = epoch;
		hand_off_event(ev, id_only, payload_text);
	}

	// 6. the batch row
	PassChannel **sorted = (PassChannel **)palloc(sizeof(PassChannel *) * nchannels);
	{
		HASH_SEQ_STATUS hs;
		hash_seq_init(&hs, chans);
		int j = 0;
		for (PassChannel *e; (e = (PassChannel *)hash_seq_search(&hs)) != nullptr;)
			sorted[j++] = e;
		qsort(sorted, nchannels, sizeof(PassChannel *), compare_names);
	}
	Datum *cn = (Datum *)palloc(sizeof(Datum) * nchannels);
	Datum *cf = (Datum *)palloc(sizeof(Datum) * nchannels);
	Datum *cc = (Datum *)palloc(sizeof(Datum) * nchannels);
	for (int j = 0; j < nchannels; j++) {
		cn[j] = CStringGetTextDatum(sorted[j]->name);
		cf[j] = Int64GetDatum(sorted[j]->first_seq);
		cc[j] = Int32GetDatum(sorted[j]->count);
	}
	Datum vals[kBatchCols];
	bool nulls[kBatchCols] = {};
	vals[kBFirstPos] = Int64GetDatum(first_pos);
	vals[kBN] = Int32GetDatum(n);
	vals[kBSeg] = Int32GetDatum(seg);
	vals[kBLo] = PointerGetDatum(lo);
	vals[kBHi] = PointerGetDatum(hi);
	vals[kBAfterXid] = FullTransactionIdGetDatum(FullTransactionIdFromU64(ax));
	vals[kBAfterId] = Int64GetDatum(ai);
	vals[kBUptoXid] = FullTransactionIdGetDatum(FullTransactionIdFromU64(rows[n - 1].xid));
	vals[kBUptoId] = Int64GetDatum(rows[n - 1].id);
	vals[kBCut] = BoolGetDatum(cut);
	vals[kBSkipped] = PointerGetDatum(construct_empty_array(INT8OID));
	vals[kBChannels] = PointerGetDatum(construct_array(cn, nchannels, TEXTOID, -1, false, TYPALIGN_INT));
	vals[kBFirstSeqs] =
	    PointerGetDatum(construct_array(cf, nchannels, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	vals[kBCounts] = PointerGetDatum(construct_array(cc, nchannels, INT4OID, 4, true, TYPALIGN_INT));
	vals[kBEpoch] = Int64GetDatum(epoch);
	DirectInsert d;
	direct_begin(&d, &batch_layout[seg]);
	if (d.use_sql) {
		direct_end(&d);
		insert_batch_sql(seg, vals, nulls);
	} else {
		direct_row(&d, vals, nulls);
		direct_end(&d);
	}
	reader_close(&w);
	PopActiveSnapshot();

	// 7. the cache, as it is once this commits (log_pass_xact_event drops it otherwise)
	MemoryContext old = MemoryContextSwitchTo(cache.cxt);
	for (int j = 0; j < nchannels; j++)
		seq_raise(sorted[j]->name, sorted[j]->first_seq + sorted[j]->count - 1);
	MemoryContextSwitchTo(old);
	cache.upto_pos = first_pos + n - 1;
	return n;
}

// outbox._log_pass(max_events integer) RETURNS bigint
PGO_FUNCTION(outbox_log_pass) {
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("max_events cannot be NULL"),
		                errhint("Pass the most events one pass may publish, for example 1000.")));
	int32 max_events = PG_GETARG_INT32(0);
	if (max_events < 1) // as outbox._check_max_events()
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("max_events must be at least 1, not %d", max_events),
		                errhint("Pass the most events one pass may publish, for example 1000.")));
	if (max_events == PG_INT32_MAX)
		max_events--; // one more row is read to know whether the batch is cut
	PG_RETURN_INT64(log_pass(max_events));
}

} // namespace pg_outbox
