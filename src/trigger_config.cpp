// trigger_config.cpp — resolving a change trigger's configuration (trigger_config.hpp). Per
// relation it is resolved once — key columns (primary key, else replica identity index, unless
// given), their types and output functions, the channel template, the quoted table name — into a
// Config cached by trigger OID. A relcache callback marks configs stale on any DDL of the table
// (the trigger OID itself changes when attach runs again), a namespace callback all of them (a
// schema renamed changes the quoted names). So a row costs no catalog lookup.
#include "trigger_config.hpp"
#include "guard.hpp"
#include "invalidation.hpp"
#include "pg_compat.hpp"

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

#include <string>
#include <utility>

namespace pg_outbox {

namespace pl = payload;

// ---------------------------------------------------------------------------------------
// Resolving a configuration (once per relation)
// ---------------------------------------------------------------------------------------

static std::string scratch; // static: never owned by a frame that can see an ereport

static const char *pstrdup_json_string(const char *s, int *len) {
	scratch.clear();
	json::append_string(scratch, s);
	if (len)
		*len = static_cast<int>(scratch.size());
	return pnstrdup(scratch.data(), scratch.size());
}

static const char *json_member_prefix(const char *name, int *len) {
	scratch.clear();
	json::append_string(scratch, name);
	scratch += ':';
	*len = static_cast<int>(scratch.size());
	return pnstrdup(scratch.data(), scratch.size());
}

static void init_column(Column *c, Relation rel, const char *name, const char *role, const char *hint_context,
                        MemoryContext cxt) {
	AttrNumber attnum = get_attnum(RelationGetRelid(rel), name);
	if (attnum == InvalidAttrNumber)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
		                errmsg("column \"%s\" named in %s does not exist in table \"%s\"", name, role,
		                       RelationGetRelationName(rel)),
		                errhint("%s", hint_context)));
	if (attnum < 0)
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		                errmsg("system column \"%s\" cannot be used in %s", name, role),
		                errhint("Use columns of the table; system columns such as ctid and xmin change when a row "
		                        "is updated or the table is rewritten.")));
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	c->attnum = attnum;
	c->name = MemoryContextStrdup(cxt, name);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	c->member = json_member_prefix(name, &c->member_len);
	MemoryContextSwitchTo(old);
	c->typid = getBaseType(att->atttypid);
	c->by_output = false;
	switch (c->typid) {
	case INT2OID:
	case INT4OID:
	case INT8OID:
	case OIDOID:
		c->kind = pl::Kind::Int;
		break;
	case FLOAT4OID:
		c->kind = pl::Kind::Float4;
		break;
	case FLOAT8OID:
		c->kind = pl::Kind::Float8;
		break;
	case NUMERICOID:
		c->kind = pl::Kind::Numeric;
		break;
	case BOOLOID:
		c->kind = pl::Kind::Bool;
		break;
	case TEXTOID:
	case VARCHAROID:
	case BPCHAROID:
	case NAMEOID:
		c->kind = pl::Kind::String;
		break;
	case JSONOID:
	case JSONBOID:
		c->kind = pl::Kind::Json;
		break;
	case TIMESTAMPOID:
		c->kind = pl::Kind::Timestamp;
		break;
	case TIMESTAMPTZOID:
		c->kind = pl::Kind::TimestampTz;
		break;
	case DATEOID:
		c->kind = pl::Kind::Date;
		break;
	case TIMEOID:
		c->kind = pl::Kind::Time;
		break;
	case INTERVALOID:
		c->kind = pl::Kind::Interval;
		break;
	case BYTEAOID:
		c->kind = pl::Kind::Bytea;
		break;
	default:
		c->kind = pl::Kind::String;
		c->by_output = true;
		break;
	}
	if (c->by_output || c->kind == pl::Kind::Numeric) {
		Oid outfn;
		bool varlena;
		getTypeOutputInfo(c->typid, &outfn, &varlena);
		fmgr_info_cxt(outfn, &c->out, cxt);
	}
}

// Key columns from an index (primary key or replica identity), in index order.
// The indexes of cols[0..n) in jsonb's key order: shorter names first, then bytewise
// (lengthCompareJsonbString), so that a payload written as text has the members in the order its
// jsonb has. Allocated in cxt.
static int *jsonb_member_order(const Column *cols, int n, MemoryContext cxt) {
	int *order = (int *)MemoryContextAlloc(cxt, Max(n, 1) * sizeof(int));
	for (int k = 0; k < n; k++)
		order[k] = k;
	for (int k = 1; k < n; k++) // insertion sort: a handful of columns
		for (int j = k; j > 0; j--) {
			const char *a = cols[order[j - 1]].name, *b = cols[order[j]].name;
			size_t la = strlen(a), lb = strlen(b);
			if (la < lb || (la == lb && memcmp(a, b, la) <= 0))
				break;
			std::swap(order[j - 1], order[j]);
		}
	return order;
}

