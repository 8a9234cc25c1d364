// drain.cpp — one drain pass: take a batch of pending events and publish it, in the current
// transaction (drain_batch(); the worker and outbox.drain() run it through drain_failures.cpp).
//
// One drain, one transaction (README, "Guarantees"; doc/design.md, "Follow an event"):
//   0. lock every history segment, in segment order (history.hpp: the lock order of every
//      drain, purge() and retention), before any row;
//   1. take up to N pending events in id order, FOR UPDATE SKIP LOCKED, and delete them
//      (take_batch: an index scan, a row lock and a delete per event) — concurrent drains take
//      disjoint sets;
//   2. bump the position counter: UPDATE outbox.state SET last_pos = last_pos + n — the row
//      lock serialises drains from here to commit, so positions are handed out in commit
//      order, and an aborted drain rolls the counter back: positions have no gaps;
//   3. bump the per-channel counters in outbox.channels (in channel order: no deadlocks); a
//      batch of one channel (the usual case) also reads its target in the same statement;
//   4. insert the events, stamped, into the current history segment (rows formed here and
//      inserted without the executor, direct.hpp);
//   5. per event, by its channel's target (outbox.channel_targets, looked up once per batch):
//      'notify' queues one NOTIFY (Async_Notify) with a size-checked envelope, 'wal' writes one
//      transactional logical decoding message (prefix 'pg_outbox') with the full envelope,
//      'both' does both.
// The NOTIFYs, the WAL messages and the "published" state commit or roll back together.
#include "pg_outbox.hpp"
#include "drain.hpp"
#include "guard.hpp"
#include "pg_compat.hpp"
#include "direct.hpp"
#include "history.hpp"
#include "publish.hpp"
#include "rights.hpp"
#include "spi_util.hpp"

