-- Administration from psql: status, pause/resume, purge by whole segments, dead letters.
-- (No drain worker runs in this instance: the worker-side behaviour is in test/t/040_admin.pl.)
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;
-- an event that fails alone goes to the dead letters at its first failure here (the retries
-- before that, pg_outbox.max_attempts, are tested in drain_failures)
SET pg_outbox.max_attempts = 1;
SET pg_outbox.retry_delay = 0;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- status without a worker
SELECT database = current_database() AS this_db, pid, state, pending, oldest_pending_age, published_total,
       last_pos, dead_letters, last_error, paused, purged_pos
  FROM outbox.status;
SELECT outbox.publish('orders', jsonb_build_object('n', n)) > 0 AS ok FROM generate_series(1, 3) n;
SELECT pending, oldest_pending_age > '0'::interval AS has_age FROM outbox.status;

-- pause and resume are persistent flags; the messages say what they mean
SELECT outbox.pause();
SELECT outbox.pause();
SELECT paused, state FROM outbox.status;
SELECT outbox.resume();
SELECT outbox.resume();
SELECT paused FROM outbox.status;

-- dead letters: a constraint the checks did not foresee (added by a DBA to the history) makes
-- one event unpublishable; it moves to outbox.dead_letters and the events behind it go out
ALTER TABLE outbox.history_0 ADD CONSTRAINT no_poison CHECK (payload IS NULL OR NOT payload ? 'poison');
SELECT outbox.publish('orders', '{"poison": true}', key => 'bad') AS poison_id \gset
SELECT outbox.publish('orders', '{"n": 4}') > 0 AS ok;
SELECT outbox.drain();
SELECT pos, seq, channel, payload FROM outbox.history ORDER BY pos;
SELECT id = :poison_id AS is_poison, channel, key, payload, error, sqlstate FROM outbox.dead_letters;
SELECT dead_letters, pending FROM outbox.status;
-- retry while the cause is still there: it fails again and comes back to the dead letters
SELECT outbox.retry(:poison_id) = :poison_id AS retried;
SELECT outbox.drain();
SELECT count(*) AS dead FROM outbox.dead_letters;
-- fix the cause, retry: published, positions stay gap-free
ALTER TABLE outbox.history_0 DROP CONSTRAINT no_poison;
SELECT outbox.retry(:poison_id) = :poison_id AS retried;
SELECT outbox.drain();
SELECT pos, seq, id = :poison_id AS is_poison, payload FROM outbox.history ORDER BY pos;
SELECT count(*) AS dead FROM outbox.dead_letters;
SELECT pg_temp.err(format('SELECT outbox.retry(%s)', :poison_id)) LIKE 'P0002: event % is neither a dead letter nor being retried | hint: outbox.dead_letters lists the events that failed, outbox.failures those being retried.' AS not_a_dead_letter;
SELECT pg_temp.err($$SELECT outbox.retry(NULL)$$);

-- a trigger a DBA added to the history fires for every published event (here: an audit copy),
-- and an error it raises dead-letters that one event, as a constraint does
CREATE TABLE public.history_audit (pos bigint, payload jsonb);
CREATE FUNCTION public.audit_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ? 'reject' THEN
        RAISE EXCEPTION 'rejected by the audit' USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO public.history_audit VALUES (NEW.pos, NEW.payload);
    RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER INSERT ON outbox.history_0 FOR EACH ROW EXECUTE FUNCTION public.audit_history();
SELECT outbox.publish('orders', '{"n": 41}') > 0 AS ok;
SELECT outbox.publish('orders', '{"reject": true}') AS reject_id \gset
SELECT outbox.publish('orders', '{"n": 42}') > 0 AS ok;
SELECT outbox.drain();
SELECT a.pos, a.pos = h.pos AND a.payload = h.payload AS same_as_history, a.payload
  FROM public.history_audit a LEFT JOIN outbox.history h USING (pos) ORDER BY a.pos;
SELECT id = :reject_id AS is_rejected, error, sqlstate FROM outbox.dead_letters;
DROP TRIGGER audit ON outbox.history_0;
SELECT outbox.retry(:reject_id) = :reject_id AS retried;
SELECT outbox.drain();
SELECT pos, id = :reject_id AS is_rejected, payload FROM outbox.history WHERE pos > 5 ORDER BY pos;
SELECT count(*) AS dead FROM outbox.dead_letters;
DROP TABLE public.history_audit;
DROP FUNCTION public.audit_history();

-- a CHECK constraint a DBA added to outbox.pending holds for publish() and the change trigger
-- alike (pg_outbox writes the table itself, but evaluates every constraint it does not know)
ALTER TABLE outbox.pending ADD CONSTRAINT no_forbidden CHECK (channel <> 'forbidden');
SELECT split_part(pg_temp.err($$SELECT outbox.publish('forbidden')$$), ' | detail', 1) AS err; -- (the detail shows id and time)
SELECT outbox.publish('allowed') > 0 AS ok;
ALTER TABLE outbox.pending DROP CONSTRAINT no_forbidden;
SELECT pg_temp.err($$SELECT outbox.publish(repeat('x', 64))$$);
SELECT outbox.drain();

