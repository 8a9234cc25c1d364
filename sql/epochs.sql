-- [epochs] Identity and epochs: a new epoch when the cluster the history was written on
-- changes, OB003 for a consumer whose position was not preserved. A fork is simulated by
-- hand (the recorded timeline changed, the lost tail removed); TAP 130 does it for real.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DROP DATABASE IF EXISTS pg_outbox_epochs;
CREATE DATABASE pg_outbox_epochs;
RESET client_min_messages;
\c pg_outbox_epochs
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\set err_style lines
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- before the first event: epoch 0, an identity, no epochs
SELECT outbox.epoch(), outbox.identity() ~ '^[0-9a-f]{8}-[0-9a-f]{4}-' AS uuid_like,
       (SELECT count(*) FROM outbox.epochs) AS epochs;
SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 3) g;
SELECT outbox.drain();
SELECT epoch, first_pos, reason, timeline FROM outbox.epochs ORDER BY epoch;
SELECT pos, epoch, envelope->'epoch' AS env_epoch FROM outbox.replay(0);
SELECT outbox.epoch();
-- a second drain on the same cluster: no new epoch
SELECT outbox.publish('orders', '{"n": 4}');
SELECT outbox.drain();
SELECT count(*) AS epochs FROM outbox.epochs;

-- a fork: the history continues elsewhere (another timeline) without positions 4 and 3,
-- as after an asynchronous failover
DELETE FROM outbox.history_frozen WHERE pos >= 3;
UPDATE outbox.channels SET last_seq = 2;
UPDATE outbox.state SET last_pos = 2, timeline = 99;
SELECT outbox.publish('orders', jsonb_build_object('n', 10 + g)) FROM generate_series(1, 3) g;
SELECT outbox.drain();
SELECT epoch, first_pos, reason, timeline FROM outbox.epochs ORDER BY epoch;
SELECT outbox.epoch();
-- the consumer at or before the preserved point continues, without loss
SELECT pos, epoch, payload FROM outbox.replay(2, after_epoch => 1);
SELECT pos, epoch FROM outbox.replay(1, NULL, 1, 1);
-- the consumer beyond it is told: OB003 names the first reissued position
SELECT pg_temp.err('SELECT * FROM outbox.replay(3, after_epoch => 1)');
SELECT pg_temp.err('SELECT * FROM outbox.replay(4, ARRAY[''orders''], 10, 1)');
-- ahead of the head too: OB003 rather than OB002, it says more
SELECT pg_temp.err('SELECT * FROM outbox.replay(9, after_epoch => 1)');
-- no epoch passed: as before 1.2 (the divergence is not seen)
SELECT pos FROM outbox.replay(3);
-- the current epoch: as usual
SELECT pos FROM outbox.replay(4, after_epoch => 2);
-- an epoch this outbox never had
SELECT pg_temp.err('SELECT * FROM outbox.replay(0, after_epoch => 7)');
SELECT pg_temp.err('SELECT * FROM outbox.replay(0, after_epoch => -1)');
-- replay_channel: the position of the consumer's last event (its seq) decides
SELECT seq, pos, epoch FROM outbox.replay_channel('orders', 2, after_epoch => 1);
SELECT pg_temp.err('SELECT * FROM outbox.replay_channel(''orders'', 3, after_epoch => 1)');
SELECT seq FROM outbox.replay_channel('orders', 4, 10, 2);
-- wait() returns the epoch column too
SELECT pos, epoch, envelope->>'epoch' AS env_epoch FROM outbox.wait(4, timeout => '0s');

-- a restore into another database: simulated by another recorded database OID
UPDATE outbox.state SET database_oid = 1;
SELECT outbox.publish('orders', '{"n": 20}');
SELECT outbox.drain();
SELECT epoch, first_pos, reason ~ '^database OID changed from 1 to ' AS db_changed FROM outbox.epochs
 WHERE epoch = 3;

-- readers see the identity, the epoch and the epochs
SET ROLE outbox_reader;
SELECT outbox.epoch(), length(outbox.identity()) AS identity_length, (SELECT count(*) FROM outbox.epochs) AS epochs;
RESET ROLE;

\c contrib_regression
DROP DATABASE pg_outbox_epochs;
