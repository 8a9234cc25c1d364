// Unit tests of the patterns of channel rights (src/channel_pattern.hpp).
#include "channel_pattern.hpp"

#include <gtest/gtest.h>

#include <string>

using namespace pg_outbox;

namespace {

TEST(ChannelPattern, Exact) {
	EXPECT_TRUE(channel_matches("tenant_42", "tenant_42"));
	EXPECT_FALSE(channel_matches("tenant_42", "tenant_420"));
	EXPECT_FALSE(channel_matches("tenant_42", "tenant_4"));
	EXPECT_FALSE(channel_matches("tenant_42", "Tenant_42")) << "case-sensitive, as channel names are";
	// '_' is not a wildcard: a right on tenant_42 does not cover tenantX42
	EXPECT_FALSE(channel_matches("tenant_42", "tenantX42"));
	EXPECT_FALSE(channel_matches("a_c", "abc"));
	EXPECT_FALSE(channel_matches("", "a"));
	EXPECT_TRUE(channel_matches("", ""));
}

TEST(ChannelPattern, Percent) {
	EXPECT_TRUE(channel_matches("tenant_%", "tenant_42"));
	EXPECT_TRUE(channel_matches("tenant_%", "tenant_"));
	EXPECT_FALSE(channel_matches("tenant_%", "tenant"));
	EXPECT_FALSE(channel_matches("tenant_%", "tenantX42"));
	EXPECT_FALSE(channel_matches("tenant_%", "xtenant_42"));
	EXPECT_TRUE(channel_matches("%", "anything"));
	EXPECT_TRUE(channel_matches("%", ""));
	EXPECT_TRUE(channel_matches("%_orders", "tenant_42_orders"));
	EXPECT_FALSE(channel_matches("%_orders", "tenant_42_orders_x"));
	EXPECT_TRUE(channel_matches("t%_%_o%", "t_1_orders"));
	EXPECT_TRUE(channel_matches("a%%b", "ab"));
	EXPECT_TRUE(channel_matches("a%b%c", "aXbYbZc"));
	EXPECT_FALSE(channel_matches("a%b%c", "aXbYbZ"));
}

TEST(ChannelPattern, Escapes) {
	EXPECT_TRUE(channel_matches("100\\%", "100%"));
	EXPECT_FALSE(channel_matches("100\\%", "1000"));
	EXPECT_FALSE(channel_matches("100\\%", "100%x"));
	EXPECT_TRUE(channel_matches("a\\\\b", "a\\b"));
	EXPECT_FALSE(channel_matches("a\\\\b", "a\\\\b"));
	EXPECT_TRUE(channel_matches("a\\_b", "a_b")) << "an escaped _ is a plain _";
	EXPECT_TRUE(channel_matches("\\%%", "%tail"));
	EXPECT_FALSE(channel_matches("\\%%", "tail"));
	EXPECT_FALSE(channel_matches("abc\\", "abc")) << "an invalid pattern matches nothing";
	EXPECT_FALSE(channel_matches("abc\\", "abc\\"));
}

TEST(ChannelPattern, CheckAndWildcard) {
	EXPECT_EQ(check_channel_pattern(""), PatternCheck::Empty);
	EXPECT_EQ(check_channel_pattern("a\\"), PatternCheck::TrailingEscape);
	EXPECT_EQ(check_channel_pattern("a\\\\"), PatternCheck::Ok);
	EXPECT_EQ(check_channel_pattern(std::string(126, 'x')), PatternCheck::Ok);
	EXPECT_EQ(check_channel_pattern(std::string(127, 'x')), PatternCheck::TooLong);
	EXPECT_TRUE(pattern_has_wildcard("a%"));
	EXPECT_FALSE(pattern_has_wildcard("a\\%"));
	EXPECT_FALSE(pattern_has_wildcard("tenant_42"));
	EXPECT_TRUE(pattern_has_wildcard("a\\\\%"));
}

TEST(ChannelPattern, NoBlowUp) {
	// many wildcards against a long non-match stays linear-ish
	std::string pat = "%a%a%a%a%a%a%a%a%a%a%b", ch(63, 'a');
	EXPECT_FALSE(channel_matches(pat, ch));
}

} // namespace

// While read rights are enforced the drain builds every envelope with max_bytes 0 (drain.cpp):
// id, pos and seq only, marked truncated, so that pg_outbox_listen reads the event from replay.
#include "envelope.hpp"
TEST(ChannelRightsEnvelope, IdOnly) {
	pg_outbox::EventFields f;
	f.id = 7;
	f.pos = 42;
	f.seq = 3;
	f.key = "secret-key";
	f.type = "secret-type";
	f.payload = R"({"secret": 1})";
	f.has_payload = true;
	std::string out;
	EXPECT_EQ(pg_outbox::build_event_envelope(out, f, 0), pg_outbox::Fit::Truncated);
	EXPECT_EQ(out, R"({"id":7,"pos":42,"seq":3,"truncated":true})");
}