static int index_key_names(Oid indexoid, char ***names) {
	HeapTuple tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "pg_outbox: cache lookup failed for index %u", indexoid);
	Form_pg_index idx = (Form_pg_index)GETSTRUCT(tup);
	int n = idx->indnkeyatts;
	*names = (char **)palloc(n * sizeof(char *));
	for (int k = 0; k < n; k++) {
		AttrNumber a = idx->indkey.values[k];
		if (a <= 0)
			ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			                errmsg("index \"%s\" has an expression column and cannot be used as the key",
			                       get_rel_name(indexoid)),
			                errhint("Pass key_columns to outbox.attach().")));
		(*names)[k] = get_attname(idx->indrelid, a, false);
	}
	ReleaseSysCache(tup);
	return n;
}

// The table that outbox.attach() was called on: the trigger itself, or the partitioned table an
// inherited (cloned) trigger comes from.
static Oid attached_relid(Oid tgoid, Oid relid) {
	for (int depth = 0; depth < 100; depth++) {
		Relation tgrel = table_open(TriggerRelationId, AccessShareLock);
		ScanKeyData key;
		ScanKeyInit(&key, Anum_pg_trigger_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(tgoid));
		SysScanDesc scan = systable_beginscan(tgrel, TriggerOidIndexId, true, nullptr, 1, &key);
		HeapTuple tup = systable_getnext(scan);
		Oid parent = InvalidOid;
		if (HeapTupleIsValid(tup)) {
			Form_pg_trigger t = (Form_pg_trigger)GETSTRUCT(tup);
			relid = t->tgrelid;
			parent = t->tgparentid;
		}
		systable_endscan(scan);
		table_close(tgrel, AccessShareLock);
		if (!OidIsValid(parent))
			return relid;
		tgoid = parent;
	}
	return relid;
}

