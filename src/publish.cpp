// publish.cpp — an event enters the outbox: outbox.publish() and insert_pending() (also what the
// change trigger's outbox mode calls) store it in outbox.pending in the caller's transaction,
// without the executor (direct.hpp), and wake the drain worker at commit (wakeup.hpp). The next
// step of an event is drain.cpp.
#include "pg_outbox.hpp"
#include "publish.hpp"
#include "guard.hpp"
#include "log.hpp"
#include "pg_compat.hpp"
#include "direct.hpp"
#include "rights.hpp"
#include "spi_util.hpp"

extern "C" {
#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
}

namespace pg_outbox {

static const ColumnSpec pending_cols[] = {{"id", INT8OID},      {"channel", TEXTOID}, {"key", TEXTOID},
                                          {"type", TEXTOID},    {"payload", JSONBOID}, {"created_at", TIMESTAMPTZOID}};
// pending_channel_length (1 to 63 bytes) is checked by insert_pending() itself.
// pending_wake is the statement trigger that wakes the worker for INSERTs by hand: pg_outbox's
// own writes call wake_worker_at_commit() instead; pending_to_log routes INSERTs by hand into the
// log in log mode, where pg_outbox's own writes call insert_log() instead.
TableLayout pending_layout = {"pending",  pending_cols, lengthof(pending_cols), "pending_channel_length",
                                     "pending_wake,pending_to_log", false,   InvalidOid,             -1,
                                     {},         0};
static Oid pending_seq = InvalidOid; // the identity sequence of pending.id
static uint32 pending_seq_generation = 0;

// outbox.pending's owner, remembered until a relcache invalidation of the table (ALTER TABLE ...
// OWNER TO, DROP EXTENSION, a cache reset: pending_owner_forget()): the change trigger asks at
// every flush, and in log mode nothing else opens outbox.pending (the open and its lock were 1.1%
// of a single-row transaction's instructions, test/bench/log_producer_instr.sh).
static Oid pending_owner_oid = InvalidOid;
static Oid pending_owner_relid = InvalidOid; // outbox.pending, whose owner it is

void pending_owner_forget(Oid relid) {
	if (!OidIsValid(relid) || relid == pending_owner_relid)
		pending_owner_oid = InvalidOid;
}

Oid pending_owner(void) {
	if (OidIsValid(pending_owner_oid))
		return pending_owner_oid;
	Relation rel = open_layout(&pending_layout, RowExclusiveLock);
	Oid owner = rel->rd_rel->relowner;
	pending_owner_relid = RelationGetRelid(rel);
	table_close(rel, NoLock);
	pending_owner_oid = owner;
	return owner;
}

// A DBA put triggers (or a generated column, or a rule) on one of our tables: they fire only for
// SQL, so write one INSERT per event (sql: the INSERT of channel, key, type, payload RETURNING id;
// *plan keeps it), as the table's owner (publish() is not SECURITY DEFINER) with search_path
// pinned. Not a security-restricted operation: deferred triggers (a deferred foreign key, say)
// could not fire at commit. ids[i] is 0 for an event a BEFORE trigger of the DBA's skipped.
// Run body (SPI statements by name) as owner, with search_path pinned and SPI connected: what
// both SQL paths into our tables need (an error on the way restores the user and the GUCs with the
// transaction's abort).
template <typename Body> static void spi_as_owner(Oid owner, Body &&body) {
	(void)check_trusted_schema(); // SQL by name, as the owner of the table
	Oid save_user;
	int save_sec;
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	int guc_level = pin_search_path();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	body();
	SPI_finish();
	AtEOXact_GUC(true, guc_level);
	SetUserIdAndSecContext(save_user, save_sec);
}

void insert_events_sql(Oid owner, SPIPlanPtr *plan, const char *sql, const PendingEvent *ev, int n, int64 *ids) {
	spi_as_owner(owner, [&] {
		if (!*plan) {
			Oid types[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID};
			*plan = keep_plan(sql, 4, types);
		}
		for (int i = 0; i < n; i++) {
			Datum args[] = {ev[i].channel, ev[i].key, ev[i].type, ev[i].payload};
			char nulls[] = {' ', ev[i].key_null ? 'n' : ' ', ev[i].type_null ? 'n' : ' ', ev[i].payload_null ? 'n' : ' '};
			spi_check(SPI_execute_plan(*plan, args, nulls, false, 0), SPI_OK_INSERT_RETURNING, "publishing");
			if (ids && SPI_processed == 1) {
				bool isnull;
				ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			} else if (ids)
				ids[i] = 0; // a BEFORE trigger of the DBA's skipped the row
		}
	});
}

static void insert_pending_sql(const PendingEvent *ev, int n, int64 *ids) {
	static SPIPlanPtr plan = nullptr;
	insert_events_sql(pending_owner(), &plan,
	                  "INSERT INTO outbox.pending (channel, key, type, payload) VALUES ($1, $2, $3, $4) RETURNING id", ev,
	                  n, ids);
}

// Every text pg_outbox stores is text of the database encoding (22021 otherwise): a C function
// elsewhere can hand publish() bytes that are not, and a dump of them would not restore.
static void check_text_encoding(Datum t) {
	text *v = DatumGetTextPP(t);
	(void)pg_verifymbstr(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), false);
}

