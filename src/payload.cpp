// payload.cpp — JSON rendering of column values, ID payloads and channel templates for the
// change trigger. Pure C++ (no Postgres headers); see payload.hpp.
#include "payload.hpp"

#include <charconv>
#include <cmath>
#include <limits>

namespace pg_outbox::payload {

namespace {

constexpr std::int64_t kUsecsPerSec = 1000000;
constexpr std::int64_t kUsecsPerDay = 86400 * kUsecsPerSec;
constexpr std::int64_t kDays1970To2000 = 10957; // Postgres counts from 2000-01-01

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
	std::int64_t q = a / b;
	return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

void append_int(std::string &out, std::int64_t v) {
	char buf[24];
	auto res = std::to_chars(buf, buf + sizeof buf, v);
	out.append(buf, res.ptr);
}

void append_padded(std::string &out, std::int64_t v, int width) {
	char buf[24];
	auto res = std::to_chars(buf, buf + sizeof buf, v);
	for (int n = static_cast<int>(res.ptr - buf); n < width; n++)
		out += '0';
	out.append(buf, res.ptr);
}

// ".5", ".000001": microseconds without trailing zeros; nothing for 0.
void append_fraction(std::string &out, std::int64_t usec) {
	if (usec == 0)
		return;
	char digits[6];
	for (int k = 5; k >= 0; k--) {
		digits[k] = static_cast<char>('0' + usec % 10);
		usec /= 10;
	}
	int len = 6;
	while (len > 0 && digits[len - 1] == '0')
		len--;
	out += '.';
	out.append(digits, static_cast<std::size_t>(len));
}

void append_year(std::string &out, std::int64_t y) {
	if (y < 0) {
		out += '-';
		append_padded(out, -y, 4);
	} else if (y > 9999) {
		out += '+';
		append_int(out, y);
	} else {
		append_padded(out, y, 4);
	}
}

// Proleptic Gregorian calendar date of a day number (days since 1970-01-01); H. Hinnant's
// civil_from_days.
void civil_from_days(std::int64_t z, std::int64_t &y, int &m, int &d) {
	z += 719468;
	std::int64_t era = floor_div(z, 146097);
	std::int64_t doe = z - era * 146097;
	std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	y = yoe + era * 400;
	std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	std::int64_t mp = (5 * doy + 2) / 153;
	d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
	m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
	if (m <= 2)
		y++;
}

void append_float(std::string &out, double v, bool is_float4) {
	if (std::isnan(v)) {
		out += "NaN";
		return;
	}
	if (std::isinf(v)) {
		out += v > 0 ? "Infinity" : "-Infinity";
		return;
	}
	char buf[64];
	auto res = is_float4 ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v))
	                     : std::to_chars(buf, buf + sizeof buf, v);
	out.append(buf, res.ptr);
}

// A finite float as a JSON number in plain decimal notation: the digits of its shortest
// round-trip text, without an exponent — exactly what numeric_out prints for numeric_in of that
// text, so the number reads the same whether it was written as text (notify mode) or stored in
// jsonb (outbox mode). 1e+300 is 1 followed by 300 zeros, 1.5e-07 is 0.00000015, -0 is 0.
void append_float_plain(std::string &out, double v, bool is_float4) {
	char buf[64];
	auto res = is_float4 ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v), std::chars_format::scientific)
	                     : std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
	std::string_view t(buf, static_cast<std::size_t>(res.ptr - buf)); // [-]d[.ddd]e(+|-)xx
	bool negative = !t.empty() && t[0] == '-';
	if (negative)
		t.remove_prefix(1);
	std::size_t e = t.find('e');
	std::string_view mantissa = t.substr(0, e);
	int exponent = 0;
	std::from_chars(t.data() + e + (t[e + 1] == '+' ? 2 : 1), t.data() + t.size(), exponent);
	char digits[40];
	int n = 0;
	for (char c : mantissa)
		if (c != '.')
			digits[n++] = c;
	bool zero = true;
	for (int k = 0; k < n; k++)
		zero = zero && digits[k] == '0';
	if (zero) {
		out += '0';
		return;
	}
	if (negative)
		out += '-';
	int point = 1 + exponent; // digits before the decimal point
	if (point <= 0) {
		out += "0.";
		out.append(static_cast<std::size_t>(-point), '0');
		out.append(digits, static_cast<std::size_t>(n));
	} else if (point >= n) {
		out.append(digits, static_cast<std::size_t>(n));
		out.append(static_cast<std::size_t>(point - n), '0');
	} else {
		out.append(digits, static_cast<std::size_t>(point));
		out += '.';
		out.append(digits + point, static_cast<std::size_t>(n - point));
	}
}

