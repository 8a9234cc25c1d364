
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #15 (the storage), part 1: rotation and retention of the log (doc/storage.md,
-- "Rotation and retention"). Not called by the worker yet.
--
-- outbox._log_rotate(retention) makes the next segment k = cur_seg + 1 current once k is empty,
-- truncating it (and batches_k) first when every row of it is published and its newest batch is
-- older than retention. It never waits: the locks are taken NOWAIT, and a lock that is not granted
-- at once (a producer still inside its transaction on k, a reader of k) defers the rotation.
-- Returns what it did: 'rotated', or why not.
-- ---------------------------------------------------------------------------------------
-- Named consumers and a rotation (as 1.2's retention, consumers_release_segment() in
-- src/consumers.cpp): segment k, whose batches hold positions up to top and were published up to
-- newest, is needed by every active consumer that has not acknowledged an event of its channels in
-- it. While newest is younger than pg_outbox.consumer_max_retention the segment is kept (the
-- reason is returned); past it those consumers are marked lost in the rotation's transaction (a
-- WARNING names each) and NULL lets the rotation go on. A consumer row locked by an ack() in
-- progress keeps the segment this round. (Called with log_k and batches_k locked ACCESS
-- EXCLUSIVE: create_consumer() locks the log before it reads the horizon, so none is created
-- behind the new horizon unseen.)
CREATE FUNCTION outbox._log_consumers_release(k integer, newest timestamptz, top bigint) RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE need text[]; locked integer; r record;
BEGIN
    -- consumers' positions are the log's only in log mode (pg_outbox.drain_log, a development
    -- setting, rotates a log whose positions are its own while consumers read 1.2's)
    IF NOT outbox._log_active() THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT array_agg(c.name ORDER BY c.name) FROM outbox.consumer c'
                   ' WHERE c.state = ''active'' AND c.acked_pos < $1 AND (c.channels IS NULL OR EXISTS ('
                   '   SELECT FROM outbox.batches_%s b WHERE b.first_pos + b.n - 1 > c.acked_pos AND b.channels && c.channels))', k)
        INTO need USING top;
    IF need IS NULL THEN
        RETURN NULL;
    END IF;
    IF newest > clock_timestamp() - coalesce(current_setting('pg_outbox.consumer_max_retention', true), '7d')::interval THEN
        RETURN format('deferred: segment %s holds events named consumer %s has not acknowledged', k, need[1]);
    END IF;
    SELECT count(*) INTO locked FROM (SELECT FROM outbox.consumer c WHERE c.name = ANY (need) FOR UPDATE SKIP LOCKED) l;
    IF locked < cardinality(need) THEN
        RETURN format('deferred: a named consumer of segment %s is acknowledging', k);
    END IF;
    FOR r IN UPDATE outbox.consumer c SET state = 'lost', lost_at = now(),
                    lost_reason = format('Retention removed the events it had not acknowledged (positions %s to %s):'
                                         ' they were older than pg_outbox.consumer_max_retention.', c.acked_pos + 1, top)
              WHERE c.name = ANY (need) AND c.state = 'active' RETURNING c.name, c.acked_pos LOOP
        RAISE WARNING 'pg_outbox: consumer "%" is lost: retention removed events it had not acknowledged', r.name
            USING DETAIL = format('Its acknowledged position is %s; the events were older than pg_outbox.consumer_max_retention (%s).',
                                  r.acked_pos, current_setting('pg_outbox.consumer_max_retention')),
                  HINT = 'Its next call raises OB001; resynchronise it, then drop it and create it again.';
    END LOOP;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION outbox._log_consumers_release(integer, timestamptz, bigint) IS
    'internal (issue #15): may a rotation truncate a log segment named consumers need? marks them lost past pg_outbox.consumer_max_retention';

CREATE FUNCTION outbox._log_rotate(retention interval) RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nseg integer := outbox._log_segments();
    st outbox.log_state; b outbox.batches; k integer; newest timestamptz; top bigint; held text; ahead boolean;
