
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
-- [log mode] (issue #15, 68_log_failures.sql) xid and seg name the row of the log that failed (the
-- passes leave it out); copied: it is due and was copied into the current segment with the pass's
-- xid (xid and seg name the copy, which a later window tries). NULL and false in 1.2 mode.
CREATE TABLE outbox.failures (
    id              bigint PRIMARY KEY,
    attempts        integer NOT NULL,
    first_failed_at timestamptz NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    error           text NOT NULL,
    sqlstate        text NOT NULL,
    xid             xid8,
    seg             integer,
    copied          boolean NOT NULL DEFAULT false
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

-- outbox.discard(event_id, reason): 68_log_failures.sql (it also withholds an event of the log)


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
