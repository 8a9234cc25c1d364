// spi_util.hpp — generic helpers for the SQL pg_outbox runs through SPI (spi_util.cpp): saved
// plans, a pinned search_path, result checks, and a subtransaction runner.
#pragma once

extern "C" {
#include "postgres.h"
#include "executor/spi.h"
}

namespace pg_outbox {

// SPI_prepare + SPI_keepplan, with an error naming the statement if it cannot be prepared.
SPIPlanPtr keep_plan(const char *sql, int nargs, Oid *types);

// Set search_path to 'pg_catalog, pg_temp' in a new GUC nest level (undo with AtEOXact_GUC(true,
// level); an error undoes it with the transaction): for SQL run with another role's rights.
int pin_search_path(void);

// An SPI call that did not return what was expected (rc) is an internal error naming what failed.
inline void spi_check(int rc, int expected, const char *what) {
	if (rc != expected)
		elog(ERROR, "pg_outbox: %s failed: %s", what, SPI_result_code_string(rc));
}

// Run fn(arg) in a subtransaction: nullptr if it committed, else the error it raised (copied;
// the subtransaction rolled back, the error state flushed). The caller frees it.
ErrorData *run_in_subxact(void (*fn)(void *), void *arg);

} // namespace pg_outbox
