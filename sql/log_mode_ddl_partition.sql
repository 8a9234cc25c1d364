-- Log mode's DDL refusal on outbox.pending (src/pending_ddl.cpp, regress log_mode_ddl) when
-- outbox.pending is a partition of a DBA's table, attached in 1.2 mode (the switch accepts it): a
-- row trigger, a unique index or a constraint on the partitioned parent would be cloned onto it,
-- and are refused, also for the parent's owner who does not own outbox.pending. PostgreSQL 17 and
-- later refuse to attach a table with an identity column as a partition (expected
-- log_mode_ddl_partition_1.out): there every statement is the parent's alone and accepted.
SET client_min_messages = warning;
DROP DATABASE IF EXISTS pg_outbox_logddlp;
CREATE DATABASE pg_outbox_logddlp;
RESET client_min_messages;
\c pg_outbox_logddlp
SET client_min_messages = warning;
CREATE EXTENSION pg_outbox;
DROP ROLE IF EXISTS ddlp_nobody;
CREATE ROLE ddlp_nobody;
RESET client_min_messages;
\set err_style message
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TABLE dba_parts (LIKE outbox.pending) PARTITION BY LIST (channel);
SELECT pg_temp.err('ALTER TABLE dba_parts ATTACH PARTITION outbox.pending DEFAULT');
SELECT events_moved FROM outbox.use_log_storage();
SELECT pg_temp.err('CREATE TRIGGER dba_row BEFORE INSERT ON dba_parts FOR EACH ROW EXECUTE FUNCTION noop()');
SELECT pg_temp.err('CREATE UNIQUE INDEX dba_parts_key ON dba_parts (channel, key)');
SELECT pg_temp.err('ALTER TABLE dba_parts ADD CONSTRAINT dba_parts_check CHECK (true)');
-- the same by the parent's owner, who does not own outbox.pending (a row trigger is cloned anyway)
ALTER TABLE dba_parts OWNER TO ddlp_nobody;
SET ROLE ddlp_nobody;
SELECT pg_temp.err('CREATE TRIGGER dba_row2 BEFORE INSERT ON dba_parts FOR EACH ROW EXECUTE FUNCTION noop()');
RESET ROLE;
ALTER TABLE dba_parts OWNER TO CURRENT_USER;
-- a statement trigger and an index ON ONLY the parent are not cloned: accepted
SELECT pg_temp.err('CREATE TRIGGER dba_stmt AFTER INSERT ON dba_parts FOR EACH STATEMENT EXECUTE FUNCTION noop()');
SELECT pg_temp.err('CREATE UNIQUE INDEX dba_parts_only ON ONLY dba_parts (channel, key)');
-- what is on outbox.pending besides the extension's own
SELECT tgname FROM pg_trigger WHERE tgrelid = 'outbox.pending'::regclass AND NOT tgisinternal
   AND tgname NOT IN ('pending_to_log', 'pending_wake')
UNION ALL SELECT conname FROM pg_constraint WHERE conrelid = 'outbox.pending'::regclass AND contype <> 'n'
   AND conname NOT IN ('pending_pkey', 'pending_channel_length')
UNION ALL SELECT 'index ' || indexrelid::regclass::text FROM pg_index
 WHERE indrelid = 'outbox.pending'::regclass AND indexrelid <> 'outbox.pending_pkey'::regclass;

\c contrib_regression
SET client_min_messages = warning;
DROP DATABASE pg_outbox_logddlp;
DROP ROLE ddlp_nobody;
