// Unit tests of the change trigger's pure C++ side: value rendering, payload composition and
// channel templates (no Postgres involved).
#include "payload.hpp"

#include <boost/json.hpp>
#include <cmath>
#include <gtest/gtest.h>
#include <limits>
#include <vector>

using namespace pg_outbox;
using namespace pg_outbox::payload;

static Scalar make(Kind k) {
	Scalar s;
	s.kind = k;
	return s;
}
static Scalar num(std::int64_t v) {
	Scalar s = make(Kind::Int);
	s.i = v;
	return s;
}
static Scalar flt(double v, bool f4 = false) {
	Scalar s = make(f4 ? Kind::Float4 : Kind::Float8);
	s.f = v;
	return s;
}
static Scalar txt(Kind k, std::string_view t) {
	Scalar s = make(k);
	s.text = t;
	return s;
}
static Scalar ts(Kind k, std::int64_t i) {
	Scalar s = make(k);
	s.i = i;
	return s;
}
static std::string js(const Scalar &s) {
	std::string out;
	append_json(out, s);
	return out;
}
static std::string text(const Scalar &s) {
	std::string out;
	append_text(out, s);
	return out;
}

TEST(Value, Numbers) {
	EXPECT_EQ(js(num(42)), "42");
	EXPECT_EQ(js(num(std::numeric_limits<std::int64_t>::min())), "-9223372036854775808");
	EXPECT_EQ(js(txt(Kind::Numeric, "-12.50")), "-12.50");
	EXPECT_EQ(js(txt(Kind::Numeric, "NaN")), "\"NaN\"");
	EXPECT_EQ(js(txt(Kind::Numeric, "-Infinity")), "\"-Infinity\"");
	EXPECT_EQ(text(txt(Kind::Numeric, "NaN")), "NaN");
}

TEST(Value, FloatsArePlainDecimalOfShortest) {
	EXPECT_EQ(js(flt(0.1)), "0.1");
	EXPECT_EQ(js(flt(1.0 / 3)), "0.3333333333333333");
	EXPECT_EQ(js(flt(0.1f, true)), "0.1"); // not 0.10000000149011612
	EXPECT_EQ(js(flt(1e300)), "1" + std::string(300, '0')); // plain decimal, as jsonb prints it
	EXPECT_EQ(js(flt(1.5e-7)), "0.00000015");
	EXPECT_EQ(js(flt(1e23)), "1" + std::string(23, '0')); // the digits of 1e+23, not of the exact binary value
	EXPECT_EQ(js(flt(-2.5e-3)), "-0.0025");
	EXPECT_EQ(js(flt(123456789.125)), "123456789.125");
	EXPECT_EQ(js(flt(3.4028235e38f, true)), "34028235" + std::string(31, '0'));
	EXPECT_EQ(js(flt(-0.0)), "0"); // numeric has no negative zero
	EXPECT_EQ(js(flt(std::nan(""))), "\"NaN\"");
	EXPECT_EQ(js(flt(-INFINITY)), "\"-Infinity\"");
	EXPECT_EQ(text(flt(INFINITY)), "Infinity");
	for (double d : {0.1, 2.0 / 3, 123456789.125, 5e-324, 1.7976931348623157e308}) {
		std::string s = js(flt(d));
		EXPECT_EQ(std::strtod(s.c_str(), nullptr), d) << s;
		EXPECT_TRUE(json::is_valid(s)) << s;
	}
}

TEST(Value, BoolNullJson) {
	Scalar t = make(Kind::Bool);
	t.i = 1;
	EXPECT_EQ(js(t), "true");
	EXPECT_EQ(js(make(Kind::Bool)), "false");
	EXPECT_EQ(js(make(Kind::Null)), "null");
	EXPECT_EQ(text(make(Kind::Null)), "");
	EXPECT_EQ(js(txt(Kind::Json, "{\"a\": [1, 2]}")), "{\"a\": [1, 2]}");
}

