// jsonb_text.hpp — the text of a stored jsonb value as pg_outbox sends it (jsonb_text.cpp): the
// canonical form of every payload, in both trigger modes and in the drain's envelopes. Compact
// (no spaces) and in jsonb's own key order (shorter keys first, then bytewise), numbers as
// numeric_out prints them, strings escaped by the JSON writer (json_writer.hpp). jsonb's own
// text output (JsonbToCString) differs only by the spaces after ':' and ','.
#pragma once

#include <string>

extern "C" {
#include "postgres.h"
#include "lib/stringinfo.h"
}

struct JsonbContainer;

namespace pg_outbox {

// Append the canonical text of the jsonb container root to out.
void append_jsonb_compact(std::string &out, JsonbContainer *root);
// The same appended to a StringInfo; returns out->data (the drain's envelopes, the WAL messages).
const char *jsonb_compact_text(StringInfo out, JsonbContainer *root);

} // namespace pg_outbox
