// envelope.hpp — the envelopes the drain worker sends (NOTIFY) and writes (WAL), written with the
// JSON writer (json_writer.hpp) within the limits of limits.hpp. Pure C++: includes no Postgres
// header, so it is unit-tested on its own (test/unit/envelope_test.cpp).
#pragma once

#ifdef POSTGRES_H
#error "envelope.hpp is pure C++: include it before (or without) any Postgres header"
#endif

#include "json_writer.hpp"
#include "limits.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pg_outbox {


// One published outbox event, as the drain worker sends it.
struct EventFields {
	std::int64_t id = 0;
	std::int64_t pos = 0;
	std::int64_t epoch = 0;     // [epochs] the epoch of pos; 0: left out (before 1.2's first epoch)
	std::int64_t seq = 0;
	const char *key = nullptr;  // nullptr: absent
	const char *type = nullptr; // nullptr: absent
	std::string_view payload;   // JSON text (already valid: it comes from jsonb); read only with has_payload
	bool has_payload = false;   // false: the event has no payload (SQL NULL): "payload":null
	// The caller knows, from the stored sizes, that the payload (or the key or type) cannot fit
	// and did not render it: the envelope is built without it at once ("truncated": true).
	bool payload_too_big = false;
	bool key_type_too_big = false;
	std::string_view channel;   // only in the WAL envelope (a WAL consumer has no NOTIFY channel)
};

enum class Fit {
	Full,        // everything fits
	Truncated,   // payload (and if need be key/type) left out, "truncated": true
	OutOfMemory, // nothing built
};

// Build the envelope of one event into out (replacing its content):
//   {"id":7,"pos":42,"epoch":1,"seq":3,"key":"k","type":"t","payload":{...}}
// "epoch" is left out when 0 (never, from the drain); key and type are left out when absent; payload is always there (null when absent).
// If it would be longer than max_bytes, "payload" is left out and "truncated":true set; if even
// that is too long (huge key or type), key and type are left out as well. The consumer then
// fetches the event by id (outbox.event(id)). Never throws.
Fit build_event_envelope(std::string &out, const EventFields &e, std::size_t max_bytes = kMaxPayloadBytes) noexcept;

// The prefix of the logical decoding messages the drain writes for channels whose target is
// 'wal' or 'both' (pg_logical_emit_message(true, 'pg_outbox', <envelope>)).
constexpr const char *kWalMessagePrefix = "pg_outbox";

// Build the envelope of one event as it is written to the WAL (replacing out's content): the
// NOTIFY envelope plus the channel, and never truncated (the WAL has no 8000-byte limit):
//   {"id":7,"pos":42,"epoch":1,"seq":3,"channel":"orders","key":"k","type":"t","payload":{...}}
// key, type and payload are always there, null when absent (SQL NULL): unlike the NOTIFY
// envelope, which leaves key and type out to save bytes, every message has the same fields.
// Returns Fit::Full, or Fit::OutOfMemory (out empty). Never throws.
Fit build_wal_envelope(std::string &out, const EventFields &e) noexcept;

} // namespace pg_outbox
