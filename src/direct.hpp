// direct.hpp — rows into pg_outbox's own tables without the executor's per-statement work.
//
// Publishing one event through SPI costs an executor start per statement: a plan check, the
// INSERT's node tree, and (for outbox.pending) the CHECK constraint read back from the catalog
// and planned again — about 90,000 instructions for a one-row INSERT, three times the row's
// own work. The tables are the extension's, their columns known: the rows are formed here and
// inserted with table_tuple_insert() (or table_multi_insert()) plus ExecInsertIndexTuples(),
// which maintains every index the table has (also one a DBA added). What a DBA adds still holds:
// CHECK constraints other than the table's own (which the callers enforce) are evaluated, added
// columns get their defaults, and with triggers or generated columns d->use_sql tells the
// caller to write through SQL instead.
#pragma once

extern "C" {
#include "postgres.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "nodes/execnodes.h"
#include "storage/lockdefs.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"
}

namespace pg_outbox {

// Rows per table_multi_insert() of a batch (about a heap page of history): publish's statements
// of several events and the drain's history insert; only without logical decoding (direct_begin).
constexpr int kMultiInsertRows = 64;

// The columns of one of our tables, looked up by name once per relation (relcache callbacks
// mark the layout stale on any DDL of the table or a schema rename).
struct ColumnSpec {
	const char *name;
	Oid type;
};

constexpr int kMaxLayoutColumns = 16;

struct TableLayout {
	const char *relname;    // in schema outbox
	const ColumnSpec *cols; // what the code fills, in the order of the values it passes
	int ncols;
	const char *own_check;  // a CHECK constraint of the table that the callers enforce themselves
	                        // (not evaluated per row unless the table has others), or nullptr
	const char *own_trigger; // the table's triggers the callers stand in for (comma-separated names), or nullptr
	// resolved
	bool valid;
	Oid relid;
	int natts;                             // of the relation
	AttrNumber attnum[kMaxLayoutColumns];  // cols[i] is attribute attnum[i]
	uint32 generation;                     // bumped whenever the columns are mapped again
};

// Open (and lock) the layout's table, resolving it first if needed. Errors if the table is
// missing or its columns are not the ones the code writes.
Relation open_layout(TableLayout *t, LOCKMODE mode);

// The first row of a one-row table (outbox.state, outbox.log_state) as snap sees it, copied (its
// columns through t->attnum and *desc, the table's descriptor). No row: an error, or nullptr if
// missing_ok.
HeapTuple single_row(TableLayout *t, Snapshot snap, TupleDesc *desc, bool missing_ok = false);

// The boolean column c of that row; if_missing when there is no row or the value is NULL.
bool single_row_bool(TableLayout *t, int c, Snapshot snap, bool if_missing);

// An open insertion into one table: its indexes, a slot, the command id.
struct DirectInsert {
	Relation rel;
	const TableLayout *layout;
	EState *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	CommandId cid;
	Datum *values; // natts, reused per row
	bool *nulls;
	bool checks;   // the table has CHECK constraints (a DBA's): evaluated per row
	bool use_sql;  // the table has INSERT triggers (other than own_trigger) or generated columns:
	               // direct_row() would not fire or compute them, callers write through SQL instead
	TupleTableSlot **buffered; // rows waiting for one table_multi_insert (when buffering)
	int nbuffered, buffer_cap;
	int nextra;    // columns a DBA added: filled with their defaults, as an INSERT would
	AttrNumber *extra_attnum;
	ExprState **extra_default; // nullptr: no default (NULL)
	int guc_level;             // > 0: search_path pinned until direct_end() (a DBA's expression runs)
};

// Does rel have triggers for event (TRIGGER_TYPE_INSERT, _DELETE, ...) other than own_trigger
// (foreign-key triggers included)?
bool has_foreign_triggers(Relation rel, int16 event, const char *own_trigger);

// Start inserting into layout's table (opened with RowExclusiveLock). With buffer_rows > 0, rows
// are written buffer_rows at a time with table_multi_insert (one WAL record per heap page), then
// their index entries; direct_end() writes what is left. Not when the table is logically decoded
// (wal_level = logical): there each row is its own WAL record, with an LSN of its own (direct.cpp).
void direct_begin(DirectInsert *d, TableLayout *layout, int buffer_rows = 0);
// Insert one row; vals/nulls are in layout->cols order. CHECK constraints are evaluated;
// triggers are not (callers see d->use_sql and write through SQL instead).
void direct_row(DirectInsert *d, const Datum *vals, const bool *nulls);
// Write the buffered rows now.
void direct_flush(DirectInsert *d);
// Write what is buffered, close the indexes and the table (the lock is kept to the end of the
// transaction).
void direct_end(DirectInsert *d);

} // namespace pg_outbox
