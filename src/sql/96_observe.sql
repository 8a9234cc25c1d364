
-- ---------------------------------------------------------------------------------------
-- Observability (issue #19): per-channel figures, outbox.channel_stats, outbox.health()
-- ---------------------------------------------------------------------------------------
-- Also the upgrade 1.2 -> 1.3 (src/sql/upgrade/40_observe.sql links to this file): one definition
-- of each object for both scripts.
-- The drain keeps each channel's figures in the statement that bumps its last_seq (the same
-- row, the same transaction: an aborted batch counts nothing): events published, when last,
-- and a one-minute rate as two buckets, the current minute (minute_start, minute_count) and the
-- one before (prev_minute_count). Reading them never scans the history.
ALTER TABLE outbox.channels
    ADD COLUMN published bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_published_at timestamptz,
    ADD COLUMN minute_start timestamptz,
    ADD COLUMN minute_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN prev_minute_count bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN outbox.channels.published IS 'events published on the channel';
COMMENT ON COLUMN outbox.channels.minute_start IS 'start of the minute minute_count counts (UTC minutes)';
-- every event of a channel got one seq: what was published before the upgrade (no row at install)
UPDATE outbox.channels SET published = last_seq;

-- The rights test of the rows below loads the rules on first use, which PostgreSQL forbids while a
-- parallel query runs ("cannot update SecondarySnapshot during a parallel operation", also in the
-- leader): PARALLEL UNSAFE keeps every query that calls it (this view, replay()) serial.
ALTER FUNCTION outbox._may_read(text) PARALLEL UNSAFE;

-- outbox.channel_stats (the view): 98_observe_log.sql (both storages)

-- ---------------------------------------------------------------------------------------
-- outbox.health(): one row per check, for a person in psql or a monitoring system
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION outbox._health_threshold(name text, OUT warning double precision, OUT critical double precision)
    RETURNS record LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'outbox_health_threshold';
COMMENT ON FUNCTION outbox._health_threshold(text) IS
    'internal: the parsed pair of pg_outbox.health_<name> (seconds, bytes)';
CREATE FUNCTION outbox._waiting_databases(OUT database oid, OUT since timestamptz)
    RETURNS SETOF record LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_waiting_databases';
COMMENT ON FUNCTION outbox._waiting_databases() IS
    'internal: databases of the cluster that wait for a drain worker (no background worker process free)';

CREATE FUNCTION outbox._health_level(value double precision, name text, OUT status text, OUT threshold double precision)
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN value >= t.critical THEN 'critical' WHEN value >= t.warning THEN 'warning' ELSE 'ok' END,
           CASE WHEN value >= t.critical THEN t.critical ELSE t.warning END
      FROM outbox._health_threshold(name) t
$$;
COMMENT ON FUNCTION outbox._health_level(double precision, text) IS
    'internal: ok, warning (at or above the first value of pg_outbox.health_<name>) or critical (the second)';

