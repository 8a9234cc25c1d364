// bench_client.cpp — the timing client of test/bench/drain_bench.sh (libpq, C++17).
//
//   bench_client ceiling CONNINFO TXNS PER_TXN PAYLOAD_BYTES
//       raw pg_notify: TXNS transactions of PER_TXN distinct notifications; prints notifications/s.
//   bench_client listen CONNINFO CHANNEL N TIMEOUT_S
//       LISTEN CHANNEL, print "ready", wait for N notifications; prints count, distinct payloads,
//       first and last receive time (Unix epoch seconds, so the caller can compare clocks).
//   bench_client latency CONNINFO SYSTEM RATE SECONDS [PRODUCERS]
//       SYSTEM is outbox | notify | python. PRODUCERS threads (default 4), one connection each,
//       commit one event per transaction on a common schedule of RATE events/s; a listener
//       thread in the same process timestamps each notification. Prints, in ms, p50/p99/max of
//       (receive - COMMIT sent) and (receive - commit acknowledged), and the producers' own
//       commit time p50/p99 (a durable commit waits for the WAL flush: the disk's fsync time).
//       With BENCH_LAT_SAMPLES=FILE, writes every latency from COMMIT sent (ms) to FILE.
//
// Timestamps inside one process use std::chrono::steady_clock; pin the process with taskset.
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

using Clock = std::chrono::steady_clock;

static PGconn *connect_or_die(const char *conninfo) {
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "bench_client: connection failed: %s", PQerrorMessage(c));
		exit(2);
	}
	return c;
}

static void exec_or_die(PGconn *c, const char *sql) {
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		fprintf(stderr, "bench_client: %s: %s", sql, PQerrorMessage(c));
		exit(2);
	}
	PQclear(r);
}

static double epoch_now() {
	return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Waits up to timeout_ms for input on c and consumes it.
static bool wait_input(PGconn *c, int timeout_ms) {
	struct pollfd p = {PQsocket(c), POLLIN, 0};
	int rc = poll(&p, 1, timeout_ms);
	if (rc > 0 && !PQconsumeInput(c)) {
		fprintf(stderr, "bench_client: %s", PQerrorMessage(c));
		exit(2);
	}
	return rc > 0;
}

// The event number: the value of "i" in the payload ({"i" : N} from json_build_object, {"i": N}
// from jsonb; the envelopes carry the payload).
static long event_number(const char *payload) {
	const char *p = strstr(payload, "\"i\"");
	if (!p)
		return -1;
	p += 3;
	while (*p == ' ' || *p == ':')
		p++;
	return strtol(p, nullptr, 10);
}

static int ceiling(const char *conninfo, int txns, int per_txn, int payload_bytes) {
	PGconn *c = connect_or_die(conninfo);
	std::string pad(std::max(0, payload_bytes - 20), 'x');
	char sql[1024];
	snprintf(sql, sizeof sql,
	         "SELECT count(pg_notify('bench_ceiling', '{\"i\":' || (g + $1::int) || ',\"p\":\"%s\"}'))"
	         " FROM generate_series(1, %d) g",
	         pad.c_str(), per_txn);
	auto t0 = Clock::now();
	for (int t = 0; t < txns; t++) {
		exec_or_die(c, "BEGIN");
		std::string off = std::to_string(t * per_txn);
		const char *vals[] = {off.c_str()};
		PGresult *r = PQexecParams(c, sql, 1, nullptr, vals, nullptr, nullptr, 0);
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			fprintf(stderr, "bench_client: %s", PQerrorMessage(c));
			return 2;
		}
		PQclear(r);
		exec_or_die(c, "COMMIT");
	}
	double s = std::chrono::duration<double>(Clock::now() - t0).count();
	printf("notifications=%d seconds=%.4f per_s=%.0f\n", txns * per_txn, s, txns * per_txn / s);
	PQfinish(c);
	return 0;
}

static int listen_mode(const char *conninfo, const char *channel, long n, double timeout_s) {
	PGconn *c = connect_or_die(conninfo);
	std::string sql = std::string("LISTEN ") + channel;
	exec_or_die(c, sql.c_str());
	printf("ready\n");
	fflush(stdout);
	long count = 0;
	std::unordered_set<std::string> seen;
	double first = 0, last = 0;
	auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
	while (count < n && Clock::now() < deadline) {
		wait_input(c, 100);
		while (PGnotify *nt = PQnotifies(c)) {
			last = epoch_now();
			if (count == 0)
				first = last;
			count++;
			seen.insert(nt->extra);
			PQfreemem(nt);
		}
	}
	printf("received=%ld distinct=%zu first=%.6f last=%.6f\n", count, seen.size(), first, last);
	PQfinish(c);
	return count == n ? 0 : 1;
}

static double pct(std::vector<double> v, double p) {
	if (v.empty())
		return -1;
	std::sort(v.begin(), v.end());
	size_t i = std::min(v.size() - 1, (size_t)(p * (v.size() - 1) + 0.5));
	return v[i];
}

