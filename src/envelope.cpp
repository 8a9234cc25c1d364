// envelope.cpp — JSON payload building with Boost.JSON (no Postgres headers here).
#include "envelope.hpp"

#include <boost/json.hpp>
#include <charconv>
#include <new>

namespace pg_outbox {
namespace json {

void append_string(std::string &out, std::string_view s) {
	// boost::json::serialize escapes '"', '\\' and control characters (as \n, \t, \u00XX)
	// and copies every other byte.
	out += boost::json::serialize(boost::json::string_view(s.data(), s.size()));
}

void append_int(std::string &out, std::int64_t v) {
	char buf[24];
	auto res = std::to_chars(buf, buf + sizeof buf, v);
	out.append(buf, res.ptr);
}

bool is_valid(std::string_view text) noexcept {
	try {
		boost::system::error_code ec;
		boost::json::parse(boost::json::string_view(text.data(), text.size()), ec);
		return !ec;
	} catch (...) {
		return false;
	}
}

} // namespace json

static void build(std::string &out, const EventFields &e, bool with_payload, bool with_key_type,
                  bool with_channel = false) {
	out.clear();
	out += "{\"id\":";
	json::append_int(out, e.id);
	out += ",\"pos\":";
	json::append_int(out, e.pos);
	out += ",\"seq\":";
	json::append_int(out, e.seq);
	if (with_channel) {
		out += ",\"channel\":";
		json::append_string(out, e.channel);
	}
	if (with_key_type && e.key) {
		out += ",\"key\":";
		json::append_string(out, e.key);
	}
	if (with_key_type && e.type) {
		out += ",\"type\":";
		json::append_string(out, e.type);
	}
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
		build(out, e, true, true);
		if (out.size() < max_bytes + 1)
			return Fit::Full;
		build(out, e, false, true);
		if (out.size() < max_bytes + 1)
			return Fit::Truncated;
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
