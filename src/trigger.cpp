// trigger.cpp — the generic change trigger behind outbox.attach(): for every changed row it
// sends {"op":"INSERT","table":"public.users","id":42} — as a size-checked NOTIFY at commit
// ('notify' mode) or as an event in outbox.pending that the drain worker publishes
// ('outbox' mode).
//
// The configuration lives in the trigger's own arguments (so pg_dump, pg_dump -t and
// pg_upgrade keep it with the table, and it cannot drift from the triggers that exist):
//   outbox._change(mode, channel template or '', key columns as text[] or '', included
//                  columns as text[] or '')
// Per relation it is resolved once — key columns (primary key, else replica identity index,
// unless given), their types and output functions, the channel template, the quoted table
// name — into a Config cached by trigger OID. A relcache callback marks configs stale on any
// DDL of the table (the trigger OID itself changes when attach runs again). So a row costs
// no catalog lookup and, in notify mode, no SPI call.
//
// Error boundary (guard.hpp): frames that call Postgres hold only plain data; the C++ side
// (payload.cpp) writes into static std::string buffers.
#include "payload.hpp" // pure C++ first
#include "pg_outbox.hpp"
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

#include <string>

namespace pg_outbox {

namespace pl = payload;

enum class Mode : uint8 { Notify, Outbox };

// One column the trigger reads: a key column, an included column or a channel template column.
struct Column {
	AttrNumber attnum;
	pl::Kind kind;  // how the value is rendered (Kind::String also covers the output-function case)
	bool by_output; // render through the type's output function (as a JSON string)
	Oid typid;      // base type (domains resolved)
	FmgrInfo out;   // output function, when by_output or kind == Numeric / Json from jsonb
	const char *name;
	const char *member; // "\"name\":" — the JSON object member prefix
	int member_len;
};

struct Part {
	bool column;
	const char *text; // literal text (not NUL-terminated)
	int len;
	Column col;
};

struct Config {
	Oid tgoid;
	Oid relid;      // the table the trigger is on (a partition, for inherited triggers)
	Oid root_relid; // the table outbox.attach() was called on
	bool valid;
	MemoryContext cxt;
	Mode mode;
	const char *table_json; // JSON string literal of the quoted, schema-qualified name
	int table_json_len;
	const char *table_name; // the same, for messages
	const char *template_text;
	int nkeys;
	Column *keys;
	int ninclude;
	Column *include;
	int nparts;
	Part *parts;
	const char *static_channel; // the channel when the template names no column
};

// What attach/the trigger arguments ask for.
struct Request {
	Mode mode;
	const char *channel; // nullptr: default
	int nkeys;           // 0: automatic
	char **keys;
	int ninclude;
	char **include;
	bool truncate; // TRUNCATE is among the operations
	const char *context; // for error hints: "outbox.attach()" or "the trigger"
};

// ---------------------------------------------------------------------------------------
// Resolving a configuration (once per relation)
// ---------------------------------------------------------------------------------------

static std::string scratch; // static: never owned by a frame that can see an ereport

static const char *pstrdup_json_string(const char *s, int *len) {
	scratch.clear();
	pl::append_json_string(scratch, s);
	if (len)
		*len = static_cast<int>(scratch.size());
	return pnstrdup(scratch.data(), scratch.size());
}

static const char *json_member_prefix(const char *name, int *len) {
	scratch.clear();
	pl::append_json_string(scratch, name);
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
static Config *build_config(Relation rel, Oid root_relid, const Request &req) {
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

static int text_array_names(ArrayType *arr, char ***out, const char *what, bool allow_empty) {
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

static Mode parse_mode(const char *mode) {
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

static void invalidate_relation(Datum, Oid relid) {
	if (!config_cache)
		return;
	HASH_SEQ_STATUS st;
	hash_seq_init(&st, config_cache);
	for (CacheEntry *e; (e = (CacheEntry *)hash_seq_search(&st)) != nullptr;)
		if (e->cfg && (relid == InvalidOid || e->cfg->relid == relid || e->cfg->root_relid == relid))
			e->cfg->valid = false;
}

static void invalidate_all(Datum, int, uint32) {
	invalidate_relation((Datum)0, InvalidOid);
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
	CacheRegisterRelcacheCallback(invalidate_relation, (Datum)0);
	// schema renames change the table's name without a relcache invalidation of the table
	CacheRegisterSyscacheCallback(NAMESPACEOID, invalidate_all, (Datum)0);
}

static Config *lookup_config(Trigger *tg, Relation rel) {
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

// ---------------------------------------------------------------------------------------
// Per row
// ---------------------------------------------------------------------------------------

// static buffers: reused row after row, never owned by a frame that can see an ereport
static std::string buf_id, buf_old_id, buf_data, buf_payload, buf_channel, buf_key, buf_json;

static void fetch(const Column &c, TupleTableSlot *slot, pl::Scalar &s) {
	bool isnull;
	Datum d = slot_getattr(slot, c.attnum, &isnull);
	s.text = std::string_view();
	if (isnull) {
		s.kind = pl::Kind::Null;
		return;
	}
	s.kind = c.kind;
	if (c.by_output) {
		char *t = OutputFunctionCall(const_cast<FmgrInfo *>(&c.out), d);
		s.text = std::string_view(t, strlen(t));
		return;
	}
	switch (c.kind) {
	case pl::Kind::Int:
		switch (c.typid) {
		case INT2OID:
			s.i = DatumGetInt16(d);
			break;
		case INT4OID:
			s.i = DatumGetInt32(d);
			break;
		case OIDOID:
			s.i = DatumGetObjectId(d);
			break;
		default:
			s.i = DatumGetInt64(d);
		}
		break;
	case pl::Kind::Float4:
		s.f = DatumGetFloat4(d);
		break;
	case pl::Kind::Float8:
		s.f = DatumGetFloat8(d);
		break;
	case pl::Kind::Bool:
		s.i = DatumGetBool(d) ? 1 : 0;
		break;
	case pl::Kind::Numeric: {
		char *t = OutputFunctionCall(const_cast<FmgrInfo *>(&c.out), d);
		s.text = std::string_view(t, strlen(t));
		break;
	}
	case pl::Kind::String:
	case pl::Kind::Bytea:
	case pl::Kind::Json:
		if (c.typid == NAMEOID) {
			const char *t = NameStr(*DatumGetName(d));
			s.text = std::string_view(t, strlen(t));
		} else if (c.typid == JSONBOID) {
			Jsonb *jb = DatumGetJsonbP(d);
			char *t = JsonbToCString(nullptr, &jb->root, VARSIZE(jb));
			s.text = std::string_view(t, strlen(t));
		} else if (c.typid == JSONOID) {
			// through jsonb in both modes, as outbox mode stores the payload: duplicate keys
			// resolve the same way (the last one wins), and \u0000, which jsonb cannot hold,
			// becomes \ufffd in both (payload.hpp)
			struct varlena *v = pg_detoast_datum_packed((struct varlena *)DatumGetPointer(d));
			std::string_view raw(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
			const char *src = pl::replace_nul_escapes(raw, buf_json) ? buf_json.c_str() : pnstrdup(raw.data(), raw.size());
			Jsonb *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(src)));
			char *t = JsonbToCString(nullptr, &jb->root, VARSIZE(jb));
			s.text = std::string_view(t, strlen(t));
		} else {
			struct varlena *v = pg_detoast_datum_packed((struct varlena *)DatumGetPointer(d));
			s.text = std::string_view(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
		}
		break;
	case pl::Kind::Timestamp:
	case pl::Kind::TimestampTz:
		s.i = DatumGetTimestamp(d);
		break;
	case pl::Kind::Date:
		s.i = DatumGetDateADT(d);
		break;
	case pl::Kind::Time:
		s.i = DatumGetTimeADT(d);
		break;
	case pl::Kind::Interval: {
		Interval *iv = DatumGetIntervalP(d);
		s.i = iv->time;
		s.days = iv->day;
		s.months = iv->month;
		break;
	}
	case pl::Kind::Null:
		break;
	}
}

// The key as JSON into out: the value of a one-column key, an object for a composite key.
static void render_key(const Config *cfg, TupleTableSlot *slot, std::string &out) {
	out.clear();
	pl::Scalar s;
	if (cfg->nkeys == 1) {
		fetch(cfg->keys[0], slot, s);
		pl::append_json(out, s);
		return;
	}
	out += '{';
	for (int k = 0; k < cfg->nkeys; k++) {
		if (k)
			out += ',';
		out.append(cfg->keys[k].member, cfg->keys[k].member_len);
		fetch(cfg->keys[k], slot, s);
		pl::append_json(out, s);
	}
	out += '}';
}

static void render_data(const Config *cfg, TupleTableSlot *slot, std::string &out) {
	out.clear();
	out += '{';
	pl::Scalar s;
	for (int k = 0; k < cfg->ninclude; k++) {
		if (k)
			out += ',';
		out.append(cfg->include[k].member, cfg->include[k].member_len);
		fetch(cfg->include[k], slot, s);
		pl::append_json(out, s);
	}
	out += '}';
}

static const char *render_channel(const Config *cfg, TupleTableSlot *slot) {
	if (cfg->static_channel)
		return cfg->static_channel;
	buf_channel.clear();
	pl::Scalar s;
	for (int k = 0; k < cfg->nparts; k++) {
		const Part *p = &cfg->parts[k];
		if (!p->column) {
			buf_channel.append(p->text, p->len);
			continue;
		}
		fetch(p->col, slot, s);
		if (s.kind == pl::Kind::Null)
			ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
			                errmsg("column \"%s\" of table %s is NULL, so channel template \"%s\" cannot be filled",
			                       p->col.name, cfg->table_name, cfg->template_text),
			                errhint("Make the column NOT NULL, or attach with a template whose columns are never "
			                        "NULL.")));
		pl::append_text(buf_channel, s);
	}
	if (buf_channel.empty() || buf_channel.size() > kMaxChannelBytes)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("channel \"%.*s%s\" filled from template \"%s\" is %d bytes long, a channel is 1 to %d "
		                       "bytes",
		                       (int)Min(buf_channel.size(), (size_t)100), buf_channel.c_str(),
		                       buf_channel.size() > 100 ? "..." : "", cfg->template_text, (int)buf_channel.size(),
		                       (int)kMaxChannelBytes),
		                errdetail("The row is in table %s.", cfg->table_name),
		                errhint("Use shorter values or a shorter template (NOTIFY channel names are at most %d bytes).",
		                        (int)kMaxChannelBytes)));
	return buf_channel.c_str();
}

// ---- outbox mode: events are buffered per statement and written 64 at a time ----
//
// A row only appends its event to a buffer (in TopTransactionContext); the events are written
// into outbox.pending (insert_pending(), 64 rows per table_multi_insert) at the end of the
// statement that fired the row trigger, in the order the rows were changed:
//   - the statement trigger outbox_flush (AFTER ... FOR EACH STATEMENT, created by attach in
//     outbox mode);
//   - the end of every query (ExecutorFinish hook: its AFTER triggers have all fired by then)
//     and of every utility statement (ProcessUtility hook: COPY, SET CONSTRAINTS, CALL): this
//     covers what fires our row trigger but no statement trigger of ours — a partition written
//     directly (its cloned row trigger; statement triggers are not cloned), COPY into one;
//   - a full buffer (kFlushEvents), and the transaction's pre-commit/pre-prepare (deferred
//     constraint triggers fire just before it).
//
// Subtransactions (savepoints, PL/pgSQL EXCEPTION blocks, psql ON_ERROR_ROLLBACK, JDBC
// autosave): every event records the nesting level of the subtransaction it was made in. A row
// written into outbox.pending belongs to the subtransaction current at that moment, so an event
// is only ever written by a flush at its own level — never into a deeper subtransaction that
// could roll back while its own commits. A rolled-back subtransaction drops its events (a
// flush at that level already wrote some? then its rows are rolled back with it); a released
// one hands them to its parent. The buffer is ordered by level (a new event is always at the
// deepest open level), so a flush writes the whole buffer when every event is at the current
// level, and otherwise waits: the events made inside a subtransaction that began while
// older events were buffered (a DBA's AFTER trigger with an EXCEPTION block running between
// our row trigger's calls) are written when that subtransaction is released, in order with the
// others. Only a level that alone holds kFlushEvents events is written early, out of order
// with the older events (they all commit together, still each exactly once).

struct BufferedEvent {
	int level;
	char *channel; // one palloc with key: pfree'd when the event is written or dropped
	char *key;     // nullptr: NULL
	const char *type;
	Datum payload; // jsonb
};

constexpr int kFlushEvents = 10000;
static MemoryContext buffer_cxt = nullptr;
static BufferedEvent *buffer = nullptr;
static int buffer_len = 0, buffer_cap = 0;
static bool callbacks_registered = false;
static int flushing_level = 0; // > 0 while flush_events() runs (a DBA's trigger on pending can reenter)

static void free_event(BufferedEvent *e) {
	pfree(e->channel);
	if (e->payload)
		pfree(DatumGetPointer(e->payload));
}

// Write the buffered events from index first on (all of the current level) into
// outbox.pending, as the table's owner: the writer of the row need not have any right on the
// outbox schema (as with foreign-key checks).
static void write_events(int first) {
	Oid save_user;
	int save_sec;
	GetUserIdAndSecContext(&save_user, &save_sec);
	// As the owner, with search_path pinned: a CHECK constraint, an index expression or a trigger
	// a DBA put on outbox.pending runs with the owner's rights, so nothing the writer put in its
	// own search_path may resolve inside it. (Not a security-restricted operation: a deferred
	// trigger of the DBA's, a deferred foreign key say, must be able to fire at commit.)
	SetUserIdAndSecContext(pending_owner(), save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
	int guc_level = pin_search_path();
	int n = buffer_len - first;
	PendingEvent *ev = (PendingEvent *)palloc(n * sizeof(PendingEvent));
	for (int k = 0; k < n; k++) {
		BufferedEvent *e = &buffer[first + k];
		ev[k].channel = CStringGetTextDatum(e->channel);
		ev[k].key_null = e->key == nullptr;
		ev[k].key = e->key ? CStringGetTextDatum(e->key) : (Datum)0;
		ev[k].type_null = false;
		ev[k].type = CStringGetTextDatum(e->type);
		ev[k].payload_null = false;
		ev[k].payload = e->payload;
	}
	flushing_level = GetCurrentTransactionNestLevel();
	insert_pending(ev, n, nullptr);
	flushing_level = 0;
	for (int k = 0; k < n; k++) {
		pfree(DatumGetPointer(ev[k].channel));
		if (!ev[k].key_null)
			pfree(DatumGetPointer(ev[k].key));
		pfree(DatumGetPointer(ev[k].type));
	}
	pfree(ev);
	AtEOXact_GUC(true, guc_level);
	SetUserIdAndSecContext(save_user, save_sec);
	// only now: an error above leaves the buffer to the (sub)transaction's abort. Events a DBA's
	// trigger on outbox.pending made meanwhile (appended after first + n) stay buffered.
	for (int k = first; k < first + n; k++)
		free_event(&buffer[k]);
	int added = buffer_len - (first + n);
	if (added > 0)
		memmove(&buffer[first], &buffer[first + n], added * sizeof(BufferedEvent));
	buffer_len = first + added;
	if (buffer_len == 0) {
		MemoryContextReset(buffer_cxt); // a large statement's buffer goes back
		buffer = nullptr;
		buffer_cap = 0;
	}
}

// Write what may be written now (see above): every event, if all are of the current level;
// else the current level's events only if they alone fill the buffer (bounded memory).
static void flush_events(void) {
	if (buffer_len == 0 || flushing_level > 0)
		return;
	int level = GetCurrentTransactionNestLevel();
	if (buffer[0].level == level) {
		write_events(0);
		return;
	}
	int first = buffer_len;
	while (first > 0 && buffer[first - 1].level == level)
		first--;
	if (buffer_len - first >= kFlushEvents)
		write_events(first);
}

// flush_events() where no statement may be running (commit, the end of a utility statement):
// give the INSERT a snapshot of its own if there is none.
static void flush_events_with_snapshot(void) {
	bool snap = !ActiveSnapshotSet();
	if (snap)
		PushActiveSnapshot(GetTransactionSnapshot());
	flush_events();
	if (snap)
		PopActiveSnapshot();
}

static void buffer_xact_callback(XactEvent event, void *) {
	switch (event) {
	case XACT_EVENT_PRE_COMMIT:
	case XACT_EVENT_PRE_PREPARE:
		if (buffer_len > 0)
			flush_events_with_snapshot(); // at the top level: every event is of level 1 now
		break;
	case XACT_EVENT_COMMIT:
	case XACT_EVENT_ABORT:
	case XACT_EVENT_PREPARE:
	case XACT_EVENT_PARALLEL_COMMIT:
	case XACT_EVENT_PARALLEL_ABORT:
		// buffer_cxt lives in TopTransactionContext, which goes away now
		buffer_cxt = nullptr;
		buffer = nullptr;
		buffer_len = buffer_cap = 0;
		flushing_level = 0;
		break;
	default:
		break;
	}
}

static void buffer_subxact_callback(SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
	int level = GetCurrentTransactionNestLevel();
	if (event == SUBXACT_EVENT_ABORT_SUB) {
		while (buffer_len > 0 && buffer[buffer_len - 1].level >= level)
			free_event(&buffer[--buffer_len]);
		if (flushing_level >= level)
			flushing_level = 0; // the flush that ran at this level was interrupted by the error
	} else if (event == SUBXACT_EVENT_COMMIT_SUB) {
		for (int k = buffer_len - 1; k >= 0 && buffer[k].level >= level; k--)
			buffer[k].level = level - 1;
	}
}

static void buffer_event(const char *channel, const char *key, const char *type, const char *payload) {
	if (!callbacks_registered) {
		RegisterXactCallback(buffer_xact_callback, nullptr);
		RegisterSubXactCallback(buffer_subxact_callback, nullptr);
		callbacks_registered = true;
	}
	if (!buffer_cxt)
		buffer_cxt = AllocSetContextCreate(TopTransactionContext, "pg_outbox event buffer", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(buffer_cxt);
	if (buffer_len == buffer_cap) {
		int cap = buffer_cap ? buffer_cap * 2 : 64;
		buffer = buffer ? (BufferedEvent *)repalloc(buffer, cap * sizeof(BufferedEvent))
		                : (BufferedEvent *)palloc(cap * sizeof(BufferedEvent));
		buffer_cap = cap;
	}
	size_t clen = strlen(channel), klen = key ? strlen(key) : 0;
	char *strings = (char *)palloc(clen + 1 + (key ? klen + 1 : 0));
	memcpy(strings, channel, clen + 1);
	if (key)
		memcpy(strings + clen + 1, key, klen + 1);
	Datum jb = DirectFunctionCall1(jsonb_in, CStringGetDatum(payload));
	MemoryContextSwitchTo(old);
	BufferedEvent *e = &buffer[buffer_len];
	e->level = GetCurrentTransactionNestLevel();
	e->channel = strings;
	e->key = key ? strings + clen + 1 : nullptr;
	e->type = type; // a string constant
	e->payload = jb;
	buffer_len++;
	if (buffer_len >= kFlushEvents)
		flush_events();
}

// The hooks that flush at the end of every query and utility statement.
static ExecutorFinish_hook_type prev_executor_finish = nullptr;
static ProcessUtility_hook_type prev_process_utility = nullptr;

static void flush_executor_finish(QueryDesc *qd) {
	if (prev_executor_finish)
		prev_executor_finish(qd);
	else
		standard_ExecutorFinish(qd);
	if (buffer_len > 0)
		flush_events_with_snapshot();
}

static void flush_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
                                  ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *queryEnv,
                                  DestReceiver *dest, QueryCompletion *qc) {
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	// not after SAVEPOINT/RELEASE/ROLLBACK/COMMIT: the subtransaction callbacks and the commit
	// handle the buffer there
	if (buffer_len > 0 && !IsA(pstmt->utilityStmt, TransactionStmt) && IsTransactionState())
		flush_events_with_snapshot();
}

void install_trigger_hooks(void) {
	prev_executor_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = flush_executor_finish;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = flush_process_utility;
}

// A row with a large value leaves its size in the static buffers: give it back afterwards, so a
// backend does not keep the largest row it ever wrote.
static void shrink_buffers(void) {
	constexpr size_t kKeep = 1024 * 1024;
	for (std::string *b : {&buf_id, &buf_old_id, &buf_data, &buf_payload, &buf_channel, &buf_key, &buf_json})
		if (b->capacity() > kKeep)
			std::string().swap(*b);
}

static void emit(const Config *cfg, const char *op, const char *channel, bool has_key, TupleTableSlot *data_slot) {
	pl::Parts parts;
	parts.op = op;
	parts.table = std::string_view(cfg->table_json, cfg->table_json_len);
	if (has_key) {
		parts.id = buf_id;
		parts.old_id = buf_old_id;
	}
	if (data_slot && cfg->ninclude > 0) {
		render_data(cfg, data_slot, buf_data);
		parts.data = buf_data;
		parts.has_data = true;
	}
	if (cfg->mode == Mode::Notify) {
		if (pl::compose(buf_payload, parts) == pl::PayloadFit::TooBig)
			ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			                errmsg("the key of a row of table %s is too large to notify: %d bytes", cfg->table_name,
			                       (int)(buf_id.size() + buf_old_id.size())),
			                errdetail("The payload without data is %d bytes; a NOTIFY payload must be shorter than %d "
			                          "bytes.",
			                          (int)buf_payload.size(), (int)kMaxPayloadBytes + 1),
			                errhint("Use a smaller key (key_columns), or attach with mode => 'outbox', which stores "
			                        "the event and sends its id.")));
		Async_Notify(channel, buf_payload.c_str());
		shrink_buffers();
		return;
	}
	// outbox: stored whole; the drain worker's envelope drops the payload if it is too big
	pl::compose(buf_payload, parts, SIZE_MAX);
	const char *key = nullptr;
	if (has_key) {
		if (cfg->nkeys == 1) {
			// a one-column key as text: 42, not "42"
			key = nullptr;
			if (!(buf_id == "null"))
				key = buf_key.c_str();
		} else {
			key = buf_id.c_str();
		}
	}
	buffer_event(channel, key, op, buf_payload.c_str());
	shrink_buffers();
}

static Datum change_trigger(FunctionCallInfo fcinfo) {
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("outbox._change() must be called as a trigger"),
		                errhint("Attach it with outbox.attach().")));
	TriggerData *td = (TriggerData *)fcinfo->context;
	if (!TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("outbox._change() must be an AFTER trigger"),
		                errhint("Attach it with outbox.attach().")));
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event) && !TRIGGER_FIRED_BY_TRUNCATE(td->tg_event)) {
		// outbox_flush, after the statement: its rows are all buffered
		flush_events();
		return PointerGetDatum(nullptr);
	}
	Config *cfg = lookup_config(td->tg_trigger, td->tg_relation);
	buf_id.clear();
	buf_old_id.clear();
	buf_key.clear();

	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event)) {
		if (!cfg->static_channel)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			                errmsg("channel template \"%s\" cannot be used with TRUNCATE", cfg->template_text),
			                errhint("Run outbox.attach() again.")));
		if (cfg->mode == Mode::Outbox) // channel rights: as the table's owner
			require_publish_as_owner(cfg->static_channel, td->tg_relation, fcinfo->flinfo->fn_oid);
		emit(cfg, "TRUNCATE", cfg->static_channel, false, nullptr);
		if (cfg->mode == Mode::Outbox)
			flush_events();
		return PointerGetDatum(nullptr);
	}
	const char *op;
	TupleTableSlot *row; // the row the event is about: new, or old for DELETE
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event)) {
		op = "INSERT";
		row = td->tg_trigslot;
	} else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
		op = "UPDATE";
		row = td->tg_newslot;
	} else {
		op = "DELETE";
		row = td->tg_trigslot;
	}
	render_key(cfg, row, buf_id);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
		render_key(cfg, td->tg_trigslot, buf_old_id);
		if (buf_old_id == buf_id)
			buf_old_id.clear();
	}
	if (cfg->mode == Mode::Outbox && cfg->nkeys == 1) {
		pl::Scalar s;
		fetch(cfg->keys[0], row, s);
		pl::append_text(buf_key, s);
	}
	const char *channel = render_channel(cfg, row);
	if (cfg->mode == Mode::Outbox) // channel rights: as the table's owner
		require_publish_as_owner(channel, td->tg_relation, fcinfo->flinfo->fn_oid);
	emit(cfg, op, channel, true, row);
	return PointerGetDatum(nullptr);
}

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

using namespace pg_outbox;

// outbox._change() RETURNS trigger
PGO_FUNCTION(outbox_change_trigger) {
	return change_trigger(fcinfo);
}