extern "C" {
#include "access/genam.h"
#include "access/detoast.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "commands/sequence.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "catalog/pg_trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "commands/trigger.h"
#include "replication/message.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

#include <string>

namespace pg_outbox {

int64 last_drained_pos = 0;

static SPIPlanPtr plan_take_one = nullptr;
static SPIPlanPtr plan_bump = nullptr;
static SPIPlanPtr plan_chan = nullptr;
static SPIPlanPtr plan_history_max = nullptr;
static SPIPlanPtr plan_set_pos = nullptr;
static SPIPlanPtr plan_epoch_begin = nullptr; // [epochs]
static SPIPlanPtr plan_chan1 = nullptr;
static SPIPlanPtr plan_insert_row[kSegments] = {}; // history, when it has triggers


// [observe] per-channel figures (issue #19), kept in the row the counter bump updates anyway: events
// published, when last, and a one-minute rate as two buckets (the current minute and the one
// before). The new values come in excluded.* (excluded.last_seq is the batch's count on the
// channel); SET sees the old row in c.*, so the order of the assignments does not matter.
#define CHANNEL_FIGURES_MINUTE "date_bin('1 minute', now(), '2000-01-01 00:00+00'::timestamptz)" // UTC minutes
#define CHANNEL_FIGURES_COLUMNS ", published, last_published_at, minute_start, minute_count, prev_minute_count"
#define CHANNEL_FIGURES_SET                                                                                           \
	", published = c.published + excluded.last_seq, last_published_at = excluded.last_published_at,"                \
	" prev_minute_count = CASE WHEN c.minute_start = excluded.minute_start THEN c.prev_minute_count"              \
	"   WHEN c.minute_start = excluded.minute_start - interval '1 minute' THEN c.minute_count ELSE 0 END,"         \
	" minute_count = CASE WHEN c.minute_start = excluded.minute_start THEN c.minute_count + excluded.last_seq"     \
	"   ELSE excluded.last_seq END,"                                                                                \
	" minute_start = excluded.minute_start"

static void prepare_drain_plans(void) {
	if (plan_take_one)
		return;
	Oid take_one_types[] = {INT8OID};
	plan_take_one = keep_plan("WITH batch AS (SELECT id FROM outbox.pending WHERE id = $1 FOR UPDATE SKIP LOCKED),"
	                        " taken AS (DELETE FROM outbox.pending p USING batch b WHERE p.id = b.id"
	                        "           RETURNING p.id, p.channel, p.key, p.type, p.payload, p.created_at)"
	                        " SELECT id, channel, key, type, payload, created_at FROM taken",
	                        1, take_one_types);
	Oid bump_types[] = {INT8OID};
	// [epochs] the bump also compares the cluster the current epoch began on with this one: one
	// comparison per drain, in the row the drain updates anyway (22_epochs.sql)
	Oid bump_epoch_types[] = {INT8OID, INT8OID, TEXTOID, OIDOID};
	plan_bump = keep_plan("UPDATE outbox.state SET last_pos = last_pos + $1 RETURNING last_pos, cur_seg, epoch,"
	                      " timeline IS DISTINCT FROM $2 OR system_identifier IS DISTINCT FROM $3"
	                      " OR database_oid IS DISTINCT FROM $4",
	                      4, bump_epoch_types);
	plan_epoch_begin = keep_plan("SELECT outbox._epoch_begin($1, $2, $3, $4)", 4, bump_epoch_types);
	// A fresh counter (0) may sit below a history that pg_restore loaded before the state row:
	// then positions start after the history (run only when the counter was 0).
	plan_history_max = keep_plan("SELECT coalesce(max(pos), 0) FROM outbox.history_frozen", 0, nullptr);
	plan_set_pos = keep_plan("UPDATE outbox.state SET last_pos = $1 RETURNING last_pos, cur_seg", 1, bump_types);
	// The usual batch has one channel: its counter and its target in one statement.
	Oid chan1_types[] = {TEXTOID, INT8OID};
	// [observe] the same statement keeps the channel's figures (96_observe.sql, CHANNEL_FIGURES)
	plan_chan1 = keep_plan("INSERT INTO outbox.channels AS c (channel, last_seq" CHANNEL_FIGURES_COLUMNS ")"
	                       " VALUES ($1, $2, $2, now(), " CHANNEL_FIGURES_MINUTE ", $2, 0)"
	                       " ON CONFLICT (channel) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq"
	                       CHANNEL_FIGURES_SET
	                       " RETURNING c.last_seq, CASE coalesce("
	                       "   (SELECT t.target FROM outbox.channel_targets t WHERE t.channel = $1),"
	                       "   (SELECT d.target FROM outbox.channel_targets d WHERE d.channel = '*'), 'notify')"
	                       " WHEN 'wal' THEN 2 WHEN 'both' THEN 3 ELSE 1 END",
	                       2, chan1_types);
	Oid chan_types[] = {TEXTARRAYOID, INT8ARRAYOID};
	plan_chan = keep_plan("INSERT INTO outbox.channels AS c (channel, last_seq" CHANNEL_FIGURES_COLUMNS ")"
	                    " SELECT u.channel, u.n, u.n, now(), " CHANNEL_FIGURES_MINUTE ", u.n, 0"
	                    " FROM unnest($1::text[], $2::bigint[]) AS u(channel, n)"
	                    " ORDER BY u.channel"
	                    " ON CONFLICT (channel) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq"
	                    CHANNEL_FIGURES_SET
	                    " RETURNING c.channel, c.last_seq",
	                    2, chan_types);
}

struct ChannelEntry {
	char name[NAMEDATALEN]; // hash key
	int64 count;            // events of this channel in the batch
	int64 next_seq;         // next seq to hand out
	int targets;            // kTargetNotify | kTargetWal, from outbox.channel_targets
};

// Where a channel's events go (outbox.channel_targets.target: 'notify', 'wal' or 'both').

// A statement on one of our tables came back without the row it must return: a trigger, rule or
// policy a DBA put on the table (a BEFORE trigger returning NULL, an INSTEAD rule, a policy)
// kept it from storing the row. An error, never a read past the result.
static void row_missing(const char *table, const char *what) {
	ereport(ERROR, (errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
	                errmsg("pg_outbox: %s stored no row in %s", what, table),
	                errdetail("A trigger, rule or row-level security policy on %s skipped or changed the row.", table),
	                errhint("Drop what was added to %s (\\d+ %s lists triggers, rules and policies): pg_outbox "
	                        "cannot publish without it.",
	                        table, table)));
}

// Column col of row r of the last SPI result as int8 (or int4 when is_int4), which must not
// be NULL.
static int64 spi_int(uint64 r, int col, bool is_int4, const char *table, const char *what) {
	if (r >= SPI_processed)
		row_missing(table, what);
	bool isnull;
	Datum d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, col, &isnull);
	if (isnull)
		ereport(ERROR, (errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
		                errmsg("pg_outbox: %s returned NULL from %s", what, table),
		                errdetail("A trigger or rule on %s changed the row.", table),
		                errhint("Drop what was added to %s: pg_outbox cannot publish without it.", table)));
	return is_int4 ? (int64)DatumGetInt32(d) : DatumGetInt64(d);
}

double notify_queue_usage(void) {
	return DatumGetFloat8(DirectFunctionCall1(pg_notification_queue_usage, (Datum)0));
}

// The envelope buffer is static: it is reused across events and never destroyed by a longjmp.
static std::string envelope_buffer;

// The fields of one event, for the NOTIFY and the WAL envelope alike.
static EventFields event_fields(int64 id, int64 pos, int64 seq, const char *key, const char *type,
                                const char *payload, int64 epoch) {
	EventFields f;
	f.id = id;
	f.pos = pos;
	f.epoch = epoch; // [epochs]
	f.seq = seq;
	f.key = key;
	f.type = type;
	if (payload) {
		f.payload = payload;
		f.has_payload = true;
	}
	return f;
}

// A payload whose jsonb takes more than this is never rendered for a NOTIFY: its text cannot fit
// in 7999 bytes (jsonb's binary form is at most about 6 times its text: a JEntry, a header and
// alignment per value against at least 2 bytes of text), so its envelope carries the id only.
constexpr Size kRenderPayloadBytes = 64 * 1024;
constexpr size_t kKeepEnvelopeBufferBytes = 64 * 1024;

// id_only: {"id","pos","epoch","seq","truncated":true} and nothing else (channel rights: rights.hpp).
static const char *build_envelope(int64 id, int64 pos, int64 seq, const char *key, const char *type,
                                  const char *payload, bool payload_too_big, bool key_type_too_big, bool id_only,
                                  int64 epoch) {
	EventFields f = event_fields(id, pos, seq, key, type, payload, epoch);
	f.payload_too_big = payload_too_big;
	f.key_type_too_big = key_type_too_big;
	if (envelope_buffer.capacity() > kKeepEnvelopeBufferBytes) // a large event's buffer goes back
		std::string().swap(envelope_buffer);
	if (build_event_envelope(envelope_buffer, f, id_only ? 0 : kMaxPayloadBytes) == Fit::OutOfMemory)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory building an event envelope")));
	return envelope_buffer.c_str();
}

// The WAL envelope buffer: static like envelope_buffer. A large one is given back after use so
// that one huge event does not pin its size in the worker for good.
static std::string wal_buffer;
constexpr size_t kKeepWalBufferBytes = 1024 * 1024;

static void release_wal_buffer() noexcept {
	std::string().swap(wal_buffer);
}

// Write one event into the WAL as a transactional logical decoding message: it is decoded only
// if (and when) the drain transaction commits, in the order written, i.e. in pos order.
static void emit_wal_message(const char *channel, int64 id, int64 pos, int64 seq, const char *key, const char *type,
                             const char *payload, int64 epoch) {
	EventFields f = event_fields(id, pos, seq, key, type, payload, epoch);
	f.channel = channel;
	if (build_wal_envelope(wal_buffer, f) == Fit::OutOfMemory)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory building the WAL envelope of event %lld",
		                                                      (long long)id)));
	compat::log_logical_message(kWalMessagePrefix, wal_buffer.data(), wal_buffer.size(), true);
	if (wal_buffer.capacity() > kKeepWalBufferBytes)
		release_wal_buffer();
}

