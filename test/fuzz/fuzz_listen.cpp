// libFuzzer target: the reference listener's parsing of what arrives from the network and the
// disk — NOTIFY envelopes (decode_envelope, raw_member), integers, the state file, arguments.
#include "listen/listen_core.hpp"
#include "envelope.hpp"
#include "fuzz_util.hpp"

#include <vector>

using namespace pg_outbox;
using namespace pg_outbox::listen;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
	fuzz::Input in(data, size);
	std::uint8_t what = in.byte();
	switch (what % 4) {
	case 0: {
		std::string_view channel = in.field();
		std::string_view text = in.rest();
		Event ev;
		std::string error;
		if (decode_envelope(channel, text, ev, error)) {
			std::string line = format_event(ev);
			if (fuzz::valid_utf8(text) && fuzz::valid_utf8(channel))
				FUZZ_CHECK(json::is_valid(line));
			Tracker t(0);
			(void)t.classify(ev);
			t.delivered(ev);
		} else
			FUZZ_CHECK(!error.empty());
		break;
	}
	case 1: {
		std::string_view key = in.field();
		std::string_view text = in.rest();
		auto m = raw_member(text, key);
		if (m)
			FUZZ_CHECK(m->data() >= text.data() && m->data() + m->size() <= text.data() + text.size());
		break;
	}
	case 2: {
		std::string_view s = in.rest();
		auto v = parse_int64(s);
		if (v) {
			std::string back = std::to_string(*v);
			FUZZ_CHECK(parse_int64(back) == v);
		}
		auto st = parse_state(s);
		if (st)
			FUZZ_CHECK(parse_state(format_state(*st)) == st);
		break;
	}
	default: {
		std::vector<std::string> args;
		while (!in.empty() && args.size() < 64)
			args.emplace_back(in.field());
		ParseResult r = parse_args(args);
		FUZZ_CHECK(r.options.has_value() || r.help || !r.error.empty());
		std::vector<std::string> items(args.begin(), args.end());
		(void)text_array_literal(items);
		break;
	}
	}
	return 0;
}
