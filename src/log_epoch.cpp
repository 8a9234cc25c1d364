// log_epoch.cpp — epochs begun by the pass over the log (issue #15; doc/storage.md, "Epochs, dump
// and restore"; the epochs themselves are 22_epochs.sql).
//
// In 1.2 the drain's position bump (an UPDATE of outbox.state per pass) compares the timeline,
// system identifier and database OID recorded in the state row with the process's and, when one
// differs, calls outbox._epoch_begin() in the drain's transaction. The log pass updates no state
// row, but it reads it every pass for the epoch its envelopes carry (read_epoch() in log_pass.cpp);
// the recorded identity is in that row, so the comparison costs the pass no other read: the process's
// own identity is in memory (system identifier and database OID never change while it runs; the
// timeline is one GetWALInsertionTimeLine() call). Comparing with the row, not with an identity
// kept in memory, also sees what a memory copy would miss without an invalidation of its own: DROP
// + CREATE EXTENSION (a new row, epoch 0: "created"), a restore that merged another cluster's row.
//
// Only in log mode (outbox.log_state.active): before the switch the log has a position space of its
// own (pg_outbox.drain_log, development), and an epoch begun at one of its positions would say
// that 1.2's positions from there on were handed out again.
#include "pg_outbox.hpp"
#include "direct.hpp"
#include "log.hpp"
#include "log_pass.hpp"
#include "pg_compat.hpp"
#include "spi_util.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

namespace pg_outbox {

enum { kETimeline, kESysid, kEDbOid };
static const ColumnSpec state_identity_cols[] = {
    {"timeline", INT8OID}, {"system_identifier", TEXTOID}, {"database_oid", OIDOID}};
static TableLayout state_identity_layout = {"state", state_identity_cols, lengthof(state_identity_cols), nullptr,
                                            nullptr, false, InvalidOid, -1, {}, 0};

// Is the cluster the current epoch began on (as outbox.state records it) this one?
static bool same_cluster(Snapshot snap, TimeLineID tli, const char *sysid) {
	TupleDesc desc;
	HeapTuple tup = single_row(&state_identity_layout, snap, &desc, true);
	bool same = false;
	if (tup) {
		bool tnull, snull, dnull;
		Datum t = heap_getattr(tup, state_identity_layout.attnum[kETimeline], desc, &tnull);
		Datum s = heap_getattr(tup, state_identity_layout.attnum[kESysid], desc, &snull);
		Datum d = heap_getattr(tup, state_identity_layout.attnum[kEDbOid], desc, &dnull);
		if (!tnull && !snull && !dnull && DatumGetInt64(t) == (int64)tli && DatumGetObjectId(d) == MyDatabaseId) {
			text *st = DatumGetTextPP(s);
			size_t len = VARSIZE_ANY_EXHDR(st);
			same = len == strlen(sysid) && memcmp(VARDATA_ANY(st), sysid, len) == 0;
		}
	}
	return same; // a missing row: _epoch_begin() raises its error
}

int64 log_pass_epoch(bool log_mode, Snapshot snap, int64 first_pos, int64 epoch) {
	if (!log_mode)
		return epoch;
	static char sysid[32] = "";
	if (!sysid[0])
		snprintf(sysid, sizeof sysid, UINT64_FORMAT, GetSystemIdentifier());
	TimeLineID tli = compat::wal_insertion_timeline();
	if (same_cluster(snap, tli, sysid))
		return epoch;
	// another timeline, cluster or database (or the first pass): a new epoch begins with this
	// batch, in its transaction (both or neither commit). Passes hold the batch lock: one at a time.
	static SPIPlanPtr plan = nullptr;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_outbox: SPI_connect failed");
	if (!plan) {
		Oid types[] = {INT8OID, INT8OID, TEXTOID, OIDOID};
		plan = keep_plan("SELECT outbox._epoch_begin($1, $2, $3, $4)", 4, types);
	}
	Datum args[] = {Int64GetDatum(first_pos), Int64GetDatum((int64)tli), CStringGetTextDatum(sysid),
	                ObjectIdGetDatum(MyDatabaseId)};
	spi_check(SPI_execute_plan(plan, args, nullptr, false, 1), SPI_OK_SELECT, "beginning a new epoch");
	bool isnull = true;
	int64 e = SPI_processed == 1 ? DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))
	                             : 0;
	SPI_finish();
	if (isnull)
		ereport(ERROR, (errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
		                errmsg("pg_outbox: outbox._epoch_begin() returned no epoch"),
		                errhint("Reinstall the extension.")));
	return e;
}

} // namespace pg_outbox
