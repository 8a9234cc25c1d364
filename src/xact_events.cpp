// xact_events.cpp — pg_outbox's one transaction callback and one subtransaction callback
// (xact_events.hpp): like PostgreSQL's own AtEOXact_* calls in xact.c, one place says which part
// sees which end-of-transaction event, in which order.
#include "xact_events.hpp"
#include "guard.hpp"
#include "log.hpp"

namespace pg_outbox {

static void xact_callback(XactEvent event, void *) {
	boundary([&] {
		trigger_buffer_xact_event(event); // first: at PRE_COMMIT it writes events (and marks the wake-up)
		wakeup_xact_event(event);
		consumers_xact_event(event);
		rights_xact_event(event);
		log_pass_xact_event(event);
		log_publish_xact_event(event);
		storage_mode_xact_event(event);
	});
}

static void subxact_callback(SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
	boundary([&] {
		int level = GetCurrentTransactionNestLevel();
		trigger_buffer_subxact_event(event, level);
		wakeup_subxact_event(event, level);
		consumers_subxact_event(event, level);
		log_pass_subxact_event(event, level);
		storage_mode_subxact_event(event, level);
	});
}

void xact_events_init(void) {
	RegisterXactCallback(xact_callback, nullptr);
	RegisterSubXactCallback(subxact_callback, nullptr);
}

} // namespace pg_outbox
