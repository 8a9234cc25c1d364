// trigger_attach.cpp — the attach-time checks of the change trigger, used by outbox.attach()
// (src/sql/30_trigger.sql): the relation's kind and owner, the mode, the columns, the key, the
// channel template and the operations, resolved with the same code the trigger uses
// (build_config()), so that what attach accepts is what the trigger can render.
#include "trigger_config.hpp" // pure C++ (payload.hpp) first
#include "guard.hpp"
#include "pg_compat.hpp"
#include "rights.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "parser/parse_func.h"
#include "tcop/utility.h"
#include "access/xact.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/date.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
}

namespace pg_outbox {

// ---------------------------------------------------------------------------------------
// attach-time validation, used by outbox.attach() (src/sql/30_trigger.sql)
// ---------------------------------------------------------------------------------------

static void check_relation(Relation rel) {
	const char *name = RelationGetRelationName(rel);
	switch (rel->rd_rel->relkind) {
	case RELKIND_RELATION:
	case RELKIND_PARTITIONED_TABLE:
		break;
	case RELKIND_VIEW:
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE), errmsg("\"%s\" is a view", name),
		                errdetail("Only tables can be attached."),
		                errhint("Attach the table(s) the view reads from.")));
		break;
	case RELKIND_MATVIEW:
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE), errmsg("\"%s\" is a materialized view", name),
		                errdetail("Only tables can be attached; REFRESH does not fire row triggers."),
		                errhint("Attach the table(s) the materialized view reads from.")));
		break;
	case RELKIND_FOREIGN_TABLE:
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE), errmsg("\"%s\" is a foreign table", name),
		                errdetail("A trigger here would see only the changes made through this server, and foreign "
		                          "tables have no TRUNCATE triggers."),
		                errhint("Attach the table on the server that stores it.")));
		break;
	default:
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE), errmsg("\"%s\" is not a table", name),
		                errhint("Only tables and partitioned tables can be attached.")));
	}
	if (rel->rd_rel->relispartition) {
		// a partition of an attached table already fires its parent's trigger
		TriggerDesc *trig = rel->trigdesc;
		for (int k = 0; trig && k < trig->numtriggers; k++)
			if (trig->triggers[k].tgisclone && strcmp(trig->triggers[k].tgname, "outbox_change") == 0)
				ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				                errmsg("\"%s\" is a partition of a table that is attached", name),
				                errdetail("Its changes are already sent with the partitioned table's name and "
				                          "configuration."),
				                errhint("Detach the partitioned table first to attach partitions one by one.")));
	}
	Oid nsp = RelationGetNamespace(rel);
	if (nsp == get_namespace_oid("outbox", true))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("table %s belongs to pg_outbox and cannot be attached",
		                       quote_qualified_identifier("outbox", name))));
	if (IsCatalogNamespace(nsp))
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
		                errmsg("permission denied: \"%s\" is a system catalog", name)));
}

