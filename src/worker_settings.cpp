// worker_settings.cpp — the settings the launcher and the drain workers pin after connecting
// (worker_settings.hpp).
#include "pg_outbox.hpp"
#include "worker_settings.hpp"

#include <cerrno>

extern "C" {
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
}

namespace pg_outbox {

volatile sig_atomic_t got_sigterm = false;

void handle_worker_sigterm(SIGNAL_ARGS) {
	int save_errno = errno;
	got_sigterm = true;
	if (!proc_exit_inprogress) {
		InterruptPending = true;
		ProcDiePending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

// ALTER DATABASE ... SET and ALTER ROLE ... SET settings (even role and session_authorization)
// apply to a background worker's connection as to any other (process_settings() in
// InitPostgres). The database owner may set most of them. None of them may stop, slow or subvert
// the launcher and the drain workers, which run as the bootstrap superuser: after connecting,
// each worker overrides what it depends on (PGC_S_OVERRIDE: a reload does not undo it either).
struct PinnedSetting {
	const char *name;
	const char *value; // nullptr: the bootstrap superuser's name
};
static const PinnedSetting kPinnedSettings[] = {
    // who the worker is: the bootstrap superuser, never a role a database or role setting names
    {"session_authorization", nullptr},
    {"role", "none"},
    // transactions the drain can commit, at the isolation its take-a-batch logic assumes
    {"default_transaction_read_only", "off"},
    {"default_transaction_isolation", "read committed"},
    {"default_transaction_deferrable", "off"},
    // (transaction_read_only and transaction_isolation start from these in every transaction)
    // no timeout cuts a drain short (transaction_timeout exists from PostgreSQL 17 on)
    {"statement_timeout", "0"},
    {"lock_timeout", "0"},
    {"idle_in_transaction_session_timeout", "0"},
    {"idle_session_timeout", "0"},
    {"transaction_timeout", "0"},
    // its SQL resolves only pg_catalog objects (and the schema-qualified outbox ones)
    {"search_path", "pg_catalog, pg_temp"},
    // a drain's notifications reach listeners at commit: the commit must be durable before that,
    // or a crash could hand the same positions out again to other events
    {"synchronous_commit", "on"},
    // the DBA's triggers on the history fire; the pending_wake trigger fires
    {"session_replication_role", "origin"},
    // nothing makes every drain slower: JIT compilation, forced parallel plans, cost-based
    // VACUUM delays in the worker's own VACUUM of outbox.pending, generic plans re-planned
    {"jit", "off"},
    {"force_parallel_mode", "off"},
    {"debug_parallel_query", "off"},
    {"max_parallel_workers_per_gather", "0"},
    {"plan_cache_mode", "auto"},
    {"vacuum_cost_delay", "0"},
    {"enable_seqscan", "on"},
    {"enable_indexscan", "on"},
    {"enable_indexonlyscan", "on"},
    {"enable_bitmapscan", "on"},
    {"enable_tidscan", "on"},
    {"enable_sort", "on"},
    {"enable_hashagg", "on"},
    {"enable_nestloop", "on"},
    {"enable_hashjoin", "on"},
    {"enable_mergejoin", "on"},
    {"enable_material", "on"},
};

void pin_worker_settings(void) {
	// role and session_authorization look their value up in the catalogs: in a transaction (a
	// plain SET made in a transaction outlives its commit)
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	const char *superuser_name = GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false);
	for (const PinnedSetting &s : kPinnedSettings) {
		if (!GetConfigOption(s.name, true, false))
			continue; // not in this PostgreSQL version
		SetConfigOption(s.name, s.value ? s.value : superuser_name, PGC_SUSET, PGC_S_OVERRIDE);
	}
	CommitTransactionCommand();
	if (GetUserId() != BOOTSTRAP_SUPERUSERID || GetSessionUserId() != BOOTSTRAP_SUPERUSERID)
		ereport(FATAL, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
		                errmsg("pg_outbox: the worker does not run as the bootstrap superuser"),
		                errdetail("A database or role setting changed its role, and overriding it failed.")));
}

} // namespace pg_outbox
