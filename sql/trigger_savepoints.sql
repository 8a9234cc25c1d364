-- The change trigger in outbox mode and subtransactions: for every committed row exactly one
-- event, whatever savepoints, PL/pgSQL EXCEPTION blocks, psql ON_ERROR_ROLLBACK, partitions,
-- COPY into a partition and statement sizes do (issue 12, "lost events").
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;
SELECT outbox.drain(1000000) >= 0 AS drained_leftovers;

CREATE TABLE sp_parted (id int, part int, PRIMARY KEY (id, part)) PARTITION BY LIST (part);
CREATE TABLE sp_part1 PARTITION OF sp_parted FOR VALUES IN (1);
CREATE TABLE sp_part2 PARTITION OF sp_parted FOR VALUES IN (2);
CREATE TABLE sp_other (id int PRIMARY KEY);
SELECT outbox.attach('sp_parted', channel => 'parted', key_columns => '{id}');
SELECT outbox.attach('sp_other', channel => 'other');

-- What was stored since the last check: events per channel, and whether a key repeats.
CREATE FUNCTION pg_temp.events() RETURNS TABLE (channel text, events bigint, distinct_keys bigint, keys text)
LANGUAGE sql AS $$
    SELECT channel, count(*), count(DISTINCT key),
           CASE WHEN count(*) <= 10 THEN string_agg(key, ',' ORDER BY id) ELSE '...' END
      FROM outbox.pending GROUP BY channel ORDER BY channel
$$;
CREATE FUNCTION pg_temp.reset() RETURNS void LANGUAGE sql AS $$
    SELECT outbox.drain(1000000); TRUNCATE sp_parted, sp_other;
$$;

-- 1. the issue's case: a row written into a partition (no statement trigger of ours fires),
--    then a savepoint whose statement flushes, rolled back
BEGIN;
INSERT INTO sp_part1 VALUES (1, 1);
SAVEPOINT s;
INSERT INTO sp_other VALUES (100);
ROLLBACK TO s;
COMMIT;
SELECT * FROM pg_temp.events();
SELECT pg_temp.reset();

-- 2. 12,000 rows into a partition (over the 10,000-event buffer), then a rolled-back savepoint
BEGIN;
INSERT INTO sp_part1 SELECT g, 1 FROM generate_series(1, 12000) g;
SAVEPOINT s;
INSERT INTO sp_part2 SELECT g, 2 FROM generate_series(1, 12000) g;
INSERT INTO sp_other VALUES (100);
ROLLBACK TO s;
INSERT INTO sp_part2 VALUES (5, 2);
COMMIT;
SELECT * FROM pg_temp.events();
SELECT pg_temp.reset();

-- 3. COPY into a partition, then a rolled-back savepoint
BEGIN;
COPY sp_part1 (id, part) FROM STDIN;
1	1
2	1
3	1
\.
SAVEPOINT s;
COPY sp_part2 (id, part) FROM STDIN;
7	2
\.
INSERT INTO sp_other VALUES (100);
ROLLBACK TO s;
COMMIT;
SELECT * FROM pg_temp.events();
SELECT pg_temp.reset();

-- 4. a PL/pgSQL EXCEPTION block: its rolled-back writes lose their events, the rest keep theirs
DO $$
BEGIN
    INSERT INTO sp_part1 VALUES (1, 1);
    BEGIN
        INSERT INTO sp_part1 VALUES (2, 1);
        INSERT INTO sp_other VALUES (100);
        RAISE EXCEPTION 'roll back the block';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    BEGIN
        INSERT INTO sp_other VALUES (101); -- released block: kept
    EXCEPTION WHEN others THEN
        NULL;
    END;
    INSERT INTO sp_part1 VALUES (3, 1);
END $$;
SELECT * FROM pg_temp.events();
SELECT pg_temp.reset();

