// envelope.cpp — the envelopes of published events, written with the JSON writer
// (json_writer.hpp). No Postgres headers here.
#include "envelope.hpp"

#include <new>

namespace pg_outbox {

// with_channel: the WAL envelope, which also always carries key and type (null when absent):
// a JSON-to-struct decoder such as Debezium's DecodeLogicalDecodingMessageContent then gives
// every message the same fields, and the outbox event router finds "key" in each of them.
static void build(std::string &out, const EventFields &e, bool with_payload, bool with_key_type,
                  bool with_channel = false) {
	out.clear();
	out += "{\"id\":";
	json::append_int(out, e.id);
	out += ",\"pos\":";
	json::append_int(out, e.pos);
	if (e.epoch != 0) { // [epochs] kept in every fallback: a truncated envelope still says where pos stands
		out += ",\"epoch\":";
		json::append_int(out, e.epoch);
	}
	out += ",\"seq\":";
	json::append_int(out, e.seq);
	if (with_channel) {
		out += ",\"channel\":";
		json::append_string(out, e.channel);
	}
	if (with_key_type && e.key) {
		out += ",\"key\":";
		json::append_string(out, e.key);
	} else if (with_channel)
		out += ",\"key\":null";
	if (with_key_type && e.type) {
		out += ",\"type\":";
		json::append_string(out, e.type);
	} else if (with_channel)
		out += ",\"type\":null";
	if (with_payload) { // always there: null for an event without payload
		out += ",\"payload\":";
		if (e.has_payload)
			out.append(e.payload.data(), e.payload.size());
		else
			out += "null";
	}
	if (!with_payload)
		out += ",\"truncated\":true";
	out += '}';
}

Fit build_event_envelope(std::string &out, const EventFields &e, std::size_t max_bytes) noexcept {
	try {
		if (!e.payload_too_big && !e.key_type_too_big) {
			build(out, e, true, true);
			if (out.size() < max_bytes + 1)
				return Fit::Full;
		}
		if (!e.key_type_too_big) {
			build(out, e, false, true);
			if (out.size() < max_bytes + 1)
				return Fit::Truncated;
		}
		build(out, e, false, false);
		return Fit::Truncated;
	} catch (...) {
		out.clear();
		return Fit::OutOfMemory;
	}
}

Fit build_wal_envelope(std::string &out, const EventFields &e) noexcept {
	try {
		// reserve first: one allocation for a large payload instead of a doubling series
		out.reserve(e.payload.size() + e.channel.size() + 160);
		build(out, e, true, true, true);
		return Fit::Full;
	} catch (...) {
		out.clear();
		return Fit::OutOfMemory;
	}
}

} // namespace pg_outbox
