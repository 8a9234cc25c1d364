-- The change trigger: outbox.attach() / outbox.detach() / outbox.attachments, every bad input,
-- and what outbox mode stores (notify mode's payloads are checked by the isolation tests).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- start with an empty outbox.pending, whatever earlier tests left
SELECT outbox.drain(1000000) >= 0 AS drained_leftovers;

CREATE TABLE users (id int PRIMARY KEY, name text, email text);

-- attach, the view, re-attach replaces, detach
SELECT outbox.attach('users');
SELECT * FROM outbox.attachments;
SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = 'users'::regclass ORDER BY tgname;
SELECT outbox.attach('users', channel => 'users', mode => 'notify', include_columns => '{name}',
                     operations => '{insert,DELETE,Truncate}');
SELECT * FROM outbox.attachments;
SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = 'users'::regclass ORDER BY tgname;
SELECT outbox.attach('users', operations => '{TRUNCATE}');
SELECT * FROM outbox.attachments;
SELECT outbox.detach('users');
SELECT * FROM outbox.attachments;
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'users'::regclass;
SELECT pg_temp.err($$SELECT outbox.detach('users')$$);
SELECT pg_temp.err($$SELECT outbox.detach(NULL)$$);

-- ---- bad input, caught at attach time ----
SELECT pg_temp.err($$SELECT outbox.attach(NULL)$$);
SELECT pg_temp.err($$SELECT outbox.attach('no_such_table')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', mode => 'direct')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', mode => NULL)$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', operations => '{INSERT,MERGE}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', operations => '{}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', operations => NULL)$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', operations => '{INSERT,insert}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', operations => '{INSERT,NULL}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', operations => '{{INSERT},{UPDATE}}')$$);
-- columns
SELECT pg_temp.err($$SELECT outbox.attach('users', key_columns => '{nope}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', key_columns => '{ID}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', key_columns => '{}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', key_columns => '{id,id}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', key_columns => '{id,NULL}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', key_columns => '{ctid}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', include_columns => '{name,xmin}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', include_columns => '{name,nope}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', include_columns => '{name,name}')$$);
-- channels and templates
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => '')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => repeat('c', 64))$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => repeat('é', 32))$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => repeat('c', 64) || '_{id}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => 'user_{id')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => 'user_id}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => 'user_{}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => 'user_{a{id}}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => 'user_{nope}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => 'user_{ctid}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users', channel => 'user_{id}', operations => '{INSERT,TRUNCATE}')$$);
SELECT outbox.attach('users', channel => 'literal_{{braces}}');
SELECT channel FROM outbox.attachments;
SELECT outbox.detach('users');
-- the default channel (schema.table) must fit as well
CREATE SCHEMA s_0123456789012345678901234567890123456789;
CREATE TABLE s_0123456789012345678901234567890123456789.t_0123456789012345678901234 (id int PRIMARY KEY);
SELECT pg_temp.err($$SELECT outbox.attach('s_0123456789012345678901234567890123456789.t_0123456789012345678901234')$$);
SELECT outbox.attach('s_0123456789012345678901234567890123456789.t_0123456789012345678901234', channel => 'short');
DROP SCHEMA s_0123456789012345678901234567890123456789 CASCADE;
-- relations that cannot be attached
CREATE VIEW users_view AS SELECT * FROM users;
CREATE MATERIALIZED VIEW users_mv AS SELECT * FROM users;
CREATE SEQUENCE a_sequence;
CREATE FOREIGN DATA WRAPPER dummy_fdw;
CREATE SERVER dummy_server FOREIGN DATA WRAPPER dummy_fdw;
CREATE FOREIGN TABLE a_foreign_table (id int) SERVER dummy_server;
SELECT pg_temp.err($$SELECT outbox.attach('users_view')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users_mv')$$);
SELECT pg_temp.err($$SELECT outbox.attach('a_sequence')$$);
SELECT pg_temp.err($$SELECT outbox.attach('a_foreign_table', key_columns => '{id}')$$);
SELECT pg_temp.err($$SELECT outbox.attach('users_id_seq')$$);
SELECT pg_temp.err($$SELECT outbox.attach('outbox.pending')$$);
SELECT pg_temp.err($$SELECT outbox.attach('pg_class')$$);
-- no key
CREATE TABLE keyless (a int, b text);
SELECT pg_temp.err($$SELECT outbox.attach('keyless')$$);
SELECT outbox.attach('keyless', key_columns => '{b,a}');
-- the replica identity index, when there is no primary key
CREATE TABLE by_identity (code text NOT NULL, n int);
CREATE UNIQUE INDEX by_identity_code ON by_identity (code);
ALTER TABLE by_identity REPLICA IDENTITY USING INDEX by_identity_code;
SELECT outbox.attach('by_identity');
-- a trigger of the same name that pg_outbox did not create
CREATE FUNCTION pg_temp.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TABLE has_trigger (id int PRIMARY KEY);
CREATE TRIGGER outbox_change AFTER INSERT ON has_trigger FOR EACH ROW EXECUTE FUNCTION pg_temp.noop();
SELECT pg_temp.err($$SELECT outbox.attach('has_trigger')$$);
SELECT pg_temp.err($$SELECT outbox.detach('has_trigger')$$);
-- only the owner may attach or detach
CREATE ROLE outbox_writer;
GRANT outbox_publisher TO outbox_writer;   -- may call attach(), but owns no table
GRANT ALL ON users TO outbox_writer;
SET ROLE outbox_writer;
SELECT pg_temp.err($$SELECT outbox.attach('users')$$);
SELECT pg_temp.err($$SELECT outbox.detach('keyless')$$);
RESET ROLE;
-- the trigger function is not for calling by hand
SELECT pg_temp.err($$SELECT outbox._change()$$);

-- ---- outbox mode: events in outbox.pending, then the history ----
SELECT outbox.attach('users', include_columns => '{name}', operations => '{INSERT,UPDATE,DELETE,TRUNCATE}');
INSERT INTO users VALUES (1, 'ann', 'ann@example.com'), (2, 'bob', NULL);
UPDATE users SET email = 'bob@example.com' WHERE id = 2;
UPDATE users SET id = 3 WHERE id = 2;   -- key change: "old_id"
DELETE FROM users WHERE id = 1;         -- DELETE: the old row
BEGIN;
INSERT INTO users VALUES (9, 'rolled back', NULL);
ROLLBACK;
BEGIN;
SAVEPOINT sp;
INSERT INTO users VALUES (8, 'rolled back to savepoint', NULL);
ROLLBACK TO SAVEPOINT sp;
INSERT INTO users VALUES (7, 'kept', NULL);
COMMIT;
TRUNCATE users;
SELECT channel, key, type, payload FROM outbox.pending ORDER BY id;
-- (positions relative to what earlier tests in this database published)
SELECT last_pos AS pos_before FROM outbox.state \gset
SELECT outbox.drain();
SELECT pos - :pos_before AS rel_pos, channel, key, type, payload FROM outbox.history WHERE pos > :pos_before ORDER BY pos;

-- a writer needs no right on the outbox schema's tables: the event is written as their owner
GRANT ALL ON users TO outbox_writer;
REVOKE outbox_publisher FROM outbox_writer;
SET ROLE outbox_writer;
INSERT INTO users VALUES (20, 'written by outbox_writer', NULL);
SELECT pg_temp.err($$SELECT * FROM outbox.pending$$);
RESET ROLE;
SELECT key, type, payload FROM outbox.pending ORDER BY id;
DELETE FROM outbox.pending;

-- composite keys (an object), key text, tenant channels
CREATE TABLE memberships (org int, "user" int, role text, PRIMARY KEY (org, "user"));
SELECT outbox.attach('memberships', channel => 'org_{org}');
INSERT INTO memberships VALUES (1, 7, 'admin'), (2, 7, 'member');
UPDATE memberships SET "user" = 8 WHERE org = 2;
SELECT channel, key, type, payload FROM outbox.pending ORDER BY id;
DELETE FROM outbox.pending;

-- odd identifiers: quoted in "table", raw in the default channel
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Order Lines" ("Line No" int PRIMARY KEY, "qty ""x""" int);
SELECT outbox.attach('"My Schema"."Order Lines"', include_columns => ARRAY['qty "x"']);
SELECT * FROM outbox.attachments WHERE "table" = '"My Schema"."Order Lines"'::regclass;
INSERT INTO "My Schema"."Order Lines" VALUES (1, 5);
SELECT channel, key, type, payload FROM outbox.pending ORDER BY id;
DELETE FROM outbox.pending;

-- values are rendered the same whatever the session settings
CREATE DOMAIN amount AS numeric(10, 2);  -- domains are rendered as their base type
CREATE TABLE typed (id bigint PRIMARY KEY, i2 smallint, n numeric, n_nan numeric, f4 real, f8 float8, f_inf float8,
                    b boolean, t text, c char(3), d date, ts timestamp, tstz timestamptz, tm time, iv interval,
                    j json, jb jsonb, ba bytea, u uuid, arr int[], e_d date, amt amount);
SELECT outbox.attach('typed', include_columns => '{i2,n,n_nan,f4,f8,f_inf,b,t,c,d,ts,tstz,tm,iv,j,jb,ba,u,arr,e_d,amt}');
SET datestyle = 'SQL, DMY';
SET timezone = 'Asia/Kolkata';
SET intervalstyle = 'postgres_verbose';
SET extra_float_digits = -3;
SET bytea_output = 'escape';
INSERT INTO typed VALUES (9007199254740993, -7, 12.50, 'NaN', 0.1, 0.1, '-Infinity', true, E'tab\there "q"', 'ab',
                          '2024-02-29', '2024-02-29 23:59:59.5', '2024-03-01 05:29:59.5+05:30', '12:34:56.789',
                          '1 year 2 mons 3 days 04:05:06.5', '{"k": [1, 2.50]}', '{"k": [1, 2.50]}', '\x00ff',
                          'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2}', 'infinity', 3.5);
RESET datestyle; RESET timezone; RESET intervalstyle; RESET extra_float_digits; RESET bytea_output;
SELECT key, jsonb_pretty(payload) FROM outbox.pending ORDER BY id;
DELETE FROM outbox.pending;

-- errors when a row is written
CREATE TABLE tenants (id int PRIMARY KEY, tenant text);
SELECT outbox.attach('tenants', channel => 'tenant_{tenant}');
SELECT pg_temp.err($$INSERT INTO tenants VALUES (1, NULL)$$);
SELECT pg_temp.err($$INSERT INTO tenants VALUES (1, repeat('x', 60))$$);
INSERT INTO tenants VALUES (1, repeat('x', 56)), (2, '');
SELECT pg_temp.err($$UPDATE tenants SET tenant = repeat('é', 30) WHERE id = 2$$);
SELECT outbox.attach('tenants', channel => '{tenant}');
SELECT pg_temp.err($$INSERT INTO tenants VALUES (3, '')$$);
SELECT channel, octet_length(channel) FROM outbox.pending;
DELETE FROM outbox.pending;
-- notify mode: a key that cannot fit in a NOTIFY fails the statement
CREATE TABLE big_keys (k text PRIMARY KEY, body text);
SELECT outbox.attach('big_keys', mode => 'notify');
SELECT pg_temp.err($$INSERT INTO big_keys VALUES (repeat('k', 8000), 'x')$$);
INSERT INTO big_keys VALUES (repeat('k', 7900), 'fits');
-- ... while outbox mode stores the event (the drain worker's envelope then says "truncated")
SELECT outbox.attach('big_keys', mode => 'outbox', include_columns => '{body}');
INSERT INTO big_keys VALUES (repeat('k', 9000), 'x');
SELECT octet_length(key) AS key_bytes, type, payload->'data' AS data FROM outbox.pending;
DELETE FROM outbox.pending;

-- DDL after attach: a renamed primary-key column is followed ...
ALTER TABLE users RENAME COLUMN id TO user_id;
INSERT INTO users VALUES (30, 'after rename', NULL);
SELECT key, payload FROM outbox.pending;
DELETE FROM outbox.pending;
-- ... a renamed column named in include_columns breaks the writes, with a clear error
ALTER TABLE users RENAME COLUMN name TO full_name;
SELECT pg_temp.err($$INSERT INTO users VALUES (31, 'x', NULL)$$);
SELECT outbox.attach('users', include_columns => '{full_name}');
INSERT INTO users VALUES (31, 'x', NULL);
SELECT key, payload FROM outbox.pending;
DELETE FROM outbox.pending;
-- a table renamed (or moved) keeps its attachment, under its new name
ALTER TABLE users RENAME TO people;
INSERT INTO people VALUES (32, 'renamed', NULL);
SELECT channel, payload->>'table' AS "table" FROM outbox.pending;
DELETE FROM outbox.pending;

-- partitioned tables: one attachment covers every partition, events carry the parent's name
CREATE TABLE measurements (id int, at date, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
SELECT outbox.attach('measurements', operations => '{INSERT,UPDATE,DELETE,TRUNCATE}');
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO measurements VALUES (1, '2024-06-01', 10), (2, '2025-06-01', 20);
UPDATE measurements SET at = '2025-07-01' WHERE id = 1; -- moves to the other partition
TRUNCATE measurements;
SELECT channel, key, type, payload FROM outbox.pending ORDER BY id;
DELETE FROM outbox.pending;
-- a partition written directly fires the row trigger but no statement trigger of ours: its
-- events are written at the end of each statement (ExecutorFinish hook), in the subtransaction
-- of that statement; a rolled-back savepoint drops its own
BEGIN;
INSERT INTO measurements_2024 VALUES (5, '2024-02-02', 1);
SAVEPOINT s;
INSERT INTO measurements_2024 VALUES (6, '2024-02-02', 1);
ROLLBACK TO SAVEPOINT s;
INSERT INTO measurements_2024 VALUES (7, '2024-02-02', 1);
RELEASE SAVEPOINT s;
SELECT count(*) AS written_at_statement_end FROM outbox.pending;
COMMIT;
SELECT channel, key, type FROM outbox.pending ORDER BY id;
DELETE FROM outbox.pending;
SELECT pg_temp.err($$SELECT outbox.attach('measurements_2024')$$);
SELECT pg_temp.err($$SELECT outbox.detach('measurements_2024')$$);
SELECT "table", operations FROM outbox.attachments ORDER BY "table"::text;

-- many rows in one statement: written in batches, in the order of the rows
CREATE TABLE bulk (n int PRIMARY KEY);
SELECT outbox.attach('bulk');
INSERT INTO bulk SELECT g FROM generate_series(1, 25000) g;
SELECT count(*) AS events, min(key::int), max(key::int),
       bool_and(key::int = prev + 1) AS in_row_order
  FROM (SELECT key, lag(key::int) OVER (ORDER BY id) AS prev FROM outbox.pending) s;
DELETE FROM outbox.pending;
DROP TABLE bulk;

-- DROP TABLE takes the attachment with it
DROP TABLE keyless;
SELECT count(*) FROM outbox.attachments WHERE "table"::text = 'keyless';

DROP MATERIALIZED VIEW users_mv;
DROP VIEW users_view;
DROP TABLE people, memberships, typed, tenants, big_keys, by_identity, has_trigger, measurements;
DROP DOMAIN amount;
DROP SCHEMA "My Schema" CASCADE;
DROP FOREIGN TABLE a_foreign_table;
DROP SERVER dummy_server;
DROP FOREIGN DATA WRAPPER dummy_fdw;
DROP SEQUENCE a_sequence;
DROP OWNED BY outbox_writer;
DROP ROLE outbox_writer;
SELECT * FROM outbox.attachments;