BEGIN
    IF retention IS NULL OR retention < interval '0' THEN
        RAISE EXCEPTION 'retention must be an interval of 0 or more, not %', coalesce(retention::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass how long published events are kept, e.g. ''7 days''.';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'outbox._log_rotate() cannot run in a REPEATABLE READ or SERIALIZABLE transaction'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Call it in autocommit mode or in a READ COMMITTED transaction.';
    END IF;
    -- serialized with passes (their batch lock), without waiting for one
    BEGIN
        LOCK TABLE outbox.batches IN SHARE ROW EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 'deferred: a pass is running';
    END;
    SELECT * INTO st FROM outbox.log_state FOR UPDATE;
    k := (st.cur_seg + 1) % nseg;
    b := outbox._log_latest();
    IF b.cut THEN
        RETURN 'deferred: the latest window is cut'; -- rotating would change the window's segment order
    END IF;
    -- A log restored from a cluster ahead of this one (every pass refuses it: check_log_xids() in
    -- src/log_pass.cpp) names transactions this cluster has not reached: its snapshots cannot tell
    -- what is published, and the rows pending at dump time (xids above this cluster's counter, in
    -- no snapshot's view) would look published and be truncated. Nothing is removed until the
    -- counter has passed the log (the worker and purge() call this after failing passes too).
    IF pg_snapshot_xmax(pg_current_snapshot()) < pg_snapshot_xmax(coalesce(b.hi_snap, st.base_snap)) THEN
        RETURN 'deferred: the log names transactions this cluster has not reached (restored from a cluster ahead)';
    END IF;
    BEGIN
        EXECUTE format('LOCK TABLE outbox.log_%s, outbox.batches_%s IN ACCESS EXCLUSIVE MODE NOWAIT', k, k);
    EXCEPTION WHEN lock_not_available THEN
        RETURN format('deferred: segment %s is in use', k);
    END;
    -- ... and a row of k with such an xid (restored, or forged by the tables' owner): one index probe.
    -- Committed rows are below the snapshot's xmax; of the running transactions, whose xids may be
    -- at or above it, only this one can have rows in k (the lock above): its own are checked below.
    EXECUTE format('SELECT EXISTS (SELECT FROM outbox.log_%s WHERE xid >= $1 AND xid IS DISTINCT FROM $2)', k)
        INTO ahead USING pg_snapshot_xmax(pg_current_snapshot()), pg_current_xact_id_if_assigned();
    IF ahead THEN
        RETURN format('deferred: segment %s holds events of transactions this cluster has not reached', k);
    END IF;
    -- every row of k is published: none committed after the latest batch's snapshot (the lock
    -- above excludes the producers still inside their transactions, but not this one)
    IF outbox._log_next_seg(coalesce(b.hi_snap, st.base_snap), pg_current_snapshot(), k, '0', 0) = k
       OR EXISTS (SELECT FROM outbox.log e WHERE e.tableoid = format('outbox.log_%s', k)::regclass
                                            AND e.xid = pg_current_xact_id_if_assigned()) THEN
        RETURN format('deferred: segment %s has events not published yet', k);
    END IF;
    IF b.seg = k THEN
        RETURN format('deferred: the latest batch is in segment %s', k); -- the next pass needs it
    END IF;
    -- an event being retried (68_log_failures.sql): its failed row is what the retry copies
    IF EXISTS (SELECT FROM outbox.failures f WHERE f.seg = k) THEN
        RETURN format('deferred: segment %s holds events being retried', k);
    END IF;
    EXECUTE format('SELECT max(published_at), max(first_pos + n - 1) FROM outbox.batches_%s', k) INTO newest, top;
    -- the time of this check, not of the transaction's start (batches record theirs with clock_timestamp())
    IF newest > clock_timestamp() - retention THEN
        RETURN format('deferred: segment %s holds events published less than %s ago', k, retention);
    END IF;
    -- named consumers keep what they have not acknowledged, up to pg_outbox.consumer_max_retention
    held := outbox._log_consumers_release(k, newest, top);
    IF held IS NOT NULL THEN
        RETURN held;
    END IF;
    -- the channels' last seqs leave with batches_k: a channel whose newest batch is one of k's
    -- would get its seqs again from the older batches elsewhere or from 0 (_log_last_seq reads
    -- log_channels and the batches). Write them into log_channels first, never backwards;
    -- last_pos is the end of the batch that holds the channel's last event.
    EXECUTE format($q$
        INSERT INTO outbox.log_channels AS c (channel, last_seq, last_pos)
        SELECT DISTINCT ON (u.ch) u.ch, b.first_seqs[u.i] + b.counts[u.i] - 1, b.first_pos + b.n - 1
          FROM outbox.batches_%s b, unnest(b.channels) WITH ORDINALITY AS u(ch, i)
         ORDER BY u.ch, b.first_pos DESC
        ON CONFLICT (channel) DO UPDATE
           SET last_seq = greatest(c.last_seq, excluded.last_seq), last_pos = greatest(c.last_pos, excluded.last_pos)
        $q$, k);
    EXECUTE format('TRUNCATE outbox.log_%s, outbox.batches_%s', k, k);
    UPDATE outbox.log_state
       SET cur_seg = k, seg_started_at = clock_timestamp(), purged_pos = greatest(purged_pos, coalesce(top, 0));
    RETURN 'rotated';
END $$;
COMMENT ON FUNCTION outbox._log_rotate(interval) IS
    'internal (issue #15): make the next log segment current, truncating it when it is published and past retention';
