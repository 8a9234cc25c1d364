// fuzz_util.hpp — shared helpers of the libFuzzer targets (pure C++, no Postgres header).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace fuzz {

// Fail loudly: libFuzzer reports an abort as a crash and saves the input.
#define FUZZ_CHECK(cond)                                                                                             \
	do {                                                                                                               \
		if (!(cond)) {                                                                                                 \
			std::fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);                      \
			std::abort();                                                                                              \
		}                                                                                                              \
	} while (0)

// Reads the fuzzer's bytes as a sequence of fields.
class Input {
public:
	Input(const std::uint8_t *data, std::size_t size) : p_(reinterpret_cast<const char *>(data)), n_(size) {
	}
	bool empty() const {
		return n_ == 0;
	}
	std::uint8_t byte() {
		if (n_ == 0)
			return 0;
		n_--;
		return static_cast<std::uint8_t>(*p_++);
	}
	std::int64_t int64() {
		std::uint64_t v = 0;
		for (int k = 0; k < 8; k++)
			v = (v << 8) | byte();
		return static_cast<std::int64_t>(v);
	}
	double float64() {
		std::int64_t v = int64();
		double d;
		std::memcpy(&d, &v, sizeof d);
		return d;
	}
	// bytes up to the next NUL (or the end)
	std::string_view field() {
		std::size_t k = 0;
		while (k < n_ && p_[k] != '\0')
			k++;
		std::string_view s(p_, k);
		std::size_t used = k < n_ ? k + 1 : k;
		p_ += used;
		n_ -= used;
		return s;
	}
	std::string_view rest() {
		std::string_view s(p_, n_);
		p_ += n_;
		n_ = 0;
		return s;
	}

private:
	const char *p_;
	std::size_t n_;
};

inline bool valid_utf8(std::string_view s) {
	std::size_t k = 0;
	while (k < s.size()) {
		unsigned char c = static_cast<unsigned char>(s[k]);
		std::size_t len;
		std::uint32_t cp;
		if (c < 0x80) {
			k++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			len = 2;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4;
			cp = c & 0x07;
		} else
			return false;
		if (k + len > s.size())
			return false;
		for (std::size_t j = 1; j < len; j++) {
			unsigned char d = static_cast<unsigned char>(s[k + j]);
			if ((d & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (d & 0x3F);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		k += len;
	}
	return true;
}

} // namespace fuzz