// The checks of outbox.attach(): ownership, kind of relation, mode, columns, key, channel
// template, operations. out[] gets table_name text, channel_template text, resolved_key text[],
// ops text[]. Ownership is checked before the relation is locked: an unprivileged caller locks
// nothing it does not own.
static void check_attachment(Oid relid, text *mode_t, text *channel_t, ArrayType *key_columns,
                             ArrayType *include_columns, ArrayType *operations, Datum out[4], Oid self_fn) {
	if (!compat::class_ownercheck(relid, GetUserId())) {
		char *name = get_rel_name(relid);
		if (!name)
			ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("relation with OID %u does not exist", relid)));
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(relid)), name);
	}
	Relation rel = relation_open(relid, AccessShareLock);
	// ... and again now that it is locked (an ALTER TABLE ... OWNER TO may have committed between)
	if (!compat::class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(rel->rd_rel->relkind), RelationGetRelationName(rel));
	check_relation(rel);

	Request req;
	req.context = "outbox.attach() takes column names as they are stored: case-sensitive, without quotes.";
	if (!mode_t)
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("mode cannot be NULL"),
		                errhint("Use 'outbox' or 'notify'.")));
	req.mode = parse_mode(text_to_cstring(mode_t));
	req.channel = channel_t ? text_to_cstring(channel_t) : nullptr;
	req.nkeys = req.ninclude = 0;
	req.keys = req.include = nullptr;
	if (key_columns)
		req.nkeys = text_array_names(key_columns, &req.keys, "key_columns", false);
	if (include_columns)
		req.ninclude = text_array_names(include_columns, &req.include, "include_columns", true);

	// operations
	if (!operations)
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("operations cannot be NULL"),
		                errhint("List some of INSERT, UPDATE, DELETE, TRUNCATE.")));
	char **ops;
	int nops = text_array_names(operations, &ops, "operations", false);
	static const char *const kOps[] = {"INSERT", "UPDATE", "DELETE", "TRUNCATE"};
	bool want[4] = {false, false, false, false};
	for (int k = 0; k < nops; k++) {
		int found = -1;
		for (int j = 0; j < 4; j++)
			if (pg_strcasecmp(ops[k], kOps[j]) == 0)
				found = j;
		if (found < 0)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("invalid operation \"%s\"", ops[k]),
			                errhint("Operations are INSERT, UPDATE, DELETE and TRUNCATE.")));
		if (want[found])
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			                errmsg("operation \"%s\" appears more than once", ops[k])));
		want[found] = true;
	}
	req.truncate = want[3];

	Config *cfg = build_config(rel, relid, req);
	// channel rights: a static channel the table's owner may not publish on is refused now, not
	// at the first write (a template's channels are checked per row)
	if (req.mode == Mode::Outbox && cfg->static_channel)
		require_publish_as_owner(cfg->static_channel, rel, self_fn);

	Datum keyd[INDEX_MAX_KEYS * 4 + 1];
	int nk = 0;
	for (int k = 0; k < cfg->nkeys && nk < (int)lengthof(keyd); k++)
		keyd[nk++] = CStringGetTextDatum(cfg->keys[k].name);
	Datum opd[4];
	int no = 0;
	for (int j = 0; j < 4; j++)
		if (want[j])
			opd[no++] = CStringGetTextDatum(kOps[j]);
	out[0] = CStringGetTextDatum(cfg->table_name);
	out[1] = CStringGetTextDatum(cfg->template_text);
	out[2] = PointerGetDatum(construct_array(keyd, nk, TEXTOID, -1, false, TYPALIGN_INT));
	out[3] = PointerGetDatum(construct_array(opd, no, TEXTOID, -1, false, TYPALIGN_INT));
	MemoryContextDelete(cfg->cxt);
	relation_close(rel, AccessShareLock);
}

#define TEXT_ARG_OR_NULL(n) (PG_ARGISNULL(n) ? nullptr : PG_GETARG_TEXT_PP(n))
#define ARRAY_ARG_OR_NULL(n) (PG_ARGISNULL(n) ? nullptr : PG_GETARG_ARRAYTYPE_P(n))

// outbox.attach(relation regclass, channel text, mode text, key_columns text[],
//   include_columns text[], operations text[]) RETURNS text
// The checks run here; the triggers are made by outbox._attach_triggers() (PL/pgSQL, as the
// caller: CREATE TRIGGER checks the caller's rights), called through fmgr: the caller needs no
// EXECUTE right on that internal function, and cannot call it without these checks.
PGO_FUNCTION(outbox_attach) {
	check_writable("outbox.attach()");
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("relation cannot be NULL")));
	Datum chk[4];
	check_attachment(PG_GETARG_OID(0), TEXT_ARG_OR_NULL(2), TEXT_ARG_OR_NULL(1), ARRAY_ARG_OR_NULL(3),
	                 ARRAY_ARG_OR_NULL(4), ARRAY_ARG_OR_NULL(5), chk, fcinfo->flinfo->fn_oid);
	Oid argtypes[9] = {REGCLASSOID, TEXTOID,      TEXTOID, TEXTARRAYOID, TEXTARRAYOID,
	                   TEXTOID,     TEXTARRAYOID, TEXTOID, TEXTARRAYOID};
	// found in the extension's schema, which the fmgr hook checked before this function started
	List *name = list_make2(makeString(get_namespace_name(check_trusted_schema())), makeString(pstrdup("_attach_triggers")));
	Oid fn = LookupFuncName(name, 9, argtypes, false);
	FmgrInfo flinfo;
	fmgr_info(fn, &flinfo);
	LOCAL_FCINFO(call, 9);
	InitFunctionCallInfoData(*call, &flinfo, 9, PG_GET_COLLATION(), nullptr, nullptr);
	// relation, mode, channel, key_columns, include_columns, then what the checks found:
	// table_name, resolved_key, channel_template, ops
	const int from[5] = {0, 2, 1, 3, 4};
	for (int k = 0; k < 5; k++) {
		call->args[k].isnull = PG_ARGISNULL(from[k]);
		call->args[k].value = call->args[k].isnull ? (Datum)0 : PG_GETARG_DATUM(from[k]);
	}
	const int chk_at[4] = {5, 7, 6, 8}; // chk: table_name, channel_template, resolved_key, ops
	for (int k = 0; k < 4; k++) {
		call->args[chk_at[k]].isnull = false;
		call->args[chk_at[k]].value = chk[k];
	}
	Datum result = FunctionCallInvoke(call);
	if (call->isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

// outbox._check_attachment(relation regclass, mode text, channel text, key_columns text[],
//   include_columns text[], operations text[],
//   OUT table_name text, OUT channel text, OUT key_columns text[], OUT operations text[])
// (1.1's attach() calls it. 1.2 has no such SQL function: its attach() is C and checks by
// itself; the symbol stays for databases not updated yet.)
PGO_FUNCTION(outbox_check_attachment) {
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("relation cannot be NULL")));
	Datum values[4];
	check_attachment(PG_GETARG_OID(0), TEXT_ARG_OR_NULL(1), TEXT_ARG_OR_NULL(2), ARRAY_ARG_OR_NULL(3),
	                 ARRAY_ARG_OR_NULL(4), ARRAY_ARG_OR_NULL(5), values, fcinfo->flinfo->fn_oid);
	TupleDesc desc;
	if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_outbox: _check_attachment must return a record");
	desc = BlessTupleDesc(desc);
	bool nulls[4] = {false, false, false, false};
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

