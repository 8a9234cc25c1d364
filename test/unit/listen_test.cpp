// Unit tests of pg_outbox_listen's database-free logic (src/listen/listen_core.cpp).
#include "envelope.hpp"
#include "listen/listen_core.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace pg_outbox;
using namespace pg_outbox::listen;

namespace {

ParseResult parse(std::vector<std::string> a) {
	return parse_args(a);
}

TEST(ListenArgs, MinimalAndDefaults) {
	auto r = parse({"dbname=app", "--channel", "orders"});
	ASSERT_TRUE(r.options) << r.error;
	EXPECT_EQ(r.options->conninfo, "dbname=app");
	EXPECT_EQ(r.options->channels, std::vector<std::string>{"orders"});
	EXPECT_EQ(r.options->start, Start::Default);
	EXPECT_EQ(r.options->batch, 1000);
	EXPECT_TRUE(r.options->fsync);
	EXPECT_FALSE(r.options->strict_channels);
	EXPECT_TRUE(r.options->state_file.empty());
}

TEST(ListenArgs, AllOptions) {
	auto r = parse({"--channel=orders", "-c", "tenant_42", "--channel", "orders", "host=db dbname=app", "--from-pos",
	                "17", "--state", "/tmp/s", "--batch=50", "--max-backoff", "2.5", "--strict-channels",
	                "--no-fsync", "-v"});
	ASSERT_TRUE(r.options) << r.error;
	const Options &o = *r.options;
	EXPECT_EQ(o.conninfo, "host=db dbname=app");
	EXPECT_EQ(o.channels, (std::vector<std::string>{"orders", "tenant_42"})); // duplicates dropped
	EXPECT_EQ(o.start, Start::Pos);
	EXPECT_EQ(o.from_pos, 17);
	EXPECT_EQ(o.state_file, "/tmp/s");
	EXPECT_EQ(o.batch, 50);
	EXPECT_DOUBLE_EQ(o.max_backoff, 2.5);
	EXPECT_TRUE(o.strict_channels);
	EXPECT_FALSE(o.fsync);
	EXPECT_TRUE(o.verbose);
	EXPECT_EQ(parse({"x", "-c", "a", "--from-now"}).options->start, Start::Now);
}

TEST(ListenArgs, Errors) {
	auto error_of = [](std::vector<std::string> a) {
		auto r = parse_args(a);
		EXPECT_FALSE(r.options);
		return r.error;
	};
	EXPECT_NE(error_of({}).find("no connection string"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x"}).find("no channel"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c"}).find("needs a channel"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", ""}).find("cannot be empty"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", std::string(64, 'c')}).find("too long: 64 bytes"), std::string::npos);
	EXPECT_TRUE(parse({"dbname=x", "-c", std::string(63, 'c')}).options);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--from-pos", "-1"}).find("--from-pos"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--from-pos", "12x"}).find("--from-pos"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--from-pos", "1", "--from-now"}).find("cannot be combined"),
	          std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--from-now", "--from-pos", "1"}).find("cannot be combined"),
	          std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--batch", "0"}).find("--batch"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--max-backoff", "0"}).find("--max-backoff"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--max-backoff", "nan"}).find("--max-backoff"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--bogus"}).find("unknown option \"--bogus\""), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "dbname=y"}).find("unexpected argument"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--state"}).find("needs a file"), std::string::npos);
	EXPECT_NE(error_of({"dbname=x", "-c", "a", "--from-now=1"}).find("takes no value"), std::string::npos);
	EXPECT_TRUE(parse({"--help"}).help);
	EXPECT_TRUE(parse({"dbname=x", "-h"}).help);
}

