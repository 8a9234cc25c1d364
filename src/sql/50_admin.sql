
-- ---------------------------------------------------------------------------------------
-- Administration: dead letters, retention, status, pause and resume
-- ---------------------------------------------------------------------------------------

-- Events that could not be published (an error that belongs to the event alone, e.g. a
-- constraint or trigger added to the history). They never block the events behind them.
CREATE TABLE outbox.dead_letter (
    id          bigint PRIMARY KEY,
    channel     text NOT NULL,
    key         text,
    type        text,
    payload     jsonb,
    created_at  timestamptz NOT NULL,
    failed_at   timestamptz NOT NULL,
    error       text NOT NULL,
    sqlstate    text NOT NULL
);
COMMENT ON TABLE outbox.dead_letter IS 'events that could not be published, with their error';
SELECT pg_catalog.pg_extension_config_dump('outbox.dead_letter', '');

CREATE VIEW outbox.dead_letters AS
    SELECT id, channel, key, type, payload, created_at, failed_at, error, sqlstate
      FROM outbox.dead_letter ORDER BY id;
COMMENT ON VIEW outbox.dead_letters IS 'events that could not be published; outbox.retry(id) puts one back';

CREATE FUNCTION outbox._wake_at_commit() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_wake_at_commit';

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

-- outbox.retry(event_id): 65_log_switch.sql (it also puts a dead letter back in log mode)

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


CREATE FUNCTION outbox.purge(older_than interval) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'outbox_purge';
COMMENT ON FUNCTION outbox.purge(interval) IS
    'remove published events older than older_than, by whole history segments (TRUNCATE); returns how many';

CREATE FUNCTION outbox.pause() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE was boolean;
BEGIN
    PERFORM outbox._check_writable('outbox.pause()');
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = true;
    PERFORM outbox._wake_at_commit();
    RETURN CASE WHEN was THEN 'already paused' ELSE 'paused' END
        || format(': database %I publishes nothing until outbox.resume(); producers keep writing', current_database());
END $$;
COMMENT ON FUNCTION outbox.pause() IS 'stop publishing in this database (persistent; producers keep writing)';

-- outbox.resume(): 98_observe_log.sql (it reports what is pending in either storage)

CREATE FUNCTION outbox._worker_status(
    OUT pid integer, OUT state text, OUT events_per_sec double precision, OUT last_error text,
    OUT last_error_at timestamptz, OUT started_at timestamptz, OUT last_batch_at timestamptz,
    OUT worker_published bigint)
    RETURNS record LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_worker_status';

-- outbox.status (the view): 98_observe_log.sql (it reads the pending figures of both storages)

-- The processes whose notifications are pg_outbox envelopes: NOTIFY needs no privilege, so a
-- consumer accepts an envelope only when the notification's be_pid is in this list.
CREATE FUNCTION outbox.worker_pids() RETURNS integer[]
    LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'outbox_worker_pids';
COMMENT ON FUNCTION outbox.worker_pids() IS
    'PIDs of this database''s running drain worker(s): trust a NOTIFY envelope only if its be_pid is one of them';
