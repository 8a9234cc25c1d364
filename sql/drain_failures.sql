-- What a DBA's additions and bad events do to the drain (issue 12, "crashes" and "a stuck
-- queue"): every result checked, a clear error instead of a crash; an event that fails alone is
-- retried pg_outbox.max_attempts times and dead-lettered while the events behind it are
-- published; a failure of the system is retried and never counted.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
DELETE FROM outbox.failures;                              -- earlier tests' events: retried at once
SELECT outbox.drain(1000000) >= 0 AS drained_leftovers;
DELETE FROM outbox.pending;                               -- and whatever still fails
DELETE FROM outbox.failures;
DELETE FROM outbox.dead_letter;
SET pg_outbox.retry_delay = 0;
SET pg_outbox.max_attempts = 3;
SET client_min_messages = error;

\set err_style hint_numbers
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql
CREATE FUNCTION pg_temp.gapless() RETURNS boolean LANGUAGE sql AS $$
    SELECT coalesce(max(pos) - min(pos) + 1 = count(*), true) FROM outbox.history
$$;

-- ---- 1. a BEFORE INSERT trigger on outbox.channels that returns NULL (was: signal 11) ----
CREATE FUNCTION public.skip_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER dba_skip BEFORE INSERT ON outbox.channels FOR EACH ROW EXECUTE FUNCTION public.skip_row();
SELECT outbox.publish('crash_a', '{"n":1}') > 0 AS published, outbox.publish('crash_a', '{"n":2}') > 0 AS published;
SELECT pg_temp.err('SELECT outbox.drain()');              -- one channel: the single-channel path
SELECT outbox.publish('crash_b', '{"n":3}') > 0 AS published;
SELECT pg_temp.err('SELECT outbox.drain()');              -- two channels: the multi-channel path
SELECT count(*) AS still_pending, (SELECT count(*) FROM outbox.dead_letter) AS dead FROM outbox.pending;
DROP TRIGGER dba_skip ON outbox.channels;
SELECT outbox.drain() AS published_after_the_fix;

-- ---- 2. a rule, a policy and a constraint on outbox.channels ----
CREATE RULE dba_rule AS ON INSERT TO outbox.channels DO INSTEAD NOTHING;
SELECT outbox.publish('rule_a') > 0 AS p1, outbox.publish('rule_b') > 0 AS p2;
SELECT pg_temp.err('SELECT outbox.drain()');
DROP RULE dba_rule ON outbox.channels;
SELECT outbox.drain() AS published_after_the_fix;
ALTER TABLE outbox.channels ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY dba_nothing ON outbox.channels USING (false) WITH CHECK (false);
SELECT outbox.publish('policy_a') > 0 AS published;
SELECT outbox.drain() AS published_under_a_policy;       -- the owner (a superuser) is not subject to it
DROP POLICY dba_nothing ON outbox.channels;
ALTER TABLE outbox.channels DISABLE ROW LEVEL SECURITY, NO FORCE ROW LEVEL SECURITY;
-- a CHECK that only some events break: those are retried, then dead-lettered; the rest publish
ALTER TABLE outbox.channels ADD CONSTRAINT dba_small CHECK (channel <> 'limited' OR last_seq <= 2);
SELECT outbox.publish('limited', jsonb_build_object('n', g)) > 0 AS published FROM generate_series(1, 4) g;
SELECT outbox.publish('free') > 0 AS published;
SELECT outbox.drain() AS pass1, outbox.drain() AS pass2, outbox.drain() AS pass3;
SELECT payload->>'n' AS n, sqlstate, error FROM outbox.dead_letter ORDER BY id;
SELECT count(*) AS pending, (SELECT count(*) FROM outbox.failures) AS retrying FROM outbox.pending;
ALTER TABLE outbox.channels DROP CONSTRAINT dba_small;
DELETE FROM outbox.dead_letter;

