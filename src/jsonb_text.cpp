// jsonb_text.cpp — the canonical text of a stored jsonb value (jsonb_text.hpp).
#include "json_writer.hpp" // pure C++ first
#include "jsonb_text.hpp"
#include "guard.hpp"

extern "C" {
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
}

namespace pg_outbox {

static void append_scalar(std::string &out, const JsonbValue &v) {
	switch (v.type) {
	case jbvNull:
		out += "null";
		break;
	case jbvBool:
		out += v.val.boolean ? "true" : "false";
		break;
	case jbvNumeric: {
		char *t = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
		out += t;
		pfree(t);
		break;
	}
	case jbvString:
		json::append_string(out, std::string_view(v.val.string.val, v.val.string.len));
		break;
	default: // containers come as tokens (skipNested = false), never as values
		elog(ERROR, "pg_outbox: unexpected jsonb value type %d", (int)v.type);
	}
}

void append_jsonb_compact(std::string &out, JsonbContainer *root) {
	bool raw_scalar = (root->header & JB_FSCALAR) != 0; // a scalar is stored as a one-element array
	JsonbIterator *it = JsonbIteratorInit(root);
	JsonbValue v;
	JsonbIteratorToken tok;
	bool first = true; // the next member or element is its container's first: no comma before it
	int depth = 0;
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE) {
		switch (tok) {
		case WJB_BEGIN_ARRAY:
		case WJB_BEGIN_OBJECT:
			if (!first)
				out += ',';
			if (!(raw_scalar && depth == 0))
				out += tok == WJB_BEGIN_ARRAY ? '[' : '{';
			depth++;
			first = true;
			break;
		case WJB_END_ARRAY:
		case WJB_END_OBJECT:
			depth--;
			if (!(raw_scalar && depth == 0))
				out += tok == WJB_END_ARRAY ? ']' : '}';
			first = false;
			break;
		case WJB_KEY:
			if (!first)
				out += ',';
			append_scalar(out, v);
			out += ':';
			first = true; // the value follows the colon
			break;
		case WJB_VALUE:
		case WJB_ELEM:
			if (!first)
				out += ',';
			append_scalar(out, v);
			first = false;
			break;
		case WJB_DONE:
			break;
		}
	}
}

static std::string text_buffer; // static: never owned by a frame that can see an ereport

const char *jsonb_compact_text(StringInfo out, JsonbContainer *root) {
	text_buffer.clear();
	append_jsonb_compact(text_buffer, root);
	appendBinaryStringInfo(out, text_buffer.data(), (int)text_buffer.size());
	if (text_buffer.capacity() > 1024 * 1024)
		std::string().swap(text_buffer);
	return out->data;
}

} // namespace pg_outbox

using namespace pg_outbox;

// outbox._payload_text(payload jsonb) RETURNS text: the text pg_outbox sends for a stored payload
PGO_FUNCTION(outbox_payload_text) {
	Jsonb *jb = PG_GETARG_JSONB_P(0);
	StringInfoData out;
	initStringInfo(&out);
	jsonb_compact_text(&out, &jb->root);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
