-- Red team of the layout change (one xact/subxact callback pair, one invalidation pair, the
-- outbox-mode buffer): subtransaction shapes, a DBA's trigger on outbox.pending that writes
-- attached tables (events made while the buffer is being written), cache invalidation.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;
SELECT outbox.drain(1000000) >= 0 AS drained_leftovers;

CREATE TABLE rl1 (id int PRIMARY KEY);
CREATE TABLE rl2 (id int PRIMARY KEY);
CREATE TABLE rl3 (id int PRIMARY KEY);
CREATE TABLE rl4 (id int PRIMARY KEY);
CREATE TABLE rl5 (id int PRIMARY KEY);
SELECT outbox.attach('rl1', channel => 'rl1') IS NOT NULL AS attached;
SELECT outbox.attach('rl2', channel => 'rl2') IS NOT NULL AS attached;
SELECT outbox.attach('rl3', channel => 'rl3') IS NOT NULL AS attached;
SELECT outbox.attach('rl4', channel => 'rl4') IS NOT NULL AS attached;
SELECT outbox.attach('rl5', channel => 'rl5') IS NOT NULL AS attached;
CREATE FUNCTION pg_temp.events() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(channel || ':' || key, ',' ORDER BY id), '(none)') FROM outbox.pending
$$;
CREATE FUNCTION pg_temp.reset() RETURNS void LANGUAGE sql AS $$
    SELECT outbox.drain(1000000); TRUNCATE rl1, rl2, rl3, rl4, rl5;
$$;

-- 1. a DBA's AFTER trigger on outbox.pending that writes an attached table: each event it
--    makes while pg_outbox writes the buffer is written too, however long the chain (a chain
--    of 5: the events made by the writes at the end of the statement used to stay buffered
--    and were dropped at commit)
CREATE FUNCTION rl_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CASE NEW.channel
    WHEN 'rl1' THEN INSERT INTO public.rl2 VALUES (NEW.key::int);
    WHEN 'rl2' THEN INSERT INTO public.rl3 VALUES (NEW.key::int);
    WHEN 'rl3' THEN INSERT INTO public.rl4 VALUES (NEW.key::int);
    WHEN 'rl4' THEN INSERT INTO public.rl5 VALUES (NEW.key::int);
    ELSE NULL;
    END CASE;
    RETURN NULL;
END $$;
CREATE TRIGGER rl_chain AFTER INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION rl_chain();
INSERT INTO rl1 VALUES (1);
SELECT pg_temp.events() AS chain_autocommit;
SELECT pg_temp.reset();
-- the same in a transaction block, two rows in one statement, then a savepoint released
BEGIN;
INSERT INTO rl1 VALUES (1), (2);
SAVEPOINT a;
INSERT INTO rl1 VALUES (3);
RELEASE a;
COMMIT;
SELECT pg_temp.events() AS chain_in_block;
SELECT pg_temp.reset();
-- in a savepoint rolled back: nothing of the chain survives; the rows before it do
BEGIN;
INSERT INTO rl3 VALUES (4);
SAVEPOINT a;
INSERT INTO rl1 VALUES (5);
ROLLBACK TO a;
COMMIT;
SELECT pg_temp.events() AS chain_rolled_back;
SELECT pg_temp.reset();
-- inside a PL/pgSQL EXCEPTION block that fails after the chain was written
DO $$
BEGIN
    INSERT INTO rl4 VALUES (6);
    BEGIN
        INSERT INTO rl1 VALUES (7);
        PERFORM 1 / 0;
    EXCEPTION WHEN division_by_zero THEN
        INSERT INTO rl1 VALUES (8);
    END;
END $$;
SELECT pg_temp.events() AS chain_exception_block;
SELECT pg_temp.reset();
DROP TRIGGER rl_chain ON outbox.pending;

-- 2. savepoint shapes: exactly the committed rows' events, in order
BEGIN;
INSERT INTO rl1 VALUES (1);
SAVEPOINT a; INSERT INTO rl1 VALUES (2); SAVEPOINT b; INSERT INTO rl1 VALUES (3); RELEASE b; ROLLBACK TO a;
INSERT INTO rl1 VALUES (4);
SAVEPOINT c; INSERT INTO rl1 VALUES (5); SAVEPOINT d; INSERT INTO rl1 VALUES (6); ROLLBACK TO d; RELEASE c;
SAVEPOINT e; SAVEPOINT f; INSERT INTO rl1 VALUES (7); RELEASE f; SAVEPOINT g; INSERT INTO rl1 VALUES (8); ROLLBACK TO e;
COMMIT;
SELECT pg_temp.events() AS savepoint_shapes;
SELECT pg_temp.reset();

