// pg_outbox_listen — the reference consumer of pg_outbox: prints every published event of some
// channels as one JSON line, in position order, exactly once per run and at least once across
// restarts (the state file is written after the lines are flushed).
//
// On start and after every reconnect: LISTEN first, then replay from the last printed position
// with outbox.replay() until caught up, then follow live notifications. A notification at or
// below the last position is a duplicate and dropped; one whose channel seq jumps (or whose
// seq is not known yet, or whose payload was truncated) makes it replay up to that position.
//
// NOTIFY needs no privilege: any role may send any payload on any channel. An envelope is used
// only when the notification comes from one of the database's drain workers (its be_pid is in
// outbox.worker_pids()); any other notification (a forgery, or a session running
// outbox.drain() by hand) is a doorbell: it makes the listener replay after its last position
// and is otherwise ignored. So a forged notification never prints anything, never moves the
// position (it cannot hide the real event with that position), and never makes it reconnect.
//
// [epochs] Positions survive failover only as far as the WAL did: the state file keeps, with the
// position, its epoch and the outbox's identity. At every (re)connect the listener compares the
// identity with outbox.identity() and passes the epoch to outbox.replay(after_epoch => E), so
// the server says (OB003) when the positions it printed were handed out again to other events;
// it then exits with code 8 (kExitDiverged), or with --resync continues after the current head.
// Everything the database says goes through libpq here; the logic is in listen_core.cpp.
#include "listen/listen_core.hpp"

#include <libpq-fe.h>

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <random>
#include <signal.h>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace pg_outbox::listen;

namespace {

volatile sig_atomic_t stop_requested = 0;

void on_signal(int) {
	stop_requested = 1;
}

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char *fmt, ...) {
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "pg_outbox_listen: %s\n", buf);
	fflush(stderr);
}

// Leaves the program with an exit code (caught in main, so destructors run and the
// connection is closed).
struct Exit {
	int code;
};

// The history it printed is gone (OB001/OB002/OB003, identity changed, a contradicting
// notification): exit with code, or with --resync start again from the head.
struct Diverged {
	int code;               // kExitResync or kExitDiverged
	std::string why;        // one line: what happened, naming the first reissued position
	std::string server;     // the server's message and detail, if any
};

// The connection went away (or a transient error): reconnect.
struct Lost {
	std::string why;
};

// A libpq message on one line: newlines and tabs become single spaces.
std::string trim(const std::string &in) {
	std::string s;
	for (char c : in) {
		if (c == '\n' || c == '\t' || c == '\r')
			c = ' ';
		if (c == ' ' && (s.empty() || s.back() == ' '))
			continue;
		s += c;
	}
	while (!s.empty() && s.back() == ' ')
		s.pop_back();
	return s;
}

// Server messages outside a query (e.g. the FATAL of a terminated backend), on one line.
void notice_processor(void *, const char *message) {
	say("server: %s", trim(message).c_str());
}

class Listener {
public:
	explicit Listener(Options o) : opt_(std::move(o)), rng_(std::random_device{}()) {
	}
	~Listener() {
		disconnect();
	}
	int run();

private:
	Options opt_;
	PGconn *conn_ = nullptr;
	Tracker tracker_;
	Publishers publishers_;
	bool have_worker_pids_ = false; // the extension has outbox.worker_pids() (1.2 and later)
	bool have_epochs_ = false;      // [epochs] outbox.identity() and replay(..., after_epoch) (1.2 and later)
	std::string identity_;          // [epochs] the outbox the positions belong to (empty: not known yet)
	long long resyncs_ = 0;
	long long doorbells_ = 0; // notifications not from a drain worker
	bool ever_connected_ = false;
	bool start_known_ = false; // the start position is settled (state file, --from-pos, or head)
	bool channels_checked_ = false;
	bool dirty_ = false;       // printed lines since the last state save
	std::string channels_literal_;
	std::mt19937 rng_;
	std::vector<std::string> keys_, vals_;
	int lock_fd_ = -1;

