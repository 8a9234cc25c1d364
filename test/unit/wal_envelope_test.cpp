// Unit tests of the WAL envelope (the logical decoding message of a 'wal' / 'both' channel).
#include "envelope.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

using namespace pg_outbox;

static EventFields wal_event(const char *channel, const char *payload) {
	EventFields f;
	f.id = 7;
	f.pos = 42;
	f.seq = 3;
	f.channel = channel;
	if (payload) {
		f.payload = payload;
		f.has_payload = true;
	}
	return f;
}

TEST(WalEnvelope, CarriesTheChannel) {
	std::string out;
	EventFields f = wal_event("orders", "{\"a\": [1, 2]}");
	f.key = "order-1";
	f.type = "created";
	ASSERT_EQ(build_wal_envelope(out, f), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"channel\":\"orders\",\"key\":\"order-1\",\"type\":\"created\","
	               "\"payload\":{\"a\": [1, 2]}}");
	EXPECT_TRUE(json::is_valid(out));
}

TEST(WalEnvelope, AbsentFieldsAreNull) {
	// Unlike the NOTIFY envelope, every WAL envelope has the same fields: Debezium's decode
	// transform and outbox event router fail on a message without "key" (test/kafka).
	std::string out;
	ASSERT_EQ(build_wal_envelope(out, wal_event("c", nullptr)), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"channel\":\"c\",\"key\":null,\"type\":null,\"payload\":null}");
	EventFields f = wal_event("c", "1");
	f.type = "t";
	ASSERT_EQ(build_wal_envelope(out, f), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"channel\":\"c\",\"key\":null,\"type\":\"t\",\"payload\":1}");
	f.type = nullptr;
	f.key = "k";
	ASSERT_EQ(build_wal_envelope(out, f), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"channel\":\"c\",\"key\":\"k\",\"type\":null,\"payload\":1}");
}

TEST(WalEnvelope, ChannelIsEscaped) {
	std::string out;
	ASSERT_EQ(build_wal_envelope(out, wal_event("we\"ird\\chan\nnel é", "1")), Fit::Full);
	ASSERT_TRUE(json::is_valid(out));
	auto v = boost::json::parse(out);
	EXPECT_EQ(std::string(v.as_object().at("channel").as_string()), "we\"ird\\chan\nnel é");
}

TEST(WalEnvelope, NeverTruncated) {
	// 1 MiB payload: far over NOTIFY's limit, kept whole in the WAL envelope
	std::string payload = "{\"blob\":\"" + std::string(1 << 20, 'x') + "\"}";
	std::string key(20000, 'k');
	EventFields f = wal_event("big", payload.c_str());
	f.key = key.c_str();
	std::string out;
	ASSERT_EQ(build_wal_envelope(out, f), Fit::Full);
	EXPECT_GT(out.size(), payload.size() + key.size());
	EXPECT_EQ(out.find("truncated"), std::string::npos);
	auto v = boost::json::parse(out);
	EXPECT_EQ(v.as_object().at("payload").as_object().at("blob").as_string().size(), 1u << 20);
	EXPECT_EQ(v.as_object().at("key").as_string().size(), 20000u);
}

TEST(WalEnvelope, SameFieldsAsTheNotifyEnvelopePlusChannel) {
	// When the NOTIFY envelope fits, the WAL envelope is the same JSON object plus "channel".
	EventFields f = wal_event("orders", "[true, null, \"é\"]");
	f.key = "k";
	f.type = "t";
	std::string notify, wal;
	ASSERT_EQ(build_event_envelope(notify, f), Fit::Full);
	ASSERT_EQ(build_wal_envelope(wal, f), Fit::Full);
	auto n = boost::json::parse(notify).as_object();
	auto w = boost::json::parse(wal).as_object();
	EXPECT_EQ(w.size(), n.size() + 1);
	for (auto &kv : n)
		EXPECT_EQ(w.at(kv.key()), kv.value()) << kv.key();
	EXPECT_EQ(w.at("channel").as_string(), "orders");
	// ... and the NOTIFY envelope never carries the channel (it is the NOTIFY channel itself)
	EXPECT_FALSE(n.contains("channel"));
}

TEST(WalEnvelope, ReplacesPreviousContent) {
	std::string out = "stale content that must go";
	ASSERT_EQ(build_wal_envelope(out, wal_event("c", "{}")), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"seq\":3,\"channel\":\"c\",\"key\":null,\"type\":null,\"payload\":{}}");
}

TEST(WalEnvelope, Prefix) {
	EXPECT_STREQ(kWalMessagePrefix, "pg_outbox");
}

// [epochs]
TEST(WalEnvelope, CarriesTheEpoch) {
	std::string out;
	EventFields f = wal_event("orders", "{}");
	f.epoch = 2;
	ASSERT_EQ(build_wal_envelope(out, f), Fit::Full);
	EXPECT_EQ(out, "{\"id\":7,\"pos\":42,\"epoch\":2,\"seq\":3,\"channel\":\"orders\",\"key\":null,\"type\":null,\"payload\":{}}");
}
