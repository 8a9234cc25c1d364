// invalidation.cpp — pg_outbox's one relcache callback and one syscache callback
// (invalidation.hpp): which catalog change makes which part forget what.
#include "invalidation.hpp"
#include "guard.hpp"

extern "C" {
#include "utils/inval.h"
#include "utils/syscache.h"
}

namespace pg_outbox {

// Any DDL of a table (or InvalidOid: every relation, after a cache reset). ALTER EXTENSION
// pg_outbox ADD/DROP touches pg_depend only: the utility hook sends a relcache invalidation for
// it (forget_extension_trust), which lands here too.
static void relation_changed(Datum, Oid relid) {
	boundary([&] {
		trigger_configs_forget(relid);
		rights_forget_relation(relid);
		schema_trust_forget();
		direct_layouts_forget(relid);
		log_seqs_forget(relid);
		log_segment_forget(relid);
		pending_owner_forget(relid);
		storage_mode_forget_relation(relid);
	});
}

static void catalog_changed(Datum, int cacheid, uint32) {
	boundary([&] {
		switch (cacheid) {
		case NAMESPACEOID: // a schema renamed changes quoted table names without a relcache invalidation
			trigger_configs_forget(InvalidOid);
			schema_trust_forget();
			direct_layouts_forget(InvalidOid);
			storage_mode_forget_relation(InvalidOid);
			break;
		case AUTHOID: // a role dropped or re-created changes the OIDs of outbox_admin, outbox_reader
			rights_forget_roles();
			schema_trust_forget();
			break;
		case AUTHMEMROLEMEM: // a membership granted or revoked
			rights_forget_roles();
			break;
		case RELNAMENSP: // a relation created, renamed or dropped in some schema
			schema_trust_forget();
			break;
		case PROCOID: // a function created, altered, dropped
			rights_forget_function();
			break;
		default:
			break;
		}
	});
}

void invalidation_init(void) {
	CacheRegisterRelcacheCallback(relation_changed, (Datum)0);
	for (int cacheid : {NAMESPACEOID, AUTHOID, AUTHMEMROLEMEM, RELNAMENSP, PROCOID})
		CacheRegisterSyscacheCallback(cacheid, catalog_changed, (Datum)0);
}

} // namespace pg_outbox
