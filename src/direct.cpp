// direct.cpp — see direct.hpp.
#include "pg_outbox.hpp" // first: it includes pure C++ headers before Postgres's
#include "direct.hpp"
#include "pg_compat.hpp"
#include "invalidation.hpp"
#include "spi_util.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/xlog.h"       // RelationIsLogicallyLogged(): XLogLogicalInfoActive()
#include "catalog/catalog.h"    // and IsCatalogRelation()
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/executor.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/reltrigger.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "rewrite/rewriteHandler.h"
}

namespace pg_outbox {

// Every layout the process has resolved, for the invalidation callbacks (invalidation.cpp).
// 1.2: pending, history_0..2 (4); the log pass: log_0..2, batches_0..2, log_state, log_channels,
// state, epochs (10); the log's producer: log_0..2, log_state (4)
static TableLayout *known_layouts[24];
static int nknown = 0;

void direct_layouts_forget(Oid relid) {
	for (int i = 0; i < nknown; i++)
		if (relid == InvalidOid || known_layouts[i]->relid == relid)
			known_layouts[i]->valid = false;
}

static void remember(TableLayout *t) {
	for (int i = 0; i < nknown; i++)
		if (known_layouts[i] == t)
			return;
	if (nknown == lengthof(known_layouts))
		elog(ERROR, "pg_outbox: too many table layouts");
	known_layouts[nknown++] = t;
}

static void missing_table(const TableLayout *t) {
	ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("table outbox.%s does not exist", t->relname),
	                errhint("Reinstall the extension: DROP EXTENSION pg_outbox; CREATE EXTENSION pg_outbox;")));
}

// Map the layout's columns onto rel's attributes. Other live attributes (a DBA's) get their
// defaults at insertion (generated columns make callers write through SQL).
static void map_columns(TableLayout *t, Relation rel) {
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE), errmsg("outbox.%s is not a table", t->relname),
		                errhint("Reinstall the extension.")));
	TupleDesc desc = RelationGetDescr(rel);
	for (int c = 0; c < t->ncols; c++)
		t->attnum[c] = InvalidAttrNumber;
	for (int a = 0; a < desc->natts; a++) {
		Form_pg_attribute att = TupleDescAttr(desc, a);
		if (att->attisdropped)
			continue;
		int c = 0;
		while (c < t->ncols && strcmp(NameStr(att->attname), t->cols[c].name) != 0)
			c++;
		if (c == t->ncols)
			continue; // a DBA's column: its default at insertion (a generated one: through SQL)
		if (att->atttypid != t->cols[c].type)
			ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
			                errmsg("column \"%s\" of table outbox.%s has type %s, expected %s", NameStr(att->attname),
			                       t->relname, format_type_be(att->atttypid), format_type_be(t->cols[c].type)),
			                errhint("Reinstall the extension.")));
		t->attnum[c] = att->attnum;
	}
	for (int c = 0; c < t->ncols; c++)
		if (t->attnum[c] == InvalidAttrNumber)
			ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
			                errmsg("column \"%s\" of table outbox.%s does not exist", t->cols[c].name, t->relname),
			                errhint("Update or reinstall the extension.")));
	t->natts = desc->natts;
	t->generation++;
}

Relation open_layout(TableLayout *t, LOCKMODE mode) {
	Assert(t->ncols <= kMaxLayoutColumns);
	remember(t);
	// Locking the table processes invalidations, which may mark the layout stale again (the
	// table was replaced meanwhile): then resolve once more.
	for (int attempt = 0;; attempt++) {
		if (!t->valid) {
			// the extension's own schema and member relations only (schema_guard.cpp)
			Oid relid = extension_relation(t->relname);
			if (!OidIsValid(relid))
				missing_table(t);
			t->relid = relid;
			t->natts = -1; // columns not mapped yet
			t->valid = true;
		}
		Oid relid = t->relid;
		Relation rel = try_table_open(relid, mode);
		if (!rel) {
			t->valid = false;
			if (attempt < 2)
				continue;
			missing_table(t);
		}
		if (!t->valid || t->relid != relid) {
			table_close(rel, mode);
			if (attempt < 2)
				continue;
			elog(ERROR, "pg_outbox: table outbox.%s keeps changing", t->relname);
		}
		if (t->natts != RelationGetDescr(rel)->natts)
			map_columns(t, rel);
		return rel;
	}
}

