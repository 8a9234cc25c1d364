// channel_pattern.hpp — the patterns of channel rights (outbox.grant_channel): LIKE's '%' (any
// string, also empty) and '\' (the next character literally), but NOT LIKE's '_': channel names
// are full of underscores, and a right on 'tenant_42' must not cover 'tenantX42'. Matching is
// by bytes, case-sensitive, as channel names are. Pure C++, no allocation, unit-tested in
// test/unit/channel_pattern_test.cpp.
#pragma once

#ifdef POSTGRES_H
#error "include channel_pattern.hpp before the Postgres headers (it is pure C++)"
#endif

#include <cstddef>
#include <string_view>

namespace pg_outbox {

enum class PatternCheck { Ok, Empty, TooLong, TrailingEscape };
constexpr std::size_t kMaxPatternBytes = 126; // a 63-byte channel with every byte escaped

inline PatternCheck check_channel_pattern(std::string_view p) noexcept {
	if (p.empty())
		return PatternCheck::Empty;
	if (p.size() > kMaxPatternBytes)
		return PatternCheck::TooLong;
	for (std::size_t i = 0; i < p.size(); i++)
		if (p[i] == '\\') {
			if (i + 1 >= p.size())
				return PatternCheck::TrailingEscape;
			i++;
		}
	return PatternCheck::Ok;
}

// Does the pattern have a wildcard (an unescaped '%')?
inline bool pattern_has_wildcard(std::string_view p) noexcept {
	for (std::size_t i = 0; i < p.size(); i++) {
		if (p[i] == '\\')
			i++;
		else if (p[i] == '%')
			return true;
	}
	return false;
}

// Glob matching with one wildcard kind: linear backtracking to the last '%'. An invalid
// pattern (a trailing '\') matches nothing.
inline bool channel_matches(std::string_view pat, std::string_view ch) noexcept {
	constexpr std::size_t npos = std::string_view::npos;
	std::size_t p = 0, c = 0, star_p = npos, star_c = 0;
	while (c < ch.size()) {
		if (p < pat.size()) {
			char pc = pat[p];
			if (pc == '%') {
				star_p = ++p;
				star_c = c;
				continue;
			}
			std::size_t len = 1;
			if (pc == '\\') {
				if (p + 1 >= pat.size())
					return false;
				pc = pat[p + 1];
				len = 2;
			}
			if (pc == ch[c]) {
				p += len;
				c++;
				continue;
			}
		}
		if (star_p == npos)
			return false;
		p = star_p;
		c = ++star_c;
	}
	while (p < pat.size() && pat[p] == '%')
		p++;
	return p == pat.size();
}

} // namespace pg_outbox
