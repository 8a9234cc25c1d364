// invalidation.hpp — the one relcache callback and the one syscache callback of pg_outbox
// (invalidation.cpp), which tell each per-backend cache what changed: the change trigger's
// configs (trigger_config.cpp), the channel rights (rights.cpp), the trust in the extension's
// schema (schema_guard.cpp), the table layouts of the direct inserts (direct.cpp). (PostgreSQL
// has room for 10 relcache callbacks in a backend, for all extensions together: one is what
// pg_outbox's own parts take.)
#pragma once

extern "C" {
#include "postgres.h"
}

namespace pg_outbox {

// What each part forgets (each defined in the part's own file).
void trigger_configs_forget(Oid relid);  // trigger_config.cpp: configs of relid (InvalidOid: all)
void rights_forget_relation(Oid relid);  // rights.cpp: the rules, if relid is their table (InvalidOid: any)
void rights_forget_roles(void);          // rights.cpp: role OIDs and memberships
void rights_forget_function(void);       // rights.cpp: the function last asked about
void schema_trust_forget(void);          // schema_guard.cpp: the extension's schema, its trust
void direct_layouts_forget(Oid relid);   // direct.cpp: the layouts of relid (InvalidOid: all)
void log_seqs_forget(Oid relid);         // log_pass.cpp: the seq cache, if relid is outbox.log_channels (InvalidOid: any)
void pending_owner_forget(Oid relid);   // publish.cpp: outbox.pending's owner, if relid is that table (InvalidOid: any)
void log_segment_forget(Oid relid);     // log_publish.cpp: the log's current segment, if relid is outbox.log_state or a segment (InvalidOid: any)
void storage_mode_forget_relation(Oid relid); // storage_mode.cpp: the log mode known committed and outbox.log_state's OID, if relid is outbox.log_state (InvalidOid: any)

// Register the callbacks (_PG_init).
void invalidation_init(void);

} // namespace pg_outbox