// Hand one event off by its channel's targets: NOTIFY and/or a WAL message (drain.hpp).
// Memory stays bounded whatever the payload: sizes are read from the stored values (no
// detoasting) first; a NOTIFY-only event whose payload, key or type cannot fit is never
// rendered (its envelope carries the id), and every detoasted copy and large buffer is given
// back after its event, not at the end of the batch. payload_text is reused per event: no
// palloc/pfree per event, and a batch of large payloads does not pile up.
void hand_off_event(const OutgoingEvent &ev, bool id_only, StringInfo payload_text) {
	bool wal = (ev.targets & kTargetWal) != 0;
	Size key_raw = ev.key_null ? 0 : toast_raw_datum_size(ev.key);
	Size type_raw = ev.type_null ? 0 : toast_raw_datum_size(ev.type);
	Size payload_raw = ev.payload_null ? 0 : toast_raw_datum_size(ev.payload);
	bool key_type_too_big = key_raw > kMaxPayloadBytes + VARHDRSZ || type_raw > kMaxPayloadBytes + VARHDRSZ;
	bool payload_too_big = payload_raw > kRenderPayloadBytes;
	bool render_all = wal || (!key_type_too_big && !payload_too_big);
	const char *key = nullptr, *type = nullptr, *payload = nullptr;
	Jsonb *jb = nullptr;
	if (!ev.key_null && (render_all || !key_type_too_big))
		key = TextDatumGetCString(ev.key);
	if (!ev.type_null && (render_all || !key_type_too_big))
		type = TextDatumGetCString(ev.type);
	if (!ev.payload_null && (render_all || !payload_too_big)) {
		jb = DatumGetJsonbP(ev.payload);
		resetStringInfo(payload_text);
		payload = jsonb_compact_text(payload_text, &jb->root); // the canonical text (jsonb_text.hpp)
	}
	if (wal)
		emit_wal_message(ev.channel, ev.id, ev.pos, ev.seq, key, type, payload, ev.epoch);
	if (ev.targets & kTargetNotify) {
		// render_all for the WAL: the NOTIFY still leaves out what cannot fit
		bool kt_big = key_type_too_big || (key && strlen(key) > kMaxPayloadBytes) ||
		              (type && strlen(type) > kMaxPayloadBytes);
		Async_Notify(ev.channel, build_envelope(ev.id, ev.pos, ev.seq, kt_big ? nullptr : key, kt_big ? nullptr : type,
		                                        payload_too_big ? nullptr : payload, payload_too_big, kt_big, id_only,
		                                        ev.epoch));
	}
	if (jb && (Pointer)jb != DatumGetPointer(ev.payload))
		pfree(jb);
	if (key)
		pfree((void *)key);
	if (type)
		pfree((void *)type);
	if (payload_text->maxlen > (int)kKeepEnvelopeBufferBytes) {
		pfree(payload_text->data);
		initStringInfo(payload_text);
	}
}

