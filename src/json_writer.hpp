// json_writer.hpp — the one JSON writer of pg_outbox: every producer of JSON text (the drain's
// envelopes in envelope.cpp, the change trigger's payloads and values in payload.cpp, the
// trigger's configuration in trigger_config.cpp, the listener's output lines) appends to a
// std::string through these functions. Strings are escaped by Boost.JSON's serializer ('"', '\\'
// and the control characters below 0x20: \b \f \n \r \t, others as \u00XX with lower-case hex;
// every other byte, UTF-8 sequences included, copied as it is) — the escapes PostgreSQL's own
// json/jsonb output writes too. Compact output: no spaces. Pure C++ (no Postgres header), tested
// by test/unit (envelope_test.cpp, payload_test.cpp).
#pragma once

#ifdef POSTGRES_H
#error "json_writer.hpp is pure C++: include it before (or without) any Postgres header"
#endif

#include <cstdint>
#include <string>
#include <string_view>

namespace pg_outbox::json {

// Append s as a JSON string literal.
void append_string(std::string &out, std::string_view s);
// Append an integer.
void append_int(std::string &out, std::int64_t v);
// Is text one complete, valid JSON value? (Used by tests and assertions.)
bool is_valid(std::string_view text) noexcept;

} // namespace pg_outbox::json
