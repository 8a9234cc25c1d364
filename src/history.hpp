// history.hpp — the published history (history.cpp): kSegments segments outbox.history_0..2
// (children of outbox.history), the current one named by outbox.state.cur_seg. The drain inserts
// into the current segment; retention empties the oldest with TRUNCATE and makes it current.
#pragma once

#include "direct.hpp"

namespace pg_outbox {

// How many history segments there are: the one constant of C++. SQL keeps its own literals
// (src/sql/20_outbox.sql creates outbox.history_0, _1, _2; 90_privileges.sql grants on them),
// and history.cpp asserts that this is 3.
constexpr int kSegments = 3;

// The segments' layouts, for the drain's inserts without the executor (direct.hpp).
extern TableLayout history_layout[kSegments];

// Lock every history segment (ROW EXCLUSIVE), in segment order, before anything else of a drain:
// outbox.purge() and retention lock the segments (in that order) and then the state row, so a
// drain that held the state row and only then asked for a segment could deadlock with them.
void lock_history_segments(void);

// Rotate and empty history segments per pg_outbox.retention, and summarize the BRIN index of the
// current and previous segments (drain worker, in its pass's transaction, about once a second).
void maintain_retention(void);

} // namespace pg_outbox