TEST(Value, Strings) {
	EXPECT_EQ(js(txt(Kind::String, "plain")), "\"plain\"");
	EXPECT_EQ(js(txt(Kind::String, "q\"b\\n\nt\tc\x01")), "\"q\\\"b\\\\n\\nt\\tc\\u0001\"");
	EXPECT_EQ(js(txt(Kind::String, std::string_view("a\0b", 3))), "\"a\\u0000b\"");
	EXPECT_EQ(js(txt(Kind::String, "é€😀")), "\"é€😀\"");
	EXPECT_EQ(text(txt(Kind::String, "q\"b")), "q\"b");
	std::string nasty = "x\" \\ \n \r \t \b \f \x1f é </script>";
	auto v = boost::json::parse("[" + js(txt(Kind::String, nasty)) + "]");
	EXPECT_EQ(std::string(v.as_array()[0].as_string()), nasty);
}

TEST(Value, Bytea) {
	EXPECT_EQ(js(txt(Kind::Bytea, std::string_view("\x01\xff", 2))), "\"\\\\x01ff\"");
	EXPECT_EQ(text(txt(Kind::Bytea, std::string_view("\x01\xff", 2))), "\\x01ff");
	EXPECT_EQ(js(txt(Kind::Bytea, "")), "\"\\\\x\"");
}

TEST(Value, Dates) {
	EXPECT_EQ(js(ts(Kind::Date, 0)), "\"2000-01-01\"");
	EXPECT_EQ(js(ts(Kind::Date, -1)), "\"1999-12-31\"");
	EXPECT_EQ(js(ts(Kind::Date, 60)), "\"2000-03-01\""); // 2000 is a leap year
	EXPECT_EQ(js(ts(Kind::Date, -10957)), "\"1970-01-01\"");
	EXPECT_EQ(js(ts(Kind::Date, -730485)), "\"0000-01-01\""); // 1 BC
	EXPECT_EQ(js(ts(Kind::Date, -730486)), "\"-0001-12-31\"");
	EXPECT_EQ(js(ts(Kind::Date, 2921940)), "\"+10000-01-01\"");
	EXPECT_EQ(js(ts(Kind::Date, std::numeric_limits<std::int32_t>::max())), "\"infinity\"");
	EXPECT_EQ(js(ts(Kind::Date, std::numeric_limits<std::int32_t>::min())), "\"-infinity\"");
}

TEST(Value, Timestamps) {
	const std::int64_t day = 86400000000LL;
	EXPECT_EQ(js(ts(Kind::TimestampTz, 0)), "\"2000-01-01T00:00:00Z\"");
	EXPECT_EQ(js(ts(Kind::Timestamp, 0)), "\"2000-01-01T00:00:00\"");
	EXPECT_EQ(js(ts(Kind::TimestampTz, -1)), "\"1999-12-31T23:59:59.999999Z\"");
	EXPECT_EQ(js(ts(Kind::TimestampTz, 8850 * day + 45296500000LL)), "\"2024-03-25T12:34:56.5Z\"");
	EXPECT_EQ(js(ts(Kind::TimestampTz, 10)), "\"2000-01-01T00:00:00.00001Z\"");
	EXPECT_EQ(js(ts(Kind::TimestampTz, std::numeric_limits<std::int64_t>::max())), "\"infinity\"");
	EXPECT_EQ(js(ts(Kind::TimestampTz, std::numeric_limits<std::int64_t>::min())), "\"-infinity\"");
	EXPECT_EQ(text(ts(Kind::TimestampTz, 0)), "2000-01-01T00:00:00Z");
	EXPECT_EQ(js(ts(Kind::Time, 45296500000LL)), "\"12:34:56.5\"");
	EXPECT_EQ(js(ts(Kind::Time, 86400000000LL)), "\"24:00:00\"");
}

TEST(Value, Intervals) {
	auto iv = [](std::int64_t us, int d, int m) {
		Scalar s = make(Kind::Interval);
		s.i = us;
		s.days = d;
		s.months = m;
		return js(s);
	};
	EXPECT_EQ(iv(0, 0, 0), "\"PT0S\"");
	EXPECT_EQ(iv(4 * 3600000000LL + 5 * 60000000LL + 6500000, 3, 14), "\"P1Y2M3DT4H5M6.5S\"");
	EXPECT_EQ(iv(-1500000, 0, 0), "\"PT-1.5S\"");
	EXPECT_EQ(iv(0, -1, -12), "\"P-1Y-1D\"");
}

