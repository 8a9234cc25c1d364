// guard.hpp — the one door between C++ exceptions and Postgres errors.
//
// Postgres reports errors with ereport(), which longjmp()s to the nearest PG_TRY or to
// the top level; C++ reports errors with exceptions. Neither may cross the other:
//
//   * An exception that reaches a Postgres frame terminates the server process.
//   * A longjmp across a C++ frame that owns an object with a destructor skips the
//     destructor (undefined behaviour, in practice a leak or a held lock).
//
// So every entry point Postgres calls (SQL functions, triggers, hooks, callbacks, worker
// mains) goes through one of the wrappers below. test/check_wrappers.sh (run by `make unit`)
// fails when one does not: a SQL function not defined with PGO_FUNCTION, or a hook, callback,
// GUC hook, exit callback or worker main whose body does not start with boundary(). The
// entry points it would tolerate are listed, with the reason, in test/check_wrappers.allow (empty).
// Signal handlers are not entry points of this kind: they only set flags and latches.
//
//   PGO_FUNCTION(name) { ... }   a V1 SQL-callable function: an extern "C" wrapper runs the
//                                body inside boundary(), which catches every exception and
//                                re-raises it with ereport() once the C++ frames are gone.
//   boundary(f)                  the same for hooks and callbacks that return something else.
//   pg_guard(f)                  the reverse door: runs Postgres code that may ereport() from
//                                C++ code that holds objects with destructors; an error becomes
//                                a PgError exception, so those destructors run, and boundary()
//                                re-throws the original error (same SQLSTATE, message, hint).
//
// Rules for the code in between: a frame that may see an ereport() directly (no pg_guard)
// holds no object with a non-trivial destructor; boundary() and the lambdas passed to it hold
// none either, so an ereport() inside body() unwinds through them by longjmp safely. The pure
// C++ modules (json_writer, envelope, payload, limits, the listener's core) include no Postgres
// header at all and are unit-tested on their own.
#pragma once

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "utils/elog.h"
#include "utils/memutils.h"
}

#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

namespace pg_outbox {

// A C++ error meant for the SQL user: SQLSTATE, message, optional detail and hint.
class Error : public std::exception {
public:
	Error(int sqlerrcode, std::string message, std::string detail = {}, std::string hint = {})
	    : code_(sqlerrcode), message_(std::move(message)), detail_(std::move(detail)), hint_(std::move(hint)) {
	}
	const char *what() const noexcept override {
		return message_.c_str();
	}
	int code() const noexcept {
		return code_;
	}
	const std::string &detail() const noexcept {
		return detail_;
	}
	const std::string &hint() const noexcept {
		return hint_;
	}

private:
	int code_;
	std::string message_, detail_, hint_;
};

// A Postgres error caught by pg_guard(); boundary() re-throws it unchanged.
class PgError : public std::exception {
public:
	explicit PgError(ErrorData *edata) noexcept : edata_(edata) {
	}
	const char *what() const noexcept override {
		return edata_ && edata_->message ? edata_->message : "postgres error";
	}
	ErrorData *edata() const noexcept {
		return edata_;
	}

private:
	ErrorData *edata_;
};

namespace detail {
// What boundary() caught, copied into static storage so that nothing needs palloc (which
// could itself ereport) while an exception object is alive.
struct Caught {
	ErrorData *pg = nullptr;
	int code = 0;
	bool has_detail = false, has_hint = false;
	char message[1024];
	char detail[1024];
	char hint[512];
};
void record(Caught &c, const Error &e) noexcept;
void record(Caught &c, const char *what, int code) noexcept;
// Raise what was caught as a Postgres ERROR. Never returns.
[[noreturn]] void raise(const Caught &c);
extern Caught last_caught;
} // namespace detail

// Run body() and turn anything it throws into a Postgres ERROR, raised after the C++
// frames of body() are gone.
template <typename F> auto boundary(F &&body) -> decltype(body()) {
	detail::Caught &c = detail::last_caught;
	c.pg = nullptr;
	try {
		return body();
	} catch (const PgError &e) {
		c.pg = e.edata();
	} catch (const Error &e) {
		detail::record(c, e);
	} catch (const std::bad_alloc &) {
		detail::record(c, "out of memory", ERRCODE_OUT_OF_MEMORY);
	} catch (const std::exception &e) {
		detail::record(c, e.what(), ERRCODE_INTERNAL_ERROR);
	} catch (...) {
		detail::record(c, "unknown C++ exception", ERRCODE_INTERNAL_ERROR);
	}
	detail::raise(c);
}

// Run Postgres code f() from C++ code that owns destructible objects: an ereport(ERROR)
// inside f() becomes a PgError exception.  f() itself must own no destructible objects.
template <typename F> auto pg_guard(F &&f) -> decltype(f()) {
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData *volatile edata = nullptr;
	if constexpr (std::is_void_v<decltype(f())>) {
		PG_TRY();
		{ f(); }
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
		}
		PG_END_TRY();
		if (edata)
			throw PgError(edata);
	} else {
		using R = decltype(f());
		R result{};
		PG_TRY();
		{ result = f(); }
		PG_CATCH();
		{
			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
		}
		PG_END_TRY();
		if (edata)
			throw PgError(edata);
		return result;
	}
}

} // namespace pg_outbox

// Define a V1 SQL-callable function whose body runs inside the boundary:
//   PGO_FUNCTION(outbox_notify) { ... return ...; }
#define PGO_FUNCTION(name)                                                                                             \
	static Datum name##_body(FunctionCallInfo fcinfo);                                                                  \
	extern "C" {                                                                                                       \
	PG_FUNCTION_INFO_V1(name);                                                                                         \
	}                                                                                                                  \
	extern "C" Datum name(PG_FUNCTION_ARGS) {                                                                          \
		return pg_outbox::boundary([fcinfo]() { return name##_body(fcinfo); });                                        \
	}                                                                                                                  \
	static Datum name##_body(FunctionCallInfo fcinfo)