CREATE FUNCTION outbox.health()
    RETURNS TABLE ("check" text, status text, value double precision, threshold double precision, hint text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w record;
    paused boolean;
    n double precision;
    age double precision;
    lv record;
    c record;
    s record;
BEGIN
    -- 1. the drain worker of this database
    SELECT * INTO w FROM outbox._worker_status();
    SELECT st.paused INTO paused FROM outbox.state st;
    "check" := 'worker';
    value := CASE WHEN w.pid IS NOT NULL THEN 1 ELSE 0 END;
    threshold := NULL;
    IF w.state = 'standby' THEN
        status := 'ok';
        hint := 'hot standby: the worker starts when the server is promoted';
    ELSIF paused THEN
        status := 'warning';
        hint := 'publishing is paused: SELECT outbox.resume()';
    ELSIF w.state IN ('idle', 'draining', 'starting') AND w.last_error IS NOT NULL THEN
        -- its passes fail and are retried: nothing is published (a log restored from a cluster
        -- ahead of this one, a DBA's trigger on the batches, ...); cleared by the next pass that works
        status := 'critical';
        hint := 'the drain worker''s passes fail, nothing is published: ' || w.last_error;
    ELSIF w.state IN ('idle', 'draining', 'starting') THEN
        status := 'ok';
        hint := 'the drain worker is ' || w.state;
    ELSIF w.state = 'backpressure' THEN
        status := 'warning';
        hint := 'the worker waits: the NOTIFY queue is above pg_outbox.max_queue_usage (a listener is not reading)';
    ELSIF w.state = 'waiting' THEN
        status := 'critical';
        hint := 'no background worker process is free for this database: raise max_worker_processes (restart)';
    ELSIF w.state = 'needs_update' THEN
        status := 'critical';
        hint := 'the SQL objects are older than the library: ALTER EXTENSION pg_outbox UPDATE';
    ELSE
        status := 'critical';
        hint := 'no drain worker runs (' || coalesce(w.state, 'stopped') || '): check pg_outbox.databases and the server log'
                || coalesce('; last error: ' || w.last_error, '');
    END IF;
    RETURN NEXT;

    -- 2. publishing lag: events pending, and the age of the oldest
    SELECT ps.pending::double precision, extract(epoch FROM now() - ps.oldest)::double precision
      INTO n, age FROM outbox._pending_summary() ps; -- both storages (98_observe_log.sql)
    "check" := 'pending_events';
    value := n;
    SELECT * INTO lv FROM outbox._health_level(value, 'pending');
    status := lv.status;
    threshold := lv.threshold;
    hint := CASE lv.status WHEN 'ok' THEN 'events written and not yet published'
                 ELSE 'the drain is behind: see outbox.status (paused? errors?) and outbox.channel_stats' END;
    RETURN NEXT;
    "check" := 'pending_age';
    value := coalesce(age, 0);
    SELECT * INTO lv FROM outbox._health_level(value, 'pending_age');
    status := lv.status;
    threshold := lv.threshold;
    hint := CASE lv.status WHEN 'ok' THEN 'seconds since the oldest pending event was written'
                 ELSE 'the oldest pending event waits: see outbox.status (paused? stuck_event?)' END;
    RETURN NEXT;

    -- 3. the NOTIFY queue (cluster-wide)
    "check" := 'notify_queue';
    value := outbox.notify_queue_usage();
    SELECT * INTO lv FROM outbox._health_level(value, 'queue_usage');
    status := lv.status;
    threshold := lv.threshold;
    hint := CASE lv.status WHEN 'ok' THEN 'fraction of the NOTIFY queue in use'
                 ELSE 'a listening session does not read its notifications (pg_stat_activity: LISTEN in an idle transaction?); the drain waits at pg_outbox.max_queue_usage' END;
    RETURN NEXT;

    -- 4. dead letters of the recent past
    "check" := 'dead_letters';
    value := (SELECT count(*) FROM outbox.dead_letter d
               WHERE d.failed_at >= now() - make_interval(secs => (outbox._health_threshold('dead_letter_window')).warning));
    SELECT * INTO lv FROM outbox._health_level(value, 'dead_letters');
    status := lv.status;
    threshold := lv.threshold;
    hint := CASE lv.status WHEN 'ok' THEN 'events dead-lettered within pg_outbox.health_dead_letter_window'
                 ELSE 'events could not be published: SELECT * FROM outbox.dead_letters; outbox.retry(id) puts one back' END;
    RETURN NEXT;

    -- 5. named consumers: the oldest unacknowledged event of any active one, and lost ones
    SELECT cn.name, extract(epoch FROM now() - (SELECT g.oldest FROM outbox._consumer_lag(cn.acked_pos, cn.channels) g))::double precision AS lag
      INTO c FROM outbox.consumer cn WHERE cn.state = 'active'
     ORDER BY 2 DESC NULLS LAST, 1 LIMIT 1;
    "check" := 'consumer_lag';
    value := coalesce(c.lag, 0);
    SELECT * INTO lv FROM outbox._health_level(value, 'consumer_lag');
    status := lv.status;
    threshold := lv.threshold;
    hint := CASE WHEN lv.status = 'ok' THEN 'seconds since the oldest event a named consumer has not acknowledged was published'
                 ELSE format('consumer %s is behind: it calls outbox.next() and outbox.ack() too rarely, or not at all; '
                             'retention keeps its events up to pg_outbox.consumer_max_retention', c.name) END;
    RETURN NEXT;
    "check" := 'lost_consumers';
    SELECT count(*)::double precision, min(cn.name) INTO value, hint FROM outbox.consumer cn WHERE cn.state = 'lost';
    status := CASE WHEN value > 0 THEN 'critical' ELSE 'ok' END;
    threshold := 1;
    hint := CASE WHEN value > 0 THEN format('consumer %s (and %s more) lost events to retention: outbox.consumers has the reason; drop and create it again',
                                            hint, value - 1)
                 ELSE 'named consumers marked lost (pg_outbox.consumer_max_retention passed)' END;
    RETURN NEXT;

    -- 6. logical replication slots of this database (the 'wal' target's consumers): WAL kept for them
    SELECT sl.slot_name, sl.wal_status,
           pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
                           sl.restart_lsn)::double precision AS retained
      INTO s FROM pg_replication_slots sl
     WHERE sl.slot_type = 'logical' AND sl.database = current_database()
     ORDER BY sl.wal_status = 'lost' DESC, 3 DESC NULLS LAST, 1 LIMIT 1;
    "check" := 'wal_retained';
    value := coalesce(s.retained, 0);
    SELECT * INTO lv FROM outbox._health_level(value, 'wal_retained');
    status := CASE WHEN s.wal_status IN ('lost', 'unreserved') THEN 'critical' ELSE lv.status END;
    threshold := lv.threshold;
    hint := CASE WHEN s.slot_name IS NULL THEN 'no logical replication slot in this database'
                 WHEN s.wal_status IN ('lost', 'unreserved') THEN
                     format('slot %s is %s: WAL it needs is (about to be) removed (max_slot_wal_keep_size)', s.slot_name, s.wal_status)
                 WHEN lv.status = 'ok' THEN format('bytes of WAL kept for the slot that retains most (%s)', s.slot_name)
                 ELSE format('slot %s retains WAL: its consumer (Debezium, a logical replication client) is behind or gone; '
                             'pg_drop_replication_slot() if it is gone for good', s.slot_name) END;
    RETURN NEXT;

    -- 7. databases of the cluster without a drain worker for want of max_worker_processes
    "check" := 'worker_processes';
    SELECT count(*)::double precision, string_agg(coalesce(quote_ident(db.datname), wd.database::text), ', ' ORDER BY wd.since)
      INTO value, hint
      FROM outbox._waiting_databases() wd LEFT JOIN pg_database db ON db.oid = wd.database;
    status := CASE WHEN value > 0 THEN 'critical' ELSE 'ok' END;
    threshold := 1;
    hint := CASE WHEN value > 0 THEN 'databases wait for a drain worker (' || hint
                                     || '): raise max_worker_processes (restart); they are served in turn meanwhile'
                 ELSE 'databases of the cluster waiting for a background worker process' END;
    RETURN NEXT;
END $$;
COMMENT ON FUNCTION outbox.health() IS
    'one row per check (worker, pending, NOTIFY queue, dead letters, consumers, WAL slots, worker processes): ok, warning or critical';

REVOKE ALL ON FUNCTION outbox._health_threshold(text), outbox._waiting_databases(),
                       outbox._health_level(double precision, text), outbox.health() FROM PUBLIC;
-- channel_stats (98_observe_log.sql) filters by channel rights: tenants (outbox_consumer) see their channels
GRANT EXECUTE ON FUNCTION outbox._may_read(text) TO outbox_reader, outbox_consumer, outbox_admin;
-- health() names consumers and slots of every tenant: for monitoring (outbox_reader) and admins
GRANT EXECUTE ON FUNCTION outbox.health() TO outbox_reader;