bool is_finite_number_text(std::string_view t) {
	return !(t == "NaN" || t == "Infinity" || t == "-Infinity");
}

constexpr char kHex[] = "0123456789abcdef";

// Text rendering shared by append_json (for the kinds that become JSON strings) and append_text.
void append_plain(std::string &out, const Scalar &v) {
	switch (v.kind) {
	case Kind::Null:
		return;
	case Kind::Int:
		append_int(out, v.i);
		return;
	case Kind::Float4:
	case Kind::Float8:
		append_float(out, v.f, v.kind == Kind::Float4);
		return;
	case Kind::Bool:
		out += v.i ? "true" : "false";
		return;
	case Kind::Numeric:
	case Kind::String:
	case Kind::Json:
		out.append(v.text.data(), v.text.size());
		return;
	case Kind::Timestamp:
		append_timestamp(out, v.i, false);
		return;
	case Kind::TimestampTz:
		append_timestamp(out, v.i, true);
		return;
	case Kind::Date:
		append_date(out, v.i);
		return;
	case Kind::Time:
		append_time(out, v.i);
		return;
	case Kind::Interval:
		append_interval(out, v.i, v.days, v.months);
		return;
	case Kind::Bytea:
		out += "\\x";
		for (unsigned char c : v.text) {
			out += kHex[c >> 4];
			out += kHex[c & 15];
		}
		return;
	}
}

} // namespace


// YYYY-MM-DD of a day counted from 2000-01-01 (PostgreSQL's epoch).
static void append_ymd(std::string &out, std::int64_t days) {
	std::int64_t y;
	int m, d;
	civil_from_days(days + kDays1970To2000, y, m, d);
	append_year(out, y);
	out += '-';
	append_padded(out, m, 2);
	out += '-';
	append_padded(out, d, 2);
}

void append_date(std::string &out, std::int64_t days) {
	// a date is an int32 (DateADT): its ends are -infinity and infinity (and nothing lies beyond)
	if (days <= std::numeric_limits<std::int32_t>::min()) {
		out += "-infinity";
		return;
	}
	if (days >= std::numeric_limits<std::int32_t>::max()) {
		out += "infinity";
		return;
	}
	append_ymd(out, days);
}

void append_time(std::string &out, std::int64_t usecs) {
	std::int64_t secs = usecs / kUsecsPerSec;
	append_padded(out, secs / 3600, 2);
	out += ':';
	append_padded(out, secs / 60 % 60, 2);
	out += ':';
	append_padded(out, secs % 60, 2);
	append_fraction(out, usecs % kUsecsPerSec);
}

void append_timestamp(std::string &out, std::int64_t usecs, bool utc) {
	if (usecs == std::numeric_limits<std::int64_t>::min()) {
		out += "-infinity";
		return;
	}
	if (usecs == std::numeric_limits<std::int64_t>::max()) {
		out += "infinity";
		return;
	}
	std::int64_t days = floor_div(usecs, kUsecsPerDay);
	std::int64_t of_day = usecs % kUsecsPerDay; // not usecs - days * kUsecsPerDay: that overflows
	if (of_day < 0)                             // near the ends of int64
		of_day += kUsecsPerDay;
	append_ymd(out, days);
	out += 'T';
	append_time(out, of_day);
	if (utc)
		out += 'Z';
}

