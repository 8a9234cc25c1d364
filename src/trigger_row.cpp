// trigger_row.cpp — the row path of the generic change trigger behind outbox.attach(): for every
// changed row it renders {"op":"INSERT","table":"public.users","id":42} from the cached Config
// (trigger_config.hpp) and either sends it as a size-checked NOTIFY at commit ('notify' mode) or
// buffers it as an event for outbox.pending that the drain worker publishes ('outbox' mode,
// trigger_buffer.hpp). A row costs no catalog lookup and, in notify mode, no SPI call.
//
// Error boundary (guard.hpp): frames that call Postgres hold only plain data; the C++ side
// (payload.cpp) writes into static std::string buffers.
#include "trigger_config.hpp" // pure C++ (payload.hpp) first
#include "trigger_buffer.hpp"
#include "jsonb_text.hpp"
#include "guard.hpp"
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
#include "utils/numeric.h"
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

// ---------------------------------------------------------------------------------------
// Per row
// ---------------------------------------------------------------------------------------

// static buffers: reused row after row, never owned by a frame that can see an ereport
static std::string buf_id, buf_old_id, buf_data, buf_payload, buf_channel, buf_key, buf_json, buf_jsontext, buf_value;
// fetch() of a json/jsonb column for the outbox-mode builder: the value as jsonb, no text
static bool fetch_as_jsonb = false;
static Jsonb *fetched_jsonb = nullptr;

// A json/jsonb column's value: kept as jsonb for the outbox-mode builder, else its canonical
// text (jsonb_text.hpp).
static void json_value(Jsonb *jb, pl::Scalar &s) {
	if (fetch_as_jsonb) {
		fetched_jsonb = jb;
		return;
	}
	buf_jsontext.clear();
	append_jsonb_compact(buf_jsontext, &jb->root);
	s.text = buf_jsontext;
}

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
			json_value(DatumGetJsonbP(d), s);
		} else if (c.typid == JSONOID) {
			// through jsonb in both modes, as outbox mode stores the payload: duplicate keys
			// resolve the same way (the last one wins), and \u0000, which jsonb cannot hold,
			// becomes \ufffd in both (payload.hpp)
			struct varlena *v = pg_detoast_datum_packed((struct varlena *)DatumGetPointer(d));
			std::string_view raw(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
			const char *src = pl::replace_nul_escapes(raw, buf_json) ? buf_json.c_str() : pnstrdup(raw.data(), raw.size());
			json_value(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(src))), s);
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
		const Column &c = cfg->keys[cfg->key_order[k]];
		if (k)
			out += ',';
		out.append(c.member, c.member_len);
		fetch(c, slot, s);
		pl::append_json(out, s);
	}
	out += '}';
}

