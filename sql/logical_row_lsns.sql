-- Logical decoding: every row pg_outbox writes has a WAL record (an LSN) of its own when
-- wal_level = logical. Debezium (3.6.1 and older, debezium/dbz#1554) resumes after a restart
-- from the LSN of the last event it stored and skips every other change at that LSN: rows written
-- many to a WAL record (table_multi_insert, 64 at a time) after the one it stored were lost.
-- The Kafka test's path 2 (Debezium capturing outbox.history_0..2) lost 7 of a drain batch's 20
-- events that way. The drain is driven by hand (outbox.drain()), a test_decoding slot reads
-- what a decoder sees: for each table, as many distinct LSNs as rows.
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
SHOW wal_level;
SELECT 'init' FROM pg_create_logical_replication_slot('row_lsns', 'test_decoding');

-- a drain batch of 20 events: 20 history rows in one transaction
SELECT count(outbox.publish('lsn.batch', jsonb_build_object('i', g), 'k' || g, 'created'))
  FROM generate_series(1, 20) g;
SELECT outbox.drain() AS drained;

-- the change trigger: one statement's 20 events into outbox.pending in one go, then drained
CREATE TABLE lsn_orders (id int PRIMARY KEY, note text);
SELECT outbox.attach('lsn_orders', 'lsn.trigger') IS NOT NULL AS attached;
INSERT INTO lsn_orders SELECT g, 'n' FROM generate_series(1, 20) g;
SELECT outbox.drain() AS drained;

SELECT substring(data FROM '^table outbox\.([a-z]+)') AS rel,
       count(*) AS rows, count(DISTINCT lsn) AS lsns
  FROM pg_logical_slot_get_changes('row_lsns', NULL, NULL, 'include-xids', '0')
 WHERE data ~ '^table outbox\.(history_[0-2]|pending): INSERT: '
 GROUP BY 1 ORDER BY 1;

SELECT pg_drop_replication_slot('row_lsns');
DROP TABLE lsn_orders;
DROP EXTENSION pg_outbox;
