// listen_core.cpp — see listen_core.hpp. No libpq, no Postgres header.
#include "listen/listen_core.hpp"
#include "envelope.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace pg_outbox::listen {

// One of the messages of limits.hpp, filled in (printf formats: the module raises the same text).
template <typename... Args> static std::string format(const char *fmt, Args... args) {
	char buf[512];
	int n = std::snprintf(buf, sizeof buf, fmt, args...);
	return std::string(buf, n < 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1));
}

const char *usage_text() noexcept {
	return "Usage: pg_outbox_listen CONNINFO --channel NAME [--channel NAME ...] [OPTIONS]\n"
	       "\n"
	       "Prints every published pg_outbox event of the channels as one JSON line on stdout, in\n"
	       "position order, without gaps: it LISTENs, replays what it missed with outbox.replay(),\n"
	       "then follows live notifications, and does so again after every reconnect.\n"
	       "\n"
	       "Options:\n"
	       "  -c, --channel NAME     channel to follow (repeatable, at least one)\n"
	       "      --from-pos N       start after position N (when there is no state file yet)\n"
	       "      --from-now         start after the latest published position (the default\n"
	       "                         when there is no state file yet)\n"
	       "  -s, --state FILE       keep the last printed position (with its epoch and the\n"
	       "                         outbox identity) in FILE and resume from it\n"
	       "      --batch N          events per replay query (default 1000)\n"
	       "      --max-backoff SEC  longest wait between reconnect attempts (default 10)\n"
	       "      --strict-channels  exit if a channel never had an event (default: warn)\n"
	       "      --no-fsync         do not fsync the state file (faster, less durable)\n"
	       "      --resync           when the history it printed is gone (exit codes 6 and 8),\n"
	       "                         continue after the current head instead of exiting, say so\n"
	       "                         on stderr (state=resync) and rewrite the state file\n"
	       "  -v, --verbose          report every replay on stderr\n"
	       "  -h, --help             show this help\n"
	       "\n"
	       "Exit codes: 0 stopped by SIGINT/SIGTERM; 1 unexpected failure; 2 bad arguments;\n"
	       "3 bad connection string or first connection failed; 4 pg_outbox missing or not\n"
	       "usable in the database; 5 unknown channel (--strict-channels); 6 replay point outside\n"
	       "the history (older than retention, or ahead of the outbox): resynchronise; 7 state file\n"
	       "unreadable, corrupt, unwritable or in use; 8 the history diverged: positions it printed\n"
	       "were handed out again to other events (failover to an asynchronous standby, recovery,\n"
	       "restore: OB003) or the outbox is another one (identity changed: re-created, or another\n"
	       "database): resynchronise, then run with --resync.\n";
}

std::optional<std::int64_t> parse_int64(std::string_view s) noexcept {
	std::int64_t v = 0;
	if (s.empty())
		return std::nullopt;
	auto res = std::from_chars(s.data(), s.data() + s.size(), v);
	if (res.ec != std::errc() || res.ptr != s.data() + s.size())
		return std::nullopt;
	return v;
}

static std::optional<double> parse_double(const std::string &s) {
	try {
		size_t used = 0;
		double v = std::stod(s, &used);
		if (used != s.size() || !std::isfinite(v))
			return std::nullopt;
		return v;
	} catch (...) {
		return std::nullopt;
	}
}

