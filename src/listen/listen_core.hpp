// listen_core.hpp — the logic of pg_outbox_listen that needs no database: arguments, envelope
// decoding, output lines, gap detection, the state file, backoff. Pure C++ (Boost.JSON and
// POSIX, no libpq, no Postgres header), unit-tested in test/unit/listen_test.cpp.
#pragma once

#ifdef POSTGRES_H
#error "listen_core.hpp is pure C++: it includes no Postgres header"
#endif

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pg_outbox::listen {

// Exit codes (documented in the README and in --help).
enum ExitCode : int {
	kExitOk = 0,             // stopped by SIGINT/SIGTERM after saving its position
	kExitInternal = 1,       // unexpected failure (stdout closed, protocol surprise)
	kExitUsage = 2,          // bad arguments
	kExitConnection = 3,     // bad connection string, or the first connection failed
	kExitNoExtension = 4,    // the database has no usable pg_outbox (missing, or no privilege)
	kExitUnknownChannel = 5, // --strict-channels and a channel never had an event
	kExitResync = 6,         // replay point outside the history (OB001/OB002): resynchronise
	kExitStateFile = 7,      // state file unreadable, corrupt, unwritable or in use
	kExitDiverged = 8,       // [epochs] the history it printed was not preserved (OB003, identity changed)
};

enum class Start { Default, Pos, Now };

struct Options {
	std::string conninfo;
	std::vector<std::string> channels; // unique, in the order given
	Start start = Start::Default;
	std::int64_t from_pos = 0;
	std::string state_file;   // empty: none
	int batch = 1000;         // max_events per replay call
	double max_backoff = 10;  // seconds
	bool strict_channels = false;
	bool fsync = true;
	bool verbose = false;
	bool resync = false; // [epochs] on divergence (exit 6 or 8): continue from the current head instead
};

struct ParseResult {
	std::optional<Options> options; // set when the arguments are good
	bool help = false;              // --help: print usage, exit 0
	std::string error;              // otherwise: why not
};
ParseResult parse_args(const std::vector<std::string> &args); // args without argv[0]
const char *usage_text() noexcept;

// One published event, from a notification or from outbox.replay().
struct Event {
	std::int64_t pos = 0, seq = 0, id = 0;
	std::string channel;
	std::optional<std::string> key, type;
	std::optional<std::string> payload; // raw JSON text, as jsonb prints it
	bool truncated = false;             // the notification left the payload (and maybe key/type) out
	std::optional<std::int64_t> epoch;  // [epochs] the epoch it was published in (1.2 and later)
};

// Decode the envelope of a notification on channel. Returns false (and why) if it is not an
// outbox envelope.
bool decode_envelope(std::string_view channel, std::string_view text, Event &out, std::string &error);

// The raw text of member `key` of the top-level JSON object `text` (which must be valid JSON),
// or nothing.
std::optional<std::string_view> raw_member(std::string_view text, std::string_view key);

// One output line (without the newline):
//   {"pos":7,"channel":"orders","seq":3,"id":42,"key":"k","type":"t","payload":{...}}
// key, type and payload are null when absent; payload is the event's JSON as jsonb prints it.
std::string format_event(const Event &e);
// jsonb's text output (payload::text) in pg_outbox's canonical form, the form of the envelopes:
// the spaces jsonb writes after ':' and ',' dropped (none outside strings is meaningful).
std::string compact_jsonb_text(std::string_view text);

// A PostgreSQL text[] literal: {"a","b\"c"}.
std::string text_array_literal(const std::vector<std::string> &items);

// Parse a decimal int64 (whole string). nullopt if it is not one.
std::optional<std::int64_t> parse_int64(std::string_view s) noexcept;

// Per-connection bookkeeping: the last delivered position, and the last seq seen per channel.
class Tracker {
public:
	enum class Verdict {
		Duplicate,    // pos already delivered: drop
		Deliver,      // the next event of its channel: print it
		Gap,          // seq jumped, seq not known yet, truncated, or a newer epoch: replay up to it
		Inconsistent, // positions or seqs went backwards: the outbox was reset
	};
	explicit Tracker(std::int64_t last_pos = 0, std::optional<std::int64_t> epoch = std::nullopt)
	    : last_pos_(last_pos), epoch_(epoch) {
	}
	Verdict classify(const Event &e) const;
	void delivered(const Event &e);
	void set_seq(const std::string &channel, std::int64_t seq) {
		seqs_[channel] = seq;
	}
	std::optional<std::int64_t> seq(const std::string &channel) const;
	std::int64_t last_pos() const noexcept {
		return last_pos_;
	}
	// [epochs] the epoch of the event at last_pos (or the one the consumer started in); nullopt:
	// not known (an old state file, or a server without epochs). delivered() adopts the event's.
	std::optional<std::int64_t> epoch() const noexcept {
		return epoch_;
	}
	void set_epoch(std::optional<std::int64_t> e) noexcept {
		epoch_ = e;
	}

private:
	std::int64_t last_pos_;
	std::optional<std::int64_t> epoch_;
	std::map<std::string, std::int64_t> seqs_;
};

// Who sent a notification. NOTIFY needs no privilege: any role that can connect may send any
// payload on any channel, so an envelope is trusted only when the notifying backend's PID
// (PGnotify.be_pid) is one of the database's drain workers (outbox.worker_pids()). Anything
// else is a doorbell: the listener replays after its last position, which is safe whatever the
// payload said. The list is fetched at connect; an unknown PID makes it fetch the list again,
// at most once per min_refresh seconds (a flood of forged notifications costs one query per
// interval, not one per notification); a list older than max_age is fetched again before it
// vouches for a PID (a worker's PID may have been reused by another backend since).
class Publishers {
public:
	enum class Verdict {
		Trusted,  // from a drain worker: use the envelope
		Doorbell, // from anyone else: replay, ignore the payload
		Refresh,  // fetch outbox.worker_pids() again (set()), then ask again
	};
	explicit Publishers(double min_refresh = 1.0, double max_age = 30.0)
	    : min_refresh_(min_refresh), max_age_(max_age) {
	}
	Verdict classify(int pid, double now) const;
	void set(std::vector<int> pids, double now); // a fresh list, fetched at now
	void forget() noexcept {                     // a new connection: fetch before trusting anyone
		known_ = false;
		pids_.clear();
	}
	bool known() const noexcept {
		return known_;
	}
	const std::vector<int> &pids() const noexcept {
		return pids_;
	}

private:
	double min_refresh_, max_age_;
	bool known_ = false;
	double fetched_at_ = 0;
	std::vector<int> pids_;
};

// The text of a PostgreSQL integer[] ("{1,2}", "{}"). nullopt if it is not one (NULLs included).
std::optional<std::vector<int>> parse_int_array(std::string_view text);

// What to do with one notification (main.cpp does it).
struct Action {
	enum Kind {
		Ignore,   // a worker's notification that is not an envelope (warn), or a duplicate
		Deliver,  // print the envelope's event
		ReplayTo, // replay at least up to target (a gap before a worker's envelope)
		Doorbell, // not from a drain worker: replay after the last position, payload unused
		Resync,   // a worker's envelope contradicts what was printed: the outbox was reset
	} kind = Ignore;
	std::int64_t target = 0; // ReplayTo
	Event event;             // Deliver, ReplayTo, Resync: the decoded envelope
	std::string why;         // Ignore: why it is not an envelope
};
// from_worker: the sender's be_pid is a drain worker's (Publishers). Nothing of an untrusted
// notification is decoded: it cannot move the position, print a line or name a replay target.
Action on_notification(const Tracker &tracker, bool from_worker, std::string_view channel, std::string_view payload);

// The state file (the format is specified in the README, "The state file"; the Python client
// reads and writes the same, test/unit/data/state/ holds the samples both are tested against):
//   pg_outbox_listen state 2\n
//   pos N\n                 the last position the consumer processed (required)
//   epoch E\n               the epoch of that position (optional: unknown)
//   identity ID\n           outbox.identity() of the outbox it belongs to (optional: unknown)
// in this order, nothing else. Version 1 ("pg_outbox_listen state 1\npos N\n", written before
// 1.3) is read as a position without epoch and identity.
struct State {
	std::int64_t pos = 0;
	std::optional<std::int64_t> epoch;
	std::string identity; // empty: not known
	int version = 2;      // of the file it was read from (written: always 2)
	bool operator==(const State &o) const {
		return pos == o.pos && epoch == o.epoch && identity == o.identity;
	}
};
constexpr std::size_t kMaxIdentityBytes = 128;
// An identity a state file can hold: 1 to 128 bytes of [A-Za-z0-9._:-] (a UUID is 36).
bool valid_identity(std::string_view id) noexcept;
std::string format_state(const State &st); // st.identity must be valid or empty
// nullopt (and why, when why is given) unless content is a whole version 1 or 2 state file.
std::optional<State> parse_state(std::string_view content, std::string *why = nullptr);
// Read it: nullopt+empty error if the file does not exist; nullopt+error if it is unreadable
// or corrupt.
std::optional<State> read_state_file(const std::string &path, std::string &error);
// Replace it atomically (write path.tmp, fsync, rename, fsync the directory). False + error.
bool write_state_file(const std::string &path, const State &st, bool do_fsync, std::string &error);

// Seconds to wait before reconnect attempt number `attempt` (0 = the first after a loss):
// 0, then 0.1 s doubling up to max_backoff; jitter in [0,1) spreads it by up to +-20%.
double backoff_delay(int attempt, double max_backoff, double jitter);

} // namespace pg_outbox::listen
