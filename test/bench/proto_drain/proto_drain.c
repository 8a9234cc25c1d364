/*
 * proto_drain.c — one drain pass of doc/storage.md in C, over the prototype's tables
 * (test/bench/storage_proto.sql, schema proto), for test/bench/storage_proto.sh: what the pass
 * costs when the per-event work (stamping pos and seq, the envelope, NOTIFY) is C and the
 * channels' last_seq live in a process-local hash table written behind. Lab equipment, not
 * part of pg_outbox (plain C, built and loaded only by the benchmark scripts): it uses SPI for
 * the per-pass statements (the batch lock, the latest batch, the snapshot, the window query, the
 * channel lookup and write-behind, the batch row), trusts that no other session drains while its
 * cache lives, and does not roll its cache back with a failed pass.
 *
 *   proto.drain_c(max_events integer, flush_ms integer, load_all boolean) RETURNS bigint
 *   (flush_ms: how often the channels touched by many-channel passes are written behind; < 0:
 *   only when a pass finds nothing to do; -2: never, to measure what the writes cost; load_all:
 *   a new cache is filled with every row of proto.channels, and is then complete — a channel it
 *   does not hold is new and is not looked up)
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

PG_MODULE_MAGIC;

typedef struct ChanEntry
{
	char		channel[NAMEDATALEN];	/* key */
	int64		last_seq;		/* -1: not known yet */
	int64		published;
	bool		dirty;			/* changed since the last flush */
	uint64		pass;			/* the pass that last counted it */
	int64		pass_first;
	int32		pass_count;
} ChanEntry;

static HTAB *cache = NULL;
static bool complete = false;	/* the cache holds every channel that has a seq */
static ChanEntry **dirty_list = NULL;	/* entries with dirty set, in TopMemoryContext */
static int	ndirty = 0,
			dirty_cap = 0;
static uint64 pass_no = 0;
static TimestampTz last_flush = 0;
static SPIPlanPtr p_last, p_cur, p_window, p_insert, p_lookup, p_flush;

static SPIPlanPtr
keep(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

	if (p == NULL)
		elog(ERROR, "proto_drain: SPI_prepare failed for %s", sql);
	SPI_keepplan(p);
	return p;
}

static void
prepare(void)
{
	Oid			wtypes[] = {PG_SNAPSHOTOID, PG_SNAPSHOTOID, XID8OID, INT8OID, INT4OID};
	Oid			itypes[] = {INT8OID, INT4OID, PG_SNAPSHOTOID, PG_SNAPSHOTOID, XID8OID, INT8OID, XID8OID, INT8OID,
	TEXTARRAYOID, INT8ARRAYOID, INT4ARRAYOID, BOOLOID};
	Oid			ltypes[] = {TEXTARRAYOID};
	Oid			ftypes[] = {TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID};

	if (p_last)
		return;
	p_last = keep("SELECT first_pos, n, lo_snap, hi_snap, upto_xid, upto_id, cut FROM proto.batches "
				  "ORDER BY first_pos DESC LIMIT 1", 0, NULL);
	p_cur = keep("SELECT pg_current_snapshot()", 0, NULL);
	p_window = keep("SELECT id, xid, channel, payload::text FROM proto.window($1, $2, $3, $4, $5)", 5, wtypes);
	p_insert = keep("INSERT INTO proto.batches VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now(), $12)",
					12, itypes);
	p_lookup = keep("SELECT channel, last_seq, published FROM proto.channels WHERE channel = ANY ($1)", 1, ltypes);
	p_flush = keep("INSERT INTO proto.channels AS c (channel, last_seq, published, last_published_at) "
				   "SELECT u.ch, u.s, u.p, now() FROM unnest($1, $2, $3) u(ch, s, p) "
				   "ON CONFLICT (channel) DO UPDATE SET last_seq = excluded.last_seq, "
				   "published = excluded.published, last_published_at = excluded.last_published_at",
				   3, ftypes);
}

static void
mark_dirty(ChanEntry *e)
{
	if (e->dirty)
		return;
	if (ndirty == dirty_cap)
	{
		dirty_cap = dirty_cap ? dirty_cap * 2 : 1024;
		dirty_list = dirty_list ? repalloc(dirty_list, sizeof(ChanEntry *) * dirty_cap)
			: MemoryContextAlloc(TopMemoryContext, sizeof(ChanEntry *) * dirty_cap);
	}
	dirty_list[ndirty++] = e;
	e->dirty = true;
}

