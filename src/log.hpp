// log.hpp — the write-once log of issue #15 (doc/storage.md): what its producer (log_publish.cpp)
// and its drain pass (log_pass.cpp) share.
#pragma once

extern "C" {
#include "postgres.h"
#include "access/xact.h"
}

namespace pg_outbox {

// outbox._log_segments(): 60_log.sql creates log_0..2 and batches_0..2.
constexpr int kLogSegments = 3;

// End of a transaction (xact_events.cpp): the producer forgets the segment it read.
void log_publish_xact_event(XactEvent event);

} // namespace pg_outbox