ParseResult parse_args(const std::vector<std::string> &args) {
	ParseResult r;
	Options o;
	bool have_conninfo = false;
	auto fail = [&](std::string why) {
		r.error = std::move(why);
		return r;
	};
	for (size_t i = 0; i < args.size(); i++) {
		const std::string &a = args[i];
		std::string name = a, value;
		bool inline_value = false;
		if (a.rfind("--", 0) == 0) {
			auto eq = a.find('=');
			if (eq != std::string::npos) {
				name = a.substr(0, eq);
				value = a.substr(eq + 1);
				inline_value = true;
			}
		}
		auto need_value = [&]() -> bool {
			if (inline_value)
				return true;
			if (i + 1 >= args.size())
				return false;
			value = args[++i];
			return true;
		};
		if (name == "-h" || name == "--help") {
			r.help = true;
			return r;
		} else if (name == "-c" || name == "--channel") {
			if (!need_value())
				return fail("option " + name + " needs a channel name");
			switch (check_channel(value)) {
			case ChannelCheck::Empty:
				return fail(format(msg::kChannelEmpty, "channel name"));
			case ChannelCheck::TooLong:
				return fail(format(msg::kChannelTooLong, "channel name", value.size()));
			case ChannelCheck::Ok:
				break;
			}
			if (std::find(o.channels.begin(), o.channels.end(), value) == o.channels.end())
				o.channels.push_back(value);
		} else if (name == "--from-pos") {
			if (!need_value())
				return fail("option --from-pos needs a position");
			auto v = parse_int64(value);
			if (!v || *v < 0)
				return fail("--from-pos must be a position, 0 or more, not \"" + value + "\"");
			if (o.start == Start::Now)
				return fail("--from-pos and --from-now cannot be combined");
			o.start = Start::Pos;
			o.from_pos = *v;
		} else if (name == "--from-now") {
			if (inline_value)
				return fail("option --from-now takes no value");
			if (o.start == Start::Pos)
				return fail("--from-pos and --from-now cannot be combined");
			o.start = Start::Now;
		} else if (name == "-s" || name == "--state") {
			if (!need_value() || value.empty())
				return fail("option " + name + " needs a file name");
			o.state_file = value;
		} else if (name == "--batch") {
			if (!need_value())
				return fail("option --batch needs a number");
			auto v = parse_int64(value);
			if (!v || *v < 1 || *v > 1000000)
				return fail("--batch must be 1 to 1000000, not \"" + value + "\"");
			o.batch = (int)*v;
		} else if (name == "--max-backoff") {
			if (!need_value())
				return fail("option --max-backoff needs seconds");
			auto v = parse_double(value);
			if (!v || *v < 0.1 || *v > 3600)
				return fail("--max-backoff must be 0.1 to 3600 seconds, not \"" + value + "\"");
			o.max_backoff = *v;
		} else if (name == "--strict-channels" || name == "--no-fsync" || name == "-v" || name == "--verbose" ||
		           name == "--resync") {
			if (inline_value)
				return fail("option " + name + " takes no value");
			if (name == "--strict-channels")
				o.strict_channels = true;
			else if (name == "--resync")
				o.resync = true;
			else if (name == "--no-fsync")
				o.fsync = false;
			else
				o.verbose = true;
		} else if (!a.empty() && a[0] == '-') {
			return fail("unknown option \"" + a + "\"");
		} else if (!have_conninfo) {
			o.conninfo = a;
			have_conninfo = true;
		} else {
			return fail("unexpected argument \"" + a + "\" (the connection string was \"" + o.conninfo + "\")");
		}
	}
	if (!have_conninfo)
		return fail("no connection string given (e.g. \"dbname=app\")");
	if (o.channels.empty())
		return fail("no channel given: use --channel NAME at least once");
	r.options = std::move(o);
	return r;
}

// ---- JSON ----

namespace {
size_t skip_ws(std::string_view t, size_t i) {
	while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
		i++;
	return i;
}
// t[i] is '"': index after the closing quote.
size_t skip_string(std::string_view t, size_t i) {
	for (i++; i < t.size(); i++) {
		if (t[i] == '\\')
			i++;
		else if (t[i] == '"')
			return i + 1;
	}
	return t.size();
}
// Index after the value that starts at i.
size_t skip_value(std::string_view t, size_t i) {
	if (i >= t.size())
		return i;
	if (t[i] == '"')
		return skip_string(t, i);
	if (t[i] == '{' || t[i] == '[') {
		int depth = 0;
		while (i < t.size()) {
			char c = t[i];
			if (c == '"') {
				i = skip_string(t, i);
				continue;
			}
			if (c == '{' || c == '[')
				depth++;
			else if (c == '}' || c == ']') {
				if (--depth == 0)
					return i + 1;
			}
			i++;
		}
		return i;
	}
	while (i < t.size() && t[i] != ',' && t[i] != '}' && t[i] != ']' && t[i] != ' ' && t[i] != '\t' &&
	       t[i] != '\n' && t[i] != '\r')
		i++;
	return i;
}
} // namespace

std::optional<std::string_view> raw_member(std::string_view t, std::string_view key) {
	size_t i = skip_ws(t, 0);
	if (i >= t.size() || t[i] != '{')
		return std::nullopt;
	i = skip_ws(t, i + 1);
	while (i < t.size() && t[i] == '"') {
		size_t kend = skip_string(t, i);
		// Keys of our envelopes need no unescaping; compare the raw text between the quotes.
		std::string_view k = t.substr(i + 1, kend - i - 2);
		i = skip_ws(t, kend);
		if (i >= t.size() || t[i] != ':')
			return std::nullopt;
		i = skip_ws(t, i + 1);
		size_t vend = skip_value(t, i);
		if (k == key)
			return t.substr(i, vend - i);
		i = skip_ws(t, vend);
		if (i < t.size() && t[i] == ',')
			i = skip_ws(t, i + 1);
	}
	return std::nullopt;
}