static std::string compose_str(const Parts &p, PayloadFit expect, std::size_t max = kMaxPayloadBytes) {
	std::string out;
	EXPECT_EQ(compose(out, p, max), expect);
	return out;
}

TEST(Payload, IdOnly) {
	Parts p;
	p.op = "INSERT";
	p.table = "\"public.users\"";
	p.id = "42";
	EXPECT_EQ(compose_str(p, PayloadFit::Full), "{\"id\":42,\"op\":\"INSERT\",\"table\":\"public.users\"}");
	p.op = "UPDATE";
	p.old_id = "41";
	EXPECT_EQ(compose_str(p, PayloadFit::Full), "{\"id\":42,\"op\":\"UPDATE\",\"table\":\"public.users\",\"old_id\":41}");
	Parts t;
	t.op = "TRUNCATE";
	t.table = "\"public.users\"";
	EXPECT_EQ(compose_str(t, PayloadFit::Full), "{\"op\":\"TRUNCATE\",\"table\":\"public.users\"}");
}

TEST(Payload, DataIsDroppedWhenTooBig) {
	Parts p;
	p.op = "INSERT";
	p.table = "\"public.users\"";
	p.id = "{\"org\":1,\"user\":7}";
	p.data = "{\"name\":\"x\"}";
	p.has_data = true;
	std::string full = compose_str(p, PayloadFit::Full);
	EXPECT_EQ(full, "{\"id\":{\"org\":1,\"user\":7},\"op\":\"INSERT\",\"data\":{\"name\":\"x\"},\"table\":\"public.users\"}");
	// max_bytes is the longest payload allowed (kMaxPayloadBytes = 7999: NOTIFY accepts 7999
	// bytes and refuses 8000): exactly at the limit fits, one byte over does not
	EXPECT_EQ(compose_str(p, PayloadFit::Full, full.size()), full);
	std::string cut = compose_str(p, PayloadFit::Truncated, full.size() - 1);
	EXPECT_EQ(cut, "{\"id\":{\"org\":1,\"user\":7},\"op\":\"INSERT\",\"table\":\"public.users\",\"truncated\":true}");
	EXPECT_TRUE(json::is_valid(cut));
	EXPECT_EQ(compose_str(p, PayloadFit::Truncated, cut.size()), cut);
	compose_str(p, PayloadFit::TooBig, cut.size() - 1);
	Parts q = p;
	q.has_data = false;
	compose_str(q, PayloadFit::TooBig, 10);
}

TEST(Payload, RealLimit) {
	std::string big(9000, 'x'), data;
	json::append_string(data, big);
	data = "{\"blob\":" + data + "}";
	Parts p;
	p.op = "INSERT";
	p.table = "\"t\"";
	p.id = "1";
	p.data = data;
	p.has_data = true;
	std::string out = compose_str(p, PayloadFit::Truncated);
	EXPECT_LT(out.size(), kMaxPayloadBytes + 1);
}

static std::vector<std::string> parts_of(std::string_view tpl, TemplateParse *res = nullptr) {
	std::vector<TemplatePart> parts(tpl.size() + 1);
	TemplateParse r = parse_template(tpl, parts.data(), parts.size());
	if (res)
		*res = r;
	std::vector<std::string> out;
	if (r.status != TemplateStatus::Ok)
		return {"error"};
	for (std::size_t k = 0; k < r.nparts; k++)
		out.push_back((parts[k].column ? "col:" : "lit:") + std::string(tpl.substr(parts[k].offset, parts[k].length)));
	return out;
}

TEST(Template, Parses) {
	using V = std::vector<std::string>;
	TemplateParse r;
	EXPECT_EQ(parts_of("public.users", &r), V({"lit:public.users"}));
	EXPECT_EQ(r.static_bytes, 12u);
	EXPECT_EQ(r.ncolumns, 0u);
	EXPECT_EQ(parts_of("tenant_{tenant_id}", &r), V({"lit:tenant_", "col:tenant_id"}));
	EXPECT_EQ(r.static_bytes, 7u);
	EXPECT_EQ(r.ncolumns, 1u);
	EXPECT_EQ(parts_of("events:user:{id}"), V({"lit:events:user:", "col:id"}));
	EXPECT_EQ(parts_of("{a}{b}"), V({"col:a", "col:b"}));
	EXPECT_EQ(parts_of("{My Col}x"), V({"col:My Col", "lit:x"}));
	EXPECT_EQ(parts_of("a{{b}}c", &r), V({"lit:a{", "lit:b}", "lit:c"})); // literal braces
	EXPECT_EQ(r.static_bytes, 5u);
	EXPECT_EQ(parts_of("{{{x}}}"), V({"lit:{", "col:x", "lit:}"}));
	EXPECT_EQ(parts_of(""), V({}));
}