TEST(ListenJson, RawMember) {
	std::string t = R"({"id":1,"s":"a\"}{,b","payload":{"a": [1, {"b": "}"}], "c": null},"z":true})";
	EXPECT_EQ(raw_member(t, "payload").value(), R"({"a": [1, {"b": "}"}], "c": null})");
	EXPECT_EQ(raw_member(t, "id").value(), "1");
	EXPECT_EQ(raw_member(t, "s").value(), R"("a\"}{,b")");
	EXPECT_EQ(raw_member(t, "z").value(), "true");
	EXPECT_FALSE(raw_member(t, "nope"));
	EXPECT_EQ(raw_member(R"( { "payload" : [ 1 , 2 ] } )", "payload").value(), "[ 1 , 2 ]");
	EXPECT_EQ(raw_member(R"({"payload":-1.5e300})", "payload").value(), "-1.5e300");
	EXPECT_FALSE(raw_member("[1]", "payload"));
}

TEST(ListenJson, DecodeWhatTheDrainSends) {
	// Build envelopes with the extension's own code, and decode them.
	std::string payload = R"({"n": 1.000000000000000000001, "s": "é\n"})";
	EventFields f;
	f.id = 42;
	f.pos = 7;
	f.seq = 3;
	f.key = "k\"1";
	f.type = "created";
	f.payload = payload;
	f.has_payload = true;
	std::string env;
	ASSERT_EQ(build_event_envelope(env, f), Fit::Full);
	Event e;
	std::string err;
	ASSERT_TRUE(decode_envelope("orders", env, e, err)) << err;
	EXPECT_EQ(e.pos, 7);
	EXPECT_EQ(e.seq, 3);
	EXPECT_EQ(e.id, 42);
	EXPECT_EQ(e.channel, "orders");
	EXPECT_EQ(e.key.value(), "k\"1");
	EXPECT_EQ(e.type.value(), "created");
	EXPECT_EQ(e.payload.value(), payload); // verbatim: no number rounding, no re-formatting
	EXPECT_FALSE(e.truncated);

	// no key, type, payload: "payload":null is passed through as the JSON text null
	EventFields g;
	g.id = 1;
	g.pos = 2;
	g.seq = 1;
	ASSERT_EQ(build_event_envelope(env, g), Fit::Full);
	ASSERT_TRUE(decode_envelope("c", env, e, err)) << err;
	EXPECT_FALSE(e.key);
	EXPECT_FALSE(e.type);
	ASSERT_TRUE(e.payload);
	EXPECT_EQ(e.payload.value(), "null");

	// too big: truncated
	std::string big = "\"" + std::string(9000, 'x') + "\"";
	f.payload = big;
	ASSERT_EQ(build_event_envelope(env, f), Fit::Truncated);
	ASSERT_TRUE(decode_envelope("orders", env, e, err)) << err;
	EXPECT_TRUE(e.truncated);
	EXPECT_FALSE(e.payload);
	EXPECT_EQ(e.pos, 7);
}

TEST(ListenJson, DecodeRejectsOtherPayloads) {
	Event e;
	std::string err;
	EXPECT_FALSE(decode_envelope("c", "hello", e, err));
	EXPECT_FALSE(decode_envelope("c", "[1,2]", e, err));
	EXPECT_FALSE(decode_envelope("c", R"({"id":1,"pos":2})", e, err));
	EXPECT_FALSE(decode_envelope("c", R"({"id":1,"pos":0,"seq":1})", e, err));
	EXPECT_FALSE(decode_envelope("c", R"({"id":1,"pos":"2","seq":1})", e, err));
	EXPECT_FALSE(decode_envelope("c", R"({"id":1,"pos":2,"seq":1,"key":5})", e, err));
	EXPECT_FALSE(decode_envelope("c", R"({"id":1,"pos":2,"seq":1} trailing)", e, err));
	EXPECT_TRUE(decode_envelope("c", R"({"id":1,"pos":2,"seq":1})", e, err));
}