static int latency(const char *conninfo, const std::string &system, double rate, double seconds, int nprod) {
	const char *channel, *produce;
	if (system == "outbox" || system == "log") {
		// log: the same calls in a database switched to the write-once log of issue #15
		// (outbox.use_log_storage(): the C producer into the log, the worker's C pass)
		channel = "bench_lat";
		produce = "SELECT outbox.publish('bench_lat', jsonb_build_object('i', $1::int, 'status', 'paid'))";
	} else if (system == "notify") {
		channel = "bench_lat";
		produce = "SELECT pg_notify('bench_lat', json_build_object('i', $1::int, 'status', 'paid')::text)";
	} else if (system == "python") {
		channel = "bench_lat";
		produce = "INSERT INTO bench_py.outbox (channel, payload)"
		          " VALUES ('bench_lat', jsonb_build_object('i', $1::int, 'status', 'paid'))";
	} else {
		fprintf(stderr, "bench_client: unknown system %s\n", system.c_str());
		return 2;
	}
	long n = (long)(rate * seconds);
	std::vector<Clock::time_point> sent(n), acked(n), recv(n);
	std::vector<char> got(n, 0);
	PGconn *lc = connect_or_die(conninfo);
	exec_or_die(lc, (std::string("LISTEN ") + channel).c_str());
	// Several producer connections, each committing every nprod-th event on the common schedule:
	// a durable commit waits for a WAL flush, so one connection alone cannot keep 2000 commits/s
	// when fsync takes more than 0.5 ms (as many applications, which commit from many sessions).
	std::vector<PGconn *> pcs;
	for (int p = 0; p < nprod; p++) {
		PGconn *pc = connect_or_die(conninfo);
		PGresult *prep = PQprepare(pc, "produce", produce, 1, nullptr);
		if (PQresultStatus(prep) != PGRES_COMMAND_OK) {
			fprintf(stderr, "bench_client: %s", PQerrorMessage(pc));
			return 2;
		}
		PQclear(prep);
		pcs.push_back(pc);
	}
	std::atomic<bool> producer_done{false};
	std::atomic<long> received{0};

	std::thread listener([&] {
		Clock::time_point stop_at = Clock::time_point::max();
		while (received.load() < n && Clock::now() < stop_at) {
			if (producer_done.load() && stop_at == Clock::time_point::max())
				stop_at = Clock::now() + std::chrono::seconds(3);
			wait_input(lc, 50);
			while (PGnotify *nt = PQnotifies(lc)) {
				auto now = Clock::now();
				long i = event_number(nt->extra);
				if (i >= 0 && i < n && !got[i]) {
					recv[i] = now;
					got[i] = 1;
					received++;
				}
				PQfreemem(nt);
			}
		}
	});

	auto start = Clock::now() + std::chrono::milliseconds(100);
	auto interval = std::chrono::duration<double>(1.0 / rate);
	std::atomic<long> behind{0};
	std::vector<std::thread> producers;
	for (int p = 0; p < nprod; p++)
		producers.emplace_back([&, p] {
			PGconn *pc = pcs[p];
			for (long i = p; i < n; i += nprod) {
				auto due = start + std::chrono::duration_cast<Clock::duration>(interval * i);
				if (Clock::now() < due)
					std::this_thread::sleep_until(due);
				else if (Clock::now() - due > std::chrono::milliseconds(5))
					behind++;
				std::string arg = std::to_string(i);
				const char *vals[] = {arg.c_str()};
				sent[i] = Clock::now();
				PGresult *r = PQexecPrepared(pc, "produce", 1, vals, nullptr, nullptr, 0);
				acked[i] = Clock::now();
				if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
					fprintf(stderr, "bench_client: %s", PQerrorMessage(pc));
					exit(2);
				}
				PQclear(r);
			}
		});
	for (auto &t : producers)
		t.join();
	double achieved = n / std::chrono::duration<double>(Clock::now() - start).count();
	producer_done = true;
	listener.join();

	// The first 5% are warm-up (connections, plans, caches): left out.
	std::vector<double> from_sent, from_ack, commit;
	for (long i = n / 20; i < n; i++) {
		commit.push_back(std::chrono::duration<double, std::milli>(acked[i] - sent[i]).count());
		if (got[i]) {
			from_sent.push_back(std::chrono::duration<double, std::milli>(recv[i] - sent[i]).count());
			from_ack.push_back(std::chrono::duration<double, std::milli>(recv[i] - acked[i]).count());
		}
	}
	// BENCH_LAT_SAMPLES=FILE: every latency from COMMIT sent (ms), one a line, for the charts
	if (const char *dump = getenv("BENCH_LAT_SAMPLES")) {
		if (FILE *f = fopen(dump, "w")) {
			for (double v : from_sent)
				fprintf(f, "%.4f\n", v);
			fclose(f);
		}
	}
	printf("system=%s rate=%.0f producers=%d achieved=%.0f events=%ld received=%ld late_sends=%ld"
	       " sent_p50=%.3f sent_p99=%.3f sent_max=%.3f ack_p50=%.3f ack_p99=%.3f commit_p50=%.3f commit_p99=%.3f\n",
	       system.c_str(), rate, nprod, achieved, n, received.load(), behind.load(), pct(from_sent, 0.5),
	       pct(from_sent, 0.99), pct(from_sent, 1.0), pct(from_ack, 0.5), pct(from_ack, 0.99), pct(commit, 0.5),
	       pct(commit, 0.99));
	for (PGconn *pc : pcs)
		PQfinish(pc);
	PQfinish(lc);
	return received.load() == n ? 0 : 1;
}

int main(int argc, char **argv) {
	if (argc >= 6 && !strcmp(argv[1], "ceiling"))
		return ceiling(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	if (argc >= 6 && !strcmp(argv[1], "listen"))
		return listen_mode(argv[2], argv[3], atol(argv[4]), atof(argv[5]));
	if (argc >= 6 && !strcmp(argv[1], "latency"))
		return latency(argv[2], argv[3], atof(argv[4]), atof(argv[5]), argc >= 7 ? atoi(argv[6]) : 4);
	fprintf(stderr, "usage: bench_client ceiling|listen|latency ...\n");
	return 2;
}