// Set e->targets for every channel of the batch: one query per batch, not one per event.
// A channel without a row of its own follows the '*' row, and 'notify' when there is none.
static SPIPlanPtr plan_targets = nullptr;

static void lookup_targets(HTAB *channels, int nchannels) {
	if (!plan_targets) {
		Oid types[] = {TEXTARRAYOID};
		plan_targets = keep_plan("SELECT u.channel, CASE coalesce(t.target, d.target, 'notify')"
		                       "   WHEN 'wal' THEN 2 WHEN 'both' THEN 3 ELSE 1 END"
		                       " FROM unnest($1::text[]) AS u(channel)"
		                       " LEFT JOIN outbox.channel_targets t ON t.channel = u.channel"
		                       " LEFT JOIN outbox.channel_targets d ON d.channel = '*'",
		                       1, types);
	}
	Datum *cn = (Datum *)palloc(nchannels * sizeof(Datum));
	HASH_SEQ_STATUS st;
	hash_seq_init(&st, channels);
	int j = 0;
	for (ChannelEntry *e; (e = (ChannelEntry *)hash_seq_search(&st)) != nullptr; j++) {
		e->targets = kTargetNotify;
		cn[j] = CStringGetTextDatum(e->name);
	}
	Datum args[] = {PointerGetDatum(construct_array(cn, nchannels, TEXTOID, -1, false, TYPALIGN_INT))};
	spi_check(SPI_execute_plan(plan_targets, args, nullptr, false, 0), SPI_OK_SELECT, "looking up channel targets");
	for (uint64 r = 0; r < SPI_processed; r++) {
		bool isnull;
		char *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		int targets = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
		ChannelEntry *e = (ChannelEntry *)hash_search(channels, name, HASH_FIND, nullptr);
		if (!e)
			elog(ERROR, "pg_outbox: channel \"%s\" came back from outbox.channel_targets unasked", name);
		e->targets = targets;
	}
	SPI_freetuptable(SPI_tuptable);
}

struct TakenRow {
	int64 id;
	HeapTuple tuple;
};

static int compare_taken(const void *a, const void *b) {
	int64 x = static_cast<const TakenRow *>(a)->id, y = static_cast<const TakenRow *>(b)->id;
	return x < y ? -1 : x > y ? 1 : 0;
}

