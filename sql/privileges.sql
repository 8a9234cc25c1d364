-- Privileges: nothing for PUBLIC; each role can do what it is documented to do, and no more.
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
DROP ROLE IF EXISTS regress_alice, regress_bob, regress_carol, regress_mallory;
RESET client_min_messages;

\set err_style message_ok
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

CREATE ROLE regress_alice;    GRANT outbox_publisher TO regress_alice;
CREATE ROLE regress_bob;      GRANT outbox_reader TO regress_bob;
CREATE ROLE regress_carol;    GRANT outbox_admin TO regress_carol;
CREATE ROLE regress_mallory;

-- what PUBLIC gets: nothing in schema outbox
SELECT p.proname, p.proacl IS NULL AS default_acl,
       coalesce(has_function_privilege('public', p.oid, 'EXECUTE'), false) AS public_can_execute
  FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE');
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'outbox'::regnamespace AND has_table_privilege('public', c.oid, 'SELECT');
-- SECURITY DEFINER functions pin search_path
SELECT p.proname, p.proconfig FROM pg_proc p
 WHERE p.pronamespace = 'outbox'::regnamespace AND p.prosecdef ORDER BY 1;

CREATE TEMP TABLE probe (who text, what text, result text);
GRANT ALL ON probe TO PUBLIC;
CREATE FUNCTION pg_temp.try_all(who text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE stmt text;
BEGIN
    FOREACH stmt IN ARRAY ARRAY[
        $q$SELECT outbox.publish('orders', '{"by": "role"}')$q$,
        $q$SELECT outbox.notify('orders', 'direct')$q$,
        $q$SELECT outbox.max_payload_bytes()$q$,
        $q$SELECT * FROM outbox.event(1)$q$,
        $q$SELECT count(*) FROM outbox.history$q$,
        $q$SELECT state FROM outbox.status$q$,
        $q$SELECT outbox.drain()$q$,
        $q$SELECT outbox.pause()$q$,
        $q$SELECT outbox.resume()$q$,
        $q$SELECT outbox.purge('1 day')$q$,
        $q$SELECT count(*) FROM outbox.pending$q$,
        $q$INSERT INTO outbox.pending (channel) VALUES ('sneaky')$q$,
        $q$UPDATE outbox.state SET last_pos = 0$q$,
        $q$SELECT count(*) FROM outbox.dead_letters$q$,
        $q$SELECT count(*) FROM outbox.replay(0)$q$,
        $q$SELECT outbox.head()$q$,
        $q$SELECT outbox.set_target('orders', 'both')$q$
    ] LOOP
        INSERT INTO probe VALUES (who, stmt, pg_temp.err(stmt));
    END LOOP;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try_all(text) TO PUBLIC;

SET ROLE regress_alice;   SELECT pg_temp.try_all('publisher'); RESET ROLE;
SET ROLE regress_bob;     SELECT pg_temp.try_all('reader');    RESET ROLE;
SET ROLE regress_carol;   SELECT pg_temp.try_all('admin');     RESET ROLE;
SET ROLE regress_mallory; SELECT pg_temp.try_all('nobody');    RESET ROLE;
SELECT what, who, result FROM probe ORDER BY what, array_position(ARRAY['publisher','reader','admin','nobody'], who);

-- the events published by the roles went in with the right data
SELECT channel, payload FROM outbox.history UNION ALL SELECT channel, payload FROM outbox.pending ORDER BY 1, 2;

DROP FUNCTION pg_temp.try_all(text);
DROP ROLE regress_alice, regress_bob, regress_carol, regress_mallory;

-- the change trigger: a publisher attaches a table it owns, not one it does not own; anyone who
-- may write the table fires the trigger, without any right in schema outbox
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_owner, regress_writer;
RESET client_min_messages;
CREATE ROLE regress_owner; GRANT outbox_publisher TO regress_owner;
CREATE ROLE regress_writer;
CREATE SCHEMA regress_app AUTHORIZATION regress_owner;
GRANT USAGE ON SCHEMA regress_app TO regress_writer;
CREATE TABLE regress_app.owned_by_superuser (id int PRIMARY KEY);
SET ROLE regress_owner;
CREATE TABLE regress_app.owned (id int PRIMARY KEY, note text);
GRANT INSERT, UPDATE ON regress_app.owned TO regress_writer;
SELECT outbox.attach('regress_app.owned');
SELECT pg_temp.err($$SELECT outbox.attach('regress_app.owned_by_superuser')$$);
SELECT "table", mode FROM outbox.attachments ORDER BY 1;
RESET ROLE;
SET ROLE regress_writer;
INSERT INTO regress_app.owned VALUES (1, 'written by a role without outbox rights');
-- the trigger writes the events as the owner of outbox.pending: nothing the writer puts in its
-- search_path (here an unnest() of its own, ahead of pg_catalog) runs with those rights
RESET ROLE;
CREATE SCHEMA regress_evil AUTHORIZATION regress_writer;
SET ROLE regress_writer;
CREATE FUNCTION regress_evil.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'hijacked by %', current_user; END $$;
SET search_path = regress_evil, pg_catalog;
INSERT INTO regress_app.owned VALUES (2, 'two rows'), (3, 'in one statement');
RESET search_path;
SELECT pg_temp.err($$SELECT count(*) FROM outbox.pending$$);
RESET ROLE;
SELECT channel, type, payload FROM outbox.pending WHERE channel = 'regress_app.owned';
SET ROLE regress_owner;
SELECT outbox.detach('regress_app.owned');
RESET ROLE;
SET client_min_messages = warning;
DROP SCHEMA regress_app CASCADE;
DROP SCHEMA regress_evil CASCADE;
RESET client_min_messages;
DROP ROLE regress_owner, regress_writer;
