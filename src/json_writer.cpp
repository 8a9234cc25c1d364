// json_writer.cpp — the JSON writer (json_writer.hpp), on Boost.JSON. No Postgres headers here.
#include "json_writer.hpp"

#include <boost/json.hpp>
#include <charconv>

namespace pg_outbox::json {

static bool needs_escape(std::string_view s) noexcept {
	for (unsigned char c : s)
		if (c < 0x20 || c == '"' || c == '\\')
			return true;
	return false;
}

void append_string(std::string &out, std::string_view s) {
	if (!needs_escape(s)) { // the usual case: the literal is the text in quotes
		out += '"';
		out.append(s.data(), s.size());
		out += '"';
		return;
	}
	boost::json::serializer sr;
	sr.reset(boost::json::string_view(s.data(), s.size()));
	char buf[1024];
	while (!sr.done()) {
		boost::json::string_view part = sr.read(buf, sizeof buf);
		out.append(part.data(), part.size());
	}
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

} // namespace pg_outbox::json
