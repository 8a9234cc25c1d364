// rights.hpp — channel rights (issue #11 part 5): who may publish on, and read, which channels.
// See rights.cpp for the model; the SQL side is src/sql/95_channels.sql.
#pragma once

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "utils/relcache.h"
}

namespace pg_outbox {

enum ChannelPrivilege : int { kPrivPublish = 1, kPrivRead = 2 };

// Install the hooks and invalidation callbacks (from _PG_init).
void rights_init(void);

// Is any right of this kind granted at all (no: today's behaviour, everyone with EXECUTE may)?
// self_fn: the OID of a pg_outbox function (the caller's own), to find the extension by.
bool rights_enforced(int privilege, Oid self_fn);

// While read rights are enforced, the drain sends envelopes without payload, key and type
// ("truncated": true): any role may LISTEN on any channel, so a NOTIFY must carry nothing a
// channel right guards. Consumers read the event with outbox.replay(), which checks the right.
inline bool notifications_id_only(void) {
	return rights_enforced(kPrivRead, InvalidOid);
}

// Raise 42501 unless the role that called pg_outbox may publish on channel. Nearly free when no
// publish right exists. what: for the message ("role \"x\"" is added).
void require_publish(const char *channel, Oid self_fn);
// The change trigger: its events are published with the rights of the table's owner.
void require_publish_as_owner(const char *channel, Relation rel, Oid self_fn);

} // namespace pg_outbox
