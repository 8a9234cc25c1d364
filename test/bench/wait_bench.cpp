// wait_bench.cpp — latency from COMMIT to delivery, in one process and one run, for:
//   listen   LISTEN on the channel (the drain worker's NOTIFY), direct connection;
//   wait     a loop of SELECT ... FROM outbox.wait(last, ARRAY[channel], '5s', 1000), direct;
//   bouncer  the same wait() loop through PgBouncer (pool_mode = transaction), if given.
// A producer thread commits one outbox.publish() per transaction at RATE events/s for SECONDS;
// each consumer timestamps each event when it arrives. Latency = arrival - COMMIT returned.
//
//   wait_bench DIRECT_CONNINFO BOUNCER_CONNINFO|- RATE SECONDS
#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/select.h>
#include <thread>
#include <vector>

using Clock = std::chrono::steady_clock;

static PGconn *connect_or_die(const char *conninfo) {
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "wait_bench: %s", PQerrorMessage(c));
		exit(2);
	}
	return c;
}

static double pct(std::vector<double> v, double p) {
	if (v.empty())
		return -1;
	std::sort(v.begin(), v.end());
	return v[std::min(v.size() - 1, (size_t)(p * (v.size() - 1) + 0.5))];
}

struct Consumer {
	std::string name;
	std::vector<Clock::time_point> recv;
	std::vector<char> got;
	std::atomic<long> received{0};
	long calls = 0;
};

static void note(Consumer &c, long i) {
	if (i >= 0 && i < (long)c.got.size() && !c.got[i]) {
		c.recv[i] = Clock::now();
		c.got[i] = 1;
		c.received++;
	}
}

// the event number from an envelope or a payload text: ..."i": 123...
static long event_number(const char *text) {
	const char *p = strstr(text, "\"i\":");
	if (!p)
		return -1;
	return strtol(p + 4, nullptr, 10);
}

static void listen_loop(const char *conninfo, Consumer &c, long n, std::atomic<bool> &stop) {
	PGconn *lc = connect_or_die(conninfo);
	PQclear(PQexec(lc, "LISTEN bench_wait"));
	int sock = PQsocket(lc);
	while (c.received.load() < n && !stop.load()) {
		fd_set fds;
		FD_ZERO(&fds);
		FD_SET(sock, &fds);
		timeval tv{0, 50000};
		select(sock + 1, &fds, nullptr, nullptr, &tv);
		PQconsumeInput(lc);
		while (PGnotify *nt = PQnotifies(lc)) {
			note(c, event_number(nt->extra));
			PQfreemem(nt);
		}
	}
	PQfinish(lc);
}

static void wait_loop(const char *conninfo, Consumer &c, long n, long start_pos, std::atomic<bool> &stop) {
	PGconn *wc = connect_or_die(conninfo);
	long long last = start_pos;
	while (c.received.load() < n && !stop.load()) {
		std::string sql = "SELECT pos, payload->>'i' FROM outbox.wait(" + std::to_string(last) +
		                  ", ARRAY['bench_wait'], '2s', 1000)";
		PGresult *r = PQexec(wc, sql.c_str());
		c.calls++;
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			fprintf(stderr, "wait_bench: %s: %s", c.name.c_str(), PQerrorMessage(wc));
			exit(2);
		}
		for (int row = 0; row < PQntuples(r); row++) {
			note(c, atol(PQgetvalue(r, row, 1)));
			last = std::max(last, atoll(PQgetvalue(r, row, 0)));
		}
		PQclear(r);
	}
	PQfinish(wc);
}

int main(int argc, char **argv) {
	if (argc != 5) {
		fprintf(stderr, "usage: wait_bench DIRECT_CONNINFO BOUNCER_CONNINFO|- RATE SECONDS\n");
		return 2;
	}
	const char *direct = argv[1];
	const char *bouncer = strcmp(argv[2], "-") ? argv[2] : nullptr;
	double rate = atof(argv[3]), seconds = atof(argv[4]);
	long n = (long)(rate * seconds);

	PGconn *pc = connect_or_die(direct);
	PGresult *h = PQexec(pc, "SELECT outbox.head()");
	long start_pos = atol(PQgetvalue(h, 0, 0));
	PQclear(h);
	PQclear(PQprepare(pc, "produce", "SELECT outbox.publish('bench_wait', jsonb_build_object('i', $1::int))", 1, nullptr));

	std::vector<Consumer *> consumers;
	auto make = [&](const char *name) {
		Consumer *c = new Consumer;
		c->name = name;
		c->recv.resize(n);
		c->got.assign(n, 0);
		consumers.push_back(c);
		return c;
	};
	std::atomic<bool> stop{false};
	std::vector<std::thread> threads;
	Consumer *cl = make("listen");
	threads.emplace_back([&] { listen_loop(direct, *cl, n, stop); });
	Consumer *cw = make("wait");
	threads.emplace_back([&] { wait_loop(direct, *cw, n, start_pos, stop); });
	if (bouncer) {
		Consumer *cb = make("bouncer");
		threads.emplace_back([&, cb] { wait_loop(bouncer, *cb, n, start_pos, stop); });
	}
	std::this_thread::sleep_for(std::chrono::milliseconds(500)); // consumers connected and waiting

	std::vector<Clock::time_point> acked(n);
	auto start = Clock::now();
	auto interval = std::chrono::duration<double>(1.0 / rate);
	for (long i = 0; i < n; i++) {
		auto due = start + std::chrono::duration_cast<Clock::duration>(interval * i);
		std::this_thread::sleep_until(due);
		std::string arg = std::to_string(i);
		const char *vals[] = {arg.c_str()};
		PGresult *r = PQexecPrepared(pc, "produce", 1, vals, nullptr, nullptr, 0);
		acked[i] = Clock::now();
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			fprintf(stderr, "wait_bench: %s", PQerrorMessage(pc));
			return 2;
		}
		PQclear(r);
	}
	auto deadline = Clock::now() + std::chrono::seconds(10);
	for (;;) {
		bool all = true;
		for (Consumer *c : consumers)
			all &= c->received.load() == n;
		if (all || Clock::now() > deadline)
			break;
		std::this_thread::sleep_for(std::chrono::milliseconds(20));
	}
	stop = true;
	for (auto &t : threads)
		t.join();
	int rc = 0;
	for (Consumer *c : consumers) {
		std::vector<double> lat;
		for (long i = n / 20; i < n; i++) // the first 5%: warm-up
			if (c->got[i])
				lat.push_back(std::chrono::duration<double, std::milli>(c->recv[i] - acked[i]).count());
		printf("consumer=%s events=%ld received=%ld p50_ms=%.3f p99_ms=%.3f max_ms=%.3f calls=%ld\n", c->name.c_str(), n,
		       c->received.load(), pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1.0), c->calls);
		if (c->received.load() != n)
			rc = 1;
	}
	PQfinish(pc);
	return rc;
}
