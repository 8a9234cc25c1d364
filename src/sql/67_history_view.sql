
-- ---------------------------------------------------------------------------------------
-- outbox.history, a view in both storages (issue #15)
-- ---------------------------------------------------------------------------------------
-- 1.2's outbox.history was the parent table of the segments history_0..2; it is now
-- outbox.history_frozen (20_outbox.sql; the upgrade renames it, upgrade/50_history_frozen.sql),
-- and outbox.history is this view with the same columns: the frozen rows, then the log's
-- published events with pos and seq recomputed from the batches, as outbox.replay() returns
-- them. Users' queries (and Debezium's debezium_events) keep reading one relation whatever the
-- mode. The extension itself reads outbox.history_frozen and the log through its readers.
--
-- In 1.2 mode the log part is one call that returns at once (outbox._log_active() false), and a
-- filter on the view reaches the segments (WHERE pos = N reads history_N's primary key). In log
-- mode it recomputes every kept batch: a filter on pos or channel does not narrow that; replay(),
-- replay_channel() and event() are the readers that find a few events cheaply.

-- The log's published events above the frozen history (positions base_pos + 1 .. the head,
-- those that retention kept), in position order; nothing in 1.2 mode. SECURITY DEFINER: the
-- view's users may read the history, not the log's tables; a view's functions are checked
-- against its user, so EXECUTE goes to the roles that may SELECT the view (90_privileges.sql).
CREATE FUNCTION outbox._history_log()
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE cur bigint; n bigint;
BEGIN
    IF NOT outbox._log_active() THEN
        RETURN;
    END IF;
    -- _log_replay() locks the log and checks its positions are contiguous; it refuses a start
    -- below the log's retention horizon, so the first chunk begins there. The lock first, as
    -- _log_replay() takes it, before the horizon is read: a rotation that committed between the
    -- read and _log_replay()'s lock (the reader waiting for it) made a SELECT of the view fail with
    -- OB001 (regress history_view 5)
    LOCK TABLE outbox.log, outbox.batches IN ACCESS SHARE MODE;
    cur := greatest((SELECT s.base_pos FROM outbox.log_state s),
                    (SELECT s.purged_pos FROM outbox.log_state s), outbox._log_purged_pos());
    LOOP
        RETURN QUERY SELECT r.pos, r.seq, r.id, r.channel, r.key, r.type, r.payload, r.created_at, r.published_at
                       FROM outbox._log_replay(cur, 10000) r;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
        cur := cur + n;
    END LOOP;
END $$;
COMMENT ON FUNCTION outbox._history_log() IS
    'internal: the log''s published events for the outbox.history view (none in 1.2 mode)';

CREATE VIEW outbox.history AS
    SELECT f.pos, f.seq, f.id, f.channel, f.key, f.type, f.payload, f.created_at, f.published_at
      FROM outbox.history_frozen f
    UNION ALL
    SELECT l.pos, l.seq, l.id, l.channel, l.key, l.type, l.payload, l.created_at, l.published_at
      FROM outbox._history_log() l;
COMMENT ON VIEW outbox.history IS 'published events, for replay; kept for pg_outbox.retention';
-- (its privileges: 90_privileges.sql, upgrade/69_log_privileges.sql)
