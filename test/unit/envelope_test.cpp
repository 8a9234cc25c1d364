// Unit tests of the pure C++ JSON helpers (no Postgres involved).
#include "envelope.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace pg_outbox;

static std::string jstr(std::string_view s) {
	std::string out;
	json::append_string(out, s);
	return out;
}

TEST(JsonString, EscapesQuotesBackslashesAndControls) {
	EXPECT_EQ(jstr("plain"), "\"plain\"");
	EXPECT_EQ(jstr("a\"b"), "\"a\\\"b\"");
	EXPECT_EQ(jstr("a\\b"), "\"a\\\\b\"");
	EXPECT_EQ(jstr("line\nbreak\ttab"), "\"line\\nbreak\\ttab\"");
	EXPECT_EQ(jstr(std::string_view("nul\0byte", 8)), "\"nul\\u0000byte\"");
	EXPECT_EQ(jstr("\x01\x1f"), "\"\\u0001\\u001f\"");
	EXPECT_EQ(jstr(""), "\"\"");
}

TEST(JsonString, KeepsUtf8Bytes) {
	// é (2 bytes), € (3 bytes), 😀 (4 bytes) are copied as they are, byte for byte
	EXPECT_EQ(jstr("é€😀"), "\"é€😀\"");
	EXPECT_EQ(jstr("é€😀").size(), 2 + 2 + 3 + 4u);
}

TEST(JsonString, RoundTripsThroughAParser) {
	std::string nasty = "q\" b\\ n\n r\r t\t u\x01 é 😀 </script>";
	std::string text = std::string("{\"v\":") + jstr(nasty) + "}";
	ASSERT_TRUE(json::is_valid(text));
	auto v = boost::json::parse(text);
	EXPECT_EQ(std::string(v.as_object().at("v").as_string()), nasty);
}

TEST(JsonInt, Extremes) {
	std::string out;
	json::append_int(out, 0);
	out += ',';
	json::append_int(out, -9223372036854775807LL - 1);
	out += ',';
	json::append_int(out, 9223372036854775807LL);
	EXPECT_EQ(out, "0,-9223372036854775808,9223372036854775807");
}

TEST(Channel, Limits) {
	EXPECT_EQ(check_channel(""), ChannelCheck::Empty);
	EXPECT_EQ(check_channel("a"), ChannelCheck::Ok);
	EXPECT_EQ(check_channel(std::string(63, 'c')), ChannelCheck::Ok);
	EXPECT_EQ(check_channel(std::string(64, 'c')), ChannelCheck::TooLong);
	// counted in bytes: 32 two-byte characters are 64 bytes
	std::string e32;
	for (int i = 0; i < 32; i++)
		e32 += "é";
	EXPECT_EQ(check_channel(e32), ChannelCheck::TooLong);
}

static EventFields event(const char *payload) {
	EventFields f;
	f.id = 7;
	f.pos = 42;
	f.seq = 3;
	if (payload) {
		f.payload = payload;
		f.has_payload = true;
	}
	return f;
}

TEST(Envelope, FullEnvelope) {
	std::string out;
	EventFields f = event("{\"a\": [1, 2]}");
	f.key = "order-\"1\"";
	f.type = "created";
	ASSERT_EQ(build_event_envelope(out, f), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"key\":\"order-\\\"1\\\"\",\"type\":\"created\",\"payload\":{\"a\": [1, 2]}}");
	EXPECT_TRUE(json::is_valid(out));
}

TEST(Envelope, AbsentKeyAndTypeAreLeftOutAbsentPayloadIsNull) {
	std::string out;
	ASSERT_EQ(build_event_envelope(out, event(nullptr)), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"payload\":null}");
}

