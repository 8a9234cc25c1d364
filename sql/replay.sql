-- Replay: outbox.replay(), outbox.replay_channel(), outbox.head(), the retention horizon, and
-- every bad input. Runs in a database of its own so that its positions do not depend on the
-- other tests.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_replay;
CREATE DATABASE pg_outbox_replay;
RESET client_min_messages;
\c pg_outbox_replay
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- an empty outbox: head is 0, replay from 0 returns nothing
SELECT outbox.head() AS head, outbox.head('orders') AS orders_seq;
SELECT count(*) FROM outbox.replay(0);
SELECT count(*) FROM outbox.replay_channel('orders', 0);

-- eight events on three channels, published in two drains
SELECT outbox.publish('orders', '{"n": 1}', key => 'o-1', type => 'created'),
       outbox.publish('users', '{"n": 2}'),
       outbox.publish('orders', '{"n": 3}', key => 'o-1', type => 'paid'),
       outbox.publish('audit', NULL, type => 'login');
SELECT outbox.drain();
-- pending events are not replayed: replay shows published events only
SELECT outbox.publish('orders', '{"n": 5}'), outbox.publish('users', '{"n": 6}'),
       outbox.publish('orders', '{"n": 7}'), outbox.publish('orders', '{"n": 8}');
SELECT count(*) AS replayed_before_drain FROM outbox.replay(0);
SELECT outbox.drain();

SELECT outbox.head() AS head, outbox.head('orders') AS orders, outbox.head('users') AS users,
       outbox.head('audit') AS audit, outbox.head('never-used') AS never_used;
SELECT pos, seq, id, channel, key, type, payload, published_at >= created_at AS ok FROM outbox.replay(0);
-- after a position, a batch at a time
SELECT pos, channel, payload FROM outbox.replay(2, max_events => 3);
SELECT pos, channel, payload FROM outbox.replay(5, NULL, 3);
SELECT pos, channel, payload FROM outbox.replay(8);
-- some channels only: positions jump, seqs of each channel do not
SELECT pos, seq, channel FROM outbox.replay(0, ARRAY['orders']);
SELECT pos, seq, channel FROM outbox.replay(1, ARRAY['users', 'audit'], 2);
SELECT pos, seq, channel FROM outbox.replay(0, ARRAY['nobody']);
-- by channel seq
SELECT pos, seq, channel, payload FROM outbox.replay_channel('orders', 0);
SELECT pos, seq, channel, payload FROM outbox.replay_channel(channel => 'orders', after_seq => 2, max_events => 2);
SELECT pos, seq FROM outbox.replay_channel('orders', 5);
SELECT pos, seq FROM outbox.replay_channel('never-used', 0);

-- bad arguments
SELECT pg_temp.err($$SELECT * FROM outbox.replay(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(-1)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, '{}')$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, ARRAY['orders', NULL])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, ARRAY[''])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, ARRAY[repeat('c', 64)])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, NULL, 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, NULL, -10)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, NULL, NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel(NULL, 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('', 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel(repeat('é', 32), 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('orders', NULL)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('orders', -1)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('orders', 0, 0)$$);
SELECT pg_temp.err($$SELECT outbox.head(NULL)$$);
SELECT pg_temp.err($$SELECT outbox.head('')$$);
-- a replay point the outbox never reached (reset, or restored from an older backup): OB002
SELECT pg_temp.err($$SELECT * FROM outbox.replay(9)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(100, ARRAY['orders'])$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('orders', 6)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('never-used', 1)$$);

-- retention removed positions 1..4 (what the retention worker does: purged_pos, then the rows)
UPDATE outbox.state SET purged_pos = 4;
DELETE FROM outbox.history_frozen WHERE pos <= 4;
-- replaying after a position below the horizon is an error (OB001), never a silent gap ...
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay(3)$$);
-- ... also with a channel filter: the removed events of those channels cannot be told apart
SELECT pg_temp.err($$SELECT * FROM outbox.replay(3, ARRAY['users'])$$);
-- at the horizon and after it, replay works
SELECT pos, seq, channel FROM outbox.replay(4);
SELECT pos, seq, channel FROM outbox.replay(4, ARRAY['orders']);
-- per channel the horizon comes from the history: orders kept seq 3.., users kept seq 2..,
-- audit kept nothing (its only event, seq 1, is gone)
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('orders', 0)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('orders', 1)$$);
SELECT pos, seq FROM outbox.replay_channel('orders', 2);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('users', 0)$$);
SELECT pos, seq FROM outbox.replay_channel('users', 1);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('audit', 0)$$);
SELECT pos, seq FROM outbox.replay_channel('audit', 1);
-- head() is unchanged by retention
SELECT outbox.head() AS head, outbox.head('audit') AS audit;

-- rows missing above the horizon (removed by hand, or a retention that did not move
-- purged_pos) are detected as well, in the middle and at the end
DELETE FROM outbox.history_frozen WHERE pos = 6;
SELECT pg_temp.err($$SELECT * FROM outbox.replay(4)$$);
SELECT pos FROM outbox.replay(4, NULL, 1);
SELECT pos FROM outbox.replay(6);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('users', 1)$$);
DELETE FROM outbox.history_frozen WHERE pos = 8;
SELECT pg_temp.err($$SELECT * FROM outbox.replay(6)$$);
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('orders', 4)$$);

\c contrib_regression
DROP DATABASE pg_outbox_replay;
