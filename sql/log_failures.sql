-- The failure path over the write-once log (issue #15; src/drain_failures.cpp: log_pass(),
-- src/sql/68_log_failures.sql): in a database switched to the log, an event whose hand-off fails
-- (the test-only fault hook pg_outbox._fail_event_ids) is left out of its batch and recorded in
-- outbox.failures while the others are published with gap-free positions; it is copied for its
-- retries, dead-lettered after pg_outbox.max_attempts, put back by retry(), withheld by discard();
-- two poisons; the systemic rules of 1.2 (a 40001, two lone failures and nothing published: no
-- count); replay(), event() never show a row that was left out; rotation keeps a failed row.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_logfail;
CREATE DATABASE pg_outbox_logfail;
RESET client_min_messages;
\c pg_outbox_logfail
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\set err_style message
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

SELECT events_moved, base_pos FROM outbox.use_log_storage();
SET pg_outbox.retry_delay = 0;
SET pg_outbox.max_attempts = 3;
-- the hook: ids, each with an optional SQLSTATE; anything else is refused
SELECT pg_temp.err($$SET pg_outbox._fail_event_ids = 'x'$$);
SELECT pg_temp.err($$SET pg_outbox._fail_event_ids = '5:abc'$$);
SELECT pg_temp.err($$SET pg_outbox._fail_event_ids = '5,'$$);
SELECT pg_temp.err($$SET pg_outbox._fail_event_ids = '5, 7:40001'$$);
RESET pg_outbox._fail_event_ids;

-- every kept event once, positions from the retention horizon on without a gap, seqs per channel
-- without a gap
CREATE FUNCTION pg_temp.check() RETURNS TABLE (events bigint, gap_free boolean, ids_once boolean, seqs_gap_free boolean)
LANGUAGE sql AS $$
    WITH h AS (SELECT greatest(s.purged_pos, s.base_pos) AS p FROM outbox.log_state s),
         e AS (SELECT * FROM outbox.replay((SELECT p FROM h), NULL, 100000)),
         c AS (SELECT max(seq) - min(seq) + 1 = count(*) AS ok FROM e GROUP BY channel)
    SELECT count(*), coalesce(min(pos) = (SELECT p FROM h) + 1 AND max(pos) - min(pos) + 1 = count(*), true),
           count(DISTINCT id) = count(*), coalesce((SELECT bool_and(ok) FROM c), true)
      FROM e
$$;
CREATE FUNCTION pg_temp.failures() RETURNS TABLE (n text, attempts integer, sqlstate text, copied boolean, seg integer,
    xid_of_a_row boolean)
LANGUAGE sql AS $$
    SELECT (SELECT l.payload->>'n' FROM outbox.log l WHERE l.id = f.id LIMIT 1), f.attempts, f.sqlstate, f.copied, f.seg,
           EXISTS (SELECT FROM outbox.log l WHERE l.id = f.id AND l.xid = f.xid)
      FROM outbox.failures f ORDER BY f.id
$$;

-- 1. one poison among 10: 9 published, positions 1..9, the poison recorded with its row
SELECT count(outbox.publish('a', jsonb_build_object('n', g))) FROM generate_series(1, 10) g;
SELECT id AS poison FROM outbox.log WHERE payload->>'n' = '5' \gset
SELECT set_config('pg_outbox._fail_event_ids', :'poison', false) IS NOT NULL AS armed;
SELECT outbox.drain() AS published;
SELECT pos, seq, payload->>'n' AS n FROM outbox.replay(0, NULL, 100) ORDER BY pos;
SELECT * FROM pg_temp.check();
SELECT * FROM pg_temp.failures();
SELECT error FROM outbox.failures;
-- the events before it went out in a batch cut before it; the next batch starts after it
SELECT first_pos, n, cut, skipped, after_id = :poison AS starts_after_poison FROM outbox.batches ORDER BY first_pos;
SELECT retrying, stuck_event = :poison AS stuck_is_poison, stuck_error LIKE '%attempt 1 of 3%' AS shown FROM outbox.status;
SELECT pos IS NULL AS not_published FROM outbox.event(:poison);

