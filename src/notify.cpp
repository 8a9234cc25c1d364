// notify.cpp — outbox.notify(): a NOTIFY from SQL, checked against the limits (limits.hpp) first.
#include "pg_outbox.hpp"
#include "guard.hpp"

extern "C" {
#include "commands/async.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
}


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
