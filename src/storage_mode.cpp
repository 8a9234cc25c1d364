// storage_mode.cpp — which storage a database's events are in (issue #15, doc/storage.md): the
// write-once log (outbox.log_state.active, set once by the switch) or 1.2's outbox.pending and
// outbox.history. Producers, the drain worker and the readers ask log_storage_active().
#include "pg_outbox.hpp"
#include "pg_compat.hpp"
#include "direct.hpp"
#include "log.hpp"
#include "publish.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
}

namespace pg_outbox {

static const ColumnSpec log_state_active_cols[] = {{"active", BOOLOID}};
static TableLayout log_state_active_layout = {"log_state", log_state_active_cols, 1, nullptr, nullptr, false,
                                              InvalidOid,  -1,                    {}, 0};

bool log_storage_active(Snapshot snap) {
	// SQL objects older than 1.3 (the library is updated before ALTER EXTENSION UPDATE): no log,
	// the 1.2 storage
	Oid nsp = get_namespace_oid("outbox", true);
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("log_state", nsp)))
		return false;
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

// The producers' mode, once per transaction (log.hpp). the local transaction id names the transaction: no
// end-of-transaction callback is needed to forget it.
static LocalTransactionId mode_lxid = InvalidLocalTransactionId;
static bool mode_log = false;

bool producer_writes_log(void) {
	if (mode_lxid == compat::my_local_xid() && mode_lxid != InvalidLocalTransactionId)
		return mode_log;
	// the lock first, owned by the top-level transaction: a lock taken in a subtransaction would
	// go with a ROLLBACK TO SAVEPOINT, and the switch could then commit between this read and the
	// transaction's next insert into outbox.pending
	// (open_layout() can raise, a DBA's ALTER TABLE: it runs under the current owner, so an error
	// leaks nothing; the lock it took is then granted again to the top owner without waiting)
	Relation pending = open_layout(&pending_layout, RowExclusiveLock);
	Oid pending_relid = RelationGetRelid(pending);
	table_close(pending, NoLock);
	ResourceOwner save = CurrentResourceOwner;
	CurrentResourceOwner = TopTransactionResourceOwner;
	LockRelationOid(pending_relid, RowExclusiveLock);
	CurrentResourceOwner = save;
	// the latest snapshot, not the transaction's: a REPEATABLE READ snapshot taken before the
	// switch committed would say 1.2 and strand the event in outbox.pending
	bool active = log_storage_active(GetLatestSnapshot());
	mode_lxid = compat::my_local_xid();
	mode_log = active;
	return active;
}

} // namespace pg_outbox