static void
flush(void)
{
	Datum	   *chs,
			   *seqs,
			   *pubs;
	Datum		args[3];

	if (ndirty > 0)
	{
		chs = palloc(sizeof(Datum) * ndirty);
		seqs = palloc(sizeof(Datum) * ndirty);
		pubs = palloc(sizeof(Datum) * ndirty);
		for (int k = 0; k < ndirty; k++)
		{
			chs[k] = CStringGetTextDatum(dirty_list[k]->channel);
			seqs[k] = Int64GetDatum(dirty_list[k]->last_seq);
			pubs[k] = Int64GetDatum(dirty_list[k]->published);
			dirty_list[k]->dirty = false;
		}
		args[0] = PointerGetDatum(construct_array(chs, ndirty, TEXTOID, -1, false, TYPALIGN_INT));
		args[1] = PointerGetDatum(construct_array(seqs, ndirty, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[2] = PointerGetDatum(construct_array(pubs, ndirty, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		ndirty = 0;
		if (SPI_execute_plan(p_flush, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "proto_drain: flush failed");
	}
	last_flush = GetCurrentTimestamp();
}

static SPITupleTable *
run_window(Datum lo, Datum hi, Datum ax, Datum ai, int32 max, uint64 *n)
{
	Datum		args[] = {lo, hi, ax, ai, Int32GetDatum(max)};

	if (SPI_execute_plan(p_window, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "proto_drain: window query failed");
	*n = SPI_processed;
	return SPI_tuptable;
}

PG_FUNCTION_INFO_V1(proto_drain_c);
Datum
proto_drain_c(PG_FUNCTION_ARGS)
{
	int32		max = PG_GETARG_INT32(0);
	int32		flush_ms = PG_GETARG_INT32(1);
	bool		load_all = PG_GETARG_BOOL(2);
	bool		fresh = (cache == NULL);
	bool		isnull;
	HeapTuple	t;
	TupleDesc	d;
	bool		bcut;
	int64		bfirst,
				bn,
				nf,
				last_id = 0;
	Datum		blo,
				bhi,
				bux,
				bui,
				lo,
				hi,
				ax,
				ai;
	SPITupleTable *w = NULL;
	uint64		n = 0;
	ChanEntry **touched,
			  **ents;
	int			ntouched = 0;
	Datum	   *missing;
	int			nmissing = 0;
	StringInfoData env;
	FullTransactionId last_xid = InvalidFullTransactionId;

	if (cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(ChanEntry);
		cache = hash_create("proto_drain channels", 1024, &ctl, HASH_ELEM | HASH_STRINGS);
		last_flush = GetCurrentTimestamp();
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "proto_drain: SPI_connect failed");
	prepare();
	if (fresh && load_all)
	{
		if (SPI_execute("SELECT channel, last_seq, published FROM proto.channels", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "proto_drain: loading the channels failed");
		for (uint64 k = 0; k < SPI_processed; k++)
		{
			HeapTuple	r = SPI_tuptable->vals[k];
			char	   *ch = TextDatumGetCString(SPI_getbinval(r, SPI_tuptable->tupdesc, 1, &isnull));
			ChanEntry  *e = hash_search(cache, ch, HASH_ENTER, NULL);

			e->last_seq = DatumGetInt64(SPI_getbinval(r, SPI_tuptable->tupdesc, 2, &isnull));
			e->published = DatumGetInt64(SPI_getbinval(r, SPI_tuptable->tupdesc, 3, &isnull));
			e->dirty = false;
			e->pass = 0;
		}
		complete = true;
	}
	if (SPI_execute("LOCK TABLE proto.batches IN SHARE ROW EXCLUSIVE MODE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "proto_drain: lock failed");
	if (SPI_execute_plan(p_last, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "proto_drain: no batch row");
	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	bfirst = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
	bn = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
	blo = SPI_getbinval(t, d, 3, &isnull);
	bhi = SPI_getbinval(t, d, 4, &isnull);
	bux = SPI_getbinval(t, d, 5, &isnull);
	bui = SPI_getbinval(t, d, 6, &isnull);
	bcut = DatumGetBool(SPI_getbinval(t, d, 7, &isnull));
	nf = Max(bfirst + bn, 1);

	/* the rest of a window the last batch cut, else the next window */
	if (bcut)
	{
		w = run_window(blo, bhi, bux, bui, max, &n);
		lo = blo;
		hi = bhi;
		ax = bux;
		ai = bui;
	}
	if (n == 0)
	{
		if (SPI_execute_plan(p_cur, NULL, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "proto_drain: no snapshot");
		hi = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		lo = bhi;
		ax = FullTransactionIdGetDatum(FullTransactionIdFromU64(0));
		ai = Int64GetDatum(0);
		w = run_window(lo, hi, ax, ai, max, &n);
	}
	if (n == 0)
	{
		if (flush_ms > -2)
			flush();			/* idle: write behind what is dirty */
		SPI_finish();
		PG_RETURN_INT64(0);
	}
	pass_no++;

	/* channels not in the cache: one lookup for all of them */
	missing = palloc(sizeof(Datum) * n);
	ents = palloc(sizeof(ChanEntry *) * n);
	for (uint64 k = 0; k < n; k++)
	{
		char	   *ch = TextDatumGetCString(SPI_getbinval(w->vals[k], w->tupdesc, 3, &isnull));
		bool		found;
		ChanEntry  *e = hash_search(cache, ch, HASH_ENTER, &found);

		ents[k] = e;
		if (!found)
		{
			e->last_seq = -1;
			e->published = 0;
			e->dirty = false;
			e->pass = 0;
			if (!complete)
				missing[nmissing++] = CStringGetTextDatum(ch);
		}
	}
	if (nmissing > 0)
	{
		Datum		arg = PointerGetDatum(construct_array(missing, nmissing, TEXTOID, -1, false, TYPALIGN_INT));
		SPITupleTable *l;

		if (SPI_execute_plan(p_lookup, &arg, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "proto_drain: channel lookup failed");
		l = SPI_tuptable;
		for (uint64 k = 0; k < SPI_processed; k++)
		{
			char	   *ch = TextDatumGetCString(SPI_getbinval(l->vals[k], l->tupdesc, 1, &isnull));
			ChanEntry  *e = hash_search(cache, ch, HASH_FIND, NULL);

			e->last_seq = DatumGetInt64(SPI_getbinval(l->vals[k], l->tupdesc, 2, &isnull));
			e->published = DatumGetInt64(SPI_getbinval(l->vals[k], l->tupdesc, 3, &isnull));
		}
	}

	/* stamp, envelope, NOTIFY */
	touched = palloc(sizeof(ChanEntry *) * n);
	initStringInfo(&env);
	for (uint64 k = 0; k < n; k++)
	{
		HeapTuple	r = w->vals[k];
		int64		id = DatumGetInt64(SPI_getbinval(r, w->tupdesc, 1, &isnull));
		FullTransactionId xid = DatumGetFullTransactionId(SPI_getbinval(r, w->tupdesc, 2, &isnull));
		ChanEntry  *e = ents[k];
		char	   *ch = e->channel;
		Datum		p = SPI_getbinval(r, w->tupdesc, 4, &isnull);
		int64		seq;

		if (e->last_seq < 0)
			e->last_seq = 0;
		seq = ++e->last_seq;
		if (e->pass != pass_no)
		{
			e->pass = pass_no;
			e->pass_first = seq;
			e->pass_count = 0;
			touched[ntouched++] = e;
		}
		e->pass_count++;
		e->published++;
		mark_dirty(e);
		resetStringInfo(&env);
		appendStringInfo(&env, "{\"id\":" INT64_FORMAT ",\"pos\":" INT64_FORMAT ",\"epoch\":1,\"seq\":" INT64_FORMAT
						 ",\"payload\":", id, nf + (int64) k, seq);
		if (isnull)
			appendStringInfoString(&env, "null");
		else
			appendStringInfoString(&env, TextDatumGetCString(p));
		appendStringInfoChar(&env, '}');
		Async_Notify(ch, env.data);
		last_id = id;
		last_xid = xid;
	}

	/* the batch row */
	{
		Datum	   *chs = palloc(sizeof(Datum) * ntouched),
				   *firsts = palloc(sizeof(Datum) * ntouched),
				   *counts = palloc(sizeof(Datum) * ntouched);
		Datum		args[12];

		for (int k = 0; k < ntouched; k++)
		{
			chs[k] = CStringGetTextDatum(touched[k]->channel);
			firsts[k] = Int64GetDatum(touched[k]->pass_first);
			counts[k] = Int32GetDatum(touched[k]->pass_count);
		}
		args[0] = Int64GetDatum(nf);
		args[1] = Int32GetDatum((int32) n);
		args[2] = lo;
		args[3] = hi;
		args[4] = ax;
		args[5] = ai;
		args[6] = FullTransactionIdGetDatum(last_xid);
		args[7] = Int64GetDatum(last_id);
		args[8] = PointerGetDatum(construct_array(chs, ntouched, TEXTOID, -1, false, TYPALIGN_INT));
		args[9] = PointerGetDatum(construct_array(firsts, ntouched, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[10] = PointerGetDatum(construct_array(counts, ntouched, INT4OID, 4, true, TYPALIGN_INT));
		args[11] = BoolGetDatum(n >= (uint64) max);
		if (SPI_execute_plan(p_insert, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "proto_drain: batch insert failed");
	}
	/* few channels: flushed in the pass; many: at most once a second */
	if (ntouched <= 64 || (flush_ms >= 0 && TimestampDifferenceExceeds(last_flush, GetCurrentTimestamp(), flush_ms)))
		flush();
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}
