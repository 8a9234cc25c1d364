-- What differs between the PostgreSQL majors pg_outbox supports (15, 16, 17, 18) must not show:
-- this file's expected output is the same on each (src/pg_compat.hpp holds the differences).
--
-- The change trigger's key. A DEFERRABLE primary key can hold duplicates until commit, so it
-- identifies no row: PostgreSQL 15-17 do not report it as the table's primary key at all; 18
-- reports it when asked (RelationGetPrimaryKeyIndex(rel, deferrable_ok => true)), and pg_outbox
-- does not ask. The key is then the replica identity index, as on 15.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

SELECT outbox.drain(1000000) >= 0 AS drained_leftovers;

-- only a deferrable primary key: refused, as a table without a key is
CREATE TABLE pgv_deferred (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, code text NOT NULL);
SELECT pg_temp.err($$SELECT outbox.attach('pgv_deferred')$$);
-- DEFERRABLE INITIALLY IMMEDIATE is deferrable too (SET CONSTRAINTS can defer it)
CREATE TABLE pgv_immediate (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE);
SELECT pg_temp.err($$SELECT outbox.attach('pgv_immediate')$$);
-- naming the columns is always possible
SELECT outbox.attach('pgv_immediate', key_columns => '{id}');

-- a unique immediate index as the replica identity: that is the key
CREATE UNIQUE INDEX pgv_deferred_code ON pgv_deferred (code);
ALTER TABLE pgv_deferred REPLICA IDENTITY USING INDEX pgv_deferred_code;
SELECT outbox.attach('pgv_deferred');
SELECT "table", key_columns FROM outbox.attachments ORDER BY "table"::text;

-- two rows with the same id inside one transaction (legal until the deferred check at commit):
-- the events tell them apart by code
BEGIN;
INSERT INTO pgv_deferred VALUES (1, 'a'), (1, 'b');
UPDATE pgv_deferred SET id = 2 WHERE code = 'b';
COMMIT;
-- the deferred check still holds at commit, and a failed commit publishes nothing
BEGIN;
INSERT INTO pgv_deferred VALUES (1, 'c');
COMMIT;
SELECT channel, key, type FROM outbox.pending ORDER BY id;

-- back to REPLICA IDENTITY DEFAULT: the deferrable key is still no key
ALTER TABLE pgv_deferred REPLICA IDENTITY DEFAULT;
SELECT "table", key_columns FROM outbox.attachments ORDER BY "table"::text;
SELECT pg_temp.err($$SELECT outbox.attach('pgv_deferred')$$);
SELECT pg_temp.err($$INSERT INTO pgv_deferred VALUES (3, 'd')$$);

SELECT outbox.drain(1000000) >= 0 AS drained;
DROP TABLE pgv_deferred, pgv_immediate;
SELECT count(*) AS attachments_left FROM outbox.attachments WHERE "table"::text LIKE 'pgv%';