TEST(Envelope, ExactlyAtTheLimitFits) {
	const std::string head = "{\"id\":7,\"pos\":42,\"seq\":3,\"payload\":";
	// payload is a JSON string "xxx...": make the whole envelope exactly 7999 bytes
	std::size_t payload_len = kMaxPayloadBytes - head.size() - 1;
	std::string payload = "\"" + std::string(payload_len - 2, 'x') + "\"";
	std::string out;
	ASSERT_EQ(build_event_envelope(out, event(payload.c_str())), Fit::Full);
	EXPECT_EQ(out.size(), kMaxPayloadBytes);
	// one more byte does not fit: the payload is dropped and "truncated" set
	payload.insert(1, "y");
	ASSERT_EQ(build_event_envelope(out, event(payload.c_str())), Fit::Truncated);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"truncated\":true}");
}

TEST(Envelope, HugeKeyIsDroppedToo) {
	std::string key(20000, 'k');
	EventFields f = event("{}");
	f.key = key.c_str();
	f.type = "t";
	std::string out;
	ASSERT_EQ(build_event_envelope(out, f), Fit::Truncated);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"truncated\":true}");
	EXPECT_LE(out.size(), kMaxPayloadBytes);
}

TEST(Envelope, KeyKeptWhenOnlyThePayloadIsTooBig) {
	std::string payload = "\"" + std::string(10000, 'p') + "\"";
	EventFields f = event(payload.c_str());
	f.key = "k1";
	std::string out;
	ASSERT_EQ(build_event_envelope(out, f), Fit::Truncated);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"key\":\"k1\",\"truncated\":true}");
}

TEST(Envelope, MultibyteCountsBytes) {
	// 2666 × "é€" is 2666 × 5 = 13330 bytes: over the limit although only 5332 characters
	std::string s;
	for (int i = 0; i < 2666; i++)
		s += "é€";
	std::string payload = "\"" + s + "\"";
	std::string out;
	EXPECT_EQ(build_event_envelope(out, event(payload.c_str())), Fit::Truncated);
}

// [epochs] the epoch follows pos in every envelope the drain sends, truncated ones included
TEST(Envelope, EpochFollowsPos) {
	std::string out;
	EventFields f = event("{\"a\":1}");
	f.epoch = 3;
	ASSERT_EQ(build_event_envelope(out, f), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"epoch\":3,\"seq\":3,\"payload\":{\"a\":1}}");
	EXPECT_TRUE(json::is_valid(out));
}

TEST(Envelope, EpochKeptWhenTruncated) {
	std::string out;
	std::string big(9000, 'x');
	std::string payload = "\"" + big + "\"";
	EventFields f = event(payload.c_str());
	f.epoch = 12;
	f.key = "k";
	ASSERT_EQ(build_event_envelope(out, f), Fit::Truncated);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"epoch\":12,\"seq\":3,\"key\":\"k\",\"truncated\":true}");
	std::string huge(9000, 'k');
	f.key = huge.c_str();
	ASSERT_EQ(build_event_envelope(out, f), Fit::Truncated);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"epoch\":12,\"seq\":3,\"truncated\":true}");
}

TEST(Envelope, EpochZeroIsLeftOut) {
	std::string out;
	EventFields f = event(nullptr);
	f.epoch = 0;
	ASSERT_EQ(build_event_envelope(out, f), Fit::Full);
	EXPECT_EQ(out.find("epoch"), std::string::npos);
}

TEST(Envelope, KnownTooBigIsNotRendered) {
	EventFields e;
	e.id = 7;
	e.pos = 42;
	e.seq = 3;
	e.key = "k";
	e.type = "t";
	e.payload = "{\"small\":1}"; // would fit, but the caller said it is too big to render
	e.has_payload = true;
	e.payload_too_big = true;
	std::string out;
	EXPECT_EQ(build_event_envelope(out, e), Fit::Truncated);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"key\":\"k\",\"type\":\"t\",\"truncated\":true}");
	e.key_type_too_big = true;
	EXPECT_EQ(build_event_envelope(out, e), Fit::Truncated);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"truncated\":true}");
}
