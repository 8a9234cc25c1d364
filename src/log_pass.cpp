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
// was truncated or rewritten (rotation, DROP/CREATE EXTENSION), log_channels was written (its
// statement trigger sends an invalidation: a restore or a DBA may have raised a seq no batch
// shows), the batches after it are not contiguous, or a transaction that ran a pass ended in
// anything but a commit.
#include "pg_outbox.hpp"
#include "direct.hpp"
#include "log_pass.hpp"
#include "drain.hpp"
#include "drain_failures.hpp"
#include "guard.hpp"
#include "invalidation.hpp"
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
#include "access/slru.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "lib/bloomfilter.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
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

bool guc_drain_log = false;

// The same set of committed transactions: same xmax, same xip (xmin follows from them).
static bool same_snapshot(const PgSnapshot *a, const PgSnapshot *b) {
	if (fxid(a->xmax) != fxid(b->xmax) || a->nxip != b->nxip)
		return false;
	for (uint32 i = 0; i < a->nxip; i++)
		if (fxid(a->xip[i]) != fxid(b->xip[i]))
			return false;
	return true;
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

// the parent: its lock is the batch lock (resolved once, as the segments' tables are)
static TableLayout batch_parent_layout = {"batches", batch_cols, lengthof(batch_cols), nullptr, nullptr,
                                          false,     InvalidOid, -1,                  {},      0};

enum { kSCurSeg, kSBasePos, kSBaseSnap, kSPurgedPos, kSFlushedPos, kSActive };
static const ColumnSpec log_state_cols[] = {{"cur_seg", INT4OID},
                                            {"base_pos", INT8OID},
                                            {"base_snap", PG_SNAPSHOTOID},
                                            {"purged_pos", INT8OID},
                                            {"channels_flushed_pos", INT8OID},
                                            {"active", BOOLOID}};
static TableLayout log_state_layout = {"log_state", log_state_cols, lengthof(log_state_cols), nullptr, nullptr, false,
                                       InvalidOid,  -1,             {},                       0};

static const ColumnSpec log_channels_cols[] = {{"channel", TEXTOID}, {"last_seq", INT8OID}, {"last_pos", INT8OID}};
// its statement trigger log_channels_changed is for writers other than the pass (the flush's direct
// insert stands in for it, as its SQL upsert is silenced by cache.flushing)
static TableLayout log_channels_layout = {"log_channels", log_channels_cols, lengthof(log_channels_cols), nullptr,
                                          "log_channels_changed", false,             InvalidOid,                  -1,
                                          {},             0};

static const ColumnSpec state_epoch_cols[] = {{"epoch", INT8OID}};
static TableLayout state_epoch_layout = {"state", state_epoch_cols, 1, nullptr, nullptr, false, InvalidOid, -1, {}, 0};
static TableLayout epochs_layout = {"epochs", state_epoch_cols, 1, nullptr, nullptr, false, InvalidOid, -1, {}, 0};

static const ColumnSpec targets_cols[] = {{"channel", TEXTOID}, {"target", TEXTOID}};
static TableLayout targets_layout = {"channel_targets", targets_cols, lengthof(targets_cols), nullptr, nullptr,
                                     false,             InvalidOid,   -1,                     {},      0};

// The failure path's tables (drain_failures.cpp: log_pass()), only looked at: are they empty?
static const ColumnSpec failure_id_cols[] = {{"id", INT8OID}};
static TableLayout failures_layout = {"failures", failure_id_cols, 1, nullptr, nullptr, false, InvalidOid, -1, {}, 0};
static TableLayout withheld_layout = {"withheld", failure_id_cols, 1, nullptr, nullptr, false, InvalidOid, -1, {}, 0};

static bool layout_has_rows(TableLayout *t, Snapshot snap) {
	Relation rel = open_layout(t, AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
	bool any = heap_getnext(scan, ForwardScanDirection) != nullptr;
	table_endscan(scan);
	table_close(rel, NoLock);
	return any;
}

bool log_failure_rows_exist(void) {
	PushActiveSnapshot(GetTransactionSnapshot());
	Snapshot snap = GetActiveSnapshot();
	bool any = layout_has_rows(&failures_layout, snap) || layout_has_rows(&withheld_layout, snap);
	PopActiveSnapshot();
	return any;
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

// The index of rel whose key columns are exactly (a1[, a2]), in that order, ascending, with the
// default btree operator class of their types: the scans read it forward in key order and
// continue after a key. (An index a DBA made on (xid DESC, id DESC) came first once REINDEX
// CONCURRENTLY had given the extension's index a higher OID: the pass read the window backwards,
// cut it after its newest row and continued after that, and the older rows were never published.)
// The default btree family of the key types used here (text, int8, xid8) is remembered: looking it up
// scans pg_opclass (a 100,000-channel drain past pg_outbox.channel_cache_size spent 16% of its time
// there, one lookup per channel missing from the seq cache). A built-in type's default btree class
// cannot change: CREATE OPERATOR CLASS ... DEFAULT refuses a second default, and the built-in one is
// pinned.
static Oid default_btree_family(Oid type) {
	static struct {
		Oid type, family;
	} known[8];
	static int nknown_families = 0;
	for (int i = 0; i < nknown_families; i++)
		if (known[i].type == type)
			return known[i].family;
	Oid opclass = GetDefaultOpClass(type, BTREE_AM_OID);
	Oid family = OidIsValid(opclass) ? get_opclass_family(opclass) : InvalidOid;
	if (OidIsValid(family) && type < FirstNormalObjectId && nknown_families < (int)lengthof(known)) {
		known[nknown_families].type = type;
		known[nknown_families].family = family;
		nknown_families++;
	}
	return family;
}

static bool key_is_default_asc(Relation irel, int k, Oid type) {
	Oid family = default_btree_family(type);
	return OidIsValid(family) && irel->rd_opfamily[k] == family && irel->rd_indoption[k] == 0;
}

static Oid index_on(Relation rel, AttrNumber a1, AttrNumber a2, const char *what) {
	List *indexes = RelationGetIndexList(rel);
	ListCell *lc;
	Oid found = InvalidOid;
	TupleDesc desc = RelationGetDescr(rel);
	foreach (lc, indexes) {
		Oid ix = lfirst_oid(lc);
		Relation irel = index_open(ix, AccessShareLock);
		Form_pg_index form = irel->rd_index;
		bool match = irel->rd_rel->relam == BTREE_AM_OID && form->indisvalid && form->indnkeyatts == (a2 ? 2 : 1) &&
		             form->indkey.values[0] == a1 && (!a2 || form->indkey.values[1] == a2) &&
		             RelationGetIndexPredicate(irel) == NIL &&
		             key_is_default_asc(irel, 0, TupleDescAttr(desc, a1 - 1)->atttypid) &&
		             (!a2 || key_is_default_asc(irel, 1, TupleDescAttr(desc, a2 - 1)->atttypid));
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
	int64 last_pos; // the end of the channel's newest batch
	bool dirty;     // newer than its outbox.log_channels row: written by the next flush
	bool has_row;   // outbox.log_channels has a row for it (meaningful while cache.rows_known)
	// where the channel's PassChannel was in the sink's array of the pass that met it last (that
	// array's entry at pass_slot names this entry: the batch being built has the channel): the
	// pass looks a channel up once, not once per stage
	int32 pass_slot;
};

static struct {
	MemoryContext cxt;
	HTAB *seqs;
	bool valid;
	int64 upto_pos;                   // the cache has every batch up to this position
	Oid filenode[kLogSegments + 1];   // batches_0..N-1 and log_channels when it was loaded
	bool pass_in_xact;                // a pass ran in the current transaction
	int ndirty;                       // entries to write into outbox.log_channels
	SeqEntry **dirty;                 // those entries (dynahash entries do not move), in cxt
	int dirty_cap;
	// has_row is exact for every entry: the cache was loaded complete and no other process's batch
	// (whose pass may have written rows behind) was applied since. Then a flush inserts the rows of
	// new channels directly and upserts only the others.
	bool rows_known;
	TimestampTz last_flush;
	// every channel of outbox.log_channels is in seqs (a miss is a new channel); otherwise a miss
	// is looked up there. Either way every channel of the batches after channels_flushed_pos is.
	bool complete;
	bool stale;                       // outbox.log_channels changed since it was loaded
	bool flushing;                    // the pass's own write into log_channels: no invalidation
	uint32 generation;                // seqs made anew: entry pointers held across it are stale
	// Past pg_outbox.channel_cache_size (complete false): the names that may have a row in
	// outbox.log_channels and no entry, a Bloom filter (in cxt; nullptr: none). A channel missing
	// from seqs that the filter lacks has no row, a new channel: it is not looked up there (a
	// stream of new channels past the cache's size cost a btree probe each).
	bloom_filter *gone;
	int64 gone_n, gone_cap; // names added, names it was sized for (2 bytes each)
	int64 gone_want;        // the size the next reload makes it (0: from the table)
} cache;

int guc_channel_cache_size = 262144;

static void cache_drop(void) {
	if (cache.cxt)
		MemoryContextReset(cache.cxt);
	cache.seqs = nullptr;
	cache.generation++;
	cache.gone = nullptr; // freed with cxt
	cache.gone_n = 0;
	cache.valid = false;
	cache.ndirty = 0;
	cache.dirty = nullptr; // freed with cxt
	cache.dirty_cap = 0;
	cache.rows_known = false;
}

void log_pass_xact_event(XactEvent event) {
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
	    event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
		cache.flushing = false; // a flush that failed half-way
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

// A relcache invalidation of outbox.log_channels (its statement trigger sends one: a restore or
// a DBA wrote rows the batches do not show), or of every relation: load it again at the next
// pass. Only marked here: an invalidation can arrive in the middle of a pass, which still uses
// the table.
void log_seqs_forget(Oid relid) {
	if (!OidIsValid(relid) || relid == log_channels_layout.relid)
		cache.stale = true;
}

void log_pass_subxact_event(SubXactEvent event, int) {
	// a flush that failed in a subtransaction the caller rolled back (a PL/pgSQL EXCEPTION block):
	// the transaction goes on, and its own writes into outbox.log_channels must invalidate
	if (event == SUBXACT_EVENT_ABORT_SUB)
		cache.flushing = false;
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

// The channel's entry, a new one with no seq yet (has_row: outbox.log_channels has a row for it)
// when the cache had none.
static SeqEntry *seq_entry(const char *name, bool has_row, bool *found) {
	SeqEntry *e = (SeqEntry *)hash_search(cache.seqs, name, HASH_ENTER, found);
	if (!*found) {
		e->last_seq = 0;
		e->last_pos = 0;
		e->dirty = false;
		e->has_row = has_row;
		e->pass_slot = -1;
	}
	return e;
}

static void seq_raise_entry(SeqEntry *e, int64 last, int64 pos, bool flushed);

// The channel's last seq is at least last (its newest batch ending at pos); flushed: it comes from
// outbox.log_channels, otherwise it is for the next flush to write there.
static void seq_raise(const char *name, int64 last, int64 pos, bool flushed) {
	bool found;
	seq_raise_entry(seq_entry(name, flushed, &found), last, pos, flushed);
}

static void seq_raise_entry(SeqEntry *e, int64 last, int64 pos, bool flushed) {
	if (e->last_seq >= last)
		return;
	e->last_seq = last;
	e->last_pos = Max(e->last_pos, pos);
	if (!flushed && !e->dirty) {
		if (cache.ndirty == cache.dirty_cap) {
			int cap = Max(256, cache.dirty_cap * 2);
			cache.dirty = cache.dirty ? (SeqEntry **)repalloc(cache.dirty, cap * sizeof(SeqEntry *))
			                          : (SeqEntry **)MemoryContextAlloc(cache.cxt, cap * sizeof(SeqEntry *));
			cache.dirty_cap = cap;
		}
		e->dirty = true;
		cache.dirty[cache.ndirty++] = e;
	}
}

// Forget every entry (the caller made sure outbox.log_channels has what they said).
static void cache_clear_entries(void) {
	hash_destroy(cache.seqs);
	cache.generation++;
	cache.seqs = name_hash("pg_outbox log seqs", sizeof(SeqEntry), 256, cache.cxt);
	cache.ndirty = 0;
	cache.rows_known = false; // a miss is looked up in outbox.log_channels from now on
}

// A filter of cache.gone for at least names (4 times that: room to grow), at most 64 MB.
static void gone_make(int64 names) {
	int64 cap = Max(names, (int64)guc_channel_cache_size) * 4;
	MemoryContext old = MemoryContextSwitchTo(cache.cxt);
	cache.gone = bloom_create(cap, 64 * 1024, 0x5eed);
	MemoryContextSwitchTo(old);
	cache.gone_n = 0;
	cache.gone_cap = cap;
}

static void gone_add(const char *name) {
	bloom_add_element(cache.gone, (unsigned char *)name, strlen(name));
	cache.gone_n++;
}

// The cache past pg_outbox.channel_cache_size in a pass (every entry has its row in
// outbox.log_channels now): the entries go into the filter and out of the cache. A filter that
// would pass the names it was sized for is dropped instead, and the next pass loads the cache
// again (a filter for 4 times as many names, from the table).
static void cache_overflow(void) {
	int64 names = hash_get_num_entries(cache.seqs);
	bool rows_known = cache.rows_known; // the entries made from now on know theirs (the filter or a probe)
	if (!cache.gone && cache.complete)
		gone_make(names);
	if (cache.gone && cache.gone_n + names <= cache.gone_cap) {
		HASH_SEQ_STATUS hs;
		hash_seq_init(&hs, cache.seqs);
		for (SeqEntry *e; (e = (SeqEntry *)hash_seq_search(&hs)) != nullptr;)
			gone_add(e->name);
		cache_clear_entries();
		cache.rows_known = rows_known;
	} else {
		cache.gone_want = cache.gone_n + names;
		cache_clear_entries();
		cache.gone = nullptr; // in cxt: freed with the next reload's reset
		cache.valid = false;
	}
	cache.complete = false;
}

// outbox.log_channels, for the channels a pass finds neither in the cache nor sure to be new:
// opened at the first such channel and kept to the end of the pass (a cache past
// pg_outbox.channel_cache_size probes every channel it meets for the first time).
struct ChannelProbe {
	Relation rel, idx; // rel nullptr: not opened yet
	TupleTableSlot *slot;
	Snapshot snap;
	MemoryContext cxt; // the pass's: the slot outlives the row being handed off
};

static void probe_close(ChannelProbe *p) {
	if (!p->rel)
		return;
	ExecDropSingleTupleTableSlot(p->slot);
	index_close(p->idx, NoLock);
	table_close(p->rel, NoLock);
	p->rel = nullptr;
}

// A channel the cache did not hold (e, just made): its outbox.log_channels row (exact: every
// channel of the batches after channels_flushed_pos is in the cache), none for a new channel.
static void lookup_last_seq(SeqEntry *e, ChannelProbe *p) {
	if (cache.complete || (cache.gone && bloom_lacks_element(cache.gone, (unsigned char *)e->name, strlen(e->name))))
		return;
	if (!p->rel) {
		MemoryContext old = MemoryContextSwitchTo(p->cxt);
		p->rel = open_layout(&log_channels_layout, AccessShareLock);
		p->idx = index_open(index_on(p->rel, log_channels_layout.attnum[0], 0, "channel"), AccessShareLock);
		p->slot = table_slot_create(p->rel, nullptr);
		MemoryContextSwitchTo(old);
	}
	ScanKeyData key;
	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid, p->idx->rd_indcollation[0], F_TEXTEQ,
	                       CStringGetTextDatum(e->name));
	IndexScanDesc scan = compat::index_beginscan(p->rel, p->idx, p->snap, 1, 0);
	index_rescan(scan, &key, 1, nullptr, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, p->slot)) {
		bool isnull;
		Datum d = slot_getattr(p->slot, log_channels_layout.attnum[1], &isnull);
		int64 last = isnull ? 0 : DatumGetInt64(d);
		d = slot_getattr(p->slot, log_channels_layout.attnum[2], &isnull);
		int64 pos = isnull ? 0 : DatumGetInt64(d);
		e->has_row = true;
		seq_raise_entry(e, last, pos, true);
	}
	index_endscan(scan);
	ExecClearTuple(p->slot);
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
					seq_raise(name, DatumGetInt64(fv[c]) + DatumGetInt32(nv[c]) - 1, fp + n - 1, false);
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
	if (cache.valid && !cache.stale && memcmp(nodes, cache.filenode, sizeof nodes) == 0) {
		if (cache.upto_pos == head)
			return;
		if (cache.upto_pos < head) {
			int64 end;
			int64 covered = apply_batches_after(cache.upto_pos, snap, &end);
			if (covered == head - cache.upto_pos && end == head) { // contiguous: nothing missed
				cache.upto_pos = head;
				cache.rows_known = false; // another process's pass may have written rows behind
				return;
			}
		}
	}
	// (re)load: outbox.log_channels, then every batch after channels_flushed_pos
	if (!cache.cxt)
		cache.cxt = AllocSetContextCreate(TopMemoryContext, "pg_outbox log seq cache", ALLOCSET_DEFAULT_SIZES);
	cache_drop();
	cache.stale = false; // what changed before now is in what is read below
	cache.seqs = name_hash("pg_outbox log seqs", sizeof(SeqEntry), 256, cache.cxt);
	// all of outbox.log_channels if it fits in pg_outbox.channel_cache_size, else none of it: then
	// its names go into the filter (cache.gone), read again from the start
	cache.complete = true;
	Relation rel = open_layout(&log_channels_layout, AccessShareLock);
	TupleDesc desc = RelationGetDescr(rel);
	TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
	long rows = 0;
	for (HeapTuple tup; (tup = heap_getnext(scan, ForwardScanDirection)) != nullptr;) {
		if (cache.complete && ++rows > guc_channel_cache_size) {
			cache_clear_entries();
			cache.complete = false;
			gone_make(Max(cache.gone_want, (int64)Max(rel->rd_rel->reltuples, (float4)rows)));
			cache.gone_want = 0;
			table_rescan(scan, nullptr);
			continue;
		}
		char *name = TextDatumGetCString(col_notnull(tup, desc, &log_channels_layout, 0));
		if (!cache.complete)
			gone_add(name);
		else if (strlen(name) < NAMEDATALEN)
			seq_raise(name, DatumGetInt64(col_notnull(tup, desc, &log_channels_layout, 1)),
			          DatumGetInt64(col_notnull(tup, desc, &log_channels_layout, 2)), true);
		pfree(name);
	}
	table_endscan(scan);
	table_close(rel, NoLock);
	int64 end;
	(void)apply_batches_after(flushed_pos, snap, &end);
	cache.rows_known = cache.complete; // every row of outbox.log_channels was read above
	memcpy(cache.filenode, nodes, sizeof nodes);
	cache.upto_pos = head;
	cache.valid = true;
}

// Write behind: the channels whose seqs moved since the last flush go into outbox.log_channels, and
// log_state.channels_flushed_pos records that it covers every batch up to the cache's position,
// so that a cold cache (a new worker) reads only the batches after it. At most once a second
// (force: now), in the pass's transaction (with it or not at all). Rarely, and a statement on a
// few rows: through SQL.
pg_noinline static void flush_channels(bool force) {
	if (!cache.valid || cache.ndirty == 0)
		return;
	TimestampTz now = GetCurrentTimestamp();
	if (!force && now - cache.last_flush < USECS_PER_SEC)
		return;
	// New channels (no row yet, known for sure): inserted directly, 64 rows per heap write; the
	// primary key still refuses a duplicate. The rest: one upsert through SQL. (A 100,000-channel
	// drain spent half its time in the upsert's speculative insertions.)
	Datum *names = (Datum *)palloc(sizeof(Datum) * cache.ndirty);
	Datum *seqs = (Datum *)palloc(sizeof(Datum) * cache.ndirty);
	Datum *poss = (Datum *)palloc(sizeof(Datum) * cache.ndirty);
	int k = 0;
	DirectInsert d;
	bool direct = false;
	if (cache.rows_known) {
		direct_begin(&d, &log_channels_layout, kMultiInsertRows);
		if (d.use_sql) // a DBA's trigger on outbox.log_channels: every row through SQL
			direct_end(&d);
		else
			direct = true;
	}
	for (int i = 0; i < cache.ndirty; i++) {
		SeqEntry *e = cache.dirty[i];
		Datum text = CStringGetTextDatum(e->name);
		if (direct && !e->has_row) {
			Datum vals[] = {text, Int64GetDatum(e->last_seq), Int64GetDatum(e->last_pos)};
			direct_row(&d, vals, nullptr);
			pfree(DatumGetPointer(text));
			continue;
		}
		names[k] = text;
		seqs[k] = Int64GetDatum(e->last_seq);
		poss[k] = Int64GetDatum(e->last_pos);
		k++;
	}
	if (direct)
		direct_end(&d);
	Datum args[] = {PointerGetDatum(construct_array(names, k, TEXTOID, -1, false, TYPALIGN_INT)),
	                PointerGetDatum(construct_array(seqs, k, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
	                PointerGetDatum(construct_array(poss, k, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
	                Int64GetDatum(cache.upto_pos)};
	Oid types[] = {TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8OID};
	(void)check_trusted_schema();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	if (k > 0) {
		cache.flushing = true; // reset by the statement's end, or by the transaction's (log_pass_xact_event)
		int rc = SPI_execute_with_args(
		    "INSERT INTO outbox.log_channels AS c (channel, last_seq, last_pos)"
		    " SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))"
		    " ON CONFLICT (channel) DO UPDATE SET last_seq = greatest(c.last_seq, excluded.last_seq),"
		    " last_pos = greatest(c.last_pos, excluded.last_pos)",
		    3, types, args, nullptr, false, 0);
		cache.flushing = false;
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "pg_outbox: writing outbox.log_channels failed: %s", SPI_result_code_string(rc));
	}
	int rc = SPI_execute_with_args(
	    "UPDATE outbox.log_state SET channels_flushed_pos = greatest(channels_flushed_pos, $1)", 1, types + 3,
	    args + 3, nullptr, false, 0);
	if (rc != SPI_OK_UPDATE || SPI_processed != 1)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox: the row of outbox.log_state is missing or was not updated"),
		                errhint("Reinstall the extension.")));
	SPI_finish();
	for (int i = 0; i < cache.ndirty; i++) {
		cache.dirty[i]->dirty = false;
		cache.dirty[i]->has_row = true;
	}
	cache.ndirty = 0;
	cache.last_flush = now;
}

// ---------------------------------------------------------------------------------------
// The window scan
// ---------------------------------------------------------------------------------------
struct PassSink;
static void pass_emit(PassSink *sink, TupleTableSlot *slot, const TableLayout *t, uint64 xid, int64 id);
enum class RowFate { Emit, LeftOut, EndsBatch };
static RowFate pass_known_row(PassSink *sink, uint64 xid, int64 id);
static bool sink_has_known(const PassSink *sink);

struct WindowReader {
	Relation rel, idx;
	const TableLayout *t;
	Snapshot snap;
	TupleTableSlot *slot;
	int n, cap;
	PassSink *sink; // the first cap - 1 rows are handed to it as they are read (nullptr: only count)
	bool known;     // the sink has rows of the failure path to look for
};

// One index scan: xid = eq (and id > after_id when with_id), or eq_or_from <= / < xid < below.
// Counts the rows hi sees committed, handing each but the cap-th to the sink; stops at cap.
// (The rows are handed off while the scan holds them, not copied: a batch of 200,000 events of
// 250 bytes held 100 MB of copies, twice what the reference pass needed in all.)
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
		if (w->sink && w->n < w->cap - 1) {
			if (w->known) { // the failure path's rows (drain_failures.cpp)
				RowFate fate = pass_known_row(w->sink, x, id);
				if (fate == RowFate::LeftOut)
					continue;
				if (fate == RowFate::EndsBatch) {
					w->n = w->cap; // as if the batch were full: cut, the next one starts with this row
					break;
				}
			}
			pass_emit(w->sink, w->slot, w->t, x, id);
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

static void reader_open(WindowReader *w, int seg, Snapshot snap, int cap, PassSink *sink) {
	w->t = &log_layout[seg];
	w->rel = open_layout(&log_layout[seg], AccessShareLock);
	w->idx = index_open(index_on(w->rel, log_layout[seg].attnum[kLogXid], log_layout[seg].attnum[kLogId], "(xid, id)"),
	                    AccessShareLock);
	w->snap = snap;
	w->slot = table_slot_create(w->rel, nullptr);
	w->cap = cap;
	w->n = 0;
	w->sink = sink;
	w->known = sink && sink_has_known(sink);
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
	reader_open(&w, seg, snap, 1, nullptr);
	read_window(&w, lo, hi, a_xid, a_id);
	reader_close(&w);
	return w.n > 0;
}

// Has the current transaction written rows into the log (its subtransactions' rows carry its xid;
// those of a subtransaction rolled back are not seen)? One probe of each segment's (xid, id) btree
// with SnapshotSelf, which sees the rows of the current command too (SELECT publish(), drain()).
// No xid yet: nothing written, no probe.
bool log_has_own_rows(void) {
	FullTransactionId own = GetTopFullTransactionIdIfAny();
	if (!FullTransactionIdIsValid(own))
		return false;
	bool found = false;
	for (int s = 0; s < kLogSegments && !found; s++) {
		Relation rel = open_layout(&log_layout[s], AccessShareLock);
		Relation idx = index_open(index_on(rel, log_layout[s].attnum[kLogXid], log_layout[s].attnum[kLogId], "(xid, id)"),
		                          AccessShareLock);
		ScanKeyData key;
		key_xid(&key, BTEqualStrategyNumber, F_XID8EQ, fxid(own));
		IndexScanDesc scan = compat::index_beginscan(rel, idx, SnapshotSelf, 1, 0);
		index_rescan(scan, &key, 1, nullptr, 0);
		TupleTableSlot *slot = table_slot_create(rel, nullptr);
		found = index_getnext_slot(scan, ForwardScanDirection, slot);
		index_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
		index_close(idx, NoLock);
		table_close(rel, NoLock);
	}
	return found;
}

// ---------------------------------------------------------------------------------------
// A log restored from another cluster (doc/storage.md, "Epochs, dump and restore")
// ---------------------------------------------------------------------------------------
// The windows are sets of xid8 values, meaningful only in the cluster that assigned them. A dump
// restored into a cluster whose counter is behind the dump's would have this cluster's new
// transactions take xids below the latest batch's hi: its events would look published already
// (visible in the next window's lo) and never be sent, and the rows that were pending at dump time,
// with xids above the counter, would wait until it passes them. Until the restored history is
// materialised (the design's answer, not built), the pass and the producers refuse such a log: the
// lowest next xid that is safe is above the latest batch's hi (or base_snap) and every row's xid.

// The highest xid of a row of segment s (0: none): the last entry of its (xid, id) btree.
static uint64 segment_max_xid(int s, Snapshot snap) {
	WindowReader w;
	reader_open(&w, s, snap, 1, nullptr);
	IndexScanDesc scan = compat::index_beginscan(w.rel, w.idx, snap, 0, 0);
	index_rescan(scan, nullptr, 0, nullptr, 0);
	uint64 x = 0;
	if (index_getnext_slot(scan, BackwardScanDirection, w.slot)) {
		bool isnull;
		Datum d = slot_getattr(w.slot, w.t->attnum[kLogXid], &isnull);
		if (!isnull)
			x = fxid(DatumGetFullTransactionId(d));
	}
	index_endscan(scan);
	reader_close(&w);
	return x;
}

// The rows' xids are read once per process and per extension (the segments' layouts resolved
// again: a new extension, a restore into it): rows written since are this cluster's. A layout
// made stale by an invalidation counts too: a producer opens the pass's layouts only in its check,
// so their generations stay as they were after DROP EXTENSION, CREATE EXTENSION and a restore
// into it (a pooled connection that had written the log skipped the check of the restored one).
static uint32 xids_checked_generation[kLogSegments];
static bool xids_checked = false;

static bool rows_unchecked(void) {
	bool rows = !xids_checked;
	for (int s = 0; s < kLogSegments && !rows; s++)
		rows = !log_layout[s].valid || xids_checked_generation[s] != log_layout[s].generation;
	return rows;
}

// The lowest next xid the log is safe with: above every row's xid (0: none) and window_xmax.
static uint64 xids_needed(uint64 window_xmax, Snapshot snap) {
	uint64 row_xid = 0;
	for (int s = 0; s < kLogSegments; s++)
		row_xid = Max(row_xid, segment_max_xid(s, snap));
	return Max(window_xmax, row_xid ? row_xid + 1 : 0);
}

// the transactions of a pg_xact segment (clog.c: 2 bits a transaction), named %04X by their number
constexpr uint32 kClogXactsPerSegment = BLCKSZ * 4 * SLRU_PAGES_PER_SEGMENT;

// ERROR when next (this cluster's next xid, or the producer's own) is below need; else the rows
// are checked for this process.
static void check_xids_needed(uint64 need, uint64 next, bool producer) {
	if (need > next) {
		uint32 epoch = (uint32)(need >> 32), x = (uint32)need;
		ereport(ERROR,
		        (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		         errmsg("pg_outbox: the log of database \"%s\" was restored from a cluster ahead of this one: it names "
		                "transaction %llu, this cluster's next is %llu",
		                get_database_name(MyDatabaseId), (unsigned long long)(need - 1), (unsigned long long)next),
		         errdetail(producer ? "An event written now would look published already and never be sent: nothing "
		                              "is written into the log until this cluster's transaction counter passes %llu."
		                            : "Events written here would look published already and never be sent: nothing is "
		                              "published until this cluster's transaction counter passes %llu.",
		                   (unsigned long long)(need - 1)),
		         epoch ? errhint("Stop the server cleanly, run VACUUM FREEZE in every database first, then: pg_resetwal "
		                         "-e %u -x %u -D <data directory> (README, \"Backup and restore\"); or restore into a "
		                         "cluster whose pg_current_xact_id() is above %llu.",
		                         epoch, x, (unsigned long long)(need - 1))
		               : errhint("Stop the server cleanly, create the commit log segment the new counter points into "
		                         "if it is missing (dd if=/dev/zero of=<data directory>/pg_xact/%04X bs=%d count=%d), "
		                         "then run pg_resetwal -x %u -D <data directory> (README, \"Backup and restore\"); or "
		                         "restore into a cluster whose pg_current_xact_id() is above %llu.",
		                         x / kClogXactsPerSegment, BLCKSZ, SLRU_PAGES_PER_SEGMENT, x,
		                         (unsigned long long)(need - 1))));
	}
	for (int s = 0; s < kLogSegments; s++)
		xids_checked_generation[s] = log_layout[s].generation;
	xids_checked = true;
}

// The pass's check, every pass: the latest batch's hi.xmax (base_snap's before the first batch)
// against this cluster's next xid, and the rows' xids once.
static void check_log_xids(uint64 window_xmax, Snapshot snap) {
	uint64 need = rows_unchecked() ? xids_needed(window_xmax, snap) : window_xmax;
	check_xids_needed(need, fxid(ReadNextFullTransactionId()), false);
}

// The producer's check (log.hpp), once per process, against this cluster's next xid, on what is
// committed (the latest snapshot). Not against
// the producer's own xid: a transaction that took its xid before passes ran (an UPDATE, then
// publish() in a new connection while the worker publishes) is in those batches' hi as in
// progress, so their xmax is above its xid, rightly (its events go into a later window), and the
// switch in the producer's own transaction moved rows with its xid into the log. What decides for
// the producer's own xid is whether the latest window's hi (base_snap before the first batch)
// counts it committed: then its events would look published already. Only a log restored from a
// cluster ahead does (a transaction that took its xid while the counter was still behind it, and
// writes into the log once the counter has passed it): a pass's hi has every running transaction
// in progress, its own included. It reads in a subtransaction rolled back at once: the locks the
// scans take on the batches and the segments (and their indexes) go with it, and an open producer
// does not hold off a rotation that truncates them.
void check_log_xids_producer(void) {
	if (!rows_unchecked())
		return; // later xids are higher
	FullTransactionId own = GetTopFullTransactionIdIfAny();
	ResourceOwner owner = CurrentResourceOwner;
	BeginInternalSubTransaction(nullptr);
	// What is committed now, not what the producer's snapshot shows: a REPEATABLE READ transaction
	// begun before the restore saw no restored batch and the pristine base_snap, passed, and the
	// rows were called checked for the process (its events, and its later transactions', lost).
	Snapshot snap = RegisterSnapshot(GetLatestSnapshot());
	Batch b{};
	const PgSnapshot *hi;
	if (latest_batch(snap, &b))
		hi = b.hi;
	else {
		TupleDesc sdesc;
		HeapTuple st = single_row(&log_state_layout, snap, &sdesc);
		hi = (const PgSnapshot *)PG_DETOAST_DATUM(col_notnull(st, sdesc, &log_state_layout, kSBaseSnap));
	}
	uint64 window_xmax = fxid(hi->xmax);
	bool own_published = FullTransactionIdIsValid(own) && visible_in(hi, fxid(own));
	uint64 need = xids_needed(window_xmax, snap);
	UnregisterSnapshot(snap);
	RollbackAndReleaseCurrentSubTransaction();
	CurrentResourceOwner = owner;
	uint64 next = fxid(ReadNextFullTransactionId());
	// a counter still behind the log: the general error (a new transaction would be refused too);
	// past it, this transaction alone, before the rows are called checked (its next one checks again)
	if (own_published && need <= next)
		ereport(ERROR,
		        (errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
		         errmsg("pg_outbox: this transaction took its id %llu before this cluster's transaction counter passed "
		                "the log of database \"%s\", restored from a cluster ahead (its latest window ends at %llu)",
		                (unsigned long long)fxid(own), get_database_name(MyDatabaseId),
		                (unsigned long long)window_xmax),
		         errdetail("An event written by this transaction would look published already and never be sent."),
		         errhint("Roll the transaction back and run it again: a new transaction's id is above the restored log's.")));
	check_xids_needed(need, next, true);
}

// ---------------------------------------------------------------------------------------
// Where a channel's events go: outbox.channel_targets (the channel's row, else '*', else
// notify), one primary-key probe per channel of the batch (1.2's drain: one query per batch)
// ---------------------------------------------------------------------------------------
struct TargetReader {
	Relation rel, idx;
	TupleTableSlot *slot;
	Snapshot snap;
	int fallback; // '*'
	bool only_fallback; // the table has no row but (at most) '*': no probe per channel
};

// kTargetNotify | kTargetWal of name's row, or -1 when it has none.
static int target_row(TargetReader *r, const char *name) {
	ScanKeyData key;
	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid, r->idx->rd_indcollation[0], F_TEXTEQ,
	                       CStringGetTextDatum(name));
	IndexScanDesc scan = compat::index_beginscan(r->rel, r->idx, r->snap, 1, 0);
	index_rescan(scan, &key, 1, nullptr, 0);
	int targets = -1;
	if (index_getnext_slot(scan, ForwardScanDirection, r->slot)) {
		bool isnull;
		Datum d = slot_getattr(r->slot, targets_layout.attnum[1], &isnull);
		char *t = isnull ? nullptr : TextDatumGetCString(d);
		targets = !t ? kTargetNotify : strcmp(t, "wal") == 0 ? kTargetWal
		                             : strcmp(t, "both") == 0 ? (kTargetNotify | kTargetWal) : kTargetNotify;
		if (t)
			pfree(t);
	}
	index_endscan(scan);
	return targets;
}

static void targets_open(TargetReader *r, Snapshot snap) {
	r->rel = open_layout(&targets_layout, AccessShareLock);
	r->idx = index_open(index_on(r->rel, targets_layout.attnum[0], 0, "channel"), AccessShareLock);
	r->slot = table_slot_create(r->rel, nullptr);
	r->snap = snap;
	r->fallback = target_row(r, "*");
	if (r->fallback < 0)
		r->fallback = kTargetNotify;
	// the usual table is empty (every channel NOTIFYs) or holds '*' alone: one look at its first two
	// rows instead of a probe per channel of the batch (1,000 new channels: 1,000 probes a pass)
	TableScanDesc scan = table_beginscan(r->rel, snap, 0, nullptr);
	int rows = 0;
	bool star_only = true;
	for (HeapTuple tup; rows < 2 && (tup = heap_getnext(scan, ForwardScanDirection)) != nullptr; rows++) {
		bool isnull;
		Datum d = heap_getattr(tup, targets_layout.attnum[0], RelationGetDescr(r->rel), &isnull);
		char *name = isnull ? nullptr : TextDatumGetCString(d);
		if (!name || strcmp(name, "*") != 0)
			star_only = false;
		if (name)
			pfree(name);
	}
	table_endscan(scan);
	r->only_fallback = rows == 0 || (rows == 1 && star_only);
}

static int targets_of(TargetReader *r, const char *channel) {
	if (r->only_fallback)
		return r->fallback;
	int t = target_row(r, channel);
	return t < 0 ? r->fallback : t;
}

static void targets_close(TargetReader *r) {
	ExecDropSingleTupleTableSlot(r->slot);
	index_close(r->idx, NoLock);
	table_close(r->rel, NoLock);
}

// ---------------------------------------------------------------------------------------
// The pass
// ---------------------------------------------------------------------------------------
struct PassChannel {
	SeqEntry *se; // the channel's seq cache entry (its name; dynahash entries do not move)
	int64 first_seq;
	int32 count;
	int64 next_seq;
	int targets; // kTargetNotify | kTargetWal
};

// What a pass hands its rows to, in (xid, id) order: each gets the next position and the next seq
// of its channel (from the seq cache) and is NOTIFYed at once.
struct PassSink {
	PassChannel *chans; // in the order the pass met them (SeqEntry.pass_slot), in cxt
	int nchannels, chans_cap;
	int prev; // the channel of the row before (-1: none)
	MemoryContext cxt; // the pass's
	ChannelProbe probe;
	int64 first_pos;
	int n; // rows handed off
	uint64 last_xid;
	int64 last_id;
	int64 epoch;
	bool id_only;
	StringInfo payload_text;
	MemoryContext row_cxt; // what one row's hand-off allocates
	TargetReader *targets;
	Snapshot snap;
	int seg; // the segment being read
	// the failure path's rows (nullptr: none, the usual pass): rows left out of the batch go into
	// out->left_out; those after its first event also into skipped (the batch's column), those before
	// it move the batch's start (after) past them
	const LogPassKnown *known;
	LogPassOutcome *out;
	int64 *skipped;
	int nskipped;
	bool after_moved;
	uint64 after_xid;
	int64 after_id;
};

static int compare_rows(const LogRow &a, const LogRow &b) {
	if (a.id != b.id)
		return a.id < b.id ? -1 : 1;
	return a.xid < b.xid ? -1 : a.xid > b.xid ? 1 : 0;
}

bool rows_contain(const LogRow *rows, int n, const LogRow &r) {
	int lo = 0, hi = n;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		int c = compare_rows(rows[mid], r);
		if (c == 0)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

// A row of the window when the failure path knows rows: left out (a failed row waiting for its
// retry, a withheld one), the end of the batch (a newer row of an event the batch already left out:
// skipped names ids, so the two cannot share a batch), or handed off (a watched retry copy is noted).
static RowFate pass_known_row(PassSink *sink, uint64 xid, int64 id) {
	const LogPassKnown *k = sink->known;
	LogRow r{id, xid};
	if (rows_contain(k->skip, k->nskip, r)) {
		if (sink->n == 0) { // before the batch's first event: the batch starts after it
			sink->after_moved = true;
			sink->after_xid = xid;
			sink->after_id = id;
		} else {
			sink->skipped[sink->nskipped++] = id;
			sink->last_xid = xid;
			sink->last_id = id;
		}
		sink->out->left_out[sink->out->nleft_out++] = r;
		return RowFate::LeftOut;
	}
	for (int i = 0; i < sink->nskipped; i++)
		if (sink->skipped[i] == id)
			return RowFate::EndsBatch;
	if (rows_contain(k->watch, k->nwatch, r))
		sink->out->published[sink->out->npublished++] = r;
	return RowFate::Emit;
}

static bool sink_has_known(const PassSink *sink) {
	return sink->known != nullptr;
}

LogPassFault log_pass_fault;

// The batch's channel named key (its index in sink->chans): one hash lookup, in the seq cache,
// whose entry keeps the channel's place in the batch being built.
static int pass_channel(PassSink *sink, const char *key) {
	bool found;
	SeqEntry *se = seq_entry(key, false, &found);
	if (found && se->pass_slot >= 0 && se->pass_slot < sink->nchannels && sink->chans[se->pass_slot].se == se)
		return se->pass_slot;
	if (!found) // past pg_outbox.channel_cache_size: perhaps in outbox.log_channels
		lookup_last_seq(se, &sink->probe);
	if (sink->nchannels == sink->chans_cap) {
		sink->chans_cap *= 2;
		sink->chans = (PassChannel *)repalloc_huge(sink->chans, sizeof(PassChannel) * sink->chans_cap);
	}
	int slot = sink->nchannels++;
	PassChannel *e = &sink->chans[slot];
	e->se = se;
	e->first_seq = se->last_seq + 1;
	e->next_seq = e->first_seq;
	e->count = 0;
	e->targets = targets_of(sink->targets, key);
	se->pass_slot = slot;
	return slot;
}

static void pass_emit(PassSink *sink, TupleTableSlot *slot, const TableLayout *t, uint64 xid, int64 id) {
	// an error from here to the end is this event's hand-off (log_pass() narrows on it)
	log_pass_fault = {id, xid, sink->seg, sink->n};
	if (unlikely(fault_hook_armed))
		fault_hook(id); // drain_failures.cpp: pg_outbox._fail_event_ids, tests only
	MemoryContext old = MemoryContextSwitchTo(sink->row_cxt);
	bool isnull;
	text *ct = DatumGetTextPP(slot_getattr(slot, t->attnum[kLogChannel], &isnull));
	size_t len = isnull ? 0 : VARSIZE_ANY_EXHDR(ct);
	if (len >= NAMEDATALEN || len == 0) // the table's CHECK makes this impossible
		ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
		                errmsg("pg_outbox: event %lld has a channel of %zu bytes", (long long)id, len)));
	PassChannel *e = sink->prev >= 0 ? &sink->chans[sink->prev] : nullptr;
	if (!e || strlen(e->se->name) != len || memcmp(e->se->name, VARDATA_ANY(ct), len) != 0) {
		char key[NAMEDATALEN];
		memcpy(key, VARDATA_ANY(ct), len);
		key[len] = '\0';
		sink->prev = pass_channel(sink, key);
		e = &sink->chans[sink->prev];
	}
	e->count++;
	OutgoingEvent ev;
	ev.channel = e->se->name;
	ev.targets = e->targets;
	ev.id = id;
	ev.pos = sink->first_pos + sink->n;
	ev.seq = e->next_seq++;
	ev.key = slot_getattr(slot, t->attnum[kLogKey], &ev.key_null);
	ev.type = slot_getattr(slot, t->attnum[kLogType], &ev.type_null);
	ev.payload = slot_getattr(slot, t->attnum[kLogPayload], &ev.payload_null);
	ev.epoch = sink->epoch;
	hand_off_event(ev, sink->id_only, sink->payload_text);
	sink->n++;
	sink->last_xid = xid;
	sink->last_id = id;
	MemoryContextSwitchTo(old);
	MemoryContextReset(sink->row_cxt);
	log_pass_fault.id = 0;
}

static int compare_names(const void *a, const void *b) {
	return strcmp((*(PassChannel *const *)a)->se->name, (*(PassChannel *const *)b)->se->name);
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

bool log_pass_cut = false;
int64 log_pass_last_pos = 0;

// What every pass checks first, and the batch lock (log_pass() takes it once for its batches).
void log_pass_prepare(void) {
	if (XactIsoLevel != XACT_READ_COMMITTED)
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		                errmsg("outbox._log_pass() cannot run in a REPEATABLE READ or SERIALIZABLE transaction"),
		                errhint("Call it in autocommit mode or in a READ COMMITTED transaction.")));
	// the batch row goes in without the executor, which would refuse it in a read-only transaction
	// (the reference pass's INSERT is refused; NOTIFY is not)
	check_writable("outbox._log_pass()");
	// The notifications reach listeners at commit: that commit must be durable first, or a crash
	// would hand the same positions and seqs out again (as drain(); SET LOCAL; the
	// worker has it pinned)
	if (!compat::am_background_worker())
		(void)set_config_option("synchronous_commit", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
		                        false);
	// 1. the batch lock (SHARE ROW EXCLUSIVE on outbox.batches, as the SQL pass and rotation take
	//    it), then a snapshot taken after it.
	//    The parent's lock alone serialises passes and keeps rotation out (it asks for the same lock
	//    NOWAIT); the segments' tables are locked as they are read (ACCESS SHARE: a TRUNCATE waits).
	table_close(open_layout(&batch_parent_layout, ShareRowExclusiveLock), NoLock);
}

int64 log_pass_batch(int max_events, const LogPassKnown *known, LogPassOutcome *out) {
	log_pass_cut = false;
	log_pass_fault.id = 0;
	out->wrote_batch = false;
	out->nleft_out = 0;
	out->npublished = 0;
	table_close(open_layout(&batch_parent_layout, ShareRowExclusiveLock), NoLock); // held: a no-op
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
	Batch b{};
	bool have_b = latest_batch(snap, &b);
	// a log restored from a cluster whose xids are ahead of this one's is refused (see above)
	PgSnapshot *base_snap = have_b ? nullptr
	                               : (PgSnapshot *)PG_DETOAST_DATUM_COPY(col_notnull(st, sdesc, &log_state_layout, kSBaseSnap));
	check_log_xids(fxid(have_b ? b.hi->xmax : base_snap->xmax), snap);
	// outbox.log_channels covers the batches up to channels_flushed_pos, so they were all there: a
	// head below it is batches missing (a restore still loading them, pg_restore -j with the worker
	// on; a DBA's DELETE), and the pass would hand their positions out again
	int64 head = have_b ? b.first_pos + b.n - 1 : base_pos;
	int64 purged_pos = DatumGetInt64(col_notnull(st, sdesc, &log_state_layout, kSPurgedPos));
	if (flushed_pos > Max(head, purged_pos))
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox: the log's batches end at position " INT64_FORMAT
		                       ", below its channels_flushed_pos " INT64_FORMAT,
		                       head, flushed_pos),
		                errdetail("Batches that were published are missing (a restore still loading them, or rows "
		                          "deleted by hand): publishing now would hand their positions out again."),
		                errhint("Let pg_restore finish (next time restore into a database that pg_outbox.databases "
		                        "does not list, then add it: README, \"Backup and restore\"). If the batches were "
		                        "removed on purpose: UPDATE outbox.log_state SET channels_flushed_pos = " INT64_FORMAT
		                        ";",
		                        Max(head, purged_pos))));

	// 3. the window, and where in it to start
	int64 first_pos;
	PgSnapshot *lo = nullptr, *hi = nullptr;
	int start; // the segment order index (0: oldest) to start at
	uint64 ax = 0;
	int64 ai = 0;
	bool next_window;
	if (!have_b) {
		first_pos = base_pos + 1;
		lo = base_snap;
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
	// Nothing committed since the latest batch's hi (same xmax, same transactions in progress): the
	// next window is empty, the pass ends before it reads anything else.
	PgSnapshot *now = nullptr; // the next window's hi
	if (next_window && have_b) {
		now = pass_snapshot();
		if (same_snapshot(now, b.hi)) {
			PopActiveSnapshot();
			return 0;
		}
	}
	cache.pass_in_xact = true;
	cache_bring_up_to(first_pos - 1, flushed_pos, snap);

	// 4. seqs per channel and the hand-off, in position order, as the rows are read
	PassSink sink;
	uint32 generation = cache.generation;
	sink.cxt = CurrentMemoryContext;
	sink.chans_cap = 64;
	sink.chans = (PassChannel *)palloc(sizeof(PassChannel) * sink.chans_cap);
	sink.nchannels = 0;
	sink.prev = -1;
	sink.probe.rel = nullptr;
	sink.probe.snap = snap;
	sink.probe.cxt = CurrentMemoryContext;
	sink.first_pos = first_pos;
	sink.n = 0;
	sink.last_xid = 0;
	sink.last_id = 0;
	// [log mode] log_epoch.cpp; the mode from the row read above (the same snapshot): the pass reads
	// outbox.log_state once (a NULL active is 1.2 mode, as log_storage_active() reads it)
	bool active_null;
	Datum active = heap_getattr(st, log_state_layout.attnum[kSActive], sdesc, &active_null);
	sink.epoch = log_pass_epoch(!active_null && DatumGetBool(active), snap, first_pos, read_epoch(snap));
	sink.id_only = notifications_id_only();
	sink.payload_text = makeStringInfo();
	sink.row_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_outbox pass row", ALLOCSET_SMALL_SIZES);
	TargetReader targets;
	targets_open(&targets, snap);
	sink.targets = &targets;
	sink.snap = snap;
	sink.seg = -1;
	sink.known = known && (known->nskip > 0 || known->nwatch > 0) ? known : nullptr;
	sink.out = out;
	sink.skipped = sink.known ? (int64 *)palloc(sizeof(int64) * Max(known->nskip, 1)) : nullptr;
	sink.nskipped = 0;
	sink.after_moved = false;
	sink.after_xid = 0;
	sink.after_id = 0;

	int cap = max_events + 1; // one more: is the batch cut?
	WindowReader w;
	int seg = -1;
	for (int attempt = 0; attempt < 2 && seg < 0; attempt++) {
		if (next_window) {
			if (have_b)
				lo = b.hi;
			hi = now ? now : pass_snapshot();
			start = 0;
			ax = 0;
			ai = 0;
		}
		for (int k = start; k < kLogSegments; k++) {
			int s = (oldest + k) % kLogSegments;
			sink.seg = s;
			reader_open(&w, s, snap, cap, &sink);
			read_window(&w, lo, hi, k == start ? ax : 0, k == start ? ai : 0);
			if (w.n == 0) { // nothing to publish here: rows left out in it stay in no batch
				out->nleft_out = 0;
				sink.after_moved = false;
			}
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
		out->nleft_out = 0;
		probe_close(&sink.probe);
		targets_close(&targets);
		PopActiveSnapshot();
		return 0;
	}
	int n = sink.n;
	bool cut = w.n > n; // a row after the batch was read (or ended it: pass_known_row)
	Assert(n > 0 && (cut ? n <= max_events : n == w.n));
	if (sink.after_moved) { // the batch starts after the rows it left out before its first event
		ax = sink.after_xid;
		ai = sink.after_id;
	}
	if (!cut) // rows of this window in a newer segment?
		for (int k = start + 1; k < kLogSegments && !cut; k++)
			cut = window_has_rows((oldest + k) % kLogSegments, snap, lo, hi, 0, 0);
	int nchannels = sink.nchannels;
	int64 epoch = sink.epoch;
	probe_close(&sink.probe);
	targets_close(&targets);
	// the entries in sink.chans are the cache's: nothing made it anew meanwhile
	if (cache.generation != generation)
		elog(ERROR, "pg_outbox: the seq cache was reloaded in the middle of a pass");

	// 6. the batch row
	PassChannel **sorted = (PassChannel **)palloc(sizeof(PassChannel *) * nchannels);
	for (int j = 0; j < nchannels; j++)
		sorted[j] = &sink.chans[j];
	qsort(sorted, nchannels, sizeof(PassChannel *), compare_names);
	Datum *cn = (Datum *)palloc(sizeof(Datum) * nchannels);
	Datum *cf = (Datum *)palloc(sizeof(Datum) * nchannels);
	Datum *cc = (Datum *)palloc(sizeof(Datum) * nchannels);
	for (int j = 0; j < nchannels; j++) {
		cn[j] = CStringGetTextDatum(sorted[j]->se->name);
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
	vals[kBUptoXid] = FullTransactionIdGetDatum(FullTransactionIdFromU64(sink.last_xid));
	vals[kBUptoId] = Int64GetDatum(sink.last_id);
	vals[kBCut] = BoolGetDatum(cut);
	{
		Datum *sk = (Datum *)palloc(sizeof(Datum) * Max(sink.nskipped, 1));
		for (int j = 0; j < sink.nskipped; j++)
			sk[j] = Int64GetDatum(sink.skipped[j]);
		vals[kBSkipped] =
		    PointerGetDatum(construct_array(sk, sink.nskipped, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	}
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

	// 7. the cache, as it is once this commits (log_pass_xact_event drops it otherwise); the dirty
	//    list grows in cache.cxt
	MemoryContext old = MemoryContextSwitchTo(cache.cxt);
	for (int j = 0; j < nchannels; j++)
		seq_raise_entry(sorted[j]->se, sorted[j]->first_seq + sorted[j]->count - 1, first_pos + n - 1, false);
	MemoryContextSwitchTo(old);
	// outbox.wait() and outbox.next() return at commit, as after a 1.2 drain (consumers.cpp); before
	// the entries go below
	wake_waiters_at_commit();
	for (int j = 0; j < nchannels; j++)
		wake_channel_waiters_at_commit(sorted[j]->se->name);
	cache.upto_pos = first_pos + n - 1;
	// bounded memory: past pg_outbox.channel_cache_size channels, write them all behind and forget
	// them (misses are then looked up in outbox.log_channels)
	bool over = hash_get_num_entries(cache.seqs) > guc_channel_cache_size;
	flush_channels(over);
	if (over)
		cache_overflow();
	log_pass_cut = cut;
	log_pass_last_pos = first_pos + n - 1;
	out->wrote_batch = true;
	out->first_pos = first_pos;
	return n;
}

bool log_row_pending(int seg, uint64 xid, int64 id) {
	Snapshot snap = GetActiveSnapshot();
	TupleDesc sdesc;
	HeapTuple st = single_row(&log_state_layout, snap, &sdesc);
	Batch b{};
	if (!latest_batch(snap, &b)) // the first window is (base_snap, now]
		return !visible_in((PgSnapshot *)PG_DETOAST_DATUM(col_notnull(st, sdesc, &log_state_layout, kSBaseSnap)), xid);
	if (!visible_in(b.hi, xid))
		return true; // a later window's
	if (!b.cut || visible_in(b.lo, xid))
		return false; // a window that is published
	// the cut window of the latest batch: read on after it, in segment order (oldest first)
	int cur_seg = DatumGetInt32(col_notnull(st, sdesc, &log_state_layout, kSCurSeg));
	int oldest = (cur_seg + 1) % kLogSegments;
	int k_row = (seg - oldest + kLogSegments) % kLogSegments, k_batch = (b.seg - oldest + kLogSegments) % kLogSegments;
	if (k_row != k_batch)
		return k_row > k_batch;
	return xid > b.upto_xid || (xid == b.upto_xid && id > b.upto_id);
}

// outbox._log_row_pending(seg integer, xid xid8, id bigint) RETURNS boolean (68_log_failures.sql)
PGO_FUNCTION(outbox_log_row_pending) {
	int32 seg = PG_GETARG_INT32(0);
	if (seg < 0 || seg >= kLogSegments)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("segment must be between 0 and %d, not %d", kLogSegments - 1, seg)));
	PG_RETURN_BOOL(log_row_pending(seg, fxid(PG_GETARG_FULLTRANSACTIONID(1)), PG_GETARG_INT64(2)));
}

// Statement trigger on outbox.log_channels (62_log_pass.sql): every process's seq cache loads the
// table again after this transaction commits (this one's after this statement). The batch lock,
// held to the end of the transaction, keeps passes out until the invalidation is sent: a pass
// whose snapshot saw the commit before its invalidation arrived would use its old cache.
PGO_FUNCTION(outbox_log_channels_changed) {
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("outbox._log_channels_changed() must be called as a trigger")));
	TriggerData *td = (TriggerData *)fcinfo->context;
	if (cache.flushing)
		return PointerGetDatum(nullptr); // a pass writing behind what its batches say already
	Oid parent = extension_relation("batches");
	if (OidIsValid(parent))
		LockRelationOid(parent, ShareRowExclusiveLock);
	CacheInvalidateRelcache(td->tg_relation);
	return PointerGetDatum(nullptr);
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
	// The pass writes its batch row and takes the batch lock without the executor's privilege
	// checks: a role a careless DBA granted EXECUTE would publish (hand positions and seqs out)
	// and hold up every producer's rotation without any right on the log's tables. As the other
	// internal writers: the owner of the log's tables (the extension's) or a superuser. The drain
	// worker and outbox.drain() call log_pass() itself, not this entry.
	Oid batches = extension_relation("batches");
	if (!OidIsValid(batches) || !compat::class_ownercheck(batches, GetUserId()))
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
		                errmsg("permission denied for function outbox._log_pass()"),
		                errdetail("Only the owner of outbox.batches or a superuser may run the log pass."),
		                errhint("The drain worker runs the pass; a role that needs to trigger one calls outbox.drain().")));
	PG_RETURN_INT64(log_pass(max_events));
}

} // namespace pg_outbox