-- ---- 3. a BEFORE trigger on the history that skips one event: an error of that event ----
CREATE FUNCTION public.dba_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CASE NEW.payload->>'poison'
    WHEN 'skip' THEN RETURN NULL;
    WHEN 'limit' THEN RAISE EXCEPTION 'out of memory' USING ERRCODE = 'program_limit_exceeded';
    WHEN 'oom' THEN RAISE EXCEPTION 'out of memory' USING ERRCODE = 'out_of_memory';
    WHEN 'internal' THEN RAISE EXCEPTION 'invalid memory alloc request size' USING ERRCODE = 'internal_error';
    WHEN 'lock' THEN RAISE EXCEPTION 'canceling statement due to lock timeout' USING ERRCODE = 'lock_not_available';
    WHEN 'serialization' THEN RAISE EXCEPTION 'could not serialize' USING ERRCODE = 'serialization_failure';
    WHEN 'disk' THEN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full';
    WHEN 'shutdown' THEN RAISE EXCEPTION 'terminating connection' USING ERRCODE = 'admin_shutdown';
    ELSE RETURN NEW;
    END CASE;
END $$;
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_0 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_1 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_2 FOR EACH ROW EXECUTE FUNCTION public.dba_history();

-- each class of the event's own failure: retried 3 times, dead-lettered, the events behind published
CREATE FUNCTION pg_temp.poison_case(p_kind text) RETURNS TABLE (kind text, published_behind bigint,
    retrying_after_1 bigint, stuck_shown boolean, dead_after_3 bigint, sqlstate text, still_pending bigint,
    gapless boolean)
LANGUAGE plpgsql AS $$
DECLARE before_pos bigint; poison bigint; r1 bigint; shown boolean; b bigint;
BEGIN
    SELECT last_pos INTO before_pos FROM outbox.state;
    PERFORM outbox.publish('poison', '{"n":0}');
    poison := outbox.publish('poison', jsonb_build_object('poison', p_kind));
    PERFORM outbox.publish('poison', jsonb_build_object('n', g)) FROM generate_series(1, 5) g;
    PERFORM outbox.drain();
    SELECT count(*) INTO b FROM outbox.history WHERE pos > before_pos;
    SELECT count(*) INTO r1 FROM outbox.failures;
    SELECT s.stuck_event = poison AND s.stuck_error LIKE '%attempt 1 of 3%' AND s.retrying = 1 INTO shown
      FROM outbox.status s;
    PERFORM outbox.drain();
    PERFORM outbox.drain();
    RETURN QUERY SELECT p_kind, b, r1, shown, (SELECT count(*) FROM outbox.dead_letter d WHERE d.id = poison),
        (SELECT d.sqlstate FROM outbox.dead_letter d WHERE d.id = poison),
        (SELECT count(*) FROM outbox.pending), pg_temp.gapless();
    DELETE FROM outbox.dead_letter;
END $$;
SELECT * FROM pg_temp.poison_case('skip');
SELECT * FROM pg_temp.poison_case('limit');
SELECT * FROM pg_temp.poison_case('oom');
SELECT * FROM pg_temp.poison_case('internal');
SELECT (SELECT count(*) FROM outbox.replay((SELECT purged_pos FROM outbox.state), NULL, 1000000))
       = (SELECT count(*) FROM outbox.history WHERE pos > (SELECT purged_pos FROM outbox.state))
       AS replay_complete_without_40001;

-- a failure of the system: propagates, nothing counted, nothing dead-lettered, nothing lost
CREATE FUNCTION pg_temp.system_case(p_kind text) RETURNS TABLE (kind text, error text, retrying bigint, dead bigint,
    pending bigint)
LANGUAGE plpgsql AS $$
DECLARE e text;
BEGIN
    PERFORM outbox.publish('sys', '{"n":0}');
    PERFORM outbox.publish('sys', jsonb_build_object('poison', p_kind));
    PERFORM outbox.publish('sys', '{"n":2}');
    e := pg_temp.err('SELECT outbox.drain()');
    RETURN QUERY SELECT p_kind, e, (SELECT count(*) FROM outbox.failures), (SELECT count(*) FROM outbox.dead_letter),
        (SELECT count(*) FROM outbox.pending);
    UPDATE outbox.pending SET payload = '{"n":1}' WHERE payload ? 'poison';
    PERFORM outbox.drain();
