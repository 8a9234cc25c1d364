-- Red team of the drain-domain split (issue #17), in one session:
--  1. the channel rule of the readers (head(channel), replay(channels), replay_channel(), wait())
--     is publish()'s rule, with publish()'s SQLSTATE, message, detail and hint, for every bad
--     name: NULL, empty, 64 bytes, 64 bytes of two-byte characters, a 65-byte name whose 40-byte
--     detail would cut a character, NULL elements anywhere in an array, a two-dimensional array;
--     63 bytes of multibyte characters pass everywhere;
--  2. the direct inserts' cached layouts (src/direct.cpp, forgotten through invalidation.cpp)
--     follow DROP + CREATE EXTENSION in one transaction and its ROLLBACK (old relations, old
--     identity sequence), a column type changed and back, DBA columns added and dropped in the
--     middle, the schema renamed and back, a table swapped for one the extension does not own.
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- 1. the channel rule. Each bad name: publish()'s error, then whether every reader says the same
-- (the array readers name it "channel name in channels" in the message; NULL's hint is publish()'s
-- own).
CREATE TEMP TABLE bad_names (label text, expr text);
INSERT INTO bad_names VALUES
    ('empty', $$''$$),
    ('64 ascii bytes', $$repeat('x', 64)$$),
    ('64 bytes of é', $$repeat('é', 32)$$),
    ('65 bytes, 40th cuts an é', $$'x' || repeat('é', 32)$$),
    ('100 bytes of 4-byte chars', $$repeat(U&'\+01F600', 25)$$);
SELECT label, pg_temp.err(format('SELECT outbox.publish(%s)', expr)) AS publish FROM bad_names ORDER BY label;
SELECT label,
       pg_temp.err(format('SELECT outbox.head(%s)', expr)) = pg_temp.err(format('SELECT outbox.publish(%s)', expr)) AS head,
       pg_temp.err(format('SELECT * FROM outbox.replay_channel(%s, 0)', expr))
           = pg_temp.err(format('SELECT outbox.publish(%s)', expr)) AS replay_channel,
       pg_temp.err(format('SELECT * FROM outbox.replay(0, ARRAY[%s])', expr))
           = regexp_replace(pg_temp.err(format('SELECT outbox.publish(%s)', expr)), 'channel name', 'channel name in channels') AS replay,
       pg_temp.err(format('SELECT * FROM outbox.replay(0, ARRAY[''ok'', %s, NULL])', expr))
           = regexp_replace(pg_temp.err(format('SELECT outbox.publish(%s)', expr)), 'channel name', 'channel name in channels') AS replay_second,
       pg_temp.err(format('SELECT * FROM outbox.wait(0, ARRAY[%s], ''0s'')', expr))
           = regexp_replace(pg_temp.err(format('SELECT outbox.publish(%s)', expr)), 'channel name', 'channel name in channels') AS wait
FROM bad_names ORDER BY label;
-- NULL: the same SQLSTATE and message everywhere
SELECT pg_temp.err('SELECT outbox.publish(NULL)');
SELECT pg_temp.err('SELECT outbox.head(NULL)');
SELECT pg_temp.err('SELECT * FROM outbox.replay_channel(NULL, 0)');
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, ARRAY[NULL]::text[])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, ARRAY['a', NULL])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, ARRAY[NULL, repeat('x', 64)])$$); -- the first bad one
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, ARRAY[['a', 'b'], ['c', NULL]])$$); -- two dimensions
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, ARRAY[['a', 'b'], ['c', '']])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, ARRAY['a', NULL], '0s')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, '{}'::text[])$$);
-- 63 bytes of multibyte characters are a channel name everywhere
SELECT outbox.publish(repeat('é', 31) || 'x', '{"n": 0}') > 0 AS published;
SELECT outbox.drain();
SELECT outbox.head(repeat('é', 31) || 'x') AS head;
SELECT count(*) FROM outbox.replay(0, ARRAY[repeat('é', 31) || 'x']);
SELECT count(*) FROM outbox.replay_channel(repeat('é', 31) || 'x', 0);

