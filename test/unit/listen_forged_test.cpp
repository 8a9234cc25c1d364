// Unit tests of what pg_outbox_listen does with notifications it cannot trust (issue #11 part 2):
// NOTIFY needs no privilege, so only a drain worker's envelope is used; anything else is a
// doorbell that never prints, never moves the position, never names a replay target.
#include "listen/listen_core.hpp"

#include <gtest/gtest.h>

using namespace pg_outbox::listen;

namespace {

const char *kReal = R"({"id":7,"pos":11,"seq":5,"key":"k","payload":{"x":1}})";

Tracker tracker_after_10() {
	Tracker t(10);
	t.set_seq("orders", 4);
	return t;
}

TEST(ListenForged, ForgedEnvelopesAreDoorbells) {
	Tracker t = tracker_after_10();
	const char *forged[] = {
	    R"({"id":999,"pos":11,"seq":5,"payload":{"forged":true}})",   // same pos as the next real event
	    R"({"id":999,"pos":500,"seq":6,"payload":{"forged":true}})",  // a future pos
	    R"({"id":999,"pos":12,"seq":900,"payload":{}})",              // a seq gap (used to loop)
	    R"({"id":999,"pos":9223372036854775807,"seq":1})",            // a huge pos
	    R"({"id":999,"pos":3,"seq":99})",                             // an old pos with a new seq (used to exit 6)
	    "not json at all {",                                          // garbage
	    "",                                                           // empty
	};
	for (const char *p : forged) {
		Action a = on_notification(t, false, "orders", p);
		EXPECT_EQ(a.kind, Action::Doorbell) << p;
		EXPECT_EQ(a.target, 0) << p;
		EXPECT_EQ(a.event.pos, 0) << "nothing of an untrusted notification is decoded: " << p;
	}
	// and the tracker is what it was: the real event with pos 11 is still delivered
	EXPECT_EQ(t.last_pos(), 10);
	Action real = on_notification(t, true, "orders", kReal);
	EXPECT_EQ(real.kind, Action::Deliver);
	EXPECT_EQ(real.event.pos, 11);
	EXPECT_EQ(real.event.id, 7);
}

TEST(ListenForged, WorkerEnvelopes) {
	Tracker t = tracker_after_10();
	Action a = on_notification(t, true, "orders", kReal);
	ASSERT_EQ(a.kind, Action::Deliver);
	t.delivered(a.event);
	EXPECT_EQ(on_notification(t, true, "orders", kReal).kind, Action::Ignore); // duplicate
	a = on_notification(t, true, "orders", R"({"id":9,"pos":15,"seq":8})");
	EXPECT_EQ(a.kind, Action::ReplayTo);
	EXPECT_EQ(a.target, 15);
	a = on_notification(t, true, "orders", R"({"id":9,"pos":16,"seq":2})");
	EXPECT_EQ(a.kind, Action::Resync);
	a = on_notification(t, true, "orders", "{}");
	EXPECT_EQ(a.kind, Action::Ignore);
	EXPECT_FALSE(a.why.empty());
}

TEST(ListenForged, PublishersRefreshOnUnknownPidOnce) {
	Publishers p(1.0, 30.0);
	EXPECT_FALSE(p.known());
	EXPECT_EQ(p.classify(100, 0), Publishers::Verdict::Refresh); // nothing fetched yet
	p.set({100}, 0);
	EXPECT_EQ(p.classify(100, 0.5), Publishers::Verdict::Trusted);
	// an unknown PID right after a fetch: a doorbell, no new query
	EXPECT_EQ(p.classify(666, 0.5), Publishers::Verdict::Doorbell);
	// later: fetch once more (the worker may have restarted with that PID)
	EXPECT_EQ(p.classify(666, 1.5), Publishers::Verdict::Refresh);
	p.set({100}, 1.5);
	EXPECT_EQ(p.classify(666, 1.5), Publishers::Verdict::Doorbell); // asked: still not a worker
	// a flood of forged notifications within the interval costs no query
	for (int i = 0; i < 1000; i++)
		EXPECT_EQ(p.classify(1000 + i, 2.0), Publishers::Verdict::Doorbell);
	// a restarted worker: its new PID is learnt with one fetch
	EXPECT_EQ(p.classify(200, 3.0), Publishers::Verdict::Refresh);
	p.set({200}, 3.0);
	EXPECT_EQ(p.classify(200, 3.0), Publishers::Verdict::Trusted);
	EXPECT_EQ(p.classify(100, 3.0), Publishers::Verdict::Doorbell); // the old worker's PID is no longer trusted
	// a list older than max_age vouches for nobody until fetched again (PIDs get reused)
	EXPECT_EQ(p.classify(200, 40.0), Publishers::Verdict::Refresh);
	// no PID is 0 or negative
	p.set({0}, 50);
	EXPECT_EQ(p.classify(0, 50), Publishers::Verdict::Doorbell);
	// a clock that goes backwards does not make the list look fresh forever, nor refresh on every call
	p.set({5}, 100);
	EXPECT_EQ(p.classify(5, 90), Publishers::Verdict::Trusted);
	EXPECT_EQ(p.classify(6, 90), Publishers::Verdict::Doorbell);
	// a new connection forgets the list
	p.forget();
	EXPECT_EQ(p.classify(5, 100), Publishers::Verdict::Refresh);
}

TEST(ListenForged, ParseIntArray) {
	EXPECT_EQ(parse_int_array("{}").value(), std::vector<int>{});
	EXPECT_EQ(parse_int_array("{4242}").value(), std::vector<int>{4242});
	EXPECT_EQ(parse_int_array("{1,22,333}").value(), (std::vector<int>{1, 22, 333}));
	EXPECT_FALSE(parse_int_array(""));
	EXPECT_FALSE(parse_int_array("{"));
	EXPECT_FALSE(parse_int_array("{NULL}"));
	EXPECT_FALSE(parse_int_array("{1,}"));
	EXPECT_FALSE(parse_int_array("{1,,2}"));
	EXPECT_FALSE(parse_int_array("{99999999999}"));
	EXPECT_FALSE(parse_int_array("1,2"));
}

} // namespace
