-- pg_outbox 1.1 -> 1.2 upgrade. Each change of 1.2 appends its section here, in the same order
-- as the matching change in src/sql/NN_*.sql, so that the upgraded objects equal a fresh install
-- (test/t/080_upgrade.pl compares them object by object).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.2'" to load this file. \quit

-- ---- rob-events: retries of events that fail alone, outbox.discard(), stuck events in status ----
-- Events that failed alone and are being retried (pg_outbox.max_attempts, pg_outbox.retry_delay);
-- the drain leaves them out of its batches until next_attempt_at. Rows go when the event is
-- published, dead-lettered or discarded.
CREATE TABLE outbox.failures (
    id              bigint PRIMARY KEY,
    attempts        integer NOT NULL,
    first_failed_at timestamptz NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    error           text NOT NULL,
    sqlstate        text NOT NULL
);
COMMENT ON TABLE outbox.failures IS
    'pending events that failed alone and are retried; after pg_outbox.max_attempts they become dead letters';

-- Events an admin discarded with outbox.discard(): recorded, never silent (the payload is not
-- kept, its size is).
CREATE TABLE outbox.discarded (
    id            bigint PRIMARY KEY,
    channel       text NOT NULL,
    key           text,
    type          text,
    payload_bytes integer,
    created_at    timestamptz NOT NULL,
    discarded_at  timestamptz NOT NULL,
    discarded_by  name NOT NULL,
    was           text NOT NULL,
    reason        text,
    error         text,
    sqlstate      text
);
COMMENT ON TABLE outbox.discarded IS 'events removed by outbox.discard(), with who, when, why and their last error';
SELECT pg_catalog.pg_extension_config_dump('outbox.discarded', '');

CREATE OR REPLACE FUNCTION outbox.retry(event_id bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE moved bigint; stored bigint;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a pending event being retried: try it at the next drain, with a fresh count
    DELETE FROM outbox.failures f WHERE f.id = event_id
       AND EXISTS (SELECT FROM outbox.pending p WHERE p.id = event_id);
    IF FOUND THEN
        PERFORM outbox._wake_at_commit();
        RETURN event_id;
    END IF;
    WITH d AS (DELETE FROM outbox.dead_letter WHERE id = event_id RETURNING *),
         i AS (INSERT INTO outbox.pending (id, channel, key, type, payload, created_at)
               SELECT id, channel, key, type, payload, created_at FROM d RETURNING id)
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i) INTO moved, stored;
    IF moved = 0 THEN
        RAISE EXCEPTION 'event % is neither a dead letter nor being retried', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'outbox.dead_letters lists the events that failed, outbox.failures those being retried.';
    END IF;
    IF stored <> moved THEN
        RAISE EXCEPTION 'event % could not be put back into outbox.pending', event_id
            USING ERRCODE = 'triggered_action_exception',
                  DETAIL = 'A trigger, rule or policy on outbox.pending skipped the row.',
                  HINT = 'Drop what was added to outbox.pending.';
    END IF;
    PERFORM outbox._wake_at_commit();
    RETURN event_id;
END $$;
COMMENT ON FUNCTION outbox.retry(bigint) IS
    'put a dead letter back into the outbox, or try an event being retried at once with a fresh count';

CREATE FUNCTION outbox.discard(event_id bigint, reason text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE moved bigint; stored bigint; source text;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    source := 'dead letter';
    WITH d AS (DELETE FROM outbox.dead_letter WHERE id = event_id RETURNING *),
         i AS (INSERT INTO outbox.discarded (id, channel, key, type, payload_bytes, created_at, discarded_at,
                                             discarded_by, was, reason, error, sqlstate)
               SELECT id, channel, key, type, pg_column_size(payload), created_at, clock_timestamp(),
                      session_user, 'dead letter', reason, error, sqlstate FROM d RETURNING id)
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i) INTO moved, stored;
    IF moved = 0 THEN
        source := 'pending';
        WITH d AS (DELETE FROM outbox.pending WHERE id = event_id RETURNING *),
             i AS (INSERT INTO outbox.discarded (id, channel, key, type, payload_bytes, created_at, discarded_at,
                                                 discarded_by, was, reason, error, sqlstate)
                   SELECT d.id, d.channel, d.key, d.type, pg_column_size(d.payload), d.created_at, clock_timestamp(),
                          session_user, 'pending', reason, f.error, f.sqlstate
                     FROM d LEFT JOIN outbox.failures f ON f.id = d.id RETURNING id)
        SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i) INTO moved, stored;
    END IF;
    IF moved = 0 THEN
        RAISE EXCEPTION 'event % is neither pending nor a dead letter', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'outbox.event(id) tells whether it was published; outbox.discarded lists what was discarded.';
    END IF;
    IF stored <> moved THEN
        RAISE EXCEPTION 'event % could not be recorded in outbox.discarded', event_id
            USING ERRCODE = 'triggered_action_exception',
                  DETAIL = 'A trigger, rule or policy on outbox.discarded skipped the row; nothing was discarded.',
                  HINT = 'Drop what was added to outbox.discarded.';
    END IF;
    DELETE FROM outbox.failures WHERE id = event_id;
    RAISE LOG 'pg_outbox: event % (%) discarded by %: %', event_id, source, session_user, coalesce(reason, 'no reason given');
    RETURN format('discarded event %s (%s); recorded in outbox.discarded', event_id, source);
END $$;
COMMENT ON FUNCTION outbox.discard(bigint, text) IS
    'remove a pending or dead-letter event without publishing it; recorded in outbox.discarded';

CREATE OR REPLACE VIEW outbox.status AS
    SELECT current_database() AS database,
           w.pid,
           CASE WHEN w.pid IS NOT NULL AND s.paused AND w.state IN ('idle', 'paused') THEN 'paused'
                ELSE w.state END AS state,
           (SELECT count(*) FROM outbox.pending) AS pending,
           now() - (SELECT p.created_at FROM outbox.pending p ORDER BY p.id LIMIT 1) AS oldest_pending_age,
           s.last_pos AS published_total,
           s.last_pos,
           round(w.events_per_sec::numeric, 1) AS events_per_sec,
           round(outbox.notify_queue_usage()::numeric, 4) AS queue_usage,
           (SELECT count(*) FROM outbox.dead_letter) AS dead_letters,
           w.last_error,
           w.last_error_at,
           s.paused,
           s.purged_pos,
           w.started_at,
           w.last_batch_at,
           (SELECT count(*) FROM outbox.failures) AS retrying,
           f.id AS stuck_event,
           f.sqlstate || ': ' || f.error || format(' (attempt %s of %s, next at %s)', f.attempts,
               coalesce(current_setting('pg_outbox.max_attempts', true), '?'), f.next_attempt_at) AS stuck_error,
           f.first_failed_at AS stuck_since
      FROM outbox.state s CROSS JOIN outbox._worker_status() w
      LEFT JOIN LATERAL (SELECT * FROM outbox.failures ORDER BY id LIMIT 1) f ON true;
REVOKE ALL ON outbox.failures, outbox.discarded FROM PUBLIC;
GRANT SELECT ON outbox.failures, outbox.discarded TO outbox_admin;
REVOKE ALL ON FUNCTION outbox.discard(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.discard(bigint, text) TO outbox_admin;