-- 5. psql's ON_ERROR_ROLLBACK: a savepoint around every statement; a failed DO block that
--    wrote (and flushed) events before failing must not take earlier statements' events along
\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO sp_part1 VALUES (1, 1);
DO $$ BEGIN INSERT INTO sp_other VALUES (100); INSERT INTO sp_part1 VALUES (9, 1); RAISE EXCEPTION 'fails'; END $$;
INSERT INTO sp_part2 VALUES (2, 2);
INSERT INTO sp_other VALUES (1), (1);
INSERT INTO sp_other VALUES (2);
COMMIT;
\set ON_ERROR_ROLLBACK off
SELECT * FROM pg_temp.events();
SELECT pg_temp.reset();

-- 6. a DBA's AFTER trigger with an EXCEPTION block that runs between our row trigger's calls
--    (a subtransaction begins while our events are buffered) and writes an attached table
CREATE FUNCTION sp_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        INSERT INTO sp_other VALUES (NEW.id);
        IF NEW.id % 2 = 1 THEN
            RAISE EXCEPTION 'odd';
        END IF;
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_audit AFTER INSERT ON sp_part1 FOR EACH ROW EXECUTE FUNCTION sp_audit();
INSERT INTO sp_part1 SELECT g, 1 FROM generate_series(1, 6) g;
BEGIN;
INSERT INTO sp_part1 SELECT g, 1 FROM generate_series(11, 14) g;
SAVEPOINT s;
INSERT INTO sp_part1 VALUES (21, 1), (22, 1);
ROLLBACK TO s;
COMMIT;
SELECT * FROM pg_temp.events();
-- the events keep the order of the trigger calls
SELECT string_agg(channel || ':' || key, ' ' ORDER BY id) AS order_of_events FROM outbox.pending;
DROP TRIGGER zz_audit ON sp_part1;
SELECT pg_temp.reset();

-- 7. the same with more events inside the block than the buffer holds (10,000+ in one level)
CREATE FUNCTION sp_bulk() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        INSERT INTO sp_other SELECT g FROM generate_series(1000, 11999) g;
    EXCEPTION WHEN others THEN
        NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_bulk AFTER INSERT ON sp_part1 FOR EACH ROW EXECUTE FUNCTION sp_bulk();
BEGIN;
INSERT INTO sp_part1 VALUES (1, 1);
SAVEPOINT s;
INSERT INTO sp_part2 VALUES (1, 2);
ROLLBACK TO s;
COMMIT;
SELECT * FROM pg_temp.events();
DROP TRIGGER zz_bulk ON sp_part1;
SELECT pg_temp.reset();

-- 8. nested savepoints, released and rolled back; a rolled-back transaction stores nothing
BEGIN;
INSERT INTO sp_part1 VALUES (1, 1);
SAVEPOINT a;
INSERT INTO sp_part1 VALUES (2, 1);
SAVEPOINT b;
INSERT INTO sp_part1 VALUES (3, 1);
RELEASE b;
SAVEPOINT c;
INSERT INTO sp_part1 VALUES (4, 1);
ROLLBACK TO c;
RELEASE a;
SAVEPOINT d;
INSERT INTO sp_other VALUES (5);
ROLLBACK TO d;
COMMIT;
BEGIN;
INSERT INTO sp_part1 VALUES (50, 1);
INSERT INTO sp_other VALUES (50);
ROLLBACK;
SELECT * FROM pg_temp.events();
SELECT pg_temp.reset();

-- 9. a DBA's trigger on outbox.pending that itself writes an attached table while the buffer
--    is being written: its events are neither lost nor written twice
CREATE FUNCTION sp_pending_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.channel = 'parted' THEN
        INSERT INTO public.sp_other VALUES (NEW.key::int + 1000);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sp_audit AFTER INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION sp_pending_audit();
INSERT INTO sp_part1 VALUES (1, 1), (2, 1);
SELECT * FROM pg_temp.events();
DROP TRIGGER sp_audit ON outbox.pending;
SELECT pg_temp.reset();

SELECT outbox.detach('sp_parted');
SELECT outbox.detach('sp_other');
DROP TABLE sp_parted, sp_other;
DROP FUNCTION sp_audit(), sp_bulk(), sp_pending_audit();
