// notify.cpp — size-checked NOTIFY from SQL, the limits, and the boundary self-test.
#include "pg_outbox.hpp"
#include "guard.hpp"

extern "C" {
#include "commands/async.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
}

#include <stdexcept>

using namespace pg_outbox;

// outbox.notify(channel text, payload text) RETURNS void
PGO_FUNCTION(outbox_notify) {
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("channel name cannot be NULL")));
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("payload cannot be NULL"),
		                errhint("Pass '' to send a notification without a payload.")));
	text *ch = PG_GETARG_TEXT_PP(0);
	text *pl = PG_GETARG_TEXT_PP(1);
	size_t chlen = VARSIZE_ANY_EXHDR(ch);
	size_t pllen = VARSIZE_ANY_EXHDR(pl);
	char *channel = text_to_cstring(ch);
	check_channel_or_error(channel, chlen, "channel name");
	if (pllen > kMaxPayloadBytes)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg(msg::kPayloadTooLong, pllen),
		                errdetail(msg::kPayloadTooLongDetail, (int)kMaxPayloadBytes + 1),
		                errhint("Send an identifier and let the consumer fetch the row, or use outbox.publish(), "
		                        "whose envelopes never exceed the limit.")));
	// NOTIFY needs a lock a hot standby cannot take: say so now, not with a lock-mode error at commit
	check_writable("outbox.notify()", true);
	Async_Notify(channel, text_to_cstring(pl));
	PG_RETURN_VOID();
}

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

// outbox._boundary_selftest(what text) RETURNS text
PGO_FUNCTION(outbox_boundary_selftest) {
	char *what = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Datum d = selftest(what);
	if (strcmp(what, "live") == 0)
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("%d", DatumGetInt32(d))));
	return d;
}
