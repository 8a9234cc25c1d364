-- The direct inserts (src/direct.cpp) cache each table's layout (column numbers by name) per
-- backend; the one relcache/syscache callback pair (src/invalidation.cpp) makes them forget it.
-- Two columns of the same type that swap names keep the table's number of columns (which
-- open_layout() compares too) but swap attnums: only the invalidation tells. A layout still cached
-- would write the key into the column now named "type". One session, the layouts cached first.
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;

-- cache both layouts: outbox.pending (publish) and the current history segment (drain)
SELECT outbox.publish('lc', '{"n": 1}', 'k1', 't1') > 0 AS published;
SELECT outbox.drain();
SELECT key, type FROM outbox.history WHERE channel = 'lc' ORDER BY pos;

BEGIN;
ALTER TABLE outbox.pending RENAME COLUMN key TO swap;
ALTER TABLE outbox.pending RENAME COLUMN type TO key;
ALTER TABLE outbox.pending RENAME COLUMN swap TO type;
ALTER TABLE outbox.history_frozen RENAME COLUMN key TO swap; -- the segments inherit the names
ALTER TABLE outbox.history_frozen RENAME COLUMN type TO key;
ALTER TABLE outbox.history_frozen RENAME COLUMN swap TO type;
SELECT outbox.publish('lc', '{"n": 2}', 'k2', 't2') > 0 AS published;
-- the key is in the column named "key" (and the type in "type"), whatever their attnums
SELECT key, type FROM outbox.pending WHERE channel = 'lc';
SELECT outbox.drain();
-- the drain read them by name and wrote them by name: k2 under "key" (of the table: the view
-- outbox.history keeps its columns, bound to the table's columns as they were)
SELECT key, type FROM outbox.history_frozen WHERE channel = 'lc' ORDER BY pos;
ROLLBACK;

-- the rollback swapped the names back: the layouts are looked up again
SELECT outbox.publish('lc', '{"n": 3}', 'k3', 't3') > 0 AS published;
SELECT key, type FROM outbox.pending WHERE channel = 'lc';
SELECT outbox.drain();
SELECT key, type, payload FROM outbox.history WHERE channel = 'lc' ORDER BY pos;

DROP EXTENSION pg_outbox;
