// spi_util.cpp — see spi_util.hpp.
#include "spi_util.hpp"

extern "C" {
#include "access/xact.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
}

namespace pg_outbox {

int pin_search_path(void) {
	int level = NewGUCNestLevel();
	(void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
	                        false);
	return level;
}

SPIPlanPtr keep_plan(const char *sql, int nargs, Oid *types) {
	SPIPlanPtr p = SPI_prepare(sql, nargs, types);
	if (!p)
		elog(ERROR, "pg_outbox: SPI_prepare failed (%s) for: %s", SPI_result_code_string(SPI_result), sql);
	SPI_keepplan(p);
	return p;
}

ErrorData *run_in_subxact(void (*fn)(void *), void *arg) {
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData *volatile edata = nullptr;
	BeginInternalSubTransaction(nullptr);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

} // namespace pg_outbox
