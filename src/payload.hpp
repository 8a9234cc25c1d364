// payload.hpp — what the change trigger (trigger_row.cpp) sends: JSON rendering of column values,
// the ID payload {"op":..,"table":..,"id":..}, and channel templates ('tenant_{tenant_id}').
// Pure C++: no Postgres header, no allocation besides the std::string buffers passed in, so
// it is unit-tested on its own (test/unit/payload_test.cpp).
//
// The types Kind lists (integers, floats, numeric, bool, the string types, json/jsonb, the
// date/time types, interval, bytea; domains over them) are rendered from their binary form, so
// DateStyle, TimeZone, IntervalStyle, extra_float_digits and bytea_output do not change them.
// Any other type (money, uuid, inet, arrays, enums, composite, ...) is rendered by its output
// function as a JSON string: what that function prints may depend on the session (money on
// lc_monetary, for one). JSON strings are written by the JSON writer (json_writer.hpp).
#pragma once

#ifdef POSTGRES_H
#error "payload.hpp is pure C++: include it before (or without) any Postgres header"
#endif

#include "json_writer.hpp"
#include "limits.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pg_outbox::payload {

// How a column's value is rendered. The Postgres side picks the kind once per column (from
// the type, domains resolved to their base type) and fills a Scalar per row.
enum class Kind : std::uint8_t {
	Null,        // SQL NULL: null
	Int,         // int2, int4, int8, oid: i
	Float4,      // f (shortest text that reads back as the same float4)
	Float8,      // f (shortest text that reads back as the same float8)
	Numeric,     // text = numeric_out (locale independent); NaN / Infinity become strings
	Bool,        // i != 0
	String,      // text, varchar, char, name, and any type rendered by its output function
	Json,        // text = JSON text (json as stored, jsonb printed): copied as it is
	Timestamp,   // i = microseconds since 2000-01-01 (no zone): "2024-05-01T12:00:00.5"
	TimestampTz, // i = microseconds since 2000-01-01 UTC: "2024-05-01T12:00:00.5Z"
	Date,        // i = days since 2000-01-01: "2024-05-01"
	Time,        // i = microseconds since midnight: "12:00:00.5"
	Interval,    // i = microseconds, days, months: ISO 8601 duration "P1Y2M3DT4H5M6.5S"
	Bytea,       // text = the bytes: "\\x0102ff" (hex, whatever bytea_output says)
};

struct Scalar {
	Kind kind = Kind::Null;
	std::int64_t i = 0;
	double f = 0;
	std::int32_t days = 0, months = 0;
	std::string_view text;
};

// Append v as a JSON value (canonical: a float in plain decimal notation, as jsonb prints it).
void append_json(std::string &out, const Scalar &v);
// Append v as plain text (no quotes): the key column of outbox.pending and the values filled
// into channel templates. NULL appends nothing.
void append_text(std::string &out, const Scalar &v);

// Calendar helpers (exposed for the tests). Days and microseconds count from 2000-01-01, as
// Postgres stores them; years are astronomical (0 is 1 BC), 4 digits, signed beyond 0..9999.
void append_date(std::string &out, std::int64_t days);
void append_time(std::string &out, std::int64_t usecs);
void append_timestamp(std::string &out, std::int64_t usecs, bool utc);
void append_interval(std::string &out, std::int64_t usecs, std::int32_t days, std::int32_t months);

// ---- the payload ----
struct Parts {
	std::string_view op;     // "INSERT", "UPDATE", "DELETE", "TRUNCATE"
	std::string_view table;  // JSON string literal of the schema-qualified, quoted table name
	std::string_view id;     // JSON value of the key; empty: no "id" (TRUNCATE)
	std::string_view old_id; // JSON value of the old key when an UPDATE changed it; empty: absent
	std::string_view data;   // JSON object of the included columns; empty: absent
	bool has_data = false;
};

enum class PayloadFit {
	Full,      // everything, "data" included, fits
	Truncated, // "data" dropped, "truncated": true added
	TooBig,    // even the payload without "data" is longer than max_bytes (out holds it anyway)
};

// Build {"id":..,"op":..[,"data":{..}],"table":..[,"old_id":..][,"truncated":true]} into out:
// compact, members in jsonb's key order (the canonical form, jsonb_text.hpp; "data" and a
// composite "id" must come in that order too: the caller renders them so).
// A payload is never longer than max_bytes (kMaxPayloadBytes = 7999: what NOTIFY accepts)
// unless the result is PayloadFit::TooBig.
PayloadFit compose(std::string &out, const Parts &p, std::size_t max_bytes = kMaxPayloadBytes);

// A json value holding the escape \u0000 (which json accepts and jsonb cannot store): if text
// has one inside a string, write text into out with each replaced by \ufffd (the Unicode
// replacement character) and return true; else return false and leave out alone. So a json
// column gives the same event in both trigger modes: notify mode renders json through jsonb too
// (duplicate keys: the last one wins, as outbox mode's jsonb payload does).
bool replace_nul_escapes(std::string_view text, std::string &out);

// ---- channel templates ----
// 'tenant_{tenant_id}': text outside braces is copied, {column} is replaced by the column's
// value as text; '{{' and '}}' stand for literal braces. Parsing allocates nothing: parts are
// slices of the template text.
struct TemplatePart {
	bool column = false;    // true: a column name; false: literal text
	std::size_t offset = 0; // slice of the template
	std::size_t length = 0;
};

enum class TemplateStatus {
	Ok,
	UnclosedBrace,   // '{' without its '}'
	UnopenedBrace,   // '}' without a '{' (write '}}' for a literal one)
	EmptyColumn,     // '{}'
	BraceInColumn,   // '{a{b}'
	TooManyParts,    // more parts than the caller's array holds
};

struct TemplateParse {
	TemplateStatus status = TemplateStatus::Ok;
	std::size_t position = 0;     // byte offset of the error
	std::size_t nparts = 0;
	std::size_t static_bytes = 0; // bytes of literal text
	std::size_t ncolumns = 0;
};

// parts must hold max_parts entries; tpl.size() + 1 is always enough.
TemplateParse parse_template(std::string_view tpl, TemplatePart *parts, std::size_t max_parts) noexcept;
const char *template_status_message(TemplateStatus s) noexcept;

} // namespace pg_outbox::payload
