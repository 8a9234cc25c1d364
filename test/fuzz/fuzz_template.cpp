// libFuzzer target: channel templates (payload::parse_template) and filling them
// (payload::append_text), as the change trigger does at attach time and per row.
#include "payload.hpp"
#include "fuzz_util.hpp"

#include <vector>

using namespace pg_outbox::payload;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
	fuzz::Input in(data, size);
	std::string_view tpl = in.field();
	std::vector<TemplatePart> parts(tpl.size() + 1);
	TemplateParse r = parse_template(tpl, parts.data(), parts.size());
	const char *msg = template_status_message(r.status);
	FUZZ_CHECK(msg != nullptr);
	// a smaller array must be reported, never overrun
	std::vector<TemplatePart> few(1 + tpl.size() / 4);
	TemplateParse r2 = parse_template(tpl, few.data(), few.size());
	FUZZ_CHECK(r2.nparts <= few.size());
	if (r.status != TemplateStatus::Ok) {
		FUZZ_CHECK(r.position <= tpl.size());
		return 0;
	}
	FUZZ_CHECK(r.nparts <= parts.size());
	std::size_t literal = 0, columns = 0;
	std::string filled;
	for (std::size_t k = 0; k < r.nparts; k++) {
		const TemplatePart &p = parts[k];
		FUZZ_CHECK(p.offset <= tpl.size() && p.length <= tpl.size() - p.offset);
		if (p.column) {
			FUZZ_CHECK(p.length > 0);
			columns++;
			Scalar s;
			s.kind = static_cast<Kind>(in.byte() % 15);
			s.i = in.int64();
			s.f = in.float64();
			s.days = static_cast<std::int32_t>(in.int64());
			s.months = static_cast<std::int32_t>(in.int64());
			s.text = in.field();
			append_text(filled, s);
		} else {
			literal += p.length;
			filled.append(tpl.substr(p.offset, p.length));
		}
	}
	FUZZ_CHECK(columns == r.ncolumns);
	FUZZ_CHECK(literal == r.static_bytes);
	return 0;
}
