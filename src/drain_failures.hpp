// drain_failures.hpp — drain() (drain_failures.cpp): drain_batch() (drain.hpp) in
// subtransactions, with the failure handling that keeps one bad event from stopping the others.
#pragma once

extern "C" {
#include "postgres.h"
}

namespace pg_outbox {

// The most events one outbox.drain() call publishes (its memory grows with the batch).
constexpr int kMaxDrainEvents = 1000000;

// What the worker and outbox.drain() run: drain_batch() in subtransactions. A batch that fails
// is narrowed down to the event that fails alone; that event is recorded in outbox.failures,
// left out of the batches and retried (pg_outbox.retry_delay, doubling) up to
// pg_outbox.max_attempts times, then moved to outbox.dead_letter with its error; the events
// behind it are published meanwhile. Errors of the system (locks, serialization, shutdown, disk,
// read-only) propagate uncounted (error_of_system() in drain_failures.cpp has the rules).
int64 drain(int max_events);

// Is this failure the system's (retried, never counted against an event)? The rules of both
// storages' failure paths (drain() here, log_pass() over the log).
bool error_of_system(int sqlerrcode);

// The test-only fault hook pg_outbox._fail_event_ids ("id[:SQLSTATE],..."): the hand-off of those
// events over the log raises that error (22000 when none is given). Armed: the list is not empty.
extern bool fault_hook_armed;
void fault_hook(int64 id);

// pg_outbox.max_attempts, pg_outbox.retry_delay and pg_outbox._fail_event_ids (called from _PG_init).
void define_retry_gucs(void);
extern int guc_max_attempts;
extern int guc_retry_delay_ms;

} // namespace pg_outbox
