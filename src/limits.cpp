// limits.cpp — the Postgres side of limits.hpp: the errors that enforce the channel rule, and
// the SQL functions that tell or check the limits (outbox.max_payload_bytes(),
// outbox.max_channel_bytes(), outbox._require_channel()).
#include "pg_outbox.hpp"
#include "guard.hpp"

extern "C" {
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
}

namespace pg_outbox {

void check_channel_or_error(const char *channel, size_t len, const char *what) {
	switch (check_channel(std::string_view(channel, len))) {
	case ChannelCheck::Ok:
		return;
	case ChannelCheck::Empty:
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg(msg::kChannelEmpty, what),
		                errhint("%s", msg::kChannelEmptyHint)));
		break;
	case ChannelCheck::TooLong:
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg(msg::kChannelTooLong, what, len),
		                errdetail(msg::kChannelTooLongDetail,
		                          pg_mbcliplen(channel, (int)len, msg::kChannelDetailBytes), channel, len),
		                errhint("%s", msg::kChannelTooLongHint)));
		break;
	}
}

} // namespace pg_outbox

using namespace pg_outbox;

PGO_FUNCTION(outbox_max_payload_bytes) {
	PG_RETURN_INT32(static_cast<int32>(kMaxPayloadBytes));
}

PGO_FUNCTION(outbox_max_channel_bytes) {
	PG_RETURN_INT32(static_cast<int32>(kMaxChannelBytes));
}

// outbox._require_channel(channel text, what text) RETURNS void: the channel rule for SQL code
// (NULL is the caller's to refuse, with its own hint).
PGO_FUNCTION(outbox_require_channel) {
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_VOID();
	text *ch = PG_GETARG_TEXT_PP(0);
	char *what = text_to_cstring(PG_GETARG_TEXT_PP(1));
	check_channel_or_error(VARDATA_ANY(ch), VARSIZE_ANY_EXHDR(ch), what);
	PG_RETURN_VOID();
}