// Take up to max_events pending events, oldest id first, as SELECT ... ORDER BY id FOR UPDATE
// SKIP LOCKED would, and delete them — directly (one index scan, a row lock and a delete per
// event), not through a DELETE ... WHERE ctid = ANY (ARRAY(SELECT ... FOR UPDATE SKIP LOCKED))
// whose executor nodes cost as much again. A row another drain holds is skipped; so is a row
// deleted or updated since our snapshot (a later pass sees its new version). Returns copies of
// the deleted rows, in id order, in outbox.pending's own layout (*desc; col[] maps id, channel,
// key, type, payload, created_at). If a DBA put DELETE triggers (or a foreign key) on the table,
// the same is done through SQL, which fires them.
// Events being retried (drain_failures.cpp: outbox.failures) that a batch leaves alone: sorted ids.
struct SkipSet {
	const int64 *ids;
	int n;
	bool has(int64 id) const {
		int lo = 0, hi = n - 1;
		while (lo <= hi) {
			int mid = lo + (hi - lo) / 2;
			if (ids[mid] == id)
				return true;
			if (ids[mid] < id)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
		return false;
	}
};

static uint64 take_batch_sql(int max_events, const SkipSet &skip, HeapTuple **out, TupleDesc *desc, AttrNumber *col);

static uint64 take_batch(int max_events, const SkipSet &skip, HeapTuple **out, TupleDesc *desc, AttrNumber *col) {
	Relation rel = open_layout(&pending_layout, RowExclusiveLock);
	if (has_foreign_triggers(rel, TRIGGER_TYPE_DELETE, nullptr)) {
		// a DBA's DELETE trigger or a foreign key referencing pending: only SQL fires them
		table_close(rel, NoLock);
		return take_batch_sql(max_events, skip, out, desc, col);
	}
	Oid pk = compat::primary_key_index(rel);
	if (!OidIsValid(pk))
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("table outbox.pending has no primary key"), errhint("Reinstall the extension.")));
	Relation idx = index_open(pk, AccessShareLock);
	// A fresh snapshot, as a new statement would have (READ COMMITTED sees the drains that
	// committed meanwhile).
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	Snapshot snap = GetActiveSnapshot();
	CommandId cid = GetCurrentCommandId(true);
	TupleTableSlot *seen = table_slot_create(rel, nullptr);
	TupleTableSlot *locked = table_slot_create(rel, nullptr);
	IndexScanDesc scan = compat::index_beginscan(rel, idx, snap, 0, 0);
	index_rescan(scan, nullptr, 0, nullptr, 0);
	HeapTuple *rows = (HeapTuple *)palloc(Max(max_events, 1) * sizeof(HeapTuple));
	uint64 n = 0;
	while (n < (uint64)max_events && index_getnext_slot(scan, ForwardScanDirection, seen)) {
		CHECK_FOR_INTERRUPTS();
		if (skip.n > 0) {
			bool isnull;
			Datum id = slot_getattr(seen, pending_layout.attnum[0], &isnull);
			if (!isnull && skip.has(DatumGetInt64(id)))
				continue; // being retried on its own (outbox.failures)
		}
		TM_FailureData tmfd;
		TM_Result r = table_tuple_lock(rel, &seen->tts_tid, snap, locked, cid, LockTupleExclusive, LockWaitSkip, 0, &tmfd);
		if (r != TM_Ok)
			continue; // held by another drain, or gone since our snapshot
		ItemPointerData tid = locked->tts_tid;
		r = table_tuple_delete(rel, &tid, cid, snap, InvalidSnapshot, true, &tmfd, false);
		if (r != TM_Ok)
			elog(ERROR, "pg_outbox: could not delete pending event after locking it (result %d)", (int)r);
		rows[n++] = ExecCopySlotHeapTuple(locked);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(seen);
	ExecDropSingleTupleTableSlot(locked);
	PopActiveSnapshot();
	*desc = CreateTupleDescCopyConstr(RelationGetDescr(rel)); // with the defaults of added columns
	index_close(idx, NoLock);
	table_close(rel, NoLock);
	*out = rows;
	for (int k = 0; k < 6; k++)
		col[k] = pending_layout.attnum[k]; // pending_cols is in that order
	return n;
}

// take_batch() through SQL: the same rows, in the layout of the RETURNING list.
static uint64 take_batch_sql(int max_events, const SkipSet &skip, HeapTuple **out, TupleDesc *desc, AttrNumber *col) {
	static SPIPlanPtr plan = nullptr;
	if (!plan) {
		Oid types[] = {INT4OID, INT8ARRAYOID};
		plan = keep_plan("DELETE FROM outbox.pending WHERE ctid = ANY (ARRAY("
		                 " SELECT ctid FROM outbox.pending WHERE id <> ALL ($2) ORDER BY id LIMIT $1"
		                 " FOR UPDATE SKIP LOCKED))"
		                 " RETURNING id, channel, key, type, payload, created_at",
		                 2, types);
	}
	Datum *sk = (Datum *)palloc(Max(skip.n, 1) * sizeof(Datum));
	for (int k = 0; k < skip.n; k++)
		sk[k] = Int64GetDatum(skip.ids[k]);
	Datum args[] = {Int32GetDatum(max_events),
	                PointerGetDatum(construct_array(sk, skip.n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE))};
	spi_check(SPI_execute_plan(plan, args, nullptr, false, 0), SPI_OK_DELETE_RETURNING, "taking a batch");
	*out = SPI_tuptable->vals;
	*desc = SPI_tuptable->tupdesc;
	for (int k = 0; k < 6; k++)
		col[k] = (AttrNumber)(k + 1);
	return SPI_processed;
}

