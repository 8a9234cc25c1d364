
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

CREATE FUNCTION outbox.retry(event_id bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH d AS (DELETE FROM outbox.dead_letter WHERE id = event_id RETURNING *)
    INSERT INTO outbox.pending (id, channel, key, type, payload, created_at)
        SELECT id, channel, key, type, payload, created_at FROM d;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % is not a dead letter', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT id, error FROM outbox.dead_letters lists the events that failed.';
    END IF;
    PERFORM outbox._wake_at_commit();
    RETURN event_id;
END $$;
COMMENT ON FUNCTION outbox.retry(bigint) IS 'put a dead letter back into the outbox, to be published again';

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

CREATE FUNCTION outbox.resume() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE was boolean; n bigint;
BEGIN
    PERFORM outbox._check_writable('outbox.resume()');
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = false;
    PERFORM outbox._wake_at_commit();
    n := (SELECT count(*) FROM outbox.pending);
    RETURN CASE WHEN was THEN 'resumed' ELSE 'not paused' END  -- [consumers] 1 event, 2 events
        || format(': database %I publishes again; %s pending', current_database(),
                  CASE WHEN n = 1 THEN '1 event' ELSE n || ' events' END);
END $$;
COMMENT ON FUNCTION outbox.resume() IS 'publish again after outbox.pause()';

CREATE FUNCTION outbox._worker_status(
    OUT pid integer, OUT state text, OUT events_per_sec double precision, OUT last_error text,
    OUT last_error_at timestamptz, OUT started_at timestamptz, OUT last_batch_at timestamptz,
    OUT worker_published bigint)
    RETURNS record LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_worker_status';

CREATE VIEW outbox.status AS
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
           -- [consumers] named consumers (outbox.consumers has the details)
           (SELECT count(*) FROM outbox.consumer c WHERE c.state = 'active') AS consumers,
           (SELECT count(*) FROM outbox.consumer c WHERE c.state = 'lost') AS lost_consumers
      FROM outbox.state s, outbox._worker_status() w;
COMMENT ON VIEW outbox.status IS 'the drain worker of this database: state, backlog, throughput, errors';
