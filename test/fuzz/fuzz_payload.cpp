// libFuzzer target: the change trigger's payload rendering — every kind of column value as
// JSON (payload::append_json), the composed payload and its size limit (payload::compose), and
// the \u0000 rewriting of json values (payload::replace_nul_escapes).
#include "payload.hpp"
#include "envelope.hpp"
#include "fuzz_util.hpp"

using namespace pg_outbox;
using namespace pg_outbox::payload;

static Scalar scalar(fuzz::Input &in) {
	Scalar s;
	s.kind = static_cast<Kind>(in.byte() % 15);
	s.i = in.int64();
	s.f = in.float64();
	s.days = static_cast<std::int32_t>(in.int64());
	s.months = static_cast<std::int32_t>(in.int64());
	s.text = in.field();
	return s;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
	fuzz::Input in(data, size);
	std::uint8_t mode = in.byte();
	if (mode % 2 == 0) {
		// one value of each kind it claims to be; those that render from numbers (not from text
		// the caller vouches for) must always be valid JSON
		std::string out;
		Scalar s = scalar(in);
		append_json(out, s);
		switch (s.kind) {
		case Kind::Null:
		case Kind::Int:
		case Kind::Float4:
		case Kind::Float8:
		case Kind::Bool:
		case Kind::Timestamp:
		case Kind::TimestampTz:
		case Kind::Date:
		case Kind::Time:
		case Kind::Interval:
			FUZZ_CHECK(json::is_valid(out));
			break;
		case Kind::String:
		case Kind::Bytea:
			if (fuzz::valid_utf8(s.text))
				FUZZ_CHECK(json::is_valid(out));
			break;
		default:
			break;
		}
		std::string key;
		append_text(key, s);
		// the payload around it, at a fuzzed limit
		std::string id, data_obj = "{\"c\":" + out + "}";
		json::append_string(id, in.field());
		Parts p;
		p.op = "UPDATE";
		p.table = "\"public.t\"";
		p.id = id;
		p.old_id = (mode & 2) ? std::string_view(id) : std::string_view();
		p.data = data_obj;
		p.has_data = (mode & 4) != 0;
		std::size_t max = static_cast<std::size_t>(in.int64() & 0xffff);
		std::string payload;
		PayloadFit fit = compose(payload, p, max);
		if (fit != PayloadFit::TooBig)
			FUZZ_CHECK(payload.size() <= max);
		if (fit == PayloadFit::Truncated)
			FUZZ_CHECK(payload.find("\"truncated\":true") != std::string::npos);
		return 0;
	}
	std::string_view text = in.rest();
	std::string out;
	bool valid = json::is_valid(text);
	if (replace_nul_escapes(text, out)) {
		FUZZ_CHECK(out.size() == text.size()); // \u0000 -> \ufffd: same length
		FUZZ_CHECK(out != text);
		if (valid)
			FUZZ_CHECK(json::is_valid(out));
	}
	return 0;
}