int64 drain_batch(int max_events, int64 only_id, const int64 *skip_ids, int nskip) {
	if (max_events <= 0)
		return 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	prepare_drain_plans();

	// 0. lock every history segment before the rows and the state row (lock_history_segments)
	lock_history_segments();

	// 1. take a batch (or the one event only_id, by SQL: it is rare)
	HeapTuple *taken;
	TupleDesc bdesc;
	uint64 n;
	AttrNumber col[6]; // id, channel, key, type, payload, created_at in the taken rows
	if (only_id) {
		Datum take_args[] = {Int64GetDatum(only_id)};
		spi_check(SPI_execute_plan(plan_take_one, take_args, nullptr, false, 0), SPI_OK_SELECT, "taking an event");
		taken = SPI_tuptable->vals;
		bdesc = SPI_tuptable->tupdesc;
		n = SPI_processed;
		for (int k = 0; k < 6; k++)
			col[k] = (AttrNumber)(k + 1);
	} else {
		SkipSet skip{skip_ids, nskip};
		n = take_batch(max_events, skip, &taken, &bdesc, col);
	}
	if (n == 0) {
		SPI_finish();
		return 0;
	}
	// Events in id order, which positions follow (take_batch returns them so already).
	TakenRow *rows = (TakenRow *)palloc(n * sizeof(TakenRow));
	bool sorted = true;
	for (uint64 i = 0; i < n; i++) {
		bool isnull;
		rows[i].tuple = taken[i];
		rows[i].id = DatumGetInt64(heap_getattr(taken[i], col[0], bdesc, &isnull));
		if (i > 0 && rows[i].id < rows[i - 1].id)
			sorted = false;
	}
	if (!sorted)
		qsort(rows, n, sizeof(TakenRow), compare_taken);

	// Count events per channel.
	HASHCTL ctl;
	memset(&ctl, 0, sizeof ctl);
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(ChannelEntry);
	ctl.hcxt = CurrentMemoryContext;
	HTAB *channels = hash_create("pg_outbox batch channels", 16, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	Datum *ids = (Datum *)palloc(n * sizeof(Datum));
	Datum *chans = (Datum *)palloc(n * sizeof(Datum));
	Datum *keys = (Datum *)palloc(n * sizeof(Datum));
	Datum *types = (Datum *)palloc(n * sizeof(Datum));
	Datum *payloads = (Datum *)palloc(n * sizeof(Datum));
	Datum *created = (Datum *)palloc(n * sizeof(Datum));
	bool *key_null = (bool *)palloc(n * sizeof(bool));
	bool *type_null = (bool *)palloc(n * sizeof(bool));
	bool *payload_null = (bool *)palloc(n * sizeof(bool));
	// Each event's channel counter. Batches are usually runs of one channel: an event whose
	// channel is the previous event's reuses its entry without hashing (dynahash entries never
	// move, so the pointers stay valid).
	ChannelEntry **entry = (ChannelEntry **)palloc(n * sizeof(ChannelEntry *));
	ChannelEntry *prev = nullptr;
	size_t prev_len = 0;
	int nchannels = 0;
	for (uint64 i = 0; i < n; i++) {
		HeapTuple t = rows[i].tuple;
		bool isnull;
		ids[i] = Int64GetDatum(rows[i].id);
		chans[i] = heap_getattr(t, col[1], bdesc, &isnull);
		keys[i] = heap_getattr(t, col[2], bdesc, &key_null[i]);
		types[i] = heap_getattr(t, col[3], bdesc, &type_null[i]);
		payloads[i] = heap_getattr(t, col[4], bdesc, &payload_null[i]);
		created[i] = heap_getattr(t, col[5], bdesc, &isnull);
		text *ct = DatumGetTextPP(chans[i]);
		size_t len = VARSIZE_ANY_EXHDR(ct);
		ChannelEntry *e = prev;
		if (!e || len != prev_len || memcmp(e->name, VARDATA_ANY(ct), len) != 0) {
			if (len >= NAMEDATALEN) // the table's CHECK makes this impossible
				elog(ERROR, "pg_outbox: event %lld has an over-long channel", (long long)DatumGetInt64(ids[i]));
			char key[NAMEDATALEN];
			memcpy(key, VARDATA_ANY(ct), len);
			key[len] = '\0';
			bool found;
			e = (ChannelEntry *)hash_search(channels, key, HASH_ENTER, &found);
			if (!found) {
				e->count = 0;
				nchannels++;
			}
			prev = e;
			prev_len = len;
		}
		e->count++;
		entry[i] = e;
	}

	// 2. positions
	// [epochs] this cluster: the system identifier and database never change while a process runs
	static char sysid[32] = "";
	if (!sysid[0])
		snprintf(sysid, sizeof sysid, UINT64_FORMAT, GetSystemIdentifier());
	Datum bump_args[] = {Int64GetDatum((int64)n), Int64GetDatum((int64)compat::wal_insertion_timeline()),
	                     CStringGetTextDatum(sysid), ObjectIdGetDatum(MyDatabaseId)};
	spi_check(SPI_execute_plan(plan_bump, bump_args, nullptr, false, 0), SPI_OK_UPDATE_RETURNING,
	          "bumping the position");
	if (SPI_processed > 1)
		row_missing("outbox.state", "the position update (more than one row)");
	if (SPI_processed != 1)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox: the row of outbox.state is missing"),
		                errdetail("Or a trigger, rule or policy on outbox.state kept the position update from storing it."),
		                errhint("Recreate it with INSERT INTO outbox.state DEFAULT VALUES, or reinstall the extension.")));
	int64 last_pos = spi_int(0, 1, false, "outbox.state", "the position update");
	int seg = (int)spi_int(0, 2, true, "outbox.state", "the position update");
	int64 epoch = spi_int(0, 3, false, "outbox.state", "the position update"); // [epochs]
	bool isnull;
	bool new_epoch = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	if (isnull)
		new_epoch = false;
	if (last_pos == (int64)n) {
		// the counter was 0: after a restore, the history may already hold positions
		spi_check(SPI_execute_plan(plan_history_max, nullptr, nullptr, false, 1), SPI_OK_SELECT,
		          "reading the history's last position");
		int64 max_pos = spi_int(0, 1, false, "outbox.history_frozen", "reading the last position");
		if (max_pos > 0) {
			Datum set_args[] = {Int64GetDatum(max_pos + (int64)n)};
			spi_check(SPI_execute_plan(plan_set_pos, set_args, nullptr, false, 0), SPI_OK_UPDATE_RETURNING,
			          "setting the position after the restored history");
			last_pos = spi_int(0, 1, false, "outbox.state", "setting the position after the restored history");
			if (SPI_processed != 1 || last_pos != max_pos + (int64)n)
				row_missing("outbox.state", "setting the position after the restored history");
		}
	}
	if (last_pos < (int64)n)
		ereport(ERROR, (errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
		                errmsg("pg_outbox: outbox.state.last_pos is %lld after handing out %lld positions",
		                       (long long)last_pos, (long long)n),
		                errhint("A trigger or rule on outbox.state changed the counter: drop it.")));
	if (seg < 0 || seg >= kSegments)
		elog(ERROR, "pg_outbox: outbox.state.cur_seg is %d, expected 0..%d", seg, kSegments - 1);
	int64 first_pos = last_pos - (int64)n + 1;
	if (new_epoch) {
		// [epochs] another timeline, cluster or database (or the first drain): a new epoch begins
		// with this batch, recorded before its events (same transaction: both or neither commit)
		bump_args[0] = Int64GetDatum(first_pos);
		spi_check(SPI_execute_plan(plan_epoch_begin, bump_args, nullptr, false, 0), SPI_OK_SELECT,
		          "beginning a new epoch");
		epoch = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}

	// 3. per-channel sequence numbers (and, for a one-channel batch, the channel's target)
	bool targets_known = false;
	if (nchannels == 1) {
		ChannelEntry *e = entry[0];
		Datum chan_args[] = {chans[0], Int64GetDatum(e->count)};
		spi_check(SPI_execute_plan(plan_chan1, chan_args, nullptr, false, 0), SPI_OK_INSERT_RETURNING,
		          "bumping the channel sequence");
		if (SPI_processed != 1)
			row_missing("outbox.channels", "the channel counter update");
		int64 last_seq = spi_int(0, 1, false, "outbox.channels", "the channel counter update");
		e->targets = (int)spi_int(0, 2, true, "outbox.channels", "the channel counter update");
		e->next_seq = last_seq - e->count + 1;
		if (last_seq < e->count)
			row_missing("outbox.channels", "the channel counter update (a counter below the batch)");
		targets_known = true;
	} else {
		Datum *cn = (Datum *)palloc(nchannels * sizeof(Datum));
		Datum *cc = (Datum *)palloc(nchannels * sizeof(Datum));
		HASH_SEQ_STATUS st;
		hash_seq_init(&st, channels);
		int j = 0;
		for (ChannelEntry *e; (e = (ChannelEntry *)hash_seq_search(&st)) != nullptr; j++) {
			cn[j] = CStringGetTextDatum(e->name);
			cc[j] = Int64GetDatum(e->count);
		}
		Datum chan_args[] = {PointerGetDatum(construct_array(cn, nchannels, TEXTOID, -1, false, TYPALIGN_INT)),
		                     PointerGetDatum(construct_array(cc, nchannels, INT8OID, 8, FLOAT8PASSBYVAL, 'd'))};
		spi_check(SPI_execute_plan(plan_chan, chan_args, nullptr, false, 0), SPI_OK_INSERT_RETURNING,
		          "bumping channel sequences");
		// every channel must come back exactly once: a counter left unset would stamp garbage
		if (SPI_processed != (uint64)nchannels)
			row_missing("outbox.channels", "the channel counter update");
		hash_seq_init(&st, channels);
		for (ChannelEntry *e; (e = (ChannelEntry *)hash_seq_search(&st)) != nullptr;)
			e->next_seq = -1;
		for (uint64 r = 0; r < SPI_processed; r++) {
			char *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
			int64 last_seq = spi_int(r, 2, false, "outbox.channels", "the channel counter update");
			ChannelEntry *e = name ? (ChannelEntry *)hash_search(channels, name, HASH_FIND, nullptr) : nullptr;
			if (!e || e->next_seq != -1 || last_seq < e->count)
				row_missing("outbox.channels", "the channel counter update (a channel changed or repeated)");
			e->next_seq = last_seq - e->count + 1;
		}
	}

	// 4. history, stamped (the rows are formed here: no executor start, no unnest, no tuplestore)
	Datum *poss = (Datum *)palloc(n * sizeof(Datum));
	Datum *seqs = (Datum *)palloc(n * sizeof(Datum));
	{
		Datum published_at = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		DirectInsert d;
		direct_begin(&d, &history_layout[seg], kMultiInsertRows);
		// A DBA's INSERT trigger (or generated column) on the segment: one SQL INSERT per event.
		if (d.use_sql && !plan_insert_row[seg]) {
			char sql[256];
			snprintf(sql, sizeof sql,
			         "INSERT INTO outbox.history_%d (pos, seq, id, channel, key, type, payload, created_at, published_at)"
			         " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
			         seg);
			Oid types[] = {INT8OID, INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
			plan_insert_row[seg] = keep_plan(sql, lengthof(types), types);
		}
		for (uint64 i = 0; i < n; i++) {
			ChannelEntry *e = entry[i];
			poss[i] = Int64GetDatum(first_pos + (int64)i);
			seqs[i] = Int64GetDatum(e->next_seq++);
			Datum vals[] = {poss[i], seqs[i], ids[i], chans[i], keys[i], types[i], payloads[i], created[i], published_at};
			bool nulls[] = {false, false, false, false, key_null[i], type_null[i], payload_null[i], false, false};
			if (!d.use_sql) {
				direct_row(&d, vals, nulls);
				continue;
			}
			char cnulls[lengthof(nulls)];
			for (size_t k = 0; k < lengthof(nulls); k++)
				cnulls[k] = nulls[k] ? 'n' : ' ';
			int rc = SPI_execute_plan(plan_insert_row[seg], vals, cnulls, false, 0);
			if (rc != SPI_OK_INSERT || SPI_processed != 1) {
				// a DBA's BEFORE trigger returned NULL, an INSTEAD rule: the position would go
				// missing (and replay fail on the gap) — an error of this event
				char table[NAMEDATALEN + 8];
				snprintf(table, sizeof table, "outbox.history_%d", seg);
				ereport(ERROR, (errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				                errmsg("pg_outbox: the history insert of event %lld stored no row in %s",
				                       (long long)DatumGetInt64(ids[i]), table),
				                errdetail("A trigger, rule or policy on %s skipped the row; its position %lld "
				                          "would be missing from the history.",
				                          table, (long long)DatumGetInt64(poss[i])),
				                errhint("Drop what was added to %s, then outbox.retry() the event.", table)));
			}
		}
		direct_end(&d);
	}

	// 5. one envelope per event: NOTIFY and/or a WAL message, by the channel's target
	if (!targets_known)
		lookup_targets(channels, nchannels);
	// one jsonb-to-text buffer for the whole batch (hand_off_event)
	StringInfo payload_text = makeStringInfo();
	bool id_only = notifications_id_only(); // read rights enforced: nothing guarded goes into NOTIFY
	for (uint64 i = 0; i < n; i++) {
		ChannelEntry *e = entry[i];
		OutgoingEvent ev{e->name,           e->targets,   DatumGetInt64(ids[i]), DatumGetInt64(poss[i]),
		                 DatumGetInt64(seqs[i]), keys[i],  key_null[i],         types[i],
		                 type_null[i],      payloads[i],  payload_null[i],      epoch};
		hand_off_event(ev, id_only, payload_text);
	}

	last_drained_pos = last_pos;
	wake_waiters_at_commit(); // consumers.cpp: outbox.wait() and outbox.next() return at commit
	{
		HASH_SEQ_STATUS st;
		hash_seq_init(&st, channels);
		for (ChannelEntry *e; (e = (ChannelEntry *)hash_seq_search(&st)) != nullptr;)
			wake_channel_waiters_at_commit(e->name); // and the waiters of these channels alone
	}
	SPI_finish();
	return (int64)n;
}

} // namespace pg_outbox
