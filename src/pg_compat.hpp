// pg_compat.hpp — every PostgreSQL API that differs between the supported majors (15, 16, 17, 18),
// behind PG_VERSION_NUM, in this one file. The rest of the code calls the wrappers below and has
// no #if of its own; a new major's differences are added here and nowhere else.
//
// Each wrapper behaves the same on every major (the behaviour of 15 is the reference); where a
// newer major offers a choice (a flush, a deferrable key, instrumentation) the wrapper makes the
// choice 15 made implicitly, and says so. The guards for 16 were written from the headers of the
// REL_16_STABLE branch of PostgreSQL (see README, Installation, for how each major was checked).
//
// | since | what changed                                                  | wrapper                     |
// |-------|---------------------------------------------------------------|-----------------------------|
// | 16    | pg_class_ownercheck, pg_database_ownercheck -> object_ownercheck | class_ownercheck,        |
// |       |                                                               | database_ownercheck         |
// | 16    | ExecInsertIndexTuples gained bool onlySummarizing (last)      | insert_index_tuples         |
// | 17    | LogLogicalMessage gained bool flush (last)                    | log_logical_message         |
// | 17    | getIdentitySequence takes a Relation, not an Oid              | identity_sequence           |
// | 17    | IsBackgroundWorker -> AmBackgroundWorkerProcess()             | am_background_worker        |
// | 18    | RelationGetPrimaryKeyIndex gained bool deferrable_ok          | primary_key_index           |
// | 18    | index_beginscan gained IndexScanInstrumentation * (4th)       | index_beginscan             |
// | 15    | [epochs] GetWALInsertionTimeLine() (ThisTimeLineID is gone)   | wal_insertion_timeline      |
// | 16    | [observe] GUC "extra" is freed with guc_free (pfree of a      | guc_extra_alloc             |
// |       | GUC memory context), no longer free(): allocate with guc_malloc |                           |
//
// Not a PostgreSQL difference, and not here because the files concerned include no Postgres
// header (they are pure C++, unit-tested alone): Boost 1.92 (Debian forky, with PostgreSQL 18)
// dropped the alias boost::json::error_code. Those files use boost::system::error_code, which
// the alias named on every Boost version that has Boost.JSON (1.75 and later): no guard needed.
#pragma once

extern "C" {
#include "postgres.h"
#include "access/genam.h"
#include "catalog/dependency.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "storage/proc.h"
#include "access/xlog.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/relcache.h"
}

#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 190000
#error "pg_outbox supports PostgreSQL 15, 16, 17 and 18"
#endif

namespace pg_outbox::compat {

// Does roleid own the relation / the database? (16: one object_ownercheck for every catalog.)
inline bool class_ownercheck(Oid relid, Oid roleid) {
#if PG_VERSION_NUM >= 160000
	return object_ownercheck(RelationRelationId, relid, roleid);
#else
	return pg_class_ownercheck(relid, roleid);
#endif
}

inline bool database_ownercheck(Oid dbid, Oid roleid) {
#if PG_VERSION_NUM >= 160000
	return object_ownercheck(DatabaseRelationId, dbid, roleid);
#else
	return pg_database_ownercheck(dbid, roleid);
#endif
}

// Insert the index entries of the tuple in slot into every index of rri (opened with
// ExecOpenIndices). 16 added onlySummarizing, "only summarizing (BRIN) indexes, the row was a
// HOT update": false, every index, as 15 always did.
inline List *insert_index_tuples(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate, bool update,
                                 bool no_dup_err, bool *spec_conflict, List *arbiter_indexes) {
#if PG_VERSION_NUM >= 160000
	return ExecInsertIndexTuples(rri, slot, estate, update, no_dup_err, spec_conflict, arbiter_indexes, false);
#else
	return ExecInsertIndexTuples(rri, slot, estate, update, no_dup_err, spec_conflict, arbiter_indexes);
#endif
}

// Write a logical decoding message into the WAL. 17 added flush, "flush the WAL now" (for
// non-transactional messages): false, as 15 did; a transactional message is flushed by its
// transaction's commit record anyway.
inline XLogRecPtr log_logical_message(const char *prefix, const char *message, size_t size, bool transactional) {
#if PG_VERSION_NUM >= 170000
	return LogLogicalMessage(prefix, message, size, transactional, false);
#else
	return LogLogicalMessage(prefix, message, size, transactional);
#endif
}

// The sequence of an identity column. 17 takes the relation (to find a partition's parent's
// sequence); before, its OID.
inline Oid identity_sequence(Relation rel, AttrNumber attnum, bool missing_ok) {
#if PG_VERSION_NUM >= 170000
	return getIdentitySequence(rel, attnum, missing_ok);
#else
	return getIdentitySequence(RelationGetRelid(rel), attnum, missing_ok);
#endif
}

// This backend's local transaction id (17 moved it into PGPROC.vxid).
inline LocalTransactionId my_local_xid() {
#if PG_VERSION_NUM >= 170000
	return MyProc->vxid.lxid;
#else
	return MyProc->lxid;
#endif
}

// Is this process a background worker? (17 dropped the global IsBackgroundWorker.)
inline bool am_background_worker() {
#if PG_VERSION_NUM >= 170000
	return AmBackgroundWorkerProcess();
#else
	return IsBackgroundWorker;
#endif
}

// The relation's primary key index, InvalidOid if it has none or if it is DEFERRABLE. Before 18
// a deferrable primary key was not reported at all; 18 reports it when the caller passes
// deferrable_ok = true. pg_outbox passes false on 18: a deferrable key can hold duplicates until
// commit, so it identifies no row (the change trigger then falls back to the replica identity
// index, as on 15-17; see README, "Key columns").
inline Oid primary_key_index(Relation rel) {
#if PG_VERSION_NUM >= 180000
	return RelationGetPrimaryKeyIndex(rel, false);
#else
	return RelationGetPrimaryKeyIndex(rel);
#endif
}

// Start an index scan. 18 added instrument (EXPLAIN ANALYZE's index search counts): none.
inline IndexScanDesc index_beginscan(Relation heap, Relation index, Snapshot snapshot, int nkeys, int norderbys) {
#if PG_VERSION_NUM >= 180000
	return ::index_beginscan(heap, index, snapshot, nullptr, nkeys, norderbys);
#else
	return ::index_beginscan(heap, index, snapshot, nkeys, norderbys);
#endif
}

// [epochs] The timeline new WAL is written on (15 replaced the global ThisTimeLineID with this
// function; it is the same on 15 to 18). Only meaningful outside recovery: the drain runs there.
inline TimeLineID wal_insertion_timeline() {
	return GetWALInsertionTimeLine();
}

// [observe] Memory for a GUC check hook's *extra (guc.c frees it when the value is replaced):
// malloc on 15, guc_malloc (the GUC memory context) on 16 and later. nullptr when out of memory
// (guc_malloc(LOG) logs it); the hook then refuses the value.
inline void *guc_extra_alloc(size_t size) {
#if PG_VERSION_NUM >= 160000
	return guc_malloc(LOG, size);
#else
	return malloc(size);
#endif
}

} // namespace pg_outbox::compat