TEST(Template, Errors) {
	auto status = [](std::string_view tpl) {
		std::vector<TemplatePart> parts(tpl.size() + 1);
		TemplateParse r = parse_template(tpl, parts.data(), parts.size());
		return std::make_pair(r.status, r.position);
	};
	EXPECT_EQ(status("tenant_{id"), std::make_pair(TemplateStatus::UnclosedBrace, std::size_t(7)));
	EXPECT_EQ(status("tenant_id}"), std::make_pair(TemplateStatus::UnopenedBrace, std::size_t(9)));
	EXPECT_EQ(status("a{}"), std::make_pair(TemplateStatus::EmptyColumn, std::size_t(1)));
	EXPECT_EQ(status("a{b{c}"), std::make_pair(TemplateStatus::BraceInColumn, std::size_t(3)));
	TemplatePart one[1];
	EXPECT_EQ(parse_template("a{b}", one, 1).status, TemplateStatus::TooManyParts);
	EXPECT_STREQ(template_status_message(TemplateStatus::UnclosedBrace), "\"{\" is not closed by \"}\"");
}

TEST(Payload, ExactlyAtTheNotifyLimit) {
	// a key that makes the payload exactly 7999 bytes fits; 8000 does not
	Parts p;
	p.op = "INSERT";
	p.table = "\"t\"";
	std::string head = "{\"op\":\"INSERT\",\"table\":\"t\",\"id\":\"\"}";
	std::string key(kMaxPayloadBytes - head.size(), 'k');
	std::string id = "\"" + key + "\"";
	p.id = id;
	std::string out;
	EXPECT_EQ(compose(out, p), PayloadFit::Full);
	EXPECT_EQ(out.size(), std::size_t(7999));
	std::string id2 = "\"" + key + "k\"";
	p.id = id2;
	EXPECT_EQ(compose(out, p), PayloadFit::TooBig);
	EXPECT_EQ(out.size(), std::size_t(8000));
}

TEST(Payload, NulEscapes) {
	std::string out = "untouched";
	EXPECT_FALSE(replace_nul_escapes("{\"a\":\"x\"}", out));
	EXPECT_EQ(out, "untouched");
	EXPECT_TRUE(replace_nul_escapes("{\"a\":\"x\\u0000y\",\"\\u0000\":1}", out));
	EXPECT_EQ(out, "{\"a\":\"x\\ufffdy\",\"\\ufffd\":1}");
	// an escaped backslash followed by u0000 is text, not an escape
	EXPECT_FALSE(replace_nul_escapes("[\"\\\\u0000\"]", out));
	EXPECT_TRUE(replace_nul_escapes("[\"\\\\\\u0000\"]", out));
	EXPECT_EQ(out, "[\"\\\\\\ufffd\"]");
	// outside strings nothing is replaced (not valid JSON anyway); a truncated escape is kept
	EXPECT_FALSE(replace_nul_escapes("\\u0000", out));
	EXPECT_FALSE(replace_nul_escapes("\"\\u000", out));
}

TEST(Payload, ExtremesFoundByFuzzing) {
	// a timestamp near the ends of int64 (no signed overflow), a date beyond int32, a float4
	// value given as a double beyond float range: still valid JSON
	std::string out;
	append_timestamp(out, std::numeric_limits<std::int64_t>::min() + 1, true);
	EXPECT_FALSE(out.empty());
	out.clear();
	append_date(out, std::numeric_limits<std::int64_t>::max());
	EXPECT_EQ(out, "infinity");
	out.clear();
	append_date(out, std::numeric_limits<std::int64_t>::min());
	EXPECT_EQ(out, "-infinity");
	Scalar f;
	f.kind = Kind::Float4;
	f.f = 1e300;
	out.clear();
	append_json(out, f);
	EXPECT_TRUE(json::is_valid(out)) << out;
}