static void check_jsonb_encoding(Datum j) {
	Jsonb *jb = DatumGetJsonbP(j);
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue v;
	JsonbIteratorToken tok;
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
		if ((tok == WJB_KEY || tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvString)
			(void)pg_verifymbstr(v.val.string.val, v.val.string.len, false);
}

void check_events_encoding(const PendingEvent *ev, int n) {
	for (int i = 0; i < n; i++) {
		check_text_encoding(ev[i].channel);
		if (!ev[i].key_null)
			check_text_encoding(ev[i].key);
		if (!ev[i].type_null)
			check_text_encoding(ev[i].type);
		if (!ev[i].payload_null)
			check_jsonb_encoding(ev[i].payload); // the trigger's data columns too
	}
}

void refuse_row_security(DirectInsert *d) {
	if (!d->rel->rd_rel->relrowsecurity)
		return;
	// pg_outbox writes the table itself, or through SQL as its owner: a policy would not apply
	const char *relname = d->layout->relname;
	direct_end(d);
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
	                errmsg("table outbox.%s has row-level security enabled, which pg_outbox does not apply", relname),
	                errdetail("publish() and the change trigger write outbox.%s on their callers' behalf; "
	                          "a policy on it would be bypassed, so pg_outbox refuses to write instead.",
	                          relname),
	                errhint("ALTER TABLE outbox.%s DISABLE ROW LEVEL SECURITY; decide who may publish with "
	                        "the outbox_publisher role (and channel privileges, where they exist).",
	                        relname)));
}

// The identity sequence of pending.id (rel: outbox.pending, open).
static Oid pending_sequence_of(Relation rel) {
	if (!OidIsValid(pending_seq) || pending_seq_generation != pending_layout.generation) {
		pending_seq = compat::identity_sequence(rel, pending_layout.attnum[0], true);
		if (!OidIsValid(pending_seq))
			ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			                errmsg("column \"id\" of table outbox.pending is not an identity column"),
			                errhint("Reinstall the extension.")));
		pending_seq_generation = pending_layout.generation;
	}
	return pending_seq;
}

Oid pending_id_sequence(void) {
	Relation rel = open_layout(&pending_layout, AccessShareLock);
	Oid seq = pending_sequence_of(rel);
	table_close(rel, NoLock);
	return seq;
}

void insert_pending(const PendingEvent *ev, int n, int64 *ids) {
	check_events_encoding(ev, n);
	DirectInsert d;
	direct_begin(&d, &pending_layout, n > 1 ? kMultiInsertRows : 0); // a statement's events: 64 at a time
	refuse_row_security(&d);
	(void)pending_sequence_of(d.rel);
	if (d.use_sql) {
		direct_end(&d);
		insert_pending_sql(ev, n, ids);
		wake_worker_at_commit();
		return;
	}
	Datum now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	for (int i = 0; i < n; i++) {
		// what the table's CHECK constraint says (callers have checked it with a better message)
		int len = VARSIZE_ANY_EXHDR(DatumGetTextPP(ev[i].channel));
		if (len < 1 || len > (int)kMaxChannelBytes)
			elog(ERROR, "pg_outbox: channel of %d bytes for outbox.pending", len);
		int64 id = nextval_internal(pending_seq, false);
		Datum vals[] = {Int64GetDatum(id), ev[i].channel, ev[i].key, ev[i].type, ev[i].payload, now};
		bool nulls[] = {false, false, ev[i].key_null, ev[i].type_null, ev[i].payload_null, false};
		direct_row(&d, vals, nulls);
		if (ids)
			ids[i] = id;
	}
	direct_end(&d);
	wake_worker_at_commit();
}