	void disconnect() {
		if (conn_)
			PQfinish(conn_);
		conn_ = nullptr;
	}
	void build_params();
	void connect();
	void setup_session();
	void catch_up(std::int64_t target);
	void live();
	void process_notifications();
	void deliver(const Event &e);
	void flush_and_save();
	PGresult *exec(const char *sql, int nparams, const char *const *params);
	[[noreturn]] void fail_result(PGresult *res, const char *what);
	void sleep_for(double seconds);
	void reconnect_loop();
	void check_channels();
	void fetch_worker_pids();
	bool trusted(int be_pid);
	void check_identity(const char *server_identity);
	[[noreturn]] void diverged_epoch(const std::string &msg, const std::string &detail);
	void resync(const Diverged &d);
};

void Listener::build_params() {
	char *err = nullptr;
	PQconninfoOption *opts = PQconninfoParse(opt_.conninfo.c_str(), &err);
	if (!opts) {
		say("invalid connection string \"%s\": %s", opt_.conninfo.c_str(), err ? trim(err).c_str() : "out of memory");
		if (err)
			PQfreemem(err);
		throw Exit{kExitConnection};
	}
	auto is_set = [&](const char *kw) {
		for (PQconninfoOption *o = opts; o->keyword; o++)
			if (strcmp(o->keyword, kw) == 0)
				return o->val != nullptr;
		return false;
	};
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (o->val) {
			keys_.push_back(o->keyword);
			vals_.push_back(o->val);
		}
	// Defaults the connection string can override. application_name is set, not just the
	// fallback: an inherited PGAPPNAME must not hide the listener in pg_stat_activity.
	const std::pair<const char *, const char *> defaults[] = {
	    {"application_name", "pg_outbox_listen"},
	    {"keepalives", "1"},
	    {"keepalives_idle", "30"},
	    {"keepalives_interval", "10"},
	    {"keepalives_count", "3"},
	    {"connect_timeout", "10"},
	};
	for (auto [k, v] : defaults)
		if (!is_set(k)) {
			keys_.push_back(k);
			vals_.push_back(v);
		}
	PQconninfoFree(opts);
}

void Listener::connect() {
	disconnect();
	std::vector<const char *> k, v;
	for (size_t i = 0; i < keys_.size(); i++) {
		k.push_back(keys_[i].c_str());
		v.push_back(vals_[i].c_str());
	}
	k.push_back(nullptr);
	v.push_back(nullptr);
	say("state=connecting");
	conn_ = PQconnectdbParams(k.data(), v.data(), 0);
	if (!conn_)
		throw Lost{"out of memory"};
	if (PQstatus(conn_) != CONNECTION_OK) {
		std::string why = trim(PQerrorMessage(conn_));
		disconnect();
		if (!ever_connected_) {
			say("cannot connect: %s", why.c_str());
			throw Exit{kExitConnection};
		}
		throw Lost{"cannot connect: " + why};
	}
	PQsetNoticeProcessor(conn_, notice_processor, nullptr);
	ever_connected_ = true;
	say("state=connected backend_pid=%d database=%s", PQbackendPID(conn_), PQdb(conn_));
}

PGresult *Listener::exec(const char *sql, int nparams, const char *const *params) {
	PGresult *res = PQexecParams(conn_, sql, nparams, nullptr, params, nullptr, nullptr, 0);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return res;
	fail_result(res, sql);
}

