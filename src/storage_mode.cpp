// storage_mode.cpp — which storage a database's events are in (issue #15, doc/storage.md): the
// write-once log (outbox.log_state.active, set once by the switch) or 1.2's outbox.pending and
// outbox.history. Producers, the drain worker and the readers ask log_storage_active().
#include "pg_outbox.hpp"
#include "pg_compat.hpp"
#include "direct.hpp"
#include "guard.hpp"
#include "log.hpp"
#include "publish.hpp"
#include "invalidation.hpp"
#include "xact_events.hpp"

extern "C" {
#include "access/table.h"
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

// outbox.log_state's OID (in the extension's schema), remembered once found (the worker and every producer transaction that
// does not know the log mode yet ask): forgotten by the relcache invalidation of that relation
// (DROP EXTENSION, a rename, SET SCHEMA) and by any schema's change (a cache reset, a schema renamed
// to or from "outbox": storage_mode_forget_relation(InvalidOid)), as log_known_relid below. Not
// remembered while missing: a 1.2 database's ALTER EXTENSION UPDATE creates it, and a catalog
// change of some other relation sends no invalidation of this one; the lookup is then two
// syscache probes, as before.
static Oid log_state_oid = InvalidOid;
// storage_mode_forget_relation() calls: a lookup's catalog scan locks pg_class, which can process
// invalidations between its two probes (a schema renamed after get_namespace_oid()); its result is
// then used, as before, but not remembered (as open_layout() resolves a layout again)
static uint64 relation_forgets = 0;

Oid log_state_relid(void) {
	if (OidIsValid(log_state_oid))
		return log_state_oid;
	uint64 before = relation_forgets;
	// in the extension's schema, whatever it is called now, as every table of the extension is
	// found (open_layout()): found by the name "outbox", a schema renamed in log mode (ALTER SCHEMA
	// outbox RENAME TO ...) made the database look like 1.2 to a producer, whose publish() went on
	// through the renamed schema into outbox.pending, where log mode never publishes it
	Oid nsp = extension_namespace();
	Oid relid = OidIsValid(nsp) ? get_relname_relid("log_state", nsp) : InvalidOid;
	if (relation_forgets == before)
		log_state_oid = relid;
	return relid;
}

// outbox.log_state.active under snap; *read_relid: the outbox.log_state read (InvalidOid: none)
static bool log_active_row(Snapshot snap, Oid *read_relid) {
	*read_relid = InvalidOid;
	// SQL objects older than 1.3 (the library is updated before ALTER EXTENSION UPDATE): no log,
	// the 1.2 storage
	if (!OidIsValid(log_state_relid()))
		return false;
	bool active = single_row_bool(&log_state_active_layout, 0, snap, false);
	*read_relid = log_state_active_layout.relid; // the relation open_layout() locked and read
	return active;
}

bool log_storage_active(Snapshot snap) {
	Oid relid;
	return log_active_row(snap, &relid);
}

// The same, for the extension's schema by its OID (still the extension's once renamed, when
// log_state_relid() finds nothing): the DDL check of outbox.pending (pending_ddl.cpp), which a
// schema renamed for a moment must not get around.
bool log_storage_active_in(Oid nsp, Snapshot snap) {
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("log_state", nsp)))
		return false;
	return single_row_bool(&log_state_active_layout, 0, snap, false);
}

// The producers' mode, once per transaction (log.hpp). the local transaction id names the transaction: no
// end-of-transaction callback is needed to forget it. Forgotten (read again by the next producer)
// when it may have changed inside the transaction: the switch ran in it (outbox._log_mode_changed())
// or a subtransaction was rolled back (the switch may have run in it).
static LocalTransactionId mode_lxid = InvalidLocalTransactionId;
static bool mode_log = false;

static void mode_forget(void) {
	mode_lxid = InvalidLocalTransactionId;
}

// Log mode is one-way (outbox._log_state_check refuses active true -> false): once a transaction
// of this backend that wrote the log has committed, every later one writes the log too, without
// the lock and the read (which exist for transactions that may still see 1.2 mode: the switch
// waits for them). What could make it false again changes outbox.log_state's relation, and its
// relcache invalidation forgets this (storage_mode_forget_relation): DROP EXTENSION, TRUNCATE,
// ALTER TABLE ... DISABLE TRIGGER. A pgbench backend spent 2.5% of its time on the read and the
// lock of each single-row transaction.
static Oid log_known_relid = InvalidOid; // outbox.log_state, whose committed row said active
static Oid mode_relid = InvalidOid;      // outbox.log_state as this transaction's read found it
static bool log_seen_in_xact = false;    // this transaction chose the log (to be remembered at commit)

// This transaction's mode may be wrong: read again; a later read in this transaction sets
// log_seen_in_xact again.
static void mode_forget_xact(void) {
	mode_forget();
	log_seen_in_xact = false;
}

bool producer_writes_log(void) {
	if (OidIsValid(log_known_relid))
		return true;
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
	Oid read_relid;
	bool active = log_active_row(GetLatestSnapshot(), &read_relid);
	mode_lxid = compat::my_local_xid();
	mode_log = active;
	if (active) {
		mode_relid = read_relid;
		log_seen_in_xact = true;
	}
	return active;
}

// At commit the mode this transaction wrote in is committed (its own switch included): remember
// the log for the next transactions. At abort, nothing (a switch of its own is gone).
void storage_mode_xact_event(XactEvent event) {
	if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT) && log_seen_in_xact)
		log_known_relid = mode_relid;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_ABORT ||
	    event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
		log_seen_in_xact = false;
}

// Also this transaction's mode when it read outbox.log_state: DROP + CREATE EXTENSION in the
// transaction (1.2 mode again) would otherwise keep its later events in the log, where nothing
// drains them (sw-red, regress log_redteam_s10 1).
void storage_mode_forget_relation(Oid relid) {
	relation_forgets++;
	if (!OidIsValid(relid) || relid == log_state_oid)
		log_state_oid = InvalidOid;
	if (!OidIsValid(relid) || relid == log_known_relid || relid == mode_relid) {
		log_known_relid = InvalidOid;
		if (!OidIsValid(relid) || relid == mode_relid)
			mode_forget_xact();
	}
}

// A rolled-back savepoint or PL/pgSQL EXCEPTION block may have held the switch (its update of
// outbox.log_state is gone with it): the events after it go where the mode now says, 1.2's
// outbox.pending, not the log of a database still in 1.2 mode. Reading again costs a lock the
// transaction already holds and one row.
void storage_mode_subxact_event(SubXactEvent event, int) {
	if (event == SUBXACT_EVENT_ABORT_SUB)
		mode_forget_xact();
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox._log_mode_changed() — called by outbox.use_log_storage() after it set
// outbox.log_state.active: the producers of its own transaction read the mode again (they had
// cached 1.2 if they ran before it, and would strand their events in outbox.pending). Only
// forgets: the mode is read again under the lock with the latest snapshot, so a call outside the
// switch changes nothing. Internal, granted to no role.
PGO_FUNCTION(outbox_log_mode_changed) {
	mode_forget();
	PG_RETURN_VOID();
}
