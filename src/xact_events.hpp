// xact_events.hpp — the one transaction callback and the one subtransaction callback of
// pg_outbox (xact_events.cpp), which hand each event to the parts that keep per-transaction
// state, in this order: the change trigger's outbox-mode buffer (its pre-commit flush writes
// events, which marks the drain worker's wake-up), the drain worker's wake-up, the consumers'
// waiters, the channel-rights frames. And LevelMark, the one bookkeeping of "did this transaction
// do X in a subtransaction that is still alive" that the wake-ups use.
#pragma once

extern "C" {
#include "postgres.h"
#include "access/xact.h"
}

namespace pg_outbox {

// The lowest live subtransaction level at which the current transaction did something (0:
// nothing, or only in subtransactions that rolled back). A released savepoint hands its mark to
// its parent; a savepoint rolled back forgets what was done at its level and below.
class LevelMark {
public:
	void mark() {
		int level = GetCurrentTransactionNestLevel();
		if (level_ == 0 || level < level_)
			level_ = level;
	}
	// At the top level: no subtransaction abort forgets it.
	void mark_top() {
		level_ = 1;
	}
	bool live() const {
		return level_ != 0;
	}
	void clear() {
		level_ = 0;
	}
	// SUBXACT_EVENT_COMMIT_SUB / ABORT_SUB of the subtransaction at level.
	void subxact(SubXactEvent event, int level) {
		if (event == SUBXACT_EVENT_COMMIT_SUB) {
			if (level_ == level)
				level_ = level - 1; // what was done now belongs to the parent
		} else if (event == SUBXACT_EVENT_ABORT_SUB) {
			if (level_ >= level)
				level_ = 0; // everything done at this level or below is gone
		}
	}

private:
	int level_ = 0;
};

// The parts' handlers, called by the callbacks (each defined in the part's own file).
void trigger_buffer_xact_event(XactEvent event);           // trigger_buffer.cpp
void trigger_buffer_subxact_event(SubXactEvent event, int level);
void wakeup_xact_event(XactEvent event);                   // wakeup.cpp
void wakeup_subxact_event(SubXactEvent event, int level);
void consumers_xact_event(XactEvent event);                // consumers.cpp
void consumers_subxact_event(SubXactEvent event, int level);
void rights_xact_event(XactEvent event);                   // rights.cpp
void log_pass_xact_event(XactEvent event);                 // log_pass.cpp
void log_pass_subxact_event(SubXactEvent event, int level);
void storage_mode_subxact_event(SubXactEvent event, int level); // storage_mode.cpp
void storage_mode_xact_event(XactEvent event);                    // storage_mode.cpp

// Register the two callbacks (_PG_init).
void xact_events_init(void);

} // namespace pg_outbox