void Listener::fail_result(PGresult *res, const char *what) {
	std::string msg = trim(res ? PQresultErrorMessage(res) : PQerrorMessage(conn_));
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
	std::string sqlstate = state ? state : "";
	const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : nullptr;
	std::string hint_s = hint ? hint : "";
	const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : nullptr;
	std::string detail_s = detail ? trim(detail) : "";
	if (res)
		PQclear(res);
	if (PQstatus(conn_) != CONNECTION_OK || sqlstate.empty())
		throw Lost{msg.empty() ? "connection lost" : msg};
	if (sqlstate == "OB001" || sqlstate == "OB002") {
		// [epochs] a re-created outbox is behind (or ahead of) the position too: say the real reason
		if (have_epochs_ && !identity_.empty()) {
			PGresult *r = PQexec(conn_, "SELECT outbox.identity()");
			std::string id = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
			                     ? PQgetvalue(r, 0, 0)
			                     : "";
			if (r)
				PQclear(r);
			if (!id.empty())
				check_identity(id.c_str());
		}
		throw Diverged{kExitResync, "cannot continue after position " + std::to_string(tracker_.last_pos()), msg};
	}
	if (sqlstate == "OB003") { // [epochs] the positions it printed were handed out again
		diverged_epoch(msg, detail_s);
	}
	if (sqlstate == "42883" || sqlstate == "3F000" || sqlstate == "42P01" || sqlstate == "42501") {
		say("pg_outbox is not usable in database \"%s\": %s", PQdb(conn_), msg.c_str());
		if (!hint_s.empty())
			say("hint: %s", hint_s.c_str());
		throw Exit{kExitNoExtension};
	}
	(void)what;
	throw Lost{"query failed (SQLSTATE " + sqlstate + "): " + msg};
}

// [epochs] OB003: name the first reissued position (outbox.epochs, readable by outbox_reader;
// without it the server's message, which names it too, has to do).
void Listener::diverged_epoch(const std::string &msg, const std::string &detail) {
	std::string why = "position " + std::to_string(tracker_.last_pos());
	if (tracker_.epoch())
		why += " of epoch " + std::to_string(*tracker_.epoch());
	why += " was not preserved";
	std::string ep = tracker_.epoch() ? std::to_string(*tracker_.epoch()) : "0";
	const char *params[] = {ep.c_str()};
	PGresult *res = PQexecParams(conn_,
	                             "SELECT e.first_pos, e.epoch, e.reason FROM outbox.epochs e WHERE e.epoch > $1::bigint"
	                             " ORDER BY e.epoch LIMIT 1",
	                             1, nullptr, params, nullptr, nullptr, 0);
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
		auto first = parse_int64(PQgetvalue(res, 0, 0));
		if (first && *first <= tracker_.last_pos())
			why += ": positions from " + std::to_string(*first) + " on were handed out again in epoch " +
			       PQgetvalue(res, 0, 1) + " (" + PQgetvalue(res, 0, 2) + "); the events printed at positions " +
			       std::to_string(*first) + " to " + std::to_string(tracker_.last_pos()) +
			       " were lost and these positions now hold other events";
		else
			why += ": the epoch is not in this outbox's history";
	}
	if (res)
		PQclear(res);
	throw Diverged{kExitDiverged, why, detail.empty() ? msg : msg + " (" + detail + ")"};
}

// [epochs] The outbox the positions belong to: adopted when not known yet, else it must match.
void Listener::check_identity(const char *server_identity) {
	std::string id = server_identity ? server_identity : "";
	if (!valid_identity(id)) {
		say("outbox.identity() returned something that is not an identity");
		throw Exit{kExitInternal};
	}
	if (identity_.empty()) {
		identity_ = id;
		dirty_ = true; // saved with the next position (or now, in setup_session)
		return;
	}
	if (id != identity_)
		throw Diverged{kExitDiverged,
		               "the outbox identity changed from " + identity_ + " to " + id + " (after position " +
		                   std::to_string(tracker_.last_pos()) +
		                   "): the extension was re-created, or this is another database; every position from 1 on "
		                   "may belong to other events",
		               ""};
}

void Listener::resync(const Diverged &d) {
	std::int64_t from = tracker_.last_pos();
	resyncs_++;
	say("state=resync from_pos=%lld: %s; --resync: continuing after the current head (events between are not "
	    "printed)",
	    (long long)from, d.why.c_str());
	if (!d.server.empty())
		say("server: %s", d.server.c_str());
	start_known_ = false; // setup_session starts from the head and saves the state file
	identity_.clear();
	tracker_ = Tracker(0);
}