bool decode_envelope(std::string_view channel, std::string_view text, Event &out, std::string &error) {
	boost::system::error_code ec;
	boost::json::value v = boost::json::parse(boost::json::string_view(text.data(), text.size()), ec);
	if (ec) {
		error = "not JSON: " + ec.message();
		return false;
	}
	const boost::json::object *obj = v.if_object();
	if (!obj) {
		error = "not a JSON object";
		return false;
	}
	auto get_int = [&](const char *name, std::int64_t &dst) {
		const boost::json::value *m = obj->if_contains(name);
		if (!m || (!m->is_int64() && !m->is_uint64()))
			return false;
		dst = m->is_int64() ? m->get_int64() : (std::int64_t)m->get_uint64();
		return dst >= 0;
	};
	Event e;
	if (!get_int("id", e.id) || !get_int("pos", e.pos) || !get_int("seq", e.seq) || e.pos < 1 || e.seq < 1) {
		error = "no \"id\", \"pos\" and \"seq\" (not an outbox envelope)";
		return false;
	}
	e.channel.assign(channel.data(), channel.size());
	for (auto [name, dst] : {std::pair<const char *, std::optional<std::string> *>{"key", &e.key}, {"type", &e.type}}) {
		const boost::json::value *m = obj->if_contains(name);
		if (!m)
			continue;
		if (!m->is_string()) {
			error = std::string("\"") + name + "\" is not a string";
			return false;
		}
		*dst = std::string(m->get_string().data(), m->get_string().size());
	}
	if (const boost::json::value *t = obj->if_contains("truncated"))
		e.truncated = t->is_bool() && t->get_bool();
	if (obj->contains("epoch")) { // [epochs] 1.2 and later
		std::int64_t ep = 0;
		if (!get_int("epoch", ep)) {
			error = "\"epoch\" is not a number, 0 or more";
			return false;
		}
		e.epoch = ep;
	}
	if (obj->contains("payload")) {
		auto raw = raw_member(text, "payload");
		if (!raw) {
			error = "cannot find the payload";
			return false;
		}
		e.payload = std::string(*raw);
	}
	out = std::move(e);
	return true;
}

std::string compact_jsonb_text(std::string_view text) {
	std::string out;
	out.reserve(text.size());
	bool in_string = false;
	for (std::size_t k = 0; k < text.size(); k++) {
		char c = text[k];
		if (in_string) {
			out += c;
			if (c == '\\' && k + 1 < text.size())
				out += text[++k];
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
			out += c;
		} else if (c != ' ') {
			out += c;
		}
	}
	return out;
}

std::string format_event(const Event &e) {
	std::string out;
	out.reserve(96 + e.channel.size() + (e.payload ? e.payload->size() : 0));
	out += "{\"pos\":";
	json::append_int(out, e.pos);
	out += ",\"channel\":";
	json::append_string(out, e.channel);
	out += ",\"seq\":";
	json::append_int(out, e.seq);
	out += ",\"id\":";
	json::append_int(out, e.id);
	out += ",\"key\":";
	if (e.key)
		json::append_string(out, *e.key);
	else
		out += "null";
	out += ",\"type\":";
	if (e.type)
		json::append_string(out, *e.type);
	else
		out += "null";
	out += ",\"payload\":";
	out += e.payload ? *e.payload : std::string("null");
	out += '}';
	return out;
}

std::string text_array_literal(const std::vector<std::string> &items) {
	std::string out = "{";
	for (size_t i = 0; i < items.size(); i++) {
		if (i)
			out += ',';
		out += '"';
		for (char c : items[i]) {
			if (c == '"' || c == '\\')
				out += '\\';
			out += c;
		}
		out += '"';
	}
	out += '}';
	return out;
}

// ---- gap detection ----

std::optional<std::int64_t> Tracker::seq(const std::string &channel) const {
	auto it = seqs_.find(channel);
	if (it == seqs_.end())
		return std::nullopt;
	return it->second;
}

