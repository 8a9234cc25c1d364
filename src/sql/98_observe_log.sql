
-- ---------------------------------------------------------------------------------------
-- What is pending, published and unacknowledged, in both storages (issue #15): outbox.status,
-- outbox.channel_stats, outbox.consumers and outbox.health() (96_observe.sql) read these helpers.
-- (The upgrade from 1.2 runs this file too: CREATE OR REPLACE keeps the views' grants.)
-- ---------------------------------------------------------------------------------------
-- Pending in 1.2 mode: the rows of outbox.pending. Pending in log mode: the log's rows that no
-- committed batch has published (outbox._log_pending(): the rest of a cut window, then what the
-- latest batch's hi does not see; an index range on each segment's (xid, id) btree, never the
-- published rows), plus the events being retried (outbox.failures: the failure path leaves an
-- event out of its batch, its `skipped`, until its retry copy is in a window), each counted once.
-- Rows of transactions in progress are not visible, as in 1.2. Internal, granted to nobody.
CREATE FUNCTION outbox._pending_rows() RETURNS TABLE (id bigint, channel text, created_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT outbox._log_active() THEN
        RETURN QUERY SELECT p.id, p.channel, p.created_at FROM outbox.pending p;
        RETURN;
    END IF;
    -- withheld rows (outbox.withheld: discarded, dead-lettered, or the failed row of a retry copy)
    -- are in no batch but will never be published: not pending. An event being retried is found
    -- by the row its failures row names, (xid, id): the segments' btree (by id alone, the BRIN
    -- index, which nothing summarizes, reads every row of the log for each one; sw-red)
    RETURN QUERY
        WITH w AS MATERIALIZED (SELECT l.id, l.channel, l.created_at FROM outbox._log_pending() l
                                 WHERE NOT EXISTS (SELECT FROM outbox.withheld h WHERE h.id = l.id AND h.xid = l.xid))
        SELECT w.id, w.channel, w.created_at FROM w
        UNION ALL
        SELECT f.id, e.channel, e.created_at FROM outbox.failures f
          LEFT JOIN LATERAL (SELECT l.channel, l.created_at FROM outbox.log l WHERE l.xid = f.xid AND l.id = f.id
                             UNION ALL -- a row without xid (1.2's, or made by hand): by id
                             SELECT l.channel, l.created_at FROM outbox.log l WHERE f.xid IS NULL AND l.id = f.id
                             LIMIT 1) e ON true
         WHERE NOT EXISTS (SELECT FROM w WHERE w.id = f.id);
END $$;
COMMENT ON FUNCTION outbox._pending_rows() IS
    'internal: the events written and not yet published (outbox.pending, or the log''s and those being retried)';

-- outbox.status's and health()'s figures: how many are pending, and the oldest one's created_at.
CREATE FUNCTION outbox._pending_summary(OUT pending bigint, OUT oldest timestamptz)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT count(*), min(p.created_at) FROM outbox._pending_rows() p $$;
COMMENT ON FUNCTION outbox._pending_summary() IS 'internal: events pending, and when the oldest was written';

-- outbox.channel_stats's: per channel the caller may read (channel rights: the caller's, through
-- this SECURITY DEFINER frame, 95_channels.sql).
CREATE FUNCTION outbox._pending_channels() RETURNS TABLE (channel text, pending bigint, oldest timestamptz)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.channel, count(*), min(p.created_at) FROM outbox._pending_rows() p
     WHERE p.channel IS NOT NULL AND outbox._may_read(p.channel) GROUP BY p.channel
$$;
COMMENT ON FUNCTION outbox._pending_channels() IS 'internal: events pending per channel the caller may read';

-- Per channel, what the log published (nothing in 1.2 mode): its last seq (outbox.log_channels and
-- the batches after channels_flushed_pos, as outbox._log_last_seq()), the events of the batches
-- of the last 60 s (exact: the batches are read back from the newest while they are that young),
-- and when its newest kept batch was published (the one whose end is its log_channels.last_pos,
-- or the newest after channels_flushed_pos; NULL once a rotation has removed it). The log pass
-- keeps no per-channel counters: seqs are gap-free, so the events a channel got in the log are its
-- log last seq less its 1.2 last seq (outbox.channels, frozen since the switch).
CREATE FUNCTION outbox._log_channel_figures()
    RETURNS TABLE (channel text, last_seq bigint, last_minute bigint, last_published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE flushed bigint; young bigint;
BEGIN
    IF NOT outbox._log_active() THEN
        RETURN;
    END IF;
    LOCK TABLE outbox.batches IN ACCESS SHARE MODE;
    flushed := (SELECT s.channels_flushed_pos FROM outbox.log_state s);
    -- the newest batch older than a minute (published_at grows with first_pos: batches are
    -- inserted under the batch lock with the clock's time)
    young := coalesce((SELECT b.first_pos FROM outbox.batches b WHERE b.published_at <= clock_timestamp() - interval '1 minute'
                        ORDER BY b.first_pos DESC LIMIT 1), 0);
    RETURN QUERY
        WITH recent AS (
            SELECT u.ch, max(b.first_seqs[u.i] + b.counts[u.i] - 1) AS last_seq, max(b.published_at) AS at
              FROM outbox.batches b, unnest(b.channels) WITH ORDINALITY AS u(ch, i)
             WHERE b.first_pos > flushed GROUP BY u.ch),
        minute AS (
            SELECT u.ch, sum(b.counts[u.i])::bigint AS n
              FROM outbox.batches b, unnest(b.channels) WITH ORDINALITY AS u(ch, i)
             WHERE b.first_pos > young AND b.published_at > clock_timestamp() - interval '1 minute' GROUP BY u.ch)
        SELECT k.ch, greatest(lc.last_seq, r.last_seq), coalesce(m.n, 0),
               coalesce(r.at, (SELECT b.published_at FROM outbox.batches b
                                WHERE b.first_pos <= lc.last_pos AND b.first_pos + b.n - 1 >= lc.last_pos
                                ORDER BY b.first_pos DESC LIMIT 1))
          FROM (SELECT c.channel AS ch FROM outbox.log_channels c UNION SELECT recent.ch FROM recent) k
          LEFT JOIN outbox.log_channels lc ON lc.channel = k.ch
          LEFT JOIN recent r ON r.ch = k.ch
          LEFT JOIN minute m ON m.ch = k.ch
         WHERE outbox._may_read(k.ch);
END $$;
COMMENT ON FUNCTION outbox._log_channel_figures() IS
    'internal: per channel the caller may read, the log''s last seq, events of the last minute and newest batch time';

-- A named consumer's lag: the events of its channels after acked_pos and when the oldest of them
-- was published (NULL: caught up). The frozen history for positions up to base_pos (in 1.2 mode
-- all of it), the batches above: found from the batch that holds acked_pos + 1 (first_pos keys),
-- counted per batch from its channels' counts (for a filtered consumer the batch that holds
-- acked_pos + 1 counts whole: an estimate by at most one batch).
CREATE FUNCTION outbox._consumer_lag(acked bigint, chans text[], OUT events bigint, OUT oldest timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE active boolean := outbox._log_active(); base bigint; n bigint; log_oldest timestamptz;
BEGIN
    base := CASE WHEN active THEN (SELECT s.base_pos FROM outbox.log_state s) END;
    IF chans IS NULL THEN
        events := greatest(outbox.head() - acked, 0);
    ELSE
        events := (SELECT count(*) FROM outbox.history_frozen h
                    WHERE h.pos > acked AND (base IS NULL OR h.pos <= base) AND h.channel = ANY (chans));
    END IF;
    IF base IS NULL OR acked < base THEN
        oldest := (SELECT h.published_at FROM outbox.history_frozen h
                    WHERE h.pos > acked AND (base IS NULL OR h.pos <= base) AND (chans IS NULL OR h.channel = ANY (chans))
                    ORDER BY h.pos LIMIT 1);
    END IF;
    IF NOT active THEN
        RETURN;
    END IF;
    LOCK TABLE outbox.batches IN ACCESS SHARE MODE;
    SELECT sum((SELECT sum(b.counts[u.i]) FROM unnest(b.channels) WITH ORDINALITY AS u(ch, i) WHERE u.ch = ANY (chans))),
           min(b.published_at)
      INTO n, log_oldest
      FROM (SELECT x.* FROM outbox.batches x
             WHERE x.first_pos >= coalesce((SELECT max(y.first_pos) FROM outbox.batches y
                                             WHERE y.first_pos <= acked + 1 AND y.n > 0), 0)
               AND x.n > 0 AND x.first_pos + x.n - 1 > acked AND (chans IS NULL OR x.channels && chans)) b;
    oldest := coalesce(oldest, log_oldest);
    IF chans IS NOT NULL THEN
        events := events + coalesce(n, 0);
    END IF;
END $$;
COMMENT ON FUNCTION outbox._consumer_lag(bigint, text[]) IS
    'internal: events of a named consumer''s channels after its acknowledged position, and the oldest one''s publication time';

CREATE OR REPLACE VIEW outbox.status AS
    SELECT current_database() AS database,
           w.pid,
           CASE WHEN w.pid IS NOT NULL AND s.paused AND w.state IN ('idle', 'paused') THEN 'paused'
                ELSE w.state END AS state,
           p.pending,
           now() - p.oldest AS oldest_pending_age,
           -- log mode: the log's head (nothing updates outbox.state.last_pos there)
           outbox.head() AS published_total,
           outbox.head() AS last_pos,
           round(w.events_per_sec::numeric, 1) AS events_per_sec,
           round(outbox.notify_queue_usage()::numeric, 4) AS queue_usage,
           (SELECT count(*) FROM outbox.dead_letter) AS dead_letters,
           w.last_error,
           w.last_error_at,
           s.paused,
           greatest(s.purged_pos, (SELECT l.purged_pos FROM outbox.log_state l WHERE l.active)) AS purged_pos,
           w.started_at,
           w.last_batch_at,
           -- [consumers] named consumers (outbox.consumers has the details)
           (SELECT count(*) FROM outbox.consumer c WHERE c.state = 'active') AS consumers,
           (SELECT count(*) FROM outbox.consumer c WHERE c.state = 'lost') AS lost_consumers,
           -- [rob-events] events that fail alone and are retried (outbox.failures has them all)
           (SELECT count(*) FROM outbox.failures) AS retrying,
           f.id AS stuck_event,
           f.sqlstate || ': ' || f.error || format(' (attempt %s of %s, next at %s)', f.attempts,
               coalesce(current_setting('pg_outbox.max_attempts', true), '?'), f.next_attempt_at) AS stuck_error,
           f.first_failed_at AS stuck_since
      FROM outbox.state s CROSS JOIN outbox._worker_status() w CROSS JOIN outbox._pending_summary() p
      -- the columns of 1.2 by name: the view an upgrade keeps is the same as a fresh one
      LEFT JOIN LATERAL (SELECT id, attempts, first_failed_at, last_failed_at, next_attempt_at, error, sqlstate
                           FROM outbox.failures ORDER BY id LIMIT 1) f ON true;
COMMENT ON VIEW outbox.status IS 'the drain worker of this database: state, backlog, throughput, errors';

-- Per channel, cheap to read: the channels' own rows (1.2's drain keeps its figures there, in the
-- statement that bumps last_seq), what the log published (outbox._log_channel_figures(), log
-- mode), what is pending and the dead letters. A role sees the channels it may read (channel
-- rights, 95_channels.sql): every channel while no read right exists, and always for superusers
-- and members of outbox_admin or outbox_reader. published_last_minute: 1.2's estimate over the
-- last 60 s from its two buckets (the previous minute weighted by the part of it still inside the
-- window), plus the log's exact count.
CREATE OR REPLACE VIEW outbox.channel_stats WITH (security_barrier) AS
    SELECT k.channel,
           coalesce(c.published, 0) + greatest(coalesce(l.last_seq, 0) - coalesce(c.last_seq, 0), 0) AS published,
           coalesce(l.last_minute, 0) + coalesce(CASE
               WHEN c.minute_start = date_bin('1 minute', now(), '2000-01-01 00:00+00'::timestamptz)
                   THEN c.minute_count + round(c.prev_minute_count
                                               * (1 - extract(epoch FROM now() - c.minute_start) / 60))
               WHEN c.minute_start = date_bin('1 minute', now(), '2000-01-01 00:00+00'::timestamptz) - interval '1 minute'
                   THEN round(c.minute_count * (1 - extract(epoch FROM now() - c.minute_start - interval '1 minute') / 60))
               ELSE 0 END, 0)::bigint AS published_last_minute,
           coalesce(p.pending, 0) AS pending,
           now() - p.oldest AS oldest_pending_age,
           greatest(c.last_seq, l.last_seq, 0) AS last_seq,
           greatest(c.last_published_at, l.last_published_at) AS last_published_at,
           coalesce(d.dead_letters, 0) AS dead_letters,
           coalesce((SELECT t.target FROM outbox.channel_targets t WHERE t.channel = k.channel),
                    (SELECT t.target FROM outbox.channel_targets t WHERE t.channel = '*'), 'notify') AS target
      -- each source read once, aggregated before the joins; the rights test runs on the result rows
      FROM outbox.channels c
      FULL JOIN outbox._log_channel_figures() l USING (channel)
      FULL JOIN outbox._pending_channels() p USING (channel)
      FULL JOIN (SELECT dl.channel, count(*) AS dead_letters
                   FROM outbox.dead_letter dl GROUP BY dl.channel) d USING (channel) AS k
     WHERE outbox._may_read(k.channel);
COMMENT ON VIEW outbox.channel_stats IS
    'per channel: events published (total, last minute), pending, oldest pending age, last seq, dead letters, target';

CREATE OR REPLACE VIEW outbox.consumers AS
    SELECT c.name,
           c.channels,
           c.owner,
           c.state,
           c.acked_pos,
           g.events AS lag_events,
           coalesce(extract(epoch FROM now() - g.oldest), 0)::double precision AS lag_seconds,
           c.last_ack_at,
           c.created_at,
           c.lost_at,
           c.lost_reason
      FROM outbox.consumer c, LATERAL outbox._consumer_lag(c.acked_pos, c.channels) g;
COMMENT ON VIEW outbox.consumers IS
    'named consumers: acknowledged position, lag in events and seconds (age of the oldest unacknowledged event), state';

CREATE OR REPLACE FUNCTION outbox.resume() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE was boolean; n bigint;
BEGIN
    PERFORM outbox._check_writable('outbox.resume()');
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = false;
    PERFORM outbox._wake_at_commit();
    n := (SELECT p.pending FROM outbox._pending_summary() p);
    RETURN CASE WHEN was THEN 'resumed' ELSE 'not paused' END  -- [consumers] 1 event, 2 events
        || format(': database %I publishes again; %s pending', current_database(),
                  CASE WHEN n = 1 THEN '1 event' ELSE n || ' events' END);
END $$;
COMMENT ON FUNCTION outbox.resume() IS 'publish again after outbox.pause()';

-- outbox.purge() in log mode (history.cpp calls it after purging the frozen history): the log's
-- segments whose batches are all older than older_than, by rotation (outbox._log_rotate(), as the
-- worker's, with its rules: every row published, the segment of the latest batch kept, named
-- consumers held up to pg_outbox.consumer_max_retention). It waits for a running pass (the batch
-- lock, under purge()'s 5 s lock timeout), never for a reader of a segment: the rotation stops
-- there and the NOTICE says why. Returns the positions removed.
CREATE FUNCTION outbox._log_purge(older_than interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET lock_timeout = '5s' AS $$
DECLARE before bigint; r text;
BEGIN
    LOCK TABLE outbox.batches IN SHARE ROW EXCLUSIVE MODE;
    before := (SELECT s.purged_pos FROM outbox.log_state s);
    FOR i IN 1 .. outbox._log_segments() LOOP
        r := outbox._log_rotate(older_than);
        EXIT WHEN r <> 'rotated';
    END LOOP;
    IF r <> 'rotated' THEN
        RAISE NOTICE 'pg_outbox: the log was purged as far as it can be now (%)', r;
    END IF;
    RETURN (SELECT s.purged_pos FROM outbox.log_state s) - before;
END $$;
COMMENT ON FUNCTION outbox._log_purge(interval) IS
    'internal (issue #15): outbox.purge() of the log: rotate out the segments older than older_than';

REVOKE ALL ON FUNCTION outbox._pending_rows(), outbox._pending_summary(), outbox._pending_channels(),
                       outbox._log_channel_figures(), outbox._consumer_lag(bigint, text[]), outbox._log_purge(interval),
                       outbox.resume()
    FROM PUBLIC;
-- the views' functions are checked against the view's user: granted to the roles that read them;
-- each returns only what its view shows (the per-channel ones filter by channel rights)
GRANT EXECUTE ON FUNCTION outbox._pending_summary(), outbox.head() TO outbox_reader;
GRANT EXECUTE ON FUNCTION outbox._pending_channels(), outbox._log_channel_figures()
    TO outbox_reader, outbox_consumer, outbox_admin;
GRANT EXECUTE ON FUNCTION outbox._consumer_lag(bigint, text[]) TO outbox_reader;
GRANT EXECUTE ON FUNCTION outbox.resume() TO outbox_admin;
-- (admin: as 90_privileges.sql grants every table; in the order an upgraded database has them)
GRANT SELECT ON outbox.status TO outbox_reader, outbox_admin;
GRANT SELECT ON outbox.consumers TO outbox_admin, outbox_reader;
REVOKE ALL ON outbox.channel_stats FROM PUBLIC;
GRANT SELECT ON outbox.channel_stats TO outbox_reader, outbox_consumer, outbox_admin;