void Listener::check_channels() {
	const char *params[] = {channels_literal_.c_str()};
	// outbox.head(channel) rather than the table outbox.channels: a reader may call the
	// function (and channel rights apply to it), the table is the admin's
	PGresult *res = exec("SELECT u.c FROM unnest($1::text[]) WITH ORDINALITY AS u(c, n)"
	                     " WHERE outbox.head(u.c) = 0 ORDER BY u.n",
	                     1, params);
	for (int i = 0; i < PQntuples(res); i++) {
		if (opt_.strict_channels) {
			say("unknown channel \"%s\": no event was ever published on it", PQgetvalue(res, i, 0));
			PQclear(res);
			throw Exit{kExitUnknownChannel};
		}
		say("warning: channel \"%s\" has had no event yet (listening anyway)", PQgetvalue(res, i, 0));
	}
	PQclear(res);
}

void Listener::setup_session() {
	// Is pg_outbox there (and new enough)?
	PGresult *res = exec("SELECT coalesce(to_regprocedure('outbox.replay(bigint,text[],integer,bigint)'),"  // [epochs] 1.2
	                     " to_regprocedure('outbox.replay(bigint,text[],integer)')) IS NOT NULL", 0, nullptr);
	bool have = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!have) {
		say("database \"%s\" has no pg_outbox with outbox.replay(): run CREATE EXTENSION pg_outbox (or update it)",
		    PQdb(conn_));
		throw Exit{kExitNoExtension};
	}
	// 'm': missing (pg_outbox older than 1.2), 'd': no EXECUTE on it, 't': usable
	res = exec("SELECT CASE WHEN to_regprocedure('outbox.worker_pids()') IS NULL THEN 'm'"
	           " WHEN has_function_privilege(to_regprocedure('outbox.worker_pids()'), 'EXECUTE') THEN 't' ELSE 'd' END",
	           0, nullptr);
	char pids_fn = PQgetvalue(res, 0, 0)[0];
	PQclear(res);
	have_worker_pids_ = pids_fn == 't';
	// [epochs] 'm': no epochs (older than 1.2), 'd': no EXECUTE on outbox.identity(), 't': usable
	res = exec("SELECT CASE WHEN to_regprocedure('outbox.identity()') IS NULL"
	           " OR to_regprocedure('outbox.replay(bigint,text[],integer,bigint)') IS NULL THEN 'm'"
	           " WHEN has_function_privilege(to_regprocedure('outbox.identity()'), 'EXECUTE') THEN 't' ELSE 'd' END",
	           0, nullptr);
	char epochs_fn = PQgetvalue(res, 0, 0)[0];
	PQclear(res);
	have_epochs_ = epochs_fn == 't';
	std::string server_identity;
	if (have_epochs_) { // a query of its own: outbox.identity() cannot be named where it may not exist
		res = exec("SELECT outbox.identity()", 0, nullptr);
		server_identity = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);
		PQclear(res);
	}
	if (epochs_fn == 'd')
		say("warning: this role may not execute outbox.identity(): a re-created outbox cannot be told apart (grant it "
		    "outbox_reader or outbox_consumer)");
	if (have_epochs_)
		check_identity(server_identity.c_str());
	else if (epochs_fn == 'm')
		tracker_.set_epoch(std::nullopt); // a server without epochs: positions only, as before 1.3
	publishers_.forget();
	if (have_worker_pids_)
		fetch_worker_pids();
	else
		say("warning: %s: every notification is treated as a doorbell and the events are read with outbox.replay()",
		    pids_fn == 'm' ? "this pg_outbox has no outbox.worker_pids() (older than 1.2)"
		                : "this role may not execute outbox.worker_pids() (grant it outbox_reader or outbox_consumer)");
	const char *params[] = {channels_literal_.c_str()};
	// Channels that never had an event: a typo, or a channel nobody has published on yet
	// (checked on the first connection only).
	if (!channels_checked_) {
		check_channels();
		channels_checked_ = true;
	}
	// LISTEN before the replay: whatever commits after this is notified, whatever committed
	// before is in the replay's snapshot; the overlap is dropped by position.
	for (const std::string &ch : opt_.channels) {
		char *ident = PQescapeIdentifier(conn_, ch.c_str(), ch.size());
		if (!ident)
			throw Lost{trim(PQerrorMessage(conn_))};
		std::string sql = std::string("LISTEN ") + ident;
		PQfreemem(ident);
		PQclear(exec(sql.c_str(), 0, nullptr));
	}
	if (!start_known_) { // --from-now (or no start given) on the first run: the head, with seqs
		res = exec(have_epochs_ ? "SELECT outbox.head(), array_to_string(array(SELECT outbox.head(u.c)::text"
		                          " FROM unnest($1::text[]) WITH ORDINALITY AS u(c, n) ORDER BY u.n), ','), outbox.epoch()"
		                        : "SELECT outbox.head(), array_to_string(array(SELECT outbox.head(u.c)::text"
		                          " FROM unnest($1::text[]) WITH ORDINALITY AS u(c, n) ORDER BY u.n), ','), NULL",
		           1, params);
		auto head = parse_int64(PQgetvalue(res, 0, 0));
		std::string seqs = PQgetvalue(res, 0, 1);
		std::optional<std::int64_t> epoch;
		if (!PQgetisnull(res, 0, 2))
			epoch = parse_int64(PQgetvalue(res, 0, 2));
		PQclear(res);
		if (!head)
			throw Exit{kExitInternal};
		tracker_ = Tracker(*head, epoch);
		size_t start = 0;
		for (const std::string &ch : opt_.channels) {
			size_t comma = seqs.find(',', start);
			auto s = parse_int64(seqs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
			if (s)
				tracker_.set_seq(ch, *s);
			start = comma == std::string::npos ? seqs.size() : comma + 1;
		}
		start_known_ = true;
		say("starting from now: after position %lld", (long long)*head);
		dirty_ = true;
		flush_and_save();
	}
}

