// guard.cpp — the raising half of the C++/Postgres error boundary (see guard.hpp).
#include "guard.hpp"

#include <cstring>

namespace pg_outbox::detail {

Caught last_caught;

static void copy_text(char *dst, size_t cap, const char *src) noexcept {
	std::strncpy(dst, src ? src : "", cap - 1);
	dst[cap - 1] = '\0';
}

void record(Caught &c, const Error &e) noexcept {
	c.pg = nullptr;
	c.code = e.code();
	copy_text(c.message, sizeof c.message, e.what());
	c.has_detail = !e.detail().empty();
	c.has_hint = !e.hint().empty();
	copy_text(c.detail, sizeof c.detail, e.detail().c_str());
	copy_text(c.hint, sizeof c.hint, e.hint().c_str());
}

void record(Caught &c, const char *what, int code) noexcept {
	c.pg = nullptr;
	c.code = code;
	copy_text(c.message, sizeof c.message, what);
	c.has_detail = c.has_hint = false;
}

void raise(const Caught &c) {
	if (c.pg)
		ReThrowError(c.pg);
	if (c.code == ERRCODE_INTERNAL_ERROR)
		ereport(ERROR, (errcode(c.code), errmsg("pg_outbox internal error: %s", c.message),
		                errhint("This is a bug in pg_outbox; please report it with the statement that caused it.")));
	ereport(ERROR, (errcode(c.code), errmsg_internal("%s", c.message),
	                c.has_detail ? errdetail_internal("%s", c.detail) : 0,
	                c.has_hint ? errhint("%s", c.hint) : 0));
	pg_unreachable();
}

} // namespace pg_outbox::detail
