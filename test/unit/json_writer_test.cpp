// The JSON writer (src/json_writer.hpp): its string escapes are PostgreSQL's (escape_json in
// src/backend/utils/adt/json.c), byte for byte, so that a payload reads the same whichever
// side wrote it.
#include "json_writer.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

using namespace pg_outbox;

namespace {
// PostgreSQL's escape_json(), transcribed: the reference the writer must match.
std::string reference_escape(std::string_view s) {
	static const char hex[] = "0123456789abcdef";
	std::string out = "\"";
	for (unsigned char c : s) {
		switch (c) {
		case '\b': out += "\\b"; break;
		case '\f': out += "\\f"; break;
		case '\n': out += "\\n"; break;
		case '\r': out += "\\r"; break;
		case '\t': out += "\\t"; break;
		case '"': out += "\\\""; break;
		case '\\': out += "\\\\"; break;
		default:
			if (c < ' ') {
				out += "\\u00";
				out += hex[c >> 4];
				out += hex[c & 15];
			} else {
				out += static_cast<char>(c);
			}
		}
	}
	return out + "\"";
}

std::string written(std::string_view s) {
	std::string out;
	json::append_string(out, s);
	return out;
}
} // namespace

TEST(JsonWriter, EveryByteAlone) {
	for (int b = 1; b < 256; b++) {
		std::string s(1, static_cast<char>(b));
		EXPECT_EQ(written(s), reference_escape(s)) << "byte " << b;
	}
	EXPECT_EQ(written(std::string_view("\0", 1)), "\"\\u0000\"");
}

TEST(JsonWriter, KnownEscapes) {
	EXPECT_EQ(written(""), "\"\"");
	EXPECT_EQ(written("plain"), "\"plain\"");
	EXPECT_EQ(written("a\"b\\c"), "\"a\\\"b\\\\c\"");
	EXPECT_EQ(written("\x01\x1f\x7f"), "\"\\u0001\\u001f\x7f\"");
	EXPECT_EQ(written("tab\there\nnew"), "\"tab\\there\\nnew\"");
	EXPECT_EQ(written("é€😀"), "\"é€😀\""); // UTF-8 copied as it is
	EXPECT_EQ(written("</script>"), "\"</script>\""); // '/' is not escaped
}

TEST(JsonWriter, AppendsAndStaysValid) {
	std::string out = "[";
	json::append_string(out, "x");
	out += ',';
	json::append_int(out, -9223372036854775807LL - 1);
	out += ',';
	json::append_int(out, 42);
	out += ']';
	EXPECT_EQ(out, "[\"x\",-9223372036854775808,42]");
	EXPECT_TRUE(json::is_valid(out));
	EXPECT_FALSE(json::is_valid("[\"x\","));
}

TEST(JsonWriter, RandomStringsMatchPostgres) {
	std::mt19937 rng(17);
	std::uniform_int_distribution<int> len(0, 3000), byte(1, 255), pick(0, 9);
	for (int n = 0; n < 2000; n++) {
		std::string s;
		int l = len(rng);
		for (int k = 0; k < l; k++) // mostly printable, some control characters and quotes
			s += static_cast<char>(pick(rng) < 8 ? 'a' + k % 26 : byte(rng));
		std::string out = written(s);
		ASSERT_EQ(out, reference_escape(s)) << "case " << n;
	}
}
