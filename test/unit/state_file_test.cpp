// Unit tests of pg_outbox_listen's state file (src/listen/listen_core.cpp): versions 1 and 2, torn
// and garbage files, and the sample files in test/unit/data/state/ that the Python client is
// tested against too (clients/python/tests/test_state_file.py), so both read the same format.
#include "listen/listen_core.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <dirent.h>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace pg_outbox::listen;

namespace {

const char kId[] = "6f1c2a9e-4b7d-4e21-9c3a-0d5e8f7a1b2c";

// test/unit/data/state, found from the source file's path (the binary runs from the top directory)
std::string data_dir() {
	std::string f = __FILE__;
	auto slash = f.rfind('/');
	return (slash == std::string::npos ? std::string(".") : f.substr(0, slash)) + "/data/state";
}

std::string slurp(const std::string &path) {
	std::ifstream f(path, std::ios::binary);
	std::ostringstream o;
	o << f.rdbuf();
	return o.str();
}

State make(std::int64_t pos, std::optional<std::int64_t> epoch, std::string id) {
	State s;
	s.pos = pos;
	s.epoch = epoch;
	s.identity = std::move(id);
	return s;
}

} // namespace

TEST(StateFile, FormatVersion2) {
	EXPECT_EQ(format_state(make(42, std::nullopt, "")), "pg_outbox_listen state 2\npos 42\n");
	EXPECT_EQ(format_state(make(42, 3, "")), "pg_outbox_listen state 2\npos 42\nepoch 3\n");
	EXPECT_EQ(format_state(make(42, 3, kId)), std::string("pg_outbox_listen state 2\npos 42\nepoch 3\nidentity ") + kId + "\n");
	EXPECT_EQ(format_state(make(0, std::nullopt, "x")), "pg_outbox_listen state 2\npos 0\nidentity x\n");
}

TEST(StateFile, RoundTrip) {
	for (const State &s : {make(0, std::nullopt, ""), make(0, 0, ""), make(25605, 3, kId),
	                       make(9223372036854775807LL, 9223372036854775807LL, std::string(128, 'z')),
	                       make(1, std::nullopt, "a.b_c:d-E")}) {
		auto back = parse_state(format_state(s));
		ASSERT_TRUE(back) << format_state(s);
		EXPECT_EQ(*back, s);
		EXPECT_EQ(back->version, 2);
	}
}

TEST(StateFile, ReadsVersion1) {
	auto s = parse_state("pg_outbox_listen state 1\npos 42\n");
	ASSERT_TRUE(s);
	EXPECT_EQ(s->pos, 42);
	EXPECT_FALSE(s->epoch);
	EXPECT_TRUE(s->identity.empty());
	EXPECT_EQ(s->version, 1);
	// a version 1 file holds a position only
	EXPECT_FALSE(parse_state("pg_outbox_listen state 1\npos 42\nepoch 1\n"));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 1\npos 42\nidentity x\n"));
}

TEST(StateFile, RefusesTornAndGarbage) {
	std::string why;
	EXPECT_FALSE(parse_state("", &why));
	EXPECT_NE(why.find("header"), std::string::npos) << why;
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 42", &why)); // torn write
	EXPECT_NE(why.find("incomplete"), std::string::npos) << why;
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 42\nepoch 3\nidentity 6f1c", &why));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\n", &why)); // header only
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\nepoch 3\n", &why));
	EXPECT_NE(why.find("no pos"), std::string::npos) << why;
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 1\npos 2\n", &why));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 1\nidentity a\nepoch 1\n", &why));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 1\nepoch -1\n", &why));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 9223372036854775808\n", &why));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 1\nidentity a b\n", &why));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 1\nidentity " + std::string(129, 'a') + "\n", &why));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 3\npos 1\n", &why));
	EXPECT_FALSE(parse_state(std::string("pg_outbox_listen state 2\npos 1\0\n", 32), &why));
	EXPECT_FALSE(parse_state("42\n", &why));
	EXPECT_FALSE(parse_state("pg_outbox_listen state 2\npos 1\n" + std::string(5000, '#') + "\n", &why));
	EXPECT_NE(why.find("too long"), std::string::npos) << why;
}