void append_interval(std::string &out, std::int64_t usecs, std::int32_t days, std::int32_t months) {
	// The layout of IntervalStyle 'iso_8601': each field keeps its own sign.
	if (usecs == 0 && days == 0 && months == 0) {
		out += "PT0S";
		return;
	}
	out += 'P';
	if (months / 12 != 0) {
		append_int(out, months / 12);
		out += 'Y';
	}
	if (months % 12 != 0) {
		append_int(out, months % 12);
		out += 'M';
	}
	if (days != 0) {
		append_int(out, days);
		out += 'D';
	}
	if (usecs != 0) {
		out += 'T';
		std::int64_t hours = usecs / (3600 * kUsecsPerSec);
		std::int64_t rest = usecs % (3600 * kUsecsPerSec);
		std::int64_t minutes = rest / (60 * kUsecsPerSec);
		rest %= 60 * kUsecsPerSec;
		if (hours != 0) {
			append_int(out, hours);
			out += 'H';
		}
		if (minutes != 0) {
			append_int(out, minutes);
			out += 'M';
		}
		if (rest != 0) {
			if (rest < 0) {
				out += '-';
				rest = -rest;
			}
			append_int(out, rest / kUsecsPerSec);
			append_fraction(out, rest % kUsecsPerSec);
			out += 'S';
		}
	}
}

void append_json(std::string &out, const Scalar &v) {
	switch (v.kind) {
	case Kind::Null:
		out += "null";
		return;
	case Kind::Int:
	case Kind::Bool:
	case Kind::Json:
		append_plain(out, v);
		return;
	case Kind::Float4:
	case Kind::Float8:
		// a float4 is checked as a float4: a double beyond its range would print "inf"
		if (v.kind == Kind::Float4 ? std::isfinite(static_cast<float>(v.f)) : std::isfinite(v.f)) {
			append_float_plain(out, v.f, v.kind == Kind::Float4);
		} else {
			out += '"';
			append_plain(out, v);
			out += '"';
		}
		return;
	case Kind::Numeric:
		if (is_finite_number_text(v.text))
			out.append(v.text.data(), v.text.size());
		else
			json::append_string(out, v.text);
		return;
	case Kind::String:
		json::append_string(out, v.text);
		return;
	case Kind::Bytea:
		out += "\"\\\\x"; // the backslash of \x, escaped
		for (unsigned char c : v.text) {
			out += kHex[c >> 4];
			out += kHex[c & 15];
		}
		out += '"';
		return;
	case Kind::Timestamp:
	case Kind::TimestampTz:
	case Kind::Date:
	case Kind::Time:
	case Kind::Interval:
		out += '"'; // these renderings never contain characters that need escaping
		append_plain(out, v);
		out += '"';
		return;
	}
}

void append_text(std::string &out, const Scalar &v) {
	append_plain(out, v);
}

// The members in jsonb's key order (shorter keys first, then bytewise): "id", "op", "data",
// "table", "old_id", "truncated" — the order outbox mode's stored payload has, so that both modes
// send the same text.
static void compose_into(std::string &out, const Parts &p, bool with_data) {
	out.clear();
	out += '{';
	if (!p.id.empty()) {
		out += "\"id\":";
		out.append(p.id.data(), p.id.size());
		out += ',';
	}
	out += "\"op\":\""; // INSERT, UPDATE, DELETE, TRUNCATE: nothing to escape
	out.append(p.op.data(), p.op.size());
	out += '"';
	if (p.has_data && with_data) {
		out += ",\"data\":";
		out.append(p.data.data(), p.data.size());
	}
	out += ",\"table\":";
	out.append(p.table.data(), p.table.size());
	if (!p.old_id.empty()) {
		out += ",\"old_id\":";
		out.append(p.old_id.data(), p.old_id.size());
	}
	if (p.has_data && !with_data)
		out += ",\"truncated\":true";
	out += '}';
}

PayloadFit compose(std::string &out, const Parts &p, std::size_t max_bytes) {
	compose_into(out, p, true);
	if (out.size() <= max_bytes)
		return PayloadFit::Full;
	if (!p.has_data)
		return PayloadFit::TooBig;
	compose_into(out, p, false);
	return out.size() <= max_bytes ? PayloadFit::Truncated : PayloadFit::TooBig;
}