void insert_events(const PendingEvent *ev, int n, int64 *ids) {
	if (producer_writes_log())
		insert_log(ev, n, ids);
	else
		insert_pending(ev, n, ids);
}

PendingEvent publish_arguments(FunctionCallInfo fcinfo, const char *what) {
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("channel name cannot be NULL"),
		                errhint("Every event is published on a channel: pass its name as the first argument.")));
	text *ch = PG_GETARG_TEXT_PP(0);
	char *channel = text_to_cstring(ch);
	check_channel_or_error(channel, VARSIZE_ANY_EXHDR(ch), "channel name");
	check_writable(what);
	require_publish(channel, fcinfo->flinfo->fn_oid); // channel rights: a flag test when none exist

	PendingEvent e;
	e.channel = PointerGetDatum(ch);
	e.payload_null = PG_ARGISNULL(1);
	e.payload = e.payload_null ? (Datum)0 : PG_GETARG_DATUM(1);
	e.key_null = PG_ARGISNULL(2);
	e.key = e.key_null ? (Datum)0 : PG_GETARG_DATUM(2);
	e.type_null = PG_ARGISNULL(3);
	e.type = e.type_null ? (Datum)0 : PG_GETARG_DATUM(3);
	return e;
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox.publish(channel text, payload jsonb, key text, type text) RETURNS bigint
PGO_FUNCTION(outbox_publish) {
	PendingEvent e = publish_arguments(fcinfo, "outbox.publish()");
	int64 id;
	insert_events(&e, 1, &id);
	if (id == 0) // a BEFORE trigger a DBA put on outbox.pending (the log's segment) skipped the event
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}

// Statement trigger on outbox.pending: any INSERT (publish, the change trigger, COPY, a plain
// INSERT by hand) wakes the drain worker when the transaction commits.
PGO_FUNCTION(outbox_wake_trigger) {
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("outbox._wake() must be called as a trigger")));
	wake_worker_at_commit();
	return PointerGetDatum(nullptr);
}

// BEFORE INSERT row trigger on outbox.pending (outbox._pending_to_log(), 65_log_switch.sql): an
// INSERT by hand, a COPY or outbox.retry() of a dead letter in log mode. The row goes into the
// log's current segment with the id it was given (its default took it from outbox.pending_id_seq,
// the log's sequence too) and its created_at, as the table's owner; outbox.pending keeps nothing
// (the trigger returns NULL, so INSERT ... RETURNING returns no row). In 1.2 mode the row is
// inserted as before.
PGO_FUNCTION(outbox_pending_to_log_trigger) {
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("outbox._pending_to_log() must be called as a trigger")));
	TriggerData *td = (TriggerData *)fcinfo->context;
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
	    !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("outbox._pending_to_log() must be a BEFORE INSERT row trigger")));
	HeapTuple row = td->tg_trigtuple;
	if (!producer_writes_log())
		return PointerGetDatum(row);
	check_log_xids_producer(); // as insert_log(): a restored log this cluster's xids have not reached
	TupleDesc desc = RelationGetDescr(td->tg_relation);
	Datum vals[6];
	char nulls[6];
	static const char *const cols[6] = {"id", "channel", "key", "type", "payload", "created_at"};
	for (int i = 0; i < 6; i++) {
		int att = SPI_fnumber(desc, cols[i]);
		if (att <= 0)
			ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			                errmsg("column \"%s\" of table outbox.pending does not exist", cols[i]),
			                errhint("Reinstall the extension.")));
		bool isnull;
		vals[i] = SPI_getbinval(row, desc, att, &isnull);
		nulls[i] = isnull ? 'n' : ' ';
	}
	if (nulls[1] == 'n')
		ereport(ERROR, (errcode(ERRCODE_NOT_NULL_VIOLATION), errmsg("channel name cannot be NULL"),
		                errhint("Every event is published on a channel.")));
	text *ch = DatumGetTextPP(vals[1]);
	check_channel_or_error(text_to_cstring(ch), VARSIZE_ANY_EXHDR(ch), "channel name");
	spi_as_owner(td->tg_relation->rd_rel->relowner, [&] {
		static SPIPlanPtr plan = nullptr;
		if (!plan) {
			Oid types[] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, TIMESTAMPTZOID};
			plan = keep_plan("SELECT outbox._log_put($1, $2, $3, $4, $5, $6)", 6, types);
		}
		spi_check(SPI_execute_plan(plan, vals, nulls, false, 0), SPI_OK_SELECT, "routing the row into the log");
	});
	wake_worker_at_commit();
	return PointerGetDatum(nullptr);
}