-- 2. its retries: due (retry_delay 0), copied with the drain's xid, the copy tried in a later
--    window; after 3 attempts a dead letter with its last error, its rows withheld
SELECT outbox.drain() AS copies;
SELECT * FROM pg_temp.failures();
SELECT count(*) AS rows_of_poison FROM outbox.log WHERE id = :poison;
SELECT outbox.drain() AS tries_copy;
SELECT * FROM pg_temp.failures();
SELECT outbox.drain() AS copies_again;
SELECT outbox.drain() AS tries_again;
SELECT count(*) AS failures FROM outbox.failures;
SELECT id = :poison AS is_poison, payload->>'n' AS n, sqlstate, error FROM outbox.dead_letter;
SELECT count(*) AS withheld FROM outbox.withheld;
SELECT pg_temp.err(format('SELECT * FROM outbox.event(%s)', :poison));
-- the next event: published after the withheld rows, which the batch retires
SELECT outbox.publish('a', '{"n": 11}') IS NOT NULL AS published;
SELECT outbox.drain() AS published;
SELECT count(*) AS withheld FROM outbox.withheld;
SELECT pos, seq, payload->>'n' AS n FROM outbox.replay(9, NULL, 100) ORDER BY pos;

-- 3. retry() of the dead letter after the fix: published once, with the next position
RESET pg_outbox._fail_event_ids;
SELECT outbox.retry(:poison) = :poison AS retried;
SELECT outbox.drain() AS published;
SELECT pos, seq, payload->>'n' AS n FROM outbox.replay(0, NULL, 100) WHERE id = :poison;
SELECT pos, seq FROM outbox.event(:poison);
SELECT * FROM pg_temp.check();
SELECT count(*) AS dead_letters, (SELECT count(*) FROM outbox.failures) AS failures FROM outbox.dead_letter;

-- 4. retry() of an event being retried (not due for 5 minutes): due now, a fresh count
SET pg_outbox.retry_delay = '5min';
SELECT outbox.publish('a', '{"n": 12}') AS p12 \gset
SELECT set_config('pg_outbox._fail_event_ids', :'p12', false) IS NOT NULL AS armed;
SELECT outbox.drain() AS published;
SELECT outbox.drain() AS not_due;
SELECT * FROM pg_temp.failures();
SELECT outbox.retry(:p12) = :p12 AS retried;
SELECT * FROM pg_temp.failures();
RESET pg_outbox._fail_event_ids;
SELECT outbox.drain() AS copies;
SELECT outbox.drain() AS publishes_copy;
SELECT count(*) AS failures FROM outbox.failures;
SELECT pos, payload->>'n' AS n FROM outbox.replay(0, NULL, 100) WHERE id = :p12;
SELECT * FROM pg_temp.check();
SET pg_outbox.retry_delay = 0;

-- 5. discard(): a failed event, a pending one (left out of a batch between two events: skipped),
--    never published; one already published is refused
SELECT outbox.publish('b', '{"n": 13}') AS p13 \gset
SELECT set_config('pg_outbox._fail_event_ids', :'p13', false) IS NOT NULL AS armed;
SELECT outbox.drain() AS published;
SELECT outbox.discard(:p13, 'poison') = format('discarded event %s (pending); recorded in outbox.discarded', :p13) AS discarded;
RESET pg_outbox._fail_event_ids;
SELECT count(*) AS failures, (SELECT count(*) FROM outbox.withheld) AS withheld FROM outbox.failures;
SELECT outbox.publish('b', '{"n": 14}') AS p14 \gset
SELECT outbox.publish('b', '{"n": 15}') AS p15 \gset
SELECT outbox.publish('b', '{"n": 16}') IS NOT NULL AS published;
SELECT outbox.discard(:p15) LIKE 'discarded event %' AS discarded;
SELECT count(*) AS withheld FROM outbox.withheld;
SELECT outbox.drain() AS published;
SELECT outbox.drain() AS again;
SELECT payload->>'n' AS n, was, error, sqlstate, reason FROM outbox.discarded d
  JOIN LATERAL (SELECT l.payload FROM outbox.log l WHERE l.id = d.id LIMIT 1) l ON true ORDER BY d.id;