void direct_begin(DirectInsert *d, TableLayout *layout, int buffer_rows) {
	d->rel = open_layout(layout, RowExclusiveLock);
	d->layout = layout;
	d->estate = CreateExecutorState();
	d->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(d->rri, d->rel, 0, nullptr, 0); // not in a range table
	ExecOpenIndices(d->rri, false);
	d->slot = ExecInitExtraTupleSlot(d->estate, RelationGetDescr(d->rel), &TTSOpsHeapTuple);
	d->cid = GetCurrentCommandId(true);
	int natts = RelationGetDescr(d->rel)->natts;
	d->values = (Datum *)palloc0(natts * sizeof(Datum));
	d->nulls = (bool *)palloc(natts * sizeof(bool));
	// a DBA's columns: their defaults, evaluated per row as an INSERT would
	d->nextra = 0;
	d->extra_attnum = (AttrNumber *)palloc(natts * sizeof(AttrNumber));
	d->extra_default = (ExprState **)palloc(natts * sizeof(ExprState *));
	for (int a = 0; a < natts; a++) {
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(d->rel), a);
		bool ours = false;
		for (int c = 0; c < layout->ncols && !ours; c++)
			ours = layout->attnum[c] == att->attnum;
		if (ours || att->attisdropped)
			continue;
		Node *def = build_column_default(d->rel, att->attnum);
		d->extra_attnum[d->nextra] = att->attnum;
		d->extra_default[d->nextra] = def ? ExecPrepareExpr((Expr *)def, d->estate) : nullptr;
		d->nextra++;
	}
	TupleConstr *constr = RelationGetDescr(d->rel)->constr;
	// The executor would read and plan every CHECK constraint again for this insertion: skip that
	// when the only one is the table's own, which the callers enforce already.
	d->checks = false;
	for (int i = 0; constr && i < constr->num_check; i++)
		if (!layout->own_check || strcmp(constr->check[i].ccname, layout->own_check) != 0)
			d->checks = true;
	d->buffered = nullptr;
	d->nbuffered = 0;
	// With wal_level = logical, one WAL record per row, as an INSERT statement writes it: a logical
	// decoder gives every row of a table_multi_insert record that record's LSN, and Debezium (3.6.1
	// and older, debezium/dbz#1554; pgoutput and decoderbufs) resumes after a connector restart from
	// the LSN of the last event it stored, skipping the other changes at that LSN: the rows after
	// it in the record never reached Kafka (the Kafka test's path 2, the history capture, lost 7
	// events of a 20-event drain batch). Without logical decoding nobody reads the rows' LSNs.
	d->buffer_cap = RelationIsLogicallyLogged(d->rel) ? 0 : Max(buffer_rows, 0);
	d->use_sql = has_foreign_triggers(d->rel, TRIGGER_TYPE_INSERT, layout->own_trigger);
	for (int a = 0; a < natts; a++)
		if (TupleDescAttr(RelationGetDescr(d->rel), a)->attgenerated)
			d->use_sql = true;
	// a rule a DBA put on the table (ON INSERT DO INSTEAD/ALSO ...) applies only to SQL as well;
	// callers check that the SQL INSERT stored its row
	if (d->rel->rd_rules)
		d->use_sql = true;
	// Something of a DBA's that direct_row() evaluates (a CHECK constraint, a default of a column
	// added, an index expression or predicate) runs with search_path pinned, as the SQL path does
	// (spi_as_owner()): a function in it must not resolve names in the writer's own search_path.
	// The extension's own tables have none: their rows are written without the GUC save and
	// restore (2-4% of a producer's transaction, perf).
	bool dba_expressions = d->checks;
	for (int e = 0; e < d->nextra && !dba_expressions; e++)
		dba_expressions = d->extra_default[e] != nullptr;
	for (int i = 0; i < d->rri->ri_NumIndices && !dba_expressions; i++) {
		const IndexInfo *ii = d->rri->ri_IndexRelationInfo[i];
		dba_expressions = ii->ii_Expressions != NIL || ii->ii_Predicate != NIL;
	}
	d->guc_level = dba_expressions && !d->use_sql ? pin_search_path() : 0;
}

// own: one trigger name or several, comma-separated ("pending_wake,pending_to_log")
static bool is_own_trigger(const char *name, const char *own) {
	size_t len = strlen(name);
	for (const char *p = own; *p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == len && strncmp(p, name, n) == 0)
			return true;
		if (!end)
			break;
		p = end + 1;
	}
	return false;
}

HeapTuple single_row(TableLayout *t, Snapshot snap, TupleDesc *desc, bool missing_ok) {
	Relation rel = open_layout(t, AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
	HeapTuple tup = heap_getnext(scan, ForwardScanDirection);
	HeapTuple copy = tup ? heap_copytuple(tup) : nullptr;
	table_endscan(scan);
	*desc = RelationGetDescr(rel);
	table_close(rel, NoLock);
	if (!copy && !missing_ok)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("pg_outbox: the row of outbox.%s is missing", t->relname),
		                errhint("Reinstall the extension.")));
	return copy;
}

bool single_row_bool(TableLayout *t, int c, Snapshot snap, bool if_missing) {
	TupleDesc desc;
	HeapTuple tup = single_row(t, snap, &desc, true);
	if (!tup)
		return if_missing;
	bool isnull = true;
	Datum d = heap_getattr(tup, t->attnum[c], desc, &isnull);
	bool value = isnull ? if_missing : DatumGetBool(d);
	heap_freetuple(tup);
	return value;
}

