// libFuzzer target: the drain's envelopes (build_event_envelope at every limit, build_wal_envelope)
// and what the listener reads back from them (listen::decode_envelope): a round trip.
#include "envelope.hpp"
#include "listen/listen_core.hpp"
#include "fuzz_util.hpp"

using namespace pg_outbox;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
	fuzz::Input in(data, size);
	std::uint8_t flags = in.byte();
	EventFields e;
	// the drain hands out ids >= 0 and positions and seqs >= 1 (what the listener accepts)
	e.id = in.int64() & INT64_MAX;
	e.pos = (in.int64() & INT64_MAX) | 1;
	e.seq = (in.int64() & INT64_MAX) | 1;
	std::string key(in.field()), type(in.field()), channel(in.field());
	std::string_view payload = in.field();
	if (flags & 1)
		e.key = key.c_str();
	if (flags & 2)
		e.type = type.c_str();
	bool payload_ok = json::is_valid(payload);
	if ((flags & 4) && payload_ok) {
		e.payload = payload;
		e.has_payload = true;
	}
	e.payload_too_big = (flags & 8) != 0;
	e.key_type_too_big = (flags & 16) != 0;
	e.channel = channel;
	std::size_t max = (flags & 32) ? static_cast<std::size_t>(in.int64() & 0x3fff) : kMaxPayloadBytes;
	std::string out;
	Fit fit = build_event_envelope(out, e, max);
	FUZZ_CHECK(fit != Fit::OutOfMemory);
	bool text_ok = fuzz::valid_utf8(key) && fuzz::valid_utf8(type);
	if (text_ok)
		FUZZ_CHECK(json::is_valid(out));
	if (fit == Fit::Full)
		FUZZ_CHECK(out.size() <= max);
	// the listener reads back what the drain wrote
	listen::Event ev;
	std::string error;
	if (text_ok && fuzz::valid_utf8(channel) && !channel.empty()) {
		bool ok = listen::decode_envelope(channel, out, ev, error);
		FUZZ_CHECK(ok);
		FUZZ_CHECK(ev.id == e.id && ev.pos == e.pos && ev.seq == e.seq);
		FUZZ_CHECK(ev.truncated == (fit == Fit::Truncated));
		if (fit == Fit::Full) {
			FUZZ_CHECK(ev.key.has_value() == (e.key != nullptr));
			if (e.key)
				FUZZ_CHECK(*ev.key == key);
			if (e.type)
				FUZZ_CHECK(ev.type.has_value() && *ev.type == type);
		}
	}
	std::string wal;
	FUZZ_CHECK(build_wal_envelope(wal, e) == Fit::Full);
	if (text_ok && fuzz::valid_utf8(channel))
		FUZZ_CHECK(json::is_valid(wal));
	return 0;
}