TEST(ListenJson, FormatEvent) {
	Event e;
	e.pos = 7;
	e.seq = 3;
	e.id = 42;
	e.channel = "tenant \"42\"";
	e.type = "t";
	e.payload = R"({"a": 1})";
	std::string line = format_event(e);
	EXPECT_EQ(line,
	          R"({"pos":7,"channel":"tenant \"42\"","seq":3,"id":42,"key":null,"type":"t","payload":{"a": 1}})");
	EXPECT_TRUE(json::is_valid(line));
	e.payload.reset();
	EXPECT_NE(format_event(e).find(R"("payload":null)"), std::string::npos);
	EXPECT_EQ(format_event(e).find('\n'), std::string::npos);
}

TEST(ListenJson, TextArrayLiteral) {
	EXPECT_EQ(text_array_literal({"orders"}), R"({"orders"})");
	EXPECT_EQ(text_array_literal({"a", "b\"c", "d\\e", "x,y", "{}", "NULL"}),
	          R"({"a","b\"c","d\\e","x,y","{}","NULL"})");
}

TEST(ListenTracker, DeliverDuplicateGap) {
	Tracker t(10);
	Event e;
	e.channel = "a";
	e.pos = 11;
	e.seq = 5;
	// seq of "a" not known yet: replay to learn it
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Gap);
	t.set_seq("a", 4);
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Deliver);
	t.delivered(e);
	EXPECT_EQ(t.last_pos(), 11);
	EXPECT_EQ(t.seq("a").value(), 5);
	// the same again: duplicate
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Duplicate);
	// a position jump with the next seq: other channels' events in between, fine
	e.pos = 20;
	e.seq = 6;
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Deliver);
	// a seq jump: replay the gap
	e.seq = 8;
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Gap);
	// the next seq but truncated: replay it to get the payload
	e.seq = 6;
	e.truncated = true;
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Gap);
}

TEST(ListenTracker, Inconsistent) {
	Tracker t(100);
	t.set_seq("a", 10);
	Event e;
	e.channel = "a";
	// an old position with a newer seq than we printed: we skipped it, or positions restarted
	e.pos = 50;
	e.seq = 11;
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Inconsistent);
	// a new position with an old seq: seqs restarted
	e.pos = 101;
	e.seq = 3;
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Inconsistent);
	// an old position, old seq: a plain duplicate
	e.pos = 99;
	e.seq = 10;
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Duplicate);
}

// the state file: test/unit/state_file_test.cpp

TEST(ListenBackoff, Doubles) {
	EXPECT_EQ(backoff_delay(0, 10, 0.5), 0);
	EXPECT_DOUBLE_EQ(backoff_delay(1, 10, 0.5), 0.1);
	EXPECT_DOUBLE_EQ(backoff_delay(2, 10, 0.5), 0.2);
	EXPECT_DOUBLE_EQ(backoff_delay(4, 10, 0.5), 0.8);
	EXPECT_DOUBLE_EQ(backoff_delay(20, 10, 0.5), 10);
	EXPECT_DOUBLE_EQ(backoff_delay(1000, 10, 1.0), 10); // capped, even with jitter
	EXPECT_NEAR(backoff_delay(3, 10, 0.0), 0.32, 1e-12);
	EXPECT_NEAR(backoff_delay(3, 10, 1.0), 0.48, 1e-12);
}

} // namespace

TEST(Listen, CompactJsonbText) {
	using pg_outbox::listen::compact_jsonb_text;
	EXPECT_EQ(compact_jsonb_text(R"({"a": 1, "b": [1, 2, {"c": "x y"}]})"), R"({"a":1,"b":[1,2,{"c":"x y"}]})");
	EXPECT_EQ(compact_jsonb_text(R"({"q": "say \"hi, there\": ok", "e": "\\"})"), R"({"q":"say \"hi, there\": ok","e":"\\"})");
	EXPECT_EQ(compact_jsonb_text(R"("just a string, with: spaces")"), R"("just a string, with: spaces")");
	EXPECT_EQ(compact_jsonb_text("null"), "null");
}