Tracker::Verdict Tracker::classify(const Event &e) const {
	auto known = seq(e.channel);
	// [epochs] An event of a newer epoch than the last one delivered: the history may have forked
	// at or before the last position (an event at or below it in a newer epoch proves it). Replay
	// decides: it is passed after_epoch, and raises OB003 if the position was not preserved.
	if (e.epoch && epoch_ && *e.epoch > *epoch_)
		return Verdict::Gap;
	if (e.pos <= last_pos_) {
		// An event at or below the last position must be one we delivered (or skipped on
		// purpose, from another channel): its seq cannot be newer than what we saw.
		if (known && e.seq > *known)
			return Verdict::Inconsistent;
		return Verdict::Duplicate;
	}
	if (known && e.seq <= *known)
		return Verdict::Inconsistent; // a new position with an old seq: seqs restarted
	if (e.truncated || !known || e.seq != *known + 1)
		return Verdict::Gap;
	return Verdict::Deliver;
}

void Tracker::delivered(const Event &e) {
	last_pos_ = e.pos;
	seqs_[e.channel] = e.seq;
	if (e.epoch)
		epoch_ = e.epoch;
}

// ---- who sent a notification ----

Publishers::Verdict Publishers::classify(int pid, double now) const {
	if (!known_)
		return Verdict::Refresh;
	bool listed = pid > 0 && std::find(pids_.begin(), pids_.end(), pid) != pids_.end();
	double age = now - fetched_at_;
	if (age < 0) // the clock went backwards: treat the list as fetched now, ask no more often
		age = 0;
	if (listed)
		return age < max_age_ ? Verdict::Trusted : Verdict::Refresh;
	return age >= min_refresh_ ? Verdict::Refresh : Verdict::Doorbell;
}

void Publishers::set(std::vector<int> pids, double now) {
	pids_ = std::move(pids);
	fetched_at_ = now;
	known_ = true;
}

std::optional<std::vector<int>> parse_int_array(std::string_view t) {
	if (t.size() < 2 || t.front() != '{' || t.back() != '}')
		return std::nullopt;
	std::vector<int> out;
	t = t.substr(1, t.size() - 2);
	if (t.empty())
		return out;
	size_t start = 0;
	for (;;) {
		size_t comma = t.find(',', start);
		std::string_view item = t.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
		auto v = parse_int64(item);
		if (!v || *v < INT32_MIN || *v > INT32_MAX)
			return std::nullopt;
		out.push_back((int)*v);
		if (comma == std::string_view::npos)
			break;
		start = comma + 1;
	}
	return out;
}

Action on_notification(const Tracker &tracker, bool from_worker, std::string_view channel, std::string_view payload) {
	Action a;
	if (!from_worker) {
		a.kind = Action::Doorbell;
		return a;
	}
	if (!decode_envelope(channel, payload, a.event, a.why)) {
		a.kind = Action::Ignore;
		return a;
	}
	switch (tracker.classify(a.event)) {
	case Tracker::Verdict::Duplicate:
		a.kind = Action::Ignore;
		break;
	case Tracker::Verdict::Deliver:
		a.kind = Action::Deliver;
		break;
	case Tracker::Verdict::Gap:
		a.kind = Action::ReplayTo;
		a.target = a.event.pos;
		break;
	case Tracker::Verdict::Inconsistent:
		a.kind = Action::Resync;
		break;
	}
	return a;
}

// ---- state file ----

static constexpr std::string_view kStateHeader1 = "pg_outbox_listen state 1\n";
static constexpr std::string_view kStateHeader2 = "pg_outbox_listen state 2\n";
static constexpr std::size_t kMaxStateBytes = 4096;

bool valid_identity(std::string_view id) noexcept {
	if (id.empty() || id.size() > kMaxIdentityBytes)
		return false;
	for (char c : id)
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == ':' || c == '-'))
			return false;
	return true;
}

std::string format_state(const State &st) {
	std::string out(kStateHeader2);
	out += "pos " + std::to_string(st.pos) + "\n";
	if (st.epoch)
		out += "epoch " + std::to_string(*st.epoch) + "\n";
	if (!st.identity.empty())
		out += "identity " + st.identity + "\n";
	return out;
}