bool has_foreign_triggers(Relation rel, int16 event, const char *own_trigger) {
	TriggerDesc *tg = rel->trigdesc;
	for (int i = 0; tg && i < tg->numtriggers; i++) {
		const Trigger *t = &tg->triggers[i];
		if (t->tgenabled == TRIGGER_DISABLED || !(t->tgtype & event))
			continue;
		if (own_trigger && is_own_trigger(t->tgname, own_trigger))
			continue;
		return true;
	}
	return false;
}

static void insert_index_entries(DirectInsert *d, TupleTableSlot *slot) {
	if (d->rri->ri_NumIndices == 0)
		return;
	List *recheck = compat::insert_index_tuples(d->rri, slot, d->estate, false, false, nullptr, NIL);
	if (recheck != NIL) // a deferrable unique or exclusion constraint a DBA added
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		                errmsg("table outbox.%s has a deferrable constraint, which pg_outbox does not check",
		                       d->layout->relname),
		                errhint("Make the constraint NOT DEFERRABLE, or drop it.")));
	ResetPerTupleExprContext(d->estate);
}

void direct_row(DirectInsert *d, const Datum *vals, const bool *nulls) {
	const TableLayout *t = d->layout;
	TupleDesc desc = RelationGetDescr(d->rel);
	for (int a = 0; a < desc->natts; a++)
		d->nulls[a] = true; // dropped columns
	for (int c = 0; c < t->ncols; c++) {
		int a = t->attnum[c] - 1;
		d->values[a] = vals[c];
		d->nulls[a] = nulls && nulls[c];
		if (d->nulls[a] && TupleDescAttr(desc, a)->attnotnull)
			ereport(ERROR, (errcode(ERRCODE_NOT_NULL_VIOLATION),
			                errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
			                       t->cols[c].name, t->relname)));
	}
	for (int e = 0; e < d->nextra; e++) {
		int a = d->extra_attnum[e] - 1;
		if (d->extra_default[e])
			d->values[a] = ExecEvalExprSwitchContext(d->extra_default[e], GetPerTupleExprContext(d->estate),
			                                         &d->nulls[a]);
		if (d->nulls[a] && TupleDescAttr(desc, a)->attnotnull)
			ereport(ERROR, (errcode(ERRCODE_NOT_NULL_VIOLATION),
			                errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
			                       NameStr(TupleDescAttr(desc, a)->attname), t->relname),
			                errhint("pg_outbox fills columns it does not know with their defaults: give the column a "
			                        "default.")));
	}
	HeapTuple tup = heap_form_tuple(desc, d->values, d->nulls);
	TupleTableSlot *slot = d->slot;
	if (d->buffer_cap > 0) {
		if (!d->buffered)
			d->buffered = (TupleTableSlot **)palloc0(d->buffer_cap * sizeof(TupleTableSlot *));
		if (!d->buffered[d->nbuffered])
			d->buffered[d->nbuffered] = ExecInitExtraTupleSlot(d->estate, desc, &TTSOpsHeapTuple);
		slot = d->buffered[d->nbuffered];
	}
	ExecStoreHeapTuple(tup, slot, true);
	if (d->checks)
		ExecConstraints(d->rri, slot, d->estate);
	// values of the defaults lived in the per-tuple context (the tuple has copies): forget them
	ResetPerTupleExprContext(d->estate);
	for (int e = 0; e < d->nextra; e++)
		d->values[d->extra_attnum[e] - 1] = (Datum)0;
	if (d->buffer_cap > 0) {
		if (++d->nbuffered == d->buffer_cap)
			direct_flush(d);
		return;
	}
	table_tuple_insert(d->rel, slot, d->cid, 0, nullptr);
	insert_index_entries(d, slot);
	ExecClearTuple(slot);
}

void direct_flush(DirectInsert *d) {
	if (d->nbuffered == 0)
		return;
	table_multi_insert(d->rel, d->buffered, d->nbuffered, d->cid, 0, nullptr);
	for (int i = 0; i < d->nbuffered; i++) {
		insert_index_entries(d, d->buffered[i]);
		ExecClearTuple(d->buffered[i]);
	}
	d->nbuffered = 0;
}

void direct_end(DirectInsert *d) {
	direct_flush(d);
	ExecCloseIndices(d->rri);
	ExecResetTupleTable(d->estate->es_tupleTable, false);
	FreeExecutorState(d->estate);
	table_close(d->rel, NoLock);
	if (d->guc_level > 0)
		AtEOXact_GUC(true, d->guc_level);
	d->guc_level = 0;
	pfree(d->values);
	pfree(d->nulls);
	d->estate = nullptr;
	d->rel = nullptr;
}

} // namespace pg_outbox