// Build (and validate) the configuration of req on rel, allocated in a new memory context.
// Every bad input raises a clear error here, both for outbox.attach() and, should DDL have
// broken a configuration since (a renamed column), for the trigger.
Config *build_config(Relation rel, Oid root_relid, const Request &req) {
	MemoryContext cxt = AllocSetContextCreate(TopTransactionContext, "pg_outbox trigger config", ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Config *cfg = (Config *)palloc0(sizeof(Config));
	cfg->cxt = cxt;
	cfg->relid = RelationGetRelid(rel);
	cfg->root_relid = root_relid;
	cfg->mode = req.mode;

	Oid nsp = get_rel_namespace(root_relid);
	char *nspname = get_namespace_name(nsp);
	char *relname = get_rel_name(root_relid);
	if (!nspname || !relname)
		elog(ERROR, "pg_outbox: cache lookup failed for relation %u", root_relid);
	cfg->table_name = quote_qualified_identifier(nspname, relname);
	cfg->table_json = pstrdup_json_string(cfg->table_name, &cfg->table_json_len);

	// key
	char **keys = req.keys;
	int nkeys = req.nkeys;
	const char *key_role = "key_columns";
	if (nkeys == 0) {
		Oid idx = compat::primary_key_index(rel);
		key_role = "the primary key";
		if (!OidIsValid(idx)) {
			idx = RelationGetReplicaIndex(rel);
			key_role = "the replica identity index";
		}
		if (!OidIsValid(idx))
			ereport(ERROR, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
			                errmsg("table \"%s\" has no primary key or replica identity index to identify its rows",
			                       cfg->table_name),
			                errhint("Add a primary key, or pass the columns that identify a row: outbox.attach('%s', "
			                        "key_columns => '{col1,col2}').",
			                        cfg->table_name)));
		nkeys = index_key_names(idx, &keys);
	}
	cfg->nkeys = nkeys;
	cfg->keys = (Column *)palloc0(nkeys * sizeof(Column));
	const char *hint = req.context;
	for (int k = 0; k < nkeys; k++)
		init_column(&cfg->keys[k], rel, keys[k], key_role, hint, cxt);
	cfg->ninclude = req.ninclude;
	cfg->include = (Column *)palloc0(Max(req.ninclude, 1) * sizeof(Column));
	for (int k = 0; k < req.ninclude; k++)
		init_column(&cfg->include[k], rel, req.include[k], "include_columns", hint, cxt);
	cfg->key_order = jsonb_member_order(cfg->keys, cfg->nkeys, cxt);
	cfg->include_order = jsonb_member_order(cfg->include, cfg->ninclude, cxt);

	// channel
	const char *tpl = req.channel;
	if (!tpl)
		tpl = psprintf("%s.%s", nspname, relname);
	cfg->template_text = pstrdup(tpl);
	size_t tpl_len = strlen(tpl);
	pl::TemplatePart *tparts = (pl::TemplatePart *)palloc((tpl_len + 1) * sizeof(pl::TemplatePart));
	pl::TemplateParse parse = pl::parse_template(std::string_view(tpl, tpl_len), tparts, tpl_len + 1);
	if (parse.status != pl::TemplateStatus::Ok)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("invalid channel template \"%s\": %s at byte %d", tpl,
		                       pl::template_status_message(parse.status), (int)parse.position + 1),
		                errhint("Write {column} to insert a column's value, {{ and }} for literal braces.")));
	if (parse.static_bytes > kMaxChannelBytes)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("channel \"%s\" is too long: %d bytes%s, the limit is %d bytes", tpl,
		                       (int)parse.static_bytes, parse.ncolumns ? " before any column is filled in" : "",
		                       (int)kMaxChannelBytes),
		                req.channel ? 0
		                            : errdetail("The default channel is the schema-qualified table name \"%s\".", tpl),
		                errhint("Pass a shorter channel to outbox.attach(); NOTIFY channel names are at most %d bytes.",
		                        (int)kMaxChannelBytes)));
	if (parse.nparts == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("channel cannot be empty"),
		                errhint("Pass NULL for the default channel (the schema-qualified table name).")));
	if (parse.ncolumns > 0 && req.truncate)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("channel template \"%s\" cannot be used with TRUNCATE", tpl),
		                errdetail("A TRUNCATE event has no row to fill the template's columns from."),
		                errhint("Attach without TRUNCATE in operations, or use a channel without {column} parts.")));
	cfg->nparts = static_cast<int>(parse.nparts);
	cfg->parts = (Part *)palloc0(parse.nparts * sizeof(Part));
	for (size_t k = 0; k < parse.nparts; k++) {
		Part *p = &cfg->parts[k];
		p->column = tparts[k].column;
		p->text = cfg->template_text + tparts[k].offset;
		p->len = static_cast<int>(tparts[k].length);
		if (p->column)
			init_column(&p->col, rel, pnstrdup(p->text, p->len), psprintf("channel template \"%s\"", tpl), hint, cxt);
	}
	if (parse.ncolumns == 0) {
		scratch.clear();
		for (int k = 0; k < cfg->nparts; k++)
			scratch.append(cfg->parts[k].text, cfg->parts[k].len);
		cfg->static_channel = pnstrdup(scratch.data(), scratch.size());
	}
	MemoryContextSwitchTo(old);
	return cfg;
}

// ---------------------------------------------------------------------------------------
// Parsing arguments (SQL arrays and the trigger's own arguments)
// ---------------------------------------------------------------------------------------

int text_array_names(ArrayType *arr, char ***out, const char *what, bool allow_empty) {
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR), errmsg("%s must be a one-dimensional array", what)));
	Datum *elems;
	bool *nulls;
	int n;
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0 && !allow_empty)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s cannot be empty", what),
		                errhint("Pass NULL to use the default.")));
	// a table has at most MaxHeapAttributeNumber columns: a longer list names one twice or one that
	// does not exist, whatever it holds
	if (n > MaxHeapAttributeNumber)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("%s has too many elements: %d, at most %d", what, n, MaxHeapAttributeNumber),
		                errdetail("A table has at most %d columns.", MaxHeapAttributeNumber)));
	*out = (char **)palloc(Max(n, 1) * sizeof(char *));
	for (int k = 0; k < n; k++) {
		CHECK_FOR_INTERRUPTS();
		if (nulls[k])
			ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s cannot contain NULL", what)));
		(*out)[k] = TextDatumGetCString(elems[k]);
	}
	// duplicates: sorted copy, n log n
	if (n > 1) {
		char **sorted = (char **)palloc(n * sizeof(char *));
		memcpy(sorted, *out, n * sizeof(char *));
		qsort(sorted, n, sizeof(char *), [](const void *a, const void *b) {
			return strcmp(*static_cast<char *const *>(a), *static_cast<char *const *>(b));
		});
		for (int k = 1; k < n; k++)
			if (strcmp(sorted[k - 1], sorted[k]) == 0)
				ereport(ERROR, (errcode(ERRCODE_DUPLICATE_COLUMN),
				                errmsg("column \"%s\" appears more than once in %s", sorted[k], what)));
		pfree(sorted);
	}
	return n;
}