TEST(StateFile, ValidIdentity) {
	EXPECT_TRUE(valid_identity(kId));
	EXPECT_TRUE(valid_identity(std::string(128, 'a')));
	EXPECT_FALSE(valid_identity(""));
	EXPECT_FALSE(valid_identity(std::string(129, 'a')));
	EXPECT_FALSE(valid_identity("a b"));
	EXPECT_FALSE(valid_identity("a\nb"));
	EXPECT_FALSE(valid_identity("../x"));
}

// The sample files that the Python client's tests read too.
TEST(StateFile, SampleFiles) {
	std::string dir = data_dir();
	std::string text = slurp(dir + "/expected.json");
	ASSERT_FALSE(text.empty()) << "cannot read " << dir << "/expected.json";
	boost::json::object files = boost::json::parse(text).as_object().at("files").as_object();
	std::set<std::string> listed;
	int good = 0, bad = 0;
	for (auto &kv : files) {
		std::string name(kv.key());
		listed.insert(name);
		std::string content = slurp(dir + "/" + name);
		std::string why;
		auto st = parse_state(content, &why);
		if (kv.value().is_null()) {
			EXPECT_FALSE(st) << name << " must be refused";
			EXPECT_FALSE(why.empty()) << name;
			bad++;
			continue;
		}
		ASSERT_TRUE(st) << name << ": " << why;
		const boost::json::object &e = kv.value().as_object();
		EXPECT_EQ(st->pos, e.at("pos").to_number<std::int64_t>()) << name;
		if (e.at("epoch").is_null())
			EXPECT_FALSE(st->epoch) << name;
		else
			EXPECT_EQ(st->epoch, std::optional<std::int64_t>(e.at("epoch").to_number<std::int64_t>())) << name;
		EXPECT_EQ(st->identity, e.at("identity").is_null() ? std::string() : std::string(e.at("identity").as_string()))
		    << name;
		EXPECT_EQ(st->version, e.at("version").to_number<int>()) << name;
		if (e.at("canonical").as_bool()) {
			EXPECT_EQ(format_state(*st), content) << name;
		}
		good++;
	}
	EXPECT_GE(good, 5);
	EXPECT_GE(bad, 20);
	// every sample file is listed
	DIR *d = opendir(dir.c_str());
	ASSERT_NE(d, nullptr);
	while (struct dirent *ent = readdir(d)) {
		std::string n = ent->d_name;
		if (n.size() > 6 && n.compare(n.size() - 6, 6, ".state") == 0) {
			EXPECT_TRUE(listed.count(n)) << n << " is not in expected.json";
		}
	}
	closedir(d);
}

TEST(StateFile, WriteReadFile) {
	char dir[] = "/tmp/state_file_test.XXXXXX";
	ASSERT_NE(mkdtemp(dir), nullptr);
	std::string path = std::string(dir) + "/state";
	std::string err;
	EXPECT_FALSE(read_state_file(path, err));
	EXPECT_TRUE(err.empty()) << err; // missing: no error
	ASSERT_TRUE(write_state_file(path, make(7, 2, kId), true, err)) << err;
	auto st = read_state_file(path, err);
	ASSERT_TRUE(st) << err;
	EXPECT_EQ(*st, make(7, 2, kId));
	ASSERT_TRUE(write_state_file(path, make(8, std::nullopt, ""), false, err)) << err;
	EXPECT_EQ(read_state_file(path, err).value(), make(8, std::nullopt, ""));
	EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0); // no temp file left behind
	{ // an old listener's file
		std::ofstream f(path);
		f << "pg_outbox_listen state 1\npos 99\n";
	}
	st = read_state_file(path, err);
	ASSERT_TRUE(st) << err;
	EXPECT_EQ(st->pos, 99);
	EXPECT_EQ(st->version, 1);
	{ // a torn write (a copy by hand, a full disk): refused, never read as a smaller position
		std::ofstream f(path);
		f << "pg_outbox_listen state 2\npos 12";
	}
	EXPECT_FALSE(read_state_file(path, err));
	EXPECT_NE(err.find("corrupt"), std::string::npos) << err;
	{
		std::ofstream f(path);
		f << "garbage";
	}
	EXPECT_FALSE(read_state_file(path, err));
	EXPECT_NE(err.find("corrupt"), std::string::npos);
	EXPECT_FALSE(write_state_file(std::string(dir) + "/no/such/dir/state", make(1, 1, ""), false, err));
	EXPECT_NE(err.find("cannot create"), std::string::npos);
	unlink(path.c_str());
	rmdir(dir);
}