static double now_seconds() {
	return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Listener::fetch_worker_pids() {
	// [epochs] and the identity: a new drain worker's PID is what a re-created extension shows first
	PGresult *res = exec(have_epochs_ ? "SELECT outbox.worker_pids(), outbox.identity()" : "SELECT outbox.worker_pids(), NULL",
	                     0, nullptr);
	auto pids = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? parse_int_array(PQgetvalue(res, 0, 0)) : std::nullopt;
	std::string id = PQntuples(res) == 1 && !PQgetisnull(res, 0, 1) ? PQgetvalue(res, 0, 1) : "";
	PQclear(res);
	if (have_epochs_)
		check_identity(id.c_str());
	if (!pids) {
		say("outbox.worker_pids() returned something that is not a list of PIDs");
		throw Exit{kExitInternal};
	}
	publishers_.set(std::move(*pids), now_seconds());
	if (opt_.verbose) {
		std::string list;
		for (int p : publishers_.pids())
			list += (list.empty() ? "" : ",") + std::to_string(p);
		say("drain worker pids: {%s}", list.c_str());
	}
}

// Is the notification from a drain worker of this database?
bool Listener::trusted(int be_pid) {
	if (!have_worker_pids_)
		return false;
	auto v = publishers_.classify(be_pid, now_seconds());
	if (v == Publishers::Verdict::Refresh) {
		fetch_worker_pids();
		v = publishers_.classify(be_pid, now_seconds());
	}
	return v == Publishers::Verdict::Trusted;
}

void Listener::deliver(const Event &e) {
	std::string line = format_event(e);
	line += '\n';
	if (fwrite(line.data(), 1, line.size(), stdout) != line.size()) {
		say("cannot write to stdout: %s", strerror(errno));
		throw Exit{kExitInternal};
	}
	tracker_.delivered(e);
	dirty_ = true;
}

void Listener::flush_and_save() {
	if (!dirty_)
		return;
	if (fflush(stdout) != 0 || ferror(stdout)) {
		say("cannot write to stdout: %s", strerror(errno));
		throw Exit{kExitInternal};
	}
	if (!opt_.state_file.empty()) {
		std::string err;
		State st;
		st.pos = tracker_.last_pos();
		st.epoch = tracker_.epoch();
		st.identity = identity_;
		if (!write_state_file(opt_.state_file, st, opt_.fsync, err)) {
			say("%s", err.c_str());
			throw Exit{kExitStateFile};
		}
	}
	dirty_ = false;
}

// Replay from the last position until caught up, and at least up to target.
void Listener::catch_up(std::int64_t target) {
	std::string batch = std::to_string(opt_.batch);
	std::int64_t first = tracker_.last_pos();
	long long replayed = 0;
	for (;;) {
		std::string after = std::to_string(tracker_.last_pos());
		std::string epoch = tracker_.epoch() ? std::to_string(*tracker_.epoch()) : "";
		// [epochs] after_epoch: the server raises OB003 if the position was not preserved; the
		// identity (an InitPlan: once per query) tells a re-created outbox while connected
		const char *params[] = {after.c_str(), channels_literal_.c_str(), batch.c_str(),
		                        tracker_.epoch() ? epoch.c_str() : nullptr};
		PGresult *res = have_epochs_ ? exec("SELECT r.pos, r.seq, r.id, r.channel, r.key, r.type, r.payload::text, r.epoch,"
		                                    " (SELECT outbox.identity())"
		                                    " FROM outbox.replay($1::bigint, $2::text[], $3::integer, $4::bigint) r",
		                                    4, params)
		                             : exec("SELECT pos, seq, id, channel, key, type, payload::text, NULL, NULL"
		                                    " FROM outbox.replay($1::bigint, $2::text[], $3::integer)",
		                                    3, params);
		int n = PQntuples(res);
		if (n > 0 && have_epochs_) {
			std::string id = PQgetisnull(res, 0, 8) ? "" : PQgetvalue(res, 0, 8);
			try {
				check_identity(id.c_str());
			} catch (...) {
				PQclear(res);
				throw;
			}
		}
		for (int i = 0; i < n; i++) {
			Event e;
			e.pos = parse_int64(PQgetvalue(res, i, 0)).value_or(0);
			e.seq = parse_int64(PQgetvalue(res, i, 1)).value_or(0);
			e.id = parse_int64(PQgetvalue(res, i, 2)).value_or(0);
			e.channel = PQgetvalue(res, i, 3);
			if (!PQgetisnull(res, i, 4))
				e.key = std::string(PQgetvalue(res, i, 4));
			if (!PQgetisnull(res, i, 5))
				e.type = std::string(PQgetvalue(res, i, 5));
			if (!PQgetisnull(res, i, 6))
				e.payload = compact_jsonb_text(PQgetvalue(res, i, 6)); // as the envelopes carry it
			if (!PQgetisnull(res, i, 7))
				e.epoch = parse_int64(PQgetvalue(res, i, 7));
			if (e.pos <= tracker_.last_pos()) {
				PQclear(res);
				say("outbox.replay() returned position %lld after %lld", (long long)e.pos,
				    (long long)tracker_.last_pos());
				throw Exit{kExitInternal};
			}
			deliver(e);
			replayed++;
		}
		PQclear(res);
		flush_and_save();
		if (n < opt_.batch) {
			if (tracker_.last_pos() < target)
				throw Lost{"position " + std::to_string(target) + " was notified but outbox.replay() does not return it"};
			break;
		}
	}
	if (opt_.verbose || target == INT64_MIN)
		say("state=replayed events=%lld from_pos=%lld to_pos=%lld", replayed, (long long)first,
		    (long long)tracker_.last_pos());
}

void Listener::process_notifications() {
	PGnotify *n;
	bool doorbell = false; // a notification we cannot trust rang: replay once, after this batch
	while ((n = PQnotifies(conn_)) != nullptr) {
		std::string channel = n->relname, payload = n->extra;
		int be_pid = n->be_pid;
		PQfreemem(n);
		Action a = on_notification(tracker_, trusted(be_pid), channel, payload);
		switch (a.kind) {
		case Action::Doorbell:
			// not from a drain worker: whatever it says, it only rings the bell
			doorbells_++;
			if (opt_.verbose)
				say("notification on \"%s\" from backend %d, not a drain worker: treated as a doorbell",
				    channel.c_str(), be_pid);
			doorbell = true;
			break;
		case Action::Ignore:
			if (!a.why.empty())
				say("warning: ignoring a notification on \"%s\" that is not an outbox event: %s", channel.c_str(),
				    a.why.c_str());
			break;
		case Action::Deliver:
			deliver(a.event);
			break;
		case Action::ReplayTo: {
			const Event &e = a.event;
			if (opt_.verbose) {
				auto known = tracker_.seq(e.channel);
				if (e.epoch && tracker_.epoch() && *e.epoch > *tracker_.epoch())
					// [epochs] not a gap: replay passes after_epoch, the server says if the position was kept
					say("position %lld (channel \"%s\" seq %lld) is of epoch %lld, newer than epoch %lld of position "
					    "%lld: replaying with after_epoch",
					    (long long)e.pos, e.channel.c_str(), (long long)e.seq, (long long)*e.epoch,
					    (long long)*tracker_.epoch(), (long long)tracker_.last_pos());
				else if (e.truncated && known && e.seq == *known + 1)
					// the next event of its channel: no gap, only its payload did not fit in a NOTIFY
					say("position %lld (channel \"%s\" seq %lld) arrived truncated (its payload does not fit in a "
					    "notification): reading it by replay",
					    (long long)e.pos, e.channel.c_str(), (long long)e.seq);
				else
					say("gap before position %lld (channel \"%s\" seq %lld, last seen seq %s%s): replaying",
					    (long long)e.pos, e.channel.c_str(), (long long)e.seq,
					    known ? std::to_string(*known).c_str() : "unknown", e.truncated ? ", payload truncated" : "");
			}
			flush_and_save();
			catch_up(a.target);
			break;
		}
		case Action::Resync: {
			const Event &e = a.event;
			flush_and_save();
			throw Diverged{kExitResync,
			               "notification of position " + std::to_string(e.pos) + ", channel \"" + e.channel + "\" seq " +
			                   std::to_string(e.seq) + " contradicts what was printed (last position " +
			                   std::to_string(tracker_.last_pos()) + ", channel seq " +
			                   std::to_string(tracker_.seq(e.channel).value_or(-1)) +
			                   "): the outbox was reset or restored",
			               ""};
		}
		}
	}
	flush_and_save();
	if (doorbell)
		catch_up(INT64_MIN + 1); // no target: whatever replay returns is the truth
}

void Listener::live() {
	if (tracker_.epoch())
		say("state=live pos=%lld epoch=%lld%s", (long long)tracker_.last_pos(), (long long)*tracker_.epoch(),
		    resyncs_ ? (" resyncs=" + std::to_string(resyncs_)).c_str() : "");
	else
		say("state=live pos=%lld%s", (long long)tracker_.last_pos(),
		    resyncs_ ? (" resyncs=" + std::to_string(resyncs_)).c_str() : "");
	process_notifications(); // those that arrived during the replay
	while (!stop_requested) {
		struct pollfd pfd = {PQsocket(conn_), POLLIN, 0};
		if (pfd.fd < 0)
			throw Lost{"connection has no socket"};
		int rc = poll(&pfd, 1, 1000);
		if (rc < 0 && errno != EINTR)
			throw Lost{std::string("poll: ") + strerror(errno)};
		if (rc <= 0)
			continue;
		if (!PQconsumeInput(conn_) || PQstatus(conn_) != CONNECTION_OK)
			throw Lost{trim(PQerrorMessage(conn_))};
		process_notifications();
	}
}

void Listener::sleep_for(double seconds) {
	auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
	while (!stop_requested && std::chrono::steady_clock::now() < until)
		usleep(20000);
}

int Listener::run() {
	channels_literal_ = text_array_literal(opt_.channels);
	if (!opt_.state_file.empty()) {
		// a missing directory: say so (rather than fail to create the lock file in it)
		auto slash = opt_.state_file.rfind('/');
		std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : opt_.state_file.substr(0, slash));
		struct stat st;
		int rc = stat(dir.c_str(), &st);
		if (rc != 0 || !S_ISDIR(st.st_mode)) {
			const char *why = rc == 0 ? "is not a directory" : errno == ENOENT ? "does not exist" : strerror(errno);
			say("the directory \"%s\" of state file \"%s\" %s%s", dir.c_str(), opt_.state_file.c_str(), why,
			    rc != 0 && errno == ENOENT ? ": create it first" : "");
			return kExitStateFile;
		}
		std::string lock_path = opt_.state_file + ".lock";
		lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (lock_fd_ < 0 || flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
			say("cannot lock \"%s\": %s", lock_path.c_str(),
			    errno == EWOULDBLOCK ? "another pg_outbox_listen uses this state file" : strerror(errno));
			return kExitStateFile;
		}
		std::string err;
		auto saved = read_state_file(opt_.state_file, err);
		if (!err.empty()) {
			say("%s", err.c_str());
			return kExitStateFile;
		}
		if (saved) {
			tracker_ = Tracker(saved->pos, saved->epoch);
			identity_ = saved->identity;
			start_known_ = true;
			std::string ep = saved->epoch ? " (epoch " + std::to_string(*saved->epoch) + ")" : std::string();
			say("resuming after position %lld from state file \"%s\"%s%s%s", (long long)saved->pos,
			    opt_.state_file.c_str(), ep.c_str(),
			    saved->version == 1 ? " (version 1: no epoch, the first replay cannot check that the position was kept)"
			                        : "",
			    opt_.start != Start::Default ? " (--from-pos/--from-now apply only without a state file)" : "");
		}
	}
	if (!start_known_ && opt_.start == Start::Pos) {
		tracker_ = Tracker(opt_.from_pos);
		start_known_ = true;
	}
	build_params();
	try {
		reconnect_loop();
	} catch (const Exit &) {
		try { // keep what was printed
			flush_and_save();
		} catch (const Exit &) {
		}
		disconnect();
		throw;
	}
	flush_and_save();
	disconnect();
	say("state=stopped pos=%lld doorbells=%lld resyncs=%lld", (long long)tracker_.last_pos(), doorbells_, resyncs_);
	return kExitOk;
}

