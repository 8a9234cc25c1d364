// pg_outbox.cpp — module start: _PG_init (refuses to load outside shared_preload_libraries,
// defines the GUCs, installs the hooks and callbacks of every part, registers the launcher) and
// the GUCs pg_outbox.* that the drain worker reads; check_writable() for the writing functions.
#include "pg_outbox.hpp"
#include "log_pass.hpp"
#include "log.hpp"
#include "guard.hpp"
#include "drain_failures.hpp"
#include "launcher.hpp"
#include "rights.hpp"
#include "trigger_buffer.hpp"
#include "utility_hook.hpp"
#include "invalidation.hpp"
#include "xact_events.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/varlena.h"

PG_MODULE_MAGIC;
void _PG_init(void);
}

namespace pg_outbox {

int guc_batch_size = 1000;
int guc_idle_interval_ms = 1000;
int guc_batch_delay_ms = 0;
double guc_max_queue_usage = 0.5;
char *guc_databases = nullptr;
int guc_retention_s = 86400;

void check_writable(const char *what, bool read_only_ok) {
	if (RecoveryInProgress())
		ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION), errmsg("cannot execute %s during recovery", what),
		                errdetail("This server is a hot standby: it has the primary's events but writes none."),
		                errhint("Run %s on the primary server. On a standby, outbox.replay(), outbox.event(), "
		                        "outbox.head() and outbox.status can be read.",
		                        what)));
	if (XactReadOnly && !read_only_ok)
		ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
		                errmsg("cannot execute %s in a read-only transaction", what),
		                errhint("Run it in a read-write transaction (BEGIN READ WRITE; or SET "
		                        "default_transaction_read_only = off).")));
}

// pg_outbox.databases: '*', '' or a list of names SplitIdentifierString accepts (no empty name,
// quotes closed). Refused when set; a bad value in postgresql.conf keeps the old one at reload.
static bool check_databases(char **newval, void **, GucSource source) {
	return boundary([&]() -> bool {
		if (!*newval || strcmp(*newval, "*") == 0)
			return true;
		char *copy = pstrdup(*newval);
		List *names = NIL;
		bool ok = SplitIdentifierString(copy, ',', &names);
		if (!ok)
			GUC_check_errdetail("A comma-separated list of database names is expected (no empty name, "
			                    "double quotes closed), or '*' for every database with the extension, or '' for none.");
		// A reload (postmaster, configuration file) reports a refused value at LOG only: say at WARNING,
		// once (the postmaster, not every backend), which value stays in effect.
		if (!ok && source == PGC_S_FILE && !IsUnderPostmaster && guc_databases)
			ereport(WARNING, (errmsg("pg_outbox.databases = \"%s\" in the configuration file is invalid: the value "
			                         "\"%s\" stays in effect",
			                         *newval, guc_databases),
			                  errhint("Write a comma-separated list of database names, '*' or ''; then reload.")));
		list_free(names);
		pfree(copy);
		return ok;
	});
}

static void define_gucs(void) {
	DefineCustomIntVariable("pg_outbox.batch_size", "Events published per drain transaction.", nullptr,
	                        &guc_batch_size, 1000, 1, 100000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomBoolVariable("pg_outbox.drain_log",
	                         "Drain workers also publish the events of the write-once log (development, issue #15).",
	                         "Until the storage switch moves producers onto outbox.log, nothing but the internal "
	                         "test producers writes it.",
	                         &guc_drain_log, false, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("pg_outbox.channel_cache_size",
	                        "The most channels whose last seq a process running passes over the log keeps in memory.",
	                        "About 150 bytes each. Past it, the cache is written into outbox.log_channels and "
	                        "emptied, and a channel not in memory costs one index lookup.",
	                        &guc_channel_cache_size, 262144, 16, 64 * 1024 * 1024, PGC_SUSET, 0, nullptr, nullptr,
	                        nullptr);
	DefineCustomIntVariable("pg_outbox.idle_interval",
	                        "Safety tick: how long an idle drain worker sleeps when no commit wakes it.", nullptr,
	                        &guc_idle_interval_ms, 1000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
	                        nullptr);
	DefineCustomIntVariable("pg_outbox.batch_delay",
	                        "After a commit wakes the drain worker, how long it waits for more commits before "
	                        "draining (0: drain at once).",
	                        "Trades latency for fewer, larger drain transactions under heavy load.", &guc_batch_delay_ms,
	                        0, 0, 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
	DefineCustomRealVariable("pg_outbox.max_queue_usage",
	                         "NOTIFY queue fill (0..1) above which drain workers wait instead of publishing.", nullptr,
	                         &guc_max_queue_usage, 0.5, 0.0, 1.0, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomStringVariable("pg_outbox.databases",
	                           "Databases that get a drain worker: '*' (every database with the extension), "
	                           "a comma-separated list of names, or '' (none).",
	                           nullptr, &guc_databases, "*", PGC_SIGHUP, 0, check_databases, nullptr, nullptr);
	DefineCustomIntVariable("pg_outbox.retention", "How long published events are kept for replay.", nullptr,
	                        &guc_retention_s, 86400, 1, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
}

} // namespace pg_outbox

extern "C" void _PG_init(void) {
	pg_outbox::boundary([] {
		using namespace pg_outbox;
		if (!process_shared_preload_libraries_in_progress)
			ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			                errmsg("pg_outbox must be loaded via shared_preload_libraries"),
			                errdetail("Its drain workers and commit-time wake-ups are set up when the server starts."),
			                errhint("Add pg_outbox to shared_preload_libraries in postgresql.conf and restart the "
			                        "server.")));

		define_retry_gucs();  // drain_failures.cpp: pg_outbox.max_attempts, pg_outbox.retry_delay
		define_health_gucs(); // health.cpp: pg_outbox.health_*
		consumers_init();     // consumers.cpp: pg_outbox.consumer_max_retention
		define_gucs();
		// after every pg_outbox.* setting is defined: a setting defined later would be removed
		// from postgresql.conf's values at startup, with a WARNING (t/125)
		MarkGUCPrefixReserved("pg_outbox");

		shmem_install();        // shmem.cpp
		install_utility_hook(); // utility_hook.cpp
		xact_events_init();     // xact_events.cpp: the one transaction/subtransaction callback pair
		invalidation_init();    // invalidation.cpp: the one relcache/syscache callback pair
		install_schema_guard();
		rights_init(); // channel rights: the fmgr hook that tells who called, the rules' invalidation
		install_trigger_hooks(); // trigger_buffer.cpp: outbox-mode events are written at each statement's end

		if (!IsBinaryUpgrade)
			register_launcher();
	});
}

// Kept for the frozen install scripts of 0.9 .. 1.2 (src/sql/releases), which create
// outbox._boundary_selftest() with this symbol: CREATE EXTENSION pg_outbox VERSION '1.2' needs
// it to exist. The self-test itself is a test module now (test/selftest); the 1.2 -> 1.3 update
// drops the function.
PGO_FUNCTION(outbox_boundary_selftest) {
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
	                errmsg("outbox._boundary_selftest() is not part of pg_outbox %s", PG_OUTBOX_VERSION),
	                errhint("Run ALTER EXTENSION pg_outbox UPDATE; the self-test is a test module (test/selftest).")));
	PG_RETURN_NULL();
}