std::optional<State> parse_state(std::string_view content, std::string *why) {
	auto fail = [&](const char *w) -> std::optional<State> {
		if (why)
			*why = w;
		return std::nullopt;
	};
	if (content.size() > kMaxStateBytes)
		return fail("too long");
	State st;
	if (content.substr(0, kStateHeader2.size()) == kStateHeader2)
		st.version = 2;
	else if (content.substr(0, kStateHeader1.size()) == kStateHeader1)
		st.version = 1;
	else
		return fail("no \"pg_outbox_listen state 1\" or \"pg_outbox_listen state 2\" header");
	content.remove_prefix(kStateHeader2.size()); // both headers have the same length
	if (content.empty() || content.back() != '\n')
		return fail("the last line is incomplete (torn write?)");
	// the lines, in this order: pos (required), epoch, identity (version 2 only)
	static constexpr std::string_view names[] = {"pos", "epoch", "identity"};
	std::size_t next = 0; // index into names of the next line allowed
	bool have_pos = false;
	while (!content.empty()) {
		std::size_t nl = content.find('\n');
		std::string_view line = content.substr(0, nl);
		content.remove_prefix(nl + 1);
		std::size_t sp = line.find(' ');
		if (sp == std::string_view::npos)
			return fail("a line is not \"NAME VALUE\"");
		std::string_view name = line.substr(0, sp), value = line.substr(sp + 1);
		std::size_t i = next;
		while (i < std::size(names) && names[i] != name)
			i++;
		if (i == std::size(names))
			return fail("an unknown, repeated or misplaced line");
		if (i > 0 && !have_pos)
			return fail("no pos line");
		if (st.version == 1 && i > 0)
			return fail("a version 1 state file holds only pos");
		next = i + 1;
		if (i == 2) {
			if (!valid_identity(value))
				return fail("identity is not 1 to 128 characters of A-Z a-z 0-9 . _ : -");
			st.identity = std::string(value);
			continue;
		}
		auto v = value.empty() || value[0] < '0' || value[0] > '9' ? std::nullopt : parse_int64(value); // digits only ("-0")
		if (!v || *v < 0)
			return fail(i == 0 ? "pos is not a position, 0 or more" : "epoch is not a number, 0 or more");
		if (i == 0) {
			st.pos = *v;
			have_pos = true;
		} else
			st.epoch = *v;
	}
	if (!have_pos)
		return fail("no pos line");
	return st;
}

std::optional<State> read_state_file(const std::string &path, std::string &error) {
	error.clear();
	int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			error = "cannot open state file \"" + path + "\": " + std::strerror(errno);
		return std::nullopt;
	}
	std::string content;
	char buf[4096];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			error = "cannot read state file \"" + path + "\": " + std::strerror(errno);
			close(fd);
			return std::nullopt;
		}
		if (n == 0)
			break;
		content.append(buf, (size_t)n);
		if (content.size() > kMaxStateBytes)
			break;
	}
	close(fd);
	std::string why;
	auto st = parse_state(content, &why);
	if (!st)
		error = "state file \"" + path + "\" is not a pg_outbox_listen state file (or is corrupt): " + why;
	return st;
}

static bool write_all(int fd, const std::string &s) {
	size_t done = 0;
	while (done < s.size()) {
		ssize_t n = write(fd, s.data() + done, s.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return false;
		done += (size_t)n;
	}
	return true;
}

bool write_state_file(const std::string &path, const State &st, bool do_fsync, std::string &error) {
	std::string tmp = path + ".tmp";
	int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644); // a planted symlink is not followed
	if (fd < 0) {
		error = "cannot create \"" + tmp + "\": " + std::strerror(errno);
		return false;
	}
	if (!write_all(fd, format_state(st)) || (do_fsync && fsync(fd) != 0)) {
		error = "cannot write \"" + tmp + "\": " + std::strerror(errno);
		close(fd);
		unlink(tmp.c_str());
		return false;
	}
	if (close(fd) != 0) {
		error = "cannot write \"" + tmp + "\": " + std::strerror(errno);
		unlink(tmp.c_str());
		return false;
	}
	if (rename(tmp.c_str(), path.c_str()) != 0) {
		error = "cannot rename \"" + tmp + "\" to \"" + path + "\": " + std::strerror(errno);
		unlink(tmp.c_str());
		return false;
	}
	if (do_fsync) {
		auto slash = path.rfind('/');
		std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
		int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd); // best effort: the rename is what makes the file consistent
			close(dfd);
		}
	}
	return true;
}

double backoff_delay(int attempt, double max_backoff, double jitter) {
	if (attempt <= 0)
		return 0;
	double d = 0.1 * std::pow(2.0, std::min(attempt - 1, 30));
	d = std::min(d, max_backoff);
	d *= 0.8 + 0.4 * std::clamp(jitter, 0.0, 1.0);
	return std::min(d, max_backoff);
}

} // namespace pg_outbox::listen
