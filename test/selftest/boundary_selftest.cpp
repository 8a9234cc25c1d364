// boundary_selftest.cpp — a test module, not part of pg_outbox: exercises the C++/Postgres
// error boundary of src/guard.hpp (sql/boundary.sql loads it with CREATE FUNCTION ... LANGUAGE c
// AS 'pg_outbox_selftest'). Built and installed by `make install-selftest`, which the test suite
// runs into its private installation only; `make install` never installs it.
#include "guard.hpp"

extern "C" {
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

PG_MODULE_MAGIC;
}

#include <stdexcept>
#include <string>

using namespace pg_outbox;

// ---- self-test of the C++/Postgres error boundary (used by the regression tests) ----
namespace {
int live_objects = 0; // objects with destructors that are alive right now
struct Counted {
	std::string text{"a string that owns heap memory, to be freed by its destructor"};
	Counted() {
		live_objects++;
	}
	~Counted() {
		live_objects--;
	}
};

Datum selftest(const char *what) {
	Counted guard_object; // must be destroyed whatever happens below
	std::string name(what);
	if (name == "ok")
		return CStringGetTextDatum("ok");
	if (name == "std")
		throw std::runtime_error("boom from C++");
	if (name == "bad_alloc")
		throw std::bad_alloc();
	if (name == "error")
		throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "a pg_outbox::Error", "with a detail", "and a hint");
	if (name == "int")
		throw 42;
	if (name == "pg") {
		// A Postgres error raised while C++ objects are alive: pg_guard turns it into an
		// exception, the destructors run, and the boundary re-raises the original error.
		pg_guard([]() { (void)DirectFunctionCall2(int4div, Int32GetDatum(1), Int32GetDatum(0)); });
	}
	if (name == "live")
		return Int32GetDatum(live_objects - 1); // objects left alive by earlier calls
	throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "unknown self-test \"" + name + "\"", "",
	            "Use one of: ok, std, bad_alloc, error, int, pg, live.");
}
} // namespace

// boundary_selftest(what text) RETURNS text
PGO_FUNCTION(outbox_boundary_selftest) {
	char *what = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Datum d = selftest(what);
	if (strcmp(what, "live") == 0)
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("%d", DatumGetInt32(d))));
	return d;
}
