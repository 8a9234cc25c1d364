// trigger_config.hpp — the change trigger's configuration (trigger_config.cpp): what a trigger's
// arguments ask for (Request), what that resolves to for one relation (Config: key and included
// columns with their output functions, the channel template, the quoted table name), and the
// per-backend cache of Configs by trigger OID. Used by the row path (trigger_row.cpp) and by the
// attach-time checks (trigger_attach.cpp).
//
// The configuration lives in the trigger's own arguments (so pg_dump, pg_dump -t and pg_upgrade
// keep it with the table, and it cannot drift from the triggers that exist):
//   outbox._change(mode, channel template or '', key columns as text[] or '', included
//                  columns as text[] or '')
#pragma once

#include "payload.hpp" // pure C++ first
#include "pg_outbox.hpp"

extern "C" {
#include "access/attnum.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/rel.h"
}

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
	// The order in which a composite key's and the included columns' members are written: jsonb's
	// key order (shorter names first, then bytewise), the canonical form of payloads.
	int *key_order;
	int *include_order;
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

// The text[] arr as a palloc'd array of names (*out), their count returned; NULL or '{}' is 0
// names when allow_empty, else an error; what names the argument in messages.
int text_array_names(ArrayType *arr, char ***out, const char *what, bool allow_empty);
// 'notify' or 'outbox' (case-insensitive), else ERROR.
Mode parse_mode(const char *mode);
// Resolve req for rel (a table or partition; root_relid is the table attach was called on) into
// a Config allocated in its own memory context; ERROR when req does not fit the table.
Config *build_config(Relation rel, Oid root_relid, const Request &req);
// The Config of trigger tg on rel, from the cache or resolved now (relcache and namespace
// invalidations mark cached entries stale).
Config *lookup_config(Trigger *tg, Relation rel);

} // namespace pg_outbox
