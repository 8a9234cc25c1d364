-- The three defects of log mode the flip experiment found (issue #15, doc/storage.md, "outbox.pending
-- as a view"), fixed:
-- 1. in log mode a DBA's trigger, rule, constraint, unique index, parent table, row level security
--    or policy added to outbox.pending is refused at DDL time (src/pending_ddl.cpp): producers write
--    the log, it would never apply. Attacked: several ALTER TABLE subcommands, ONLY, an inheritance
--    parent, ATTACH PARTITION, a table named pending in another schema (accepted), DDL run by an
--    event trigger or a function, a role without the rights (its own error), the extension's own
--    scripts (let through);
-- 2. DROP EXTENSION in log mode counts the log's unpublished events in its WARNING
--    (src/utility_hook.cpp), and does not fail when they cannot be counted;
-- 3. outbox.drain() in the producer's own transaction says, with a NOTICE, that it cannot publish
--    that transaction's events (src/drain_failures.cpp).
-- A database of its own.
SET client_min_messages = warning;
DROP DATABASE IF EXISTS pg_outbox_logddl;
CREATE DATABASE pg_outbox_logddl;
RESET client_min_messages;
\c pg_outbox_logddl
SET client_min_messages = warning;
CREATE EXTENSION pg_outbox;
DROP ROLE IF EXISTS ddl_nobody;
CREATE ROLE ddl_nobody;
RESET client_min_messages;
\set err_style message
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
-- what a DBA added to outbox.pending (the extension's own: pending_to_log, pending_wake, pending_pkey,
-- pending_channel_length; NOT NULL constraints of PostgreSQL 18 are the columns')
CREATE FUNCTION added() RETURNS TABLE (what text) LANGUAGE sql AS $$
    SELECT 'trigger ' || tgname FROM pg_trigger
     WHERE tgrelid = 'outbox.pending'::regclass AND NOT tgisinternal AND tgname NOT IN ('pending_to_log', 'pending_wake')
    UNION ALL SELECT 'rule ' || rulename FROM pg_rewrite WHERE ev_class = 'outbox.pending'::regclass
    UNION ALL SELECT 'constraint ' || conname FROM pg_constraint
     WHERE conrelid = 'outbox.pending'::regclass AND contype <> 'n' AND conname NOT IN ('pending_pkey', 'pending_channel_length')
    UNION ALL SELECT 'index ' || indexrelid::regclass::text FROM pg_index
     WHERE indrelid = 'outbox.pending'::regclass AND indexrelid <> 'outbox.pending_pkey'::regclass
    UNION ALL SELECT 'row level security' FROM pg_class
     WHERE oid = 'outbox.pending'::regclass AND (relrowsecurity OR relforcerowsecurity)
    UNION ALL SELECT 'policy ' || polname FROM pg_policy WHERE polrelid = 'outbox.pending'::regclass
    UNION ALL SELECT 'parent ' || inhparent::regclass::text FROM pg_inherits WHERE inhrelid = 'outbox.pending'::regclass
    UNION ALL SELECT 'not null ' || attname FROM pg_attribute
     WHERE attrelid = 'outbox.pending'::regclass AND attnum > 0 AND attnotnull AND attname NOT IN ('id', 'channel', 'payload', 'created_at')
    ORDER BY 1 $$;

-- 1.2 mode: accepted as before (the switch refuses them while they exist)
CREATE TRIGGER dba_before BEFORE INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION noop();
ALTER TABLE outbox.pending ADD CONSTRAINT dba_check CHECK (channel <> 'forbidden');
SELECT * FROM added();
SELECT pg_temp.err('SELECT * FROM outbox.use_log_storage()', 'message');
DROP TRIGGER dba_before ON outbox.pending;
ALTER TABLE outbox.pending DROP CONSTRAINT dba_check;
-- an inheritance parent without constraints (the switch accepts it), for the recursion below
CREATE TABLE dba_parent ();
ALTER TABLE outbox.pending INHERIT dba_parent;
SELECT outbox.publish('a', '{"n": 1}') > 0 AS published;
SELECT events_moved, base_pos FROM outbox.use_log_storage();
SELECT outbox._log_active() AS log_mode;

-- 1. log mode: every way to add what would never apply is refused, with the reason and what to do
SELECT pg_temp.err('CREATE TRIGGER dba_before BEFORE INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION noop()', 'lines');
SELECT pg_temp.err('CREATE TRIGGER dba_after AFTER INSERT ON outbox.pending FOR EACH STATEMENT EXECUTE FUNCTION noop()');
SELECT pg_temp.err('CREATE TRIGGER dba_trunc AFTER TRUNCATE ON outbox.pending EXECUTE FUNCTION noop()');
SELECT pg_temp.err('CREATE CONSTRAINT TRIGGER dba_ct AFTER INSERT ON outbox.pending DEFERRABLE FOR EACH ROW EXECUTE FUNCTION noop()');
SELECT pg_temp.err('CREATE OR REPLACE TRIGGER pending_to_log BEFORE INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION noop()');
SELECT pg_temp.err('CREATE RULE dba_rule AS ON INSERT TO outbox.pending DO INSTEAD NOTHING');
SELECT pg_temp.err('ALTER TABLE outbox.pending ADD CONSTRAINT dba_check CHECK (channel <> ''forbidden'')');
SELECT pg_temp.err('ALTER TABLE ONLY outbox.pending ADD CHECK (channel <> ''forbidden'') NOT VALID');
SELECT pg_temp.err('ALTER TABLE IF EXISTS outbox.pending ADD UNIQUE (key)');
SELECT pg_temp.err('ALTER TABLE outbox.pending ADD PRIMARY KEY (key)');
SELECT pg_temp.err('ALTER TABLE outbox.pending ADD EXCLUDE USING btree (key WITH =)');
CREATE TABLE dba_channels (name text PRIMARY KEY);
SELECT pg_temp.err('ALTER TABLE outbox.pending ADD FOREIGN KEY (channel) REFERENCES dba_channels (name)');
SELECT pg_temp.err('ALTER TABLE outbox.pending ALTER COLUMN key SET NOT NULL');
SELECT pg_temp.err('ALTER TABLE outbox.pending ADD COLUMN dba_x int CHECK (dba_x > 0)');
SELECT pg_temp.err('ALTER TABLE outbox.pending ADD COLUMN dba_y text REFERENCES dba_channels');
SELECT pg_temp.err('CREATE UNIQUE INDEX dba_key ON outbox.pending (key)');
SELECT pg_temp.err('CREATE UNIQUE INDEX CONCURRENTLY dba_key ON outbox.pending (key)');
SELECT pg_temp.err('ALTER TABLE outbox.pending ENABLE ROW LEVEL SECURITY');
SELECT pg_temp.err('ALTER TABLE outbox.pending FORCE ROW LEVEL SECURITY');
SELECT pg_temp.err('CREATE POLICY dba_policy ON outbox.pending USING (channel <> ''forbidden'')');
CREATE TABLE dba_checked (CHECK (true));
SELECT pg_temp.err('ALTER TABLE outbox.pending INHERIT dba_checked');
CREATE TABLE dba_parted (LIKE outbox.pending) PARTITION BY LIST (channel);
SELECT pg_temp.err('ALTER TABLE dba_parted ATTACH PARTITION outbox.pending FOR VALUES IN (''a'')');
-- several subcommands: the refused one after harmless ones; nothing of the statement is applied
SELECT pg_temp.err('ALTER TABLE outbox.pending ALTER COLUMN key SET STATISTICS 200, SET (fillfactor = 90), ADD CONSTRAINT dba_check CHECK (true)');
SELECT coalesce(attstattarget, -1) < 0 AS default_statistics FROM pg_attribute WHERE attrelid = 'outbox.pending'::regclass AND attname = 'key';
SELECT reloptions FROM pg_class WHERE oid = 'outbox.pending'::regclass;
-- through an inheritance parent (ALTER TABLE recurses into its children): refused; with ONLY and
-- NO INHERIT it does not reach outbox.pending: accepted
SELECT pg_temp.err('ALTER TABLE dba_parent ADD CONSTRAINT dba_check CHECK (true)');
SELECT pg_temp.err('ALTER TABLE dba_parent ADD COLUMN dba_z int NOT NULL DEFAULT 0');
SELECT pg_temp.err('ALTER TABLE ONLY dba_parent ADD CONSTRAINT dba_only CHECK (true) NO INHERIT');
SELECT pg_temp.err('ALTER TABLE dba_parent ADD CONSTRAINT dba_noinh CHECK (true) NO INHERIT');
-- run by a function, a DO block, an event trigger: the same statement, the same refusal
CREATE FUNCTION dba_fn() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN EXECUTE 'CREATE TRIGGER dba_fn AFTER INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION noop()'; END $$;
SELECT pg_temp.err('SELECT dba_fn()');
SELECT pg_temp.err('DO $d$ BEGIN EXECUTE ''CREATE RULE dba_do AS ON INSERT TO outbox.pending DO ALSO NOTHING''; END $d$');
CREATE FUNCTION dba_evt() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN EXECUTE 'ALTER TABLE outbox.pending ADD CONSTRAINT dba_evt CHECK (true)'; END $$;
CREATE EVENT TRIGGER dba_evt ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION dba_evt();
SELECT pg_temp.err('CREATE TABLE dba_fires (x int)');
DROP EVENT TRIGGER dba_evt;
SELECT to_regclass('dba_fires') IS NULL AS rolled_back;
-- nothing got through
SELECT * FROM added();
-- what adds nothing that constrains or reacts to rows is accepted: a plain index, a column with a
-- default, statistics, a comment; dropping and disabling are left alone
CREATE INDEX dba_plain ON outbox.pending (created_at);
ALTER TABLE outbox.pending ADD COLUMN dba_note text DEFAULT 'x', ALTER COLUMN key SET STATISTICS 100;
COMMENT ON TABLE outbox.pending IS 'the outbox';
ALTER TABLE outbox.pending DISABLE ROW LEVEL SECURITY;
DROP INDEX outbox.dba_plain;
ALTER TABLE outbox.pending DROP COLUMN dba_note, ALTER COLUMN key SET STATISTICS -1;
ALTER TABLE outbox.pending RESET (fillfactor);
-- a table named pending in another schema is another table: accepted, qualified or found by search_path
CREATE SCHEMA dba;
CREATE TABLE dba.pending (channel text);
CREATE TRIGGER dba_other BEFORE INSERT ON dba.pending FOR EACH ROW EXECUTE FUNCTION noop();
SET search_path = dba, public;
ALTER TABLE pending ADD CONSTRAINT dba_other CHECK (channel <> 'forbidden');
CREATE RULE dba_other AS ON INSERT TO pending WHERE false DO INSTEAD NOTHING;
ALTER TABLE pending ENABLE ROW LEVEL SECURITY;
RESET search_path;
SELECT count(*) AS accepted FROM pg_trigger WHERE tgrelid = 'dba.pending'::regclass;
-- a role without the rights gets the statement's own error (and takes no lock first)
SET ROLE ddl_nobody;
SELECT pg_temp.err('CREATE TRIGGER dba_nobody BEFORE INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION noop()');
SELECT pg_temp.err('ALTER TABLE outbox.pending ADD CHECK (true)');
RESET ROLE;
-- the schema renamed: still the extension's outbox.pending, named as it is now
ALTER SCHEMA outbox RENAME TO outbox_renamed;
SELECT pg_temp.err('CREATE TRIGGER dba_before BEFORE INSERT ON outbox_renamed.pending FOR EACH ROW EXECUTE FUNCTION noop()');
SELECT pg_temp.err('ALTER TABLE outbox_renamed.pending ADD CHECK (true)');
ALTER SCHEMA outbox_renamed RENAME TO outbox;
-- only the extension's own triggers are left (the trigger made while the schema was renamed was refused)
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'outbox.pending'::regclass AND NOT tgisinternal ORDER BY 1;
-- a publish() still goes to the log (no DBA trigger or CHECK of 1.2 applies)
SELECT outbox.publish('forbidden', '{"n": 2}') > 0 AS published;
SELECT outbox.drain() AS drained;

-- 3. drain() in the producer's own transaction: a NOTICE says why it published nothing
BEGIN;
SELECT outbox.publish('a', '{"n": 3}') > 0 AS published;
SELECT outbox.drain() AS drained_in_own_xact;
COMMIT;
SELECT outbox.drain() AS drained_after_commit;
-- in one statement (the rows of the current command too)
SELECT outbox.publish('a', '{"n": 4}') > 0 AS published, outbox.drain() AS drained;
SELECT outbox.drain() AS drained_after;
-- an INSERT into outbox.pending by hand goes into the log: the same
BEGIN;
INSERT INTO outbox.pending (channel, payload) VALUES ('a', '{"n": 5}');
SELECT outbox.drain() AS drained_in_own_xact;
ROLLBACK;
-- events of a rolled-back savepoint are gone: no NOTICE for them
BEGIN;
SAVEPOINT s;
SELECT outbox.publish('a', '{"n": 6}') > 0 AS published;
ROLLBACK TO SAVEPOINT s;
SELECT outbox.drain() AS drained_no_notice;
ROLLBACK;
-- a transaction that wrote nothing of the log, or in autocommit: no NOTICE
BEGIN;
CREATE TEMP TABLE scratch (x int);
SELECT outbox.drain() AS drained_no_notice;
ROLLBACK;
SELECT outbox.drain() AS drained_no_notice;

-- 2. DROP EXTENSION in log mode counts the log's unpublished events (none in outbox.pending)
SELECT outbox.publish('a', jsonb_build_object('n', i)) > 0 AS published FROM generate_series(7, 9) i;
SELECT pending FROM outbox.status;
BEGIN;
DROP EXTENSION pg_outbox CASCADE;
ROLLBACK;
-- a log it cannot count (outbox.status fails): the DROP goes on and says so
BEGIN;
ALTER TABLE outbox.log RENAME COLUMN xid TO xid_gone;
SELECT pg_temp.err('SELECT pending FROM outbox.status', 'message');
DROP EXTENSION pg_outbox CASCADE;
SELECT count(*) AS extension_left FROM pg_extension WHERE extname = 'pg_outbox';
ROLLBACK;
-- published: nothing to warn of
SELECT outbox.drain() AS drained;
SET client_min_messages = notice;
DROP EXTENSION pg_outbox CASCADE;
RESET client_min_messages;

-- (outbox.pending as a partition of a DBA's table: regress log_mode_ddl_partition)

\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE pg_outbox_logddl;
DROP ROLE ddl_nobody;