bool replace_nul_escapes(std::string_view text, std::string &out) {
	static constexpr std::string_view kNul = "\\u0000", kReplacement = "\\ufffd";
	if (text.find(kNul) == std::string_view::npos)
		return false; // the usual case: nothing to do
	out.clear();
	out.reserve(text.size());
	bool in_string = false, replaced = false;
	std::size_t k = 0;
	while (k < text.size()) {
		char c = text[k];
		if (!in_string) {
			in_string = c == '"';
			out += c;
			k++;
			continue;
		}
		if (c == '"') {
			in_string = false;
			out += c;
			k++;
			continue;
		}
		if (c != '\\' || k + 1 >= text.size()) {
			out += c;
			k++;
			continue;
		}
		// an escape: \u0000 is replaced, any other is copied whole (so \\u0000 stays text)
		if (text.compare(k, kNul.size(), kNul) == 0) {
			out += kReplacement;
			k += kNul.size();
			replaced = true;
			continue;
		}
		out += c;
		out += text[k + 1];
		k += 2;
	}
	return replaced;
}

TemplateParse parse_template(std::string_view tpl, TemplatePart *parts, std::size_t max_parts) noexcept {
	TemplateParse r;
	auto add = [&](bool column, std::size_t offset, std::size_t length) {
		if (length == 0)
			return true;
		if (!column) {
			r.static_bytes += length;
			// extend the previous literal slice when it ends right here
			if (r.nparts > 0 && !parts[r.nparts - 1].column &&
			    parts[r.nparts - 1].offset + parts[r.nparts - 1].length == offset) {
				parts[r.nparts - 1].length += length;
				return true;
			}
		} else {
			r.ncolumns++;
		}
		if (r.nparts == max_parts) {
			r.status = TemplateStatus::TooManyParts;
			r.position = offset;
			return false;
		}
		parts[r.nparts++] = TemplatePart{column, offset, length};
		return true;
	};
	std::size_t k = 0, lit = 0; // lit: start of the pending literal run
	while (k < tpl.size()) {
		char c = tpl[k];
		if (c == '{' && k + 1 < tpl.size() && tpl[k + 1] == '{') {
			if (!add(false, lit, k + 1 - lit)) // up to and including the first '{'
				return r;
			k += 2;
			lit = k;
		} else if (c == '}' && k + 1 < tpl.size() && tpl[k + 1] == '}') {
			if (!add(false, lit, k + 1 - lit))
				return r;
			k += 2;
			lit = k;
		} else if (c == '}') {
			r.status = TemplateStatus::UnopenedBrace;
			r.position = k;
			return r;
		} else if (c == '{') {
			std::size_t close = k + 1;
			while (close < tpl.size() && tpl[close] != '}' && tpl[close] != '{')
				close++;
			if (close == tpl.size()) {
				r.status = TemplateStatus::UnclosedBrace;
				r.position = k;
				return r;
			}
			if (tpl[close] == '{') {
				r.status = TemplateStatus::BraceInColumn;
				r.position = close;
				return r;
			}
			if (close == k + 1) {
				r.status = TemplateStatus::EmptyColumn;
				r.position = k;
				return r;
			}
			if (!add(false, lit, k - lit) || !add(true, k + 1, close - k - 1))
				return r;
			k = close + 1;
			lit = k;
		} else {
			k++;
		}
	}
	add(false, lit, k - lit);
	return r;
}

const char *template_status_message(TemplateStatus s) noexcept {
	switch (s) {
	case TemplateStatus::Ok:
		return "ok";
	case TemplateStatus::UnclosedBrace:
		return "\"{\" is not closed by \"}\"";
	case TemplateStatus::UnopenedBrace:
		return "\"}\" has no matching \"{\"";
	case TemplateStatus::EmptyColumn:
		return "\"{}\" names no column";
	case TemplateStatus::BraceInColumn:
		return "\"{\" inside a column reference";
	case TemplateStatus::TooManyParts:
		return "too many parts";
	}
	return "unknown";
}

} // namespace pg_outbox::payload