Mode parse_mode(const char *mode) {
	if (strcmp(mode, "notify") == 0)
		return Mode::Notify;
	if (strcmp(mode, "outbox") == 0)
		return Mode::Outbox;
	ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("invalid mode \"%s\"", mode),
	                errhint("Use 'outbox' (durable: events go through outbox.pending and the drain worker) or "
	                        "'notify' (best effort: NOTIFY at commit).")));
	pg_unreachable();
}

static const char *kTriggerHint =
    "The trigger's configuration no longer matches the table (a column was renamed or dropped?): run "
    "outbox.attach() again, or outbox.detach().";

static Request request_from_trigger(Trigger *tg) {
	if (tg->tgnargs != 4)
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("trigger \"%s\" has %d arguments, outbox._change() expects 4", tg->tgname, tg->tgnargs),
		                errhint("Create it with outbox.attach(), not by hand.")));
	Request req;
	req.mode = parse_mode(tg->tgargs[0]);
	req.channel = tg->tgargs[1][0] ? tg->tgargs[1] : nullptr;
	req.nkeys = req.ninclude = 0;
	req.keys = req.include = nullptr;
	if (tg->tgargs[2][0]) {
		Datum a = OidInputFunctionCall(F_ARRAY_IN, tg->tgargs[2], TEXTOID, -1);
		req.nkeys = text_array_names(DatumGetArrayTypeP(a), &req.keys, "key_columns", false);
	}
	if (tg->tgargs[3][0]) {
		Datum a = OidInputFunctionCall(F_ARRAY_IN, tg->tgargs[3], TEXTOID, -1);
		req.ninclude = text_array_names(DatumGetArrayTypeP(a), &req.include, "include_columns", true);
	}
	req.truncate = false; // a template with columns and TRUNCATE was refused at attach time
	req.context = kTriggerHint;
	return req;
}

// ---------------------------------------------------------------------------------------
// The cache: Config by trigger OID, marked stale by relcache invalidations
// ---------------------------------------------------------------------------------------

struct CacheEntry {
	Oid tgoid; // hash key
	Config *cfg;
};

static HTAB *config_cache = nullptr;
static Config *last_cfg = nullptr; // one-entry memo in front of the hash table

// the invalidations (invalidation.cpp): a table's DDL, or a schema renamed (InvalidOid)
void trigger_configs_forget(Oid relid) {
	if (!config_cache)
		return;
	HASH_SEQ_STATUS st;
	hash_seq_init(&st, config_cache);
	for (CacheEntry *e; (e = (CacheEntry *)hash_seq_search(&st)) != nullptr;)
		if (e->cfg && (relid == InvalidOid || e->cfg->relid == relid || e->cfg->root_relid == relid))
			e->cfg->valid = false;
}

static void init_cache(void) {
	if (config_cache)
		return;
	HASHCTL ctl;
	memset(&ctl, 0, sizeof ctl);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(CacheEntry);
	ctl.hcxt = CacheMemoryContext;
	config_cache = hash_create("pg_outbox trigger configs", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

Config *lookup_config(Trigger *tg, Relation rel) {
	Config *cfg = last_cfg;
	if (cfg && cfg->tgoid == tg->tgoid && cfg->valid)
		return cfg;
	init_cache();
	bool found;
	CacheEntry *e = (CacheEntry *)hash_search(config_cache, &tg->tgoid, HASH_ENTER, &found);
	if (!found)
		e->cfg = nullptr;
	if (!e->cfg || !e->cfg->valid) {
		Oid root = tg->tgisclone ? attached_relid(tg->tgoid, RelationGetRelid(rel)) : RelationGetRelid(rel);
		Request req = request_from_trigger(tg);
		Config *fresh = build_config(rel, root, req);
		fresh->tgoid = tg->tgoid;
		fresh->valid = true;
		MemoryContextSetParent(fresh->cxt, CacheMemoryContext);
		// hash_search may have moved nothing, but the build may have run invalidations: find again
		e = (CacheEntry *)hash_search(config_cache, &tg->tgoid, HASH_ENTER, &found);
		if (found && e->cfg && e->cfg != fresh) {
			// A caller up the stack (a nested trigger) may still use the old one: free it with
			// the transaction, not now.
			if (last_cfg == e->cfg)
				last_cfg = nullptr;
			MemoryContextSetParent(e->cfg->cxt, TopTransactionContext);
		}
		e->cfg = fresh;
	}
	last_cfg = e->cfg;
	return e->cfg;
}

} // namespace pg_outbox