// outbox._split_tgargs(tgargs bytea) RETURNS text[] — pg_trigger.tgargs as an array (for 1.1's view;
// 1.2 has no such SQL function)
PGO_FUNCTION(outbox_split_tgargs) {
	bytea *b = PG_GETARG_BYTEA_PP(0);
	const char *p = VARDATA_ANY(b);
	int len = VARSIZE_ANY_EXHDR(b);
	int n = 0;
	for (int k = 0; k < len; k++)
		n += p[k] == '\0';
	Datum *d = (Datum *)palloc(Max(n, 1) * sizeof(Datum));
	int start = 0, j = 0;
	for (int k = 0; k < len; k++)
		if (p[k] == '\0') {
			(void)pg_verifymbstr(p + start, k - start, false); // text in the database encoding only (22021)
			d[j++] = PointerGetDatum(cstring_to_text_with_len(p + start, k - start));
			start = k + 1;
		}
	PG_RETURN_ARRAYTYPE_P(construct_array(d, j, TEXTOID, -1, false, TYPALIGN_INT));
}

// outbox._resolved_key(relation regclass, key_columns text[]) RETURNS text[] (1.1's view; 1.2 has no
// such SQL function, its view reads the catalogs) — the key columns
// the trigger uses (the given ones, else the primary key, else the replica identity index);
// NULL when there are none (for the view, which must not fail).
PGO_FUNCTION(outbox_resolved_key) {
	if (!PG_ARGISNULL(1))
		PG_RETURN_DATUM(PG_GETARG_DATUM(1));
	Relation rel = try_relation_open(PG_GETARG_OID(0), AccessShareLock);
	if (!rel)
		PG_RETURN_NULL();
	Oid idx = compat::primary_key_index(rel);
	if (!OidIsValid(idx))
		idx = RelationGetReplicaIndex(rel);
	if (!OidIsValid(idx)) {
		relation_close(rel, AccessShareLock);
		PG_RETURN_NULL();
	}
	HeapTuple tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(idx));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "pg_outbox: cache lookup failed for index %u", idx);
	Form_pg_index ix = (Form_pg_index)GETSTRUCT(tup);
	int n = ix->indnkeyatts;
	Datum *d = (Datum *)palloc(Max(n, 1) * sizeof(Datum));
	for (int k = 0; k < n; k++)
		d[k] = CStringGetTextDatum(ix->indkey.values[k] > 0 ? get_attname(ix->indrelid, ix->indkey.values[k], false)
		                                                    : "(expression)");
	ReleaseSysCache(tup);
	relation_close(rel, AccessShareLock);
	PG_RETURN_ARRAYTYPE_P(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

} // namespace pg_outbox