-- triggers a DBA put on outbox.pending fire for pg_outbox's own writes too (it writes through
-- SQL then), and a column a DBA added to the history gets its default
CREATE TABLE public.pending_log (op text, channel text);
CREATE FUNCTION public.log_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pending_log VALUES (TG_OP, coalesce(NEW.channel, OLD.channel));
    RETURN NULL;
END $$;
CREATE TRIGGER log AFTER INSERT OR DELETE ON outbox.pending FOR EACH ROW EXECUTE FUNCTION public.log_pending();
ALTER TABLE outbox.history_0 ADD COLUMN note text NOT NULL DEFAULT 'dba';
SELECT outbox.publish('logged') > 0 AS ok;
SELECT outbox.drain();
SELECT op, channel FROM public.pending_log ORDER BY op DESC;
SELECT note FROM outbox.history_0 WHERE channel = 'logged';
DROP TRIGGER log ON outbox.pending;
ALTER TABLE outbox.history_0 DROP COLUMN note;
DROP TABLE public.pending_log;
DROP FUNCTION public.log_pending();
-- a deferrable unique constraint (checked by a trigger) holds as well
ALTER TABLE outbox.pending ADD CONSTRAINT uniq_key UNIQUE (key) DEFERRABLE;
SELECT outbox.publish('x', key => 'k1') > 0 AS ok;
SELECT split_part(pg_temp.err($$SELECT outbox.publish('x', key => 'k1')$$), ' | detail', 1) AS err;
ALTER TABLE outbox.pending DROP CONSTRAINT uniq_key;
-- a generated column a DBA added to the history: pg_outbox writes that segment through SQL
ALTER TABLE outbox.history_0 ADD COLUMN n_text text GENERATED ALWAYS AS (payload->>'n') STORED;
SELECT outbox.publish('gen', '{"n": 77}') > 0 AS ok;
SELECT outbox.drain();
SELECT n_text FROM outbox.history_0 WHERE channel = 'gen';
ALTER TABLE outbox.history_0 DROP COLUMN n_text;
-- a BEFORE trigger of the DBA's that skips an event: publish() returns NULL (nothing stored)
CREATE FUNCTION public.skip_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN CASE WHEN NEW.channel = 'skipped' THEN NULL ELSE NEW END; END $$;
CREATE TRIGGER skip BEFORE INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION public.skip_pending();
SELECT outbox.publish('skipped') IS NULL AS skipped, outbox.publish('kept') > 0 AS kept;
DROP TRIGGER skip ON outbox.pending;
DROP FUNCTION public.skip_pending();
SELECT outbox.drain();
-- a foreign key a DBA made reference outbox.pending keeps that event from being published or
-- dead-lettered: it stays pending, with a warning, and the events behind it go out
CREATE TABLE public.pending_refs (event_id bigint REFERENCES outbox.pending (id));
SELECT outbox.publish('held') AS held_id \gset
SELECT outbox.publish('behind') > 0 AS ok;
INSERT INTO public.pending_refs VALUES (:held_id);
SELECT outbox.drain();
SELECT channel FROM outbox.pending;
SELECT count(*) AS behind_published FROM outbox.history WHERE channel = 'behind';
DROP TABLE public.pending_refs;
SELECT outbox.drain();

-- errors of the system are not the events' fault: nothing is dead-lettered, the drain fails
-- and the events stay pending
SELECT outbox.publish('orders', '{"n": 5}') > 0 AS ok;
ALTER TABLE outbox.channels RENAME TO channels_moved;
SELECT pg_temp.err($$SELECT outbox.drain()$$);
ALTER TABLE outbox.channels_moved RENAME TO channels;
SELECT count(*) AS dead, (SELECT count(*) FROM outbox.pending) AS pending FROM outbox.dead_letters;
SELECT outbox.drain();

-- purge: whole segments only, oldest first, never a hole
SELECT cur_seg, purged_pos FROM outbox.state;
SELECT outbox.purge('1 hour');                    -- nothing is that old
SELECT count(*) FROM outbox.history;
SELECT outbox.purge('0');                         -- everything published so far
SELECT count(*) AS left_in_history FROM outbox.history;
SELECT cur_seg, purged_pos, last_pos FROM outbox.state;
SELECT outbox.publish('orders', '{"n": 6}') > 0 AS ok;
SELECT outbox.drain();
SELECT pos, seq, payload FROM outbox.history_1 ORDER BY pos;
SELECT pg_temp.err($$SELECT outbox.purge(NULL)$$);
SELECT pg_temp.err($$SELECT outbox.purge('-1 hour')$$);

-- the tables are kept by pg_dump
SELECT c.relname, e.extcondition IS NOT NULL AS dumped
  FROM pg_extension e, unnest(e.extconfig) AS cfg(oid) JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'pg_outbox' ORDER BY 1;
