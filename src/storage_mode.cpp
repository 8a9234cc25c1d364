// storage_mode.cpp — which storage a database's events are in (issue #15, doc/storage.md): the
// write-once log (outbox.log_state.active, set once by the switch) or 1.2's outbox.pending and
// outbox.history. Producers, the drain worker and the readers ask log_storage_active().
#include "pg_outbox.hpp"
#include "direct.hpp"
#include "log.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

namespace pg_outbox {

static const ColumnSpec log_state_active_cols[] = {{"active", BOOLOID}};
static TableLayout log_state_active_layout = {"log_state", log_state_active_cols, 1, nullptr, nullptr, false,
                                              InvalidOid,  -1,                    {}, 0};

bool log_storage_active(Snapshot snap) {
	Relation rel = open_layout(&log_state_active_layout, AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
	HeapTuple tup = heap_getnext(scan, ForwardScanDirection);
	bool isnull = true;
	bool active = false;
	if (tup) {
		Datum d = heap_getattr(tup, log_state_active_layout.attnum[0], RelationGetDescr(rel), &isnull);
		active = !isnull && DatumGetBool(d);
	}
	table_endscan(scan);
	table_close(rel, NoLock);
	return active;
}

} // namespace pg_outbox