-- 3. a DBA's AFTER ROW trigger with an EXCEPTION block that writes another attached table
--    between our trigger's calls, failing for even ids
CREATE FUNCTION rl_side() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        INSERT INTO public.rl2 VALUES (NEW.id);
        IF NEW.id % 2 = 0 THEN RAISE EXCEPTION 'even'; END IF;
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_side AFTER INSERT ON rl1 FOR EACH ROW EXECUTE FUNCTION rl_side();
INSERT INTO rl1 SELECT g FROM generate_series(1, 5) g;
SELECT pg_temp.events() AS side_trigger;
SELECT pg_temp.reset();
DROP TRIGGER zz_side ON rl1;

\set VERBOSITY terse
-- 4. an error while the buffer is written (a CHECK constraint on outbox.pending) in a
--    savepoint: that row's event goes with it, the others stay
ALTER TABLE outbox.pending ADD CONSTRAINT rl_no_666 CHECK (key IS DISTINCT FROM '666') NOT VALID;
BEGIN;
INSERT INTO rl1 VALUES (1);
SAVEPOINT a;
INSERT INTO rl1 VALUES (666);
ROLLBACK TO a;
INSERT INTO rl1 VALUES (2);
COMMIT;
ALTER TABLE outbox.pending DROP CONSTRAINT rl_no_666;
\set VERBOSITY default
SELECT pg_temp.events() AS flush_error_in_savepoint;
SELECT pg_temp.reset();

-- 5. a procedure that commits and rolls back
CREATE PROCEDURE rl_proc() LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rl1 VALUES (1); COMMIT;
    INSERT INTO rl1 VALUES (2); ROLLBACK;
    INSERT INTO rl1 VALUES (3);
    BEGIN INSERT INTO rl1 VALUES (4); PERFORM 1 / 0; EXCEPTION WHEN others THEN INSERT INTO rl1 VALUES (5); END;
    COMMIT;
    INSERT INTO rl1 VALUES (6);
    RAISE EXCEPTION 'the last transaction fails';
END $$;
CALL rl_proc();
SELECT pg_temp.events() AS procedure_commits;
SELECT pg_temp.reset();

-- 6. the trigger config cache: the table dropped and re-created with the same name (a key of
--    another type), in a transaction rolled back and for real
BEGIN;
SELECT outbox.detach('rl5') IS NOT NULL AS detached;
DROP TABLE rl5;
CREATE TABLE rl5 (k text PRIMARY KEY, v int);
SELECT outbox.attach('rl5', channel => 'rl5b', include_columns => '{v}') IS NOT NULL AS attached;
INSERT INTO rl5 VALUES ('a', 1);
ROLLBACK;
INSERT INTO rl5 VALUES (9);
SELECT outbox.detach('rl5') IS NOT NULL AS detached;
DROP TABLE rl5;
CREATE TABLE rl5 (k text PRIMARY KEY, v int);
SELECT outbox.attach('rl5', channel => 'rl5b', include_columns => '{v}') IS NOT NULL AS attached;
INSERT INTO rl5 VALUES ('b', 2);
SELECT channel, key, payload->'data' AS data FROM outbox.pending ORDER BY id;
SELECT pg_temp.reset();

-- 7. the change trigger made a deferred constraint trigger by a DBA: its events are written at
--    pre-commit, after the deferred triggers fired; a deferred trigger on outbox.pending fires
--    for them all the same (it used to be dropped unfired: the COMMIT succeeded)
CREATE TABLE rl_def (id int PRIMARY KEY);
CREATE CONSTRAINT TRIGGER outbox_change AFTER INSERT ON rl_def DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION outbox._change('outbox', 'rl_def', '', '');
CREATE FUNCTION rl_check_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key = '13' THEN RAISE EXCEPTION 'deferred check on outbox.pending refuses key %', NEW.key; END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER rl_check_pending AFTER INSERT ON outbox.pending DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION rl_check_pending();
BEGIN;
INSERT INTO rl_def VALUES (12);
COMMIT;
BEGIN;
INSERT INTO rl_def VALUES (13);
COMMIT;
SELECT pg_temp.events() AS deferred_change_trigger;
SELECT id FROM rl_def ORDER BY id;
DROP TRIGGER rl_check_pending ON outbox.pending;
DROP TABLE rl_def;
DROP FUNCTION rl_check_pending();
SELECT pg_temp.reset();

SELECT outbox.detach(t) IS NOT NULL AS detached FROM unnest('{rl1,rl2,rl3,rl4,rl5}'::regclass[]) t;
DROP TABLE rl1, rl2, rl3, rl4, rl5;
DROP FUNCTION rl_chain(), rl_side();
DROP PROCEDURE rl_proc();