END $$;
SELECT * FROM pg_temp.system_case('lock');
SELECT * FROM pg_temp.system_case('serialization');
SELECT * FROM pg_temp.system_case('disk');
SELECT * FROM pg_temp.system_case('shutdown');
-- the same failure for every event (a broken trigger), nothing publishes: the system's, not counted
SELECT outbox.publish('all_bad', '{"poison":"limit"}') > 0 AS p1, outbox.publish('all_bad', '{"poison":"limit"}') > 0 AS p2;
SELECT pg_temp.err('SELECT outbox.drain()');
SELECT (SELECT count(*) FROM outbox.failures) AS retrying, (SELECT count(*) FROM outbox.dead_letter) AS dead;
UPDATE outbox.pending SET payload = '{}';
SELECT outbox.drain() AS published_after_the_fix;

-- ---- 4. an admin acts on a stuck event: see it, retry it, discard it (recorded) ----
SELECT outbox.publish('stuck', '{"poison":"limit"}') AS stuck_id \gset
SELECT outbox.publish('stuck', '{"n":1}') > 0 AS published;
SELECT outbox.drain() AS published_behind;
SELECT stuck_event = :stuck_id AS shown, stuck_error LIKE '54000: out of memory (attempt 1 of 3%' AS why,
       stuck_since IS NOT NULL AS since, retrying FROM outbox.status;
SET ROLE outbox_admin;
SELECT outbox.retry(:stuck_id) = :stuck_id AS retried;
SELECT count(*) AS retrying_after_retry FROM outbox.failures;
SELECT regexp_replace(outbox.discard(:stuck_id, 'payload cannot be fixed'), '[0-9]+', 'N') AS discarded;
SELECT was, reason, sqlstate, error, discarded_by = session_user AS by_me, channel FROM outbox.discarded
 WHERE id = :stuck_id;
SELECT pg_temp.err(format('SELECT outbox.discard(%s)', :stuck_id));
SELECT pg_temp.err('SELECT outbox.retry(-1)');
RESET ROLE;
-- a dead letter discarded too
SET pg_outbox.max_attempts = 1;
SELECT outbox.publish('stuck', '{"poison":"internal"}') AS dead_id \gset
SELECT outbox.drain() AS drained;
SET ROLE outbox_admin;
SELECT regexp_replace(outbox.discard(:dead_id), '[0-9]+', 'N') AS discarded;
RESET ROLE;
SELECT was, sqlstate, error FROM outbox.discarded WHERE id = :dead_id;
-- nobody else may
CREATE ROLE drain_failures_nobody;
SET ROLE drain_failures_nobody;
SELECT pg_temp.err('SELECT outbox.discard(1)');
RESET ROLE;
DROP ROLE drain_failures_nobody;

-- ---- 5. a trigger on outbox.dead_letter or outbox.pending that skips the row loses nothing ----
CREATE TRIGGER dba_skip BEFORE INSERT ON outbox.dead_letter FOR EACH ROW EXECUTE FUNCTION public.skip_row();
SELECT outbox.publish('stuck', '{"poison":"internal"}') AS kept_id \gset
SELECT outbox.drain() AS drained;                         -- a WARNING says it stays pending
SELECT count(*) AS still_pending FROM outbox.pending WHERE id = :kept_id;
DROP TRIGGER dba_skip ON outbox.dead_letter;
SELECT outbox.drain() AS drained;
SELECT count(*) AS dead_now FROM outbox.dead_letter WHERE id = :kept_id;
CREATE TRIGGER dba_skip BEFORE INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION public.skip_row();
SELECT pg_temp.err(format('SELECT outbox.retry(%s)', :kept_id));
SELECT count(*) AS still_dead FROM outbox.dead_letter WHERE id = :kept_id;
DROP TRIGGER dba_skip ON outbox.pending;
SELECT outbox.discard(:kept_id) IS NOT NULL AS discarded;

DROP TRIGGER dba_history ON outbox.history_0;
DROP TRIGGER dba_history ON outbox.history_1;
DROP TRIGGER dba_history ON outbox.history_2;
DROP FUNCTION public.dba_history(), public.skip_row();
SELECT pg_temp.gapless() AS history_gapless;
RESET pg_outbox.max_attempts;
RESET pg_outbox.retry_delay;
RESET client_min_messages;