void Listener::reconnect_loop() {
	int attempt = 0;
	std::uniform_real_distribution<double> jitter(0.0, 1.0);
	while (!stop_requested) {
		try {
			connect();
			setup_session();
			catch_up(INT64_MIN);
			attempt = 0;
			live();
		} catch (const Diverged &dv) {
			if (!opt_.resync) {
				say("%s", dv.why.c_str());
				if (!dv.server.empty())
					say("server: %s", dv.server.c_str());
				say("the consumer must resynchronise from the source of truth, then run again with --resync (or remove "
				    "the state file and start with --from-now)%s",
				    dv.code == kExitDiverged ? "; exit code 8: the history diverged" : "");
				throw Exit{dv.code};
			}
			flush_and_save(); // what was printed before
			resync(dv);
			disconnect();
			attempt = 0;
		} catch (const Lost &l) {
			double d = backoff_delay(attempt++, opt_.max_backoff, jitter(rng_));
			say("state=disconnected pos=%lld: %s; reconnecting in %.1f s", (long long)tracker_.last_pos(),
			    l.why.c_str(), d);
			disconnect();
			sleep_for(d);
		}
	}
}

} // namespace

int main(int argc, char **argv) {
	std::vector<std::string> args(argv + 1, argv + argc);
	ParseResult pr = parse_args(args);
	if (pr.help) {
		fputs(usage_text(), stdout);
		return kExitOk;
	}
	if (!pr.options) {
		fprintf(stderr, "pg_outbox_listen: %s\nTry \"pg_outbox_listen --help\" for more information.\n",
		        pr.error.c_str());
		return kExitUsage;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, nullptr);
	sigaction(SIGTERM, &sa, nullptr);
	signal(SIGPIPE, SIG_IGN);
	try {
		Listener l(std::move(*pr.options));
		return l.run();
	} catch (const Lost &l) {
		say("unexpected error: %s", l.why.c_str());
		return kExitInternal;
	} catch (const Exit &e) {
		return e.code;
	} catch (const std::exception &e) {
		say("unexpected error: %s", e.what());
		return kExitInternal;
	}
}