static void render_data(const Config *cfg, TupleTableSlot *slot, std::string &out) {
	out.clear();
	out += '{';
	pl::Scalar s;
	for (int k = 0; k < cfg->ninclude; k++) {
		const Column &c = cfg->include[cfg->include_order[k]];
		if (k)
			out += ',';
		out.append(c.member, c.member_len);
		fetch(c, slot, s);
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

// A row with a large value leaves its size in the static buffers: give it back afterwards, so a
// backend does not keep the largest row it ever wrote.
static void shrink_buffers(void) {
	constexpr size_t kKeep = 1024 * 1024;
	for (std::string *b : {&buf_id, &buf_old_id, &buf_data, &buf_payload, &buf_channel, &buf_key, &buf_json})
		if (b->capacity() > kKeep)
			std::string().swap(*b);
}

// ---- outbox mode: the stored payload built as jsonb directly (no text, no jsonb_in) ----
// The same members and values as the text of notify mode; pushJsonbValue puts them in jsonb's
// key order, which is the order the text has, and jsonb_text.cpp renders it back into exactly
// that text. Built in row_cxt, reset for every row; the result is copied into the event buffer.
static MemoryContext row_cxt = nullptr;

static void push_name(JsonbParseState **st, const char *name, size_t len) {
	JsonbValue k;
	k.type = jbvString;
	k.val.string.val = const_cast<char *>(name);
	k.val.string.len = (int)len;
	pushJsonbValue(st, WJB_KEY, &k);
}

static void push_string(JsonbParseState **st, const char *s, size_t len) {
	JsonbValue v;
	v.type = jbvString;
	v.val.string.val = pnstrdup(s, len);
	v.val.string.len = (int)len;
	pushJsonbValue(st, WJB_VALUE, &v);
}

// A json/jsonb column's value, token by token (a scalar root is its one element).
static void push_jsonb(JsonbParseState **st, Jsonb *jb) {
	JsonbValue v;
	if (JB_ROOT_IS_SCALAR(jb)) {
		JsonbExtractScalar(&jb->root, &v);
		pushJsonbValue(st, WJB_VALUE, &v);
		return;
	}
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbIteratorToken tok;
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
		pushJsonbValue(st, tok, tok == WJB_KEY || tok == WJB_VALUE || tok == WJB_ELEM ? &v : nullptr);
}

static void push_column(JsonbParseState **st, const Column &c, TupleTableSlot *slot) {
	pl::Scalar s;
	fetched_jsonb = nullptr;
	fetch(c, slot, s);
	JsonbValue v;
	switch (s.kind) {
	case pl::Kind::Null:
		v.type = jbvNull;
		break;
	case pl::Kind::Bool:
		v.type = jbvBool;
		v.val.boolean = s.i != 0;
		break;
	case pl::Kind::Int:
		v.type = jbvNumeric;
		v.val.numeric = int64_to_numeric(s.i);
		break;
	case pl::Kind::Float4:
	case pl::Kind::Float8:
	case pl::Kind::Numeric:
		buf_value.clear();
		pl::append_json(buf_value, s); // the number as notify mode writes it; NaN, Infinity: strings
		if (buf_value[0] == '"') {
			buf_value.clear();
			pl::append_text(buf_value, s);
			push_string(st, buf_value.data(), buf_value.size());
			return;
		}
		v.type = jbvNumeric;
		v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(buf_value.c_str()),
		                                                    ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
		break;
	case pl::Kind::Json:
		if (fetched_jsonb) {
			push_jsonb(st, fetched_jsonb);
			return;
		}
		// a type rendered by its output function: a string
		push_string(st, s.text.data(), s.text.size());
		return;
	default: // strings, bytea, date and time: JSON strings of their text
		buf_value.clear();
		pl::append_text(buf_value, s);
		push_string(st, buf_value.data(), buf_value.size());
		return;
	}
	pushJsonbValue(st, WJB_VALUE, &v);
}

static void push_key(JsonbParseState **st, const Config *cfg, TupleTableSlot *slot) {
	if (cfg->nkeys == 1) {
		push_column(st, cfg->keys[0], slot);
		return;
	}
	pushJsonbValue(st, WJB_BEGIN_OBJECT, nullptr);
	for (int k = 0; k < cfg->nkeys; k++) {
		const Column &c = cfg->keys[k];
		push_name(st, c.name, strlen(c.name));
		push_column(st, c, slot);
	}
	pushJsonbValue(st, WJB_END_OBJECT, nullptr);
}

// The payload of a row's event: row (nullptr: TRUNCATE) gives "id", old_row (nullptr: the key did
// not change) "old_id", data_slot the included columns.
static Jsonb *build_payload(const Config *cfg, const char *op, TupleTableSlot *row, TupleTableSlot *old_row,
                            TupleTableSlot *data_slot) {
	if (!row_cxt)
		row_cxt = AllocSetContextCreate(TopMemoryContext, "pg_outbox row payload", ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(row_cxt);
	MemoryContext old = MemoryContextSwitchTo(row_cxt);
	fetch_as_jsonb = true;
	JsonbParseState *st = nullptr;
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, nullptr);
	push_name(&st, "op", 2);
	push_string(&st, op, strlen(op));
	push_name(&st, "table", 5);
	push_string(&st, cfg->table_name, strlen(cfg->table_name));
	if (row) {
		push_name(&st, "id", 2);
		push_key(&st, cfg, row);
	}
	if (old_row) {
		push_name(&st, "old_id", 6);
		push_key(&st, cfg, old_row);
	}
	if (data_slot && cfg->ninclude > 0) {
		push_name(&st, "data", 4);
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, nullptr);
		for (int k = 0; k < cfg->ninclude; k++) {
			push_name(&st, cfg->include[k].name, strlen(cfg->include[k].name));
			push_column(&st, cfg->include[k], data_slot);
		}
		pushJsonbValue(&st, WJB_END_OBJECT, nullptr);
	}
	JsonbValue *res = pushJsonbValue(&st, WJB_END_OBJECT, nullptr);
	fetch_as_jsonb = false;
	Jsonb *jb = JsonbValueToJsonb(res);
	MemoryContextSwitchTo(old);
	return jb;
}

static void emit(const Config *cfg, const char *op, const char *channel, TupleTableSlot *row, TupleTableSlot *old_row,
                 TupleTableSlot *data_slot) {
	bool has_key = row != nullptr;
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
	Jsonb *payload = build_payload(cfg, op, row, buf_old_id.empty() ? nullptr : old_row, data_slot);
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
	buffer_event(channel, key, op, payload); // copies it
	MemoryContextReset(row_cxt);
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
	fetch_as_jsonb = false; // left set by an error inside build_payload()
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
		emit(cfg, "TRUNCATE", cfg->static_channel, nullptr, nullptr, nullptr);
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
	emit(cfg, op, channel, row, TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_trigslot : nullptr, row);
	return PointerGetDatum(nullptr);
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox._change() RETURNS trigger
PGO_FUNCTION(outbox_change_trigger) {
	return change_trigger(fcinfo);
}
