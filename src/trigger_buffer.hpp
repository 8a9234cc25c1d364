// trigger_buffer.hpp — outbox mode of the change trigger (trigger_buffer.cpp): a row's event is
// buffered in the transaction and written into outbox.pending at the end of the statement, in
// the order the rows changed, each at the subtransaction level it was made in.
#pragma once

extern "C" {
#include "postgres.h"
#include "utils/jsonb.h"
}

namespace pg_outbox {

// Buffer one event (channel, key or nullptr for NULL, type a string constant, payload a jsonb
// value, copied); written by the next flush at this subtransaction level.
void buffer_event(const char *channel, const char *key, const char *type, const Jsonb *payload);
// Write the buffered events of the current subtransaction level now (the statement trigger
// outbox_flush, the hooks, pre-commit).
void flush_events(void);
// The ExecutorFinish and ProcessUtility hooks that flush at the end of every query and utility
// statement (_PG_init).
void install_trigger_hooks(void);

} // namespace pg_outbox