// [redteam] PATH.tmp planted as a symlink (a shared state directory, another user): the listener
// must not follow it and truncate/overwrite the file it points to (the Python client opens it
// O_NOFOLLOW too). The write fails, the target and the old state file stay intact.
TEST(StateFile, TmpSymlinkNotFollowed) {
	char dir[] = "/tmp/state_file_test.XXXXXX";
	ASSERT_NE(mkdtemp(dir), nullptr);
	std::string path = std::string(dir) + "/state", victim = std::string(dir) + "/victim";
	std::string err;
	ASSERT_TRUE(write_state_file(path, make(3, 1, kId), false, err)) << err;
	{
		std::ofstream f(victim);
		f << "precious\n";
	}
	ASSERT_EQ(symlink(victim.c_str(), (path + ".tmp").c_str()), 0);
	EXPECT_FALSE(write_state_file(path, make(4, 1, kId), false, err));
	EXPECT_NE(err.find("cannot create"), std::string::npos) << err;
	std::ifstream in(victim);
	std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
	EXPECT_EQ(content, "precious\n");
	auto st = read_state_file(path, err);
	ASSERT_TRUE(st) << err;
	EXPECT_EQ(st->pos, 3);
	unlink((path + ".tmp").c_str());
	unlink(victim.c_str());
	unlink(path.c_str());
	rmdir(dir);
}

// A tracker adopts the epoch of what it delivers; an event of a newer epoch makes it replay (the
// server then decides with after_epoch), an older one at or below the position is a duplicate.
TEST(StateFile, TrackerEpochs) {
	Tracker t(10, 2);
	t.set_seq("c", 5);
	Event e;
	e.channel = "c";
	e.pos = 11;
	e.seq = 6;
	e.epoch = 2;
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Deliver);
	e.epoch = std::nullopt; // a server without epochs in its envelopes
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Deliver);
	e.epoch = 3; // the next event, in a new epoch: was the position preserved? replay asks
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Gap);
	e.pos = 9; // at or below the position in a newer epoch: positions were reissued
	e.seq = 4;
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Gap);
	e.epoch = 1; // an old event of an older epoch: a duplicate
	EXPECT_EQ(t.classify(e), Tracker::Verdict::Duplicate);
	e.pos = 11;
	e.seq = 6;
	e.epoch = 3;
	Tracker u(10, std::nullopt); // epoch not known (a version 1 state file): adopted on delivery
	u.set_seq("c", 5);
	EXPECT_EQ(u.classify(e), Tracker::Verdict::Deliver);
	u.delivered(e);
	EXPECT_EQ(u.epoch(), std::optional<std::int64_t>(3));
	e.pos = 12;
	e.seq = 7;
	e.epoch = std::nullopt;
	u.delivered(e); // an event without epoch keeps the known one
	EXPECT_EQ(u.epoch(), std::optional<std::int64_t>(3));
}

TEST(StateFile, EnvelopeEpoch) {
	Event e;
	std::string err;
	ASSERT_TRUE(decode_envelope("c", R"({"id":1,"pos":2,"seq":1,"epoch":4})", e, err)) << err;
	EXPECT_EQ(e.epoch, std::optional<std::int64_t>(4));
	ASSERT_TRUE(decode_envelope("c", R"({"id":1,"pos":2,"seq":1})", e, err)) << err;
	EXPECT_FALSE(e.epoch);
	EXPECT_FALSE(decode_envelope("c", R"({"id":1,"pos":2,"seq":1,"epoch":"4"})", e, err));
	EXPECT_FALSE(decode_envelope("c", R"({"id":1,"pos":2,"seq":1,"epoch":-1})", e, err));
}

TEST(StateFile, ResyncOption) {
	auto r = parse_args({"dbname=x", "-c", "a", "--resync"});
	ASSERT_TRUE(r.options) << r.error;
	EXPECT_TRUE(r.options->resync);
	EXPECT_FALSE(parse_args({"dbname=x", "-c", "a"}).options->resync);
	EXPECT_FALSE(parse_args({"dbname=x", "-c", "a", "--resync=yes"}).options);
	EXPECT_NE(std::string(usage_text()).find("8 the history diverged"), std::string::npos);
}