-- 2. the cached layouts. Cache both (pending for publish, the current segment for the drain).
SELECT outbox.publish('lc', '{"n": 1}', 'k1', 't1') > 0 AS published;
SELECT outbox.drain();
SELECT max(id) AS id_before FROM outbox.history \gset
-- a. DROP + CREATE EXTENSION in one transaction: the new relations and sequence...
BEGIN;
SET LOCAL client_min_messages = error;
DROP EXTENSION pg_outbox;
CREATE EXTENSION pg_outbox;
SELECT outbox.publish('lc', '{"n": 2}', 'k2', 't2') AS id_in_new;
SELECT outbox.drain();
SELECT pos, id, channel, key, type, payload FROM outbox.history;
ROLLBACK;
-- ... and after the ROLLBACK the old ones again: ids go on from the old sequence, rows land in
-- the old tables (a stale OID would fail or write into a relation that no longer exists)
SELECT outbox.publish('lc', '{"n": 3}', 'k3', 't3') - :id_before AS id_after_old;
SELECT outbox.drain();
SELECT pos, channel, key, type, payload FROM outbox.history WHERE channel = 'lc' ORDER BY pos;
-- b. a column type changed: an error, never a write of text into another type; and back
ALTER TABLE outbox.pending ALTER COLUMN key TYPE varchar;
SELECT pg_temp.err($$SELECT outbox.publish('lc', '{"n": 4}', 'k4', 't4')$$);
ALTER TABLE outbox.pending ALTER COLUMN key TYPE text;
SELECT outbox.publish('lc', '{"n": 5}', 'k5', 't5') > 0 AS published;
-- c. DBA columns added (the descriptor grows) and one of them dropped (its attribute stays in the
-- descriptor, dropped): every value under its own name, the DBA's with their defaults
ALTER TABLE outbox.pending ADD COLUMN dba_a text DEFAULT 'a-default';
ALTER TABLE outbox.pending ADD COLUMN dba_b int DEFAULT 42;
SELECT outbox.publish('lc', '{"n": 6}', 'k6', 't6') > 0 AS published;
ALTER TABLE outbox.pending DROP COLUMN dba_a;
SELECT outbox.publish('lc', '{"n": 7}', 'k7', 't7') > 0 AS published;
SELECT channel, key, type, payload, dba_b FROM outbox.pending ORDER BY id;
ALTER TABLE outbox.pending DROP COLUMN dba_b;
ALTER TABLE outbox.history_frozen ADD COLUMN dba_h text DEFAULT 'h-default';
SELECT outbox.drain();
SELECT pos, key, type, payload, dba_h FROM outbox.history_frozen WHERE channel = 'lc' ORDER BY pos;
ALTER TABLE outbox.history_frozen DROP COLUMN dba_h;
-- d. the schema renamed and back
ALTER SCHEMA outbox RENAME TO outbox_renamed;
SELECT outbox_renamed.publish('lc', '{"n": 8}', 'k8', 't8') > 0 AS published;
ALTER SCHEMA outbox_renamed RENAME TO outbox;
SELECT outbox.publish('lc', '{"n": 9}', 'k9', 't9') > 0 AS published;
-- e. outbox.pending swapped for a look-alike the extension does not own: refused, not written
ALTER TABLE outbox.pending RENAME TO pending_moved;
CREATE TABLE outbox.pending (LIKE outbox.pending_moved INCLUDING ALL);
SELECT pg_temp.err($$SELECT outbox.publish('lc', '{"n": 10}', 'k10', 't10')$$);
SELECT count(*) AS rows_in_lookalike FROM outbox.pending;
DROP TABLE outbox.pending;
ALTER TABLE outbox.pending_moved RENAME TO pending;
SELECT outbox.publish('lc', '{"n": 11}', 'k11', 't11') > 0 AS published;
SELECT outbox.drain();
SELECT pos, key, type, payload FROM outbox.history WHERE channel = 'lc' ORDER BY pos;
-- positions gap-free, each event once
SELECT count(*) = max(pos) AND count(DISTINCT id) = count(*) AS gap_free FROM outbox.history;

DROP EXTENSION pg_outbox;