SELECT skipped = ARRAY[:p15]::bigint[] AS skipped_p15 FROM outbox.batches ORDER BY first_pos DESC LIMIT 1;
SELECT count(*) AS withheld FROM outbox.withheld;
SELECT payload->>'n' AS n FROM outbox.replay(0, ARRAY['b'], 100) ORDER BY pos;
SELECT pg_temp.err(format('SELECT * FROM outbox.event(%s)', :p15));
SELECT pg_temp.err(format('SELECT outbox.discard(%s)', :p14));
SELECT * FROM pg_temp.check();

-- 6. two poisons among six: four published, gap-free, both recorded
SELECT count(outbox.publish('c', jsonb_build_object('n', 100 + g))) FROM generate_series(1, 6) g;
SELECT string_agg(id::text, ',' ORDER BY id) AS poisons FROM outbox.log WHERE payload->>'n' IN ('102', '105') \gset
SELECT set_config('pg_outbox._fail_event_ids', :'poisons', false) IS NOT NULL AS armed;
SET pg_outbox.retry_delay = '5min';
SELECT outbox.drain() AS published;
SELECT * FROM pg_temp.failures();
SELECT payload->>'n' AS n FROM outbox.replay(0, ARRAY['c'], 100) ORDER BY pos;
SELECT * FROM pg_temp.check();

-- 7. rotation keeps the segment a failed row is in (its retry copies it)
SELECT outbox._log_rotate('0') AS first_rotation;
SELECT outbox.publish('d') IS NOT NULL AS published;
SELECT outbox.drain() AS published;
SELECT outbox._log_rotate('0') AS second_rotation;
SELECT outbox.publish('d') IS NOT NULL AS published;
SELECT outbox.drain() AS published;
SELECT outbox._log_rotate('0') AS third_rotation;
SELECT cur_seg, purged_pos FROM outbox.log_state;
RESET pg_outbox._fail_event_ids;
UPDATE outbox.failures SET next_attempt_at = now();
SELECT outbox.drain() AS copies;
SELECT outbox.drain() AS publishes_copies;
SELECT count(*) AS failures FROM outbox.failures;
SELECT outbox._log_rotate('0') AS rotation_after_the_retries;
SELECT cur_seg, purged_pos FROM outbox.log_state;
SELECT payload->>'n' AS n FROM outbox.replay(19, ARRAY['c'], 100) ORDER BY pos;
SELECT * FROM pg_temp.check();
SET pg_outbox.retry_delay = 0;

-- 8. the system's failures count nothing: a 40001 in a hand-off, and two events that fail alone
--    with nothing published (the pass fails, it is retried)
SELECT outbox.publish('e', '{"n": 1}') AS e1 \gset
SELECT outbox.publish('e', '{"n": 2}') AS e2 \gset
SELECT head AS head_before FROM outbox.head() head \gset
SELECT set_config('pg_outbox._fail_event_ids', :'e2' || ':40001', false) IS NOT NULL AS armed;
SELECT pg_temp.err('SELECT outbox.drain()');
SELECT count(*) AS failures, outbox.head() - :head_before AS published FROM outbox.failures;
SELECT set_config('pg_outbox._fail_event_ids', :'e1' || ',' || :'e2', false) IS NOT NULL AS armed;
SELECT pg_temp.err('SELECT outbox.drain()');
SELECT count(*) AS failures, outbox.head() - :head_before AS published FROM outbox.failures;
-- with a third event that works, they are the events' own failures
SELECT outbox.publish('e', '{"n": 3}') IS NOT NULL AS published;
SELECT outbox.drain() AS published;
SELECT * FROM pg_temp.failures();
RESET pg_outbox._fail_event_ids;
SELECT outbox.drain() AS copies;
SELECT outbox.drain() AS publishes_copies;
SELECT payload->>'n' AS n FROM outbox.replay(19, ARRAY['e'], 100) ORDER BY pos;
SELECT count(*) AS failures, (SELECT count(*) FROM outbox.withheld) AS withheld FROM outbox.failures;
SELECT * FROM pg_temp.check();

\c contrib_regression
DROP DATABASE pg_outbox_logfail;
