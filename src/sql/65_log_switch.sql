
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #15 (the storage): the switch to the write-once log, outbox.use_log_storage(), and
-- what routes 1.2's producers by hand into the log once it has happened (doc/storage.md, "The
-- switch"). publish() and the change trigger choose their storage in C (src/storage_mode.cpp:
-- producer_writes_log()).
-- ---------------------------------------------------------------------------------------

-- One event into the log's current segment with the id and created_at it already has (a row
-- inserted into outbox.pending by hand, by COPY or by outbox.retry() in log mode): what
-- outbox._pending_to_log() calls, as the owner of outbox.pending. Internal, granted to no role.
CREATE FUNCTION outbox._log_put(id bigint, channel text, key text, type text, payload jsonb,
                                created_at timestamptz) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE s integer := (SELECT st.cur_seg FROM outbox.log_state st);
BEGIN
    EXECUTE format('INSERT INTO outbox.log_%s (id, channel, key, type, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)', s)
        USING id, channel, key, type, payload, coalesce(created_at, now());
END $$;
COMMENT ON FUNCTION outbox._log_put(bigint, text, text, text, jsonb, timestamptz) IS
    'internal (issue #15): insert one event with its id into the log''s current segment (a row INSERTed into outbox.pending in log mode)';

-- In log mode nothing is stored in outbox.pending: a row inserted into it (by hand, COPY,
-- outbox.retry()) goes into the log with its id, and the INSERT stores nothing (RETURNING returns
-- no row). In 1.2 mode the row is inserted as before. The mode is read once per transaction
-- after the transaction's lock on outbox.pending, with the latest snapshot (src/storage_mode.cpp).
CREATE FUNCTION outbox._pending_to_log() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'outbox_pending_to_log_trigger';
COMMENT ON FUNCTION outbox._pending_to_log() IS
    'internal (issue #15): in log mode, a row inserted into outbox.pending goes into the log instead';
CREATE TRIGGER pending_to_log BEFORE INSERT ON outbox.pending
    FOR EACH ROW EXECUTE FUNCTION outbox._pending_to_log();

-- The switch, once per database, never back (doc/storage.md, "The switch"). In one transaction:
--   1. EXCLUSIVE on outbox.pending: every producer that inserted into it (each took ROW EXCLUSIVE,
--      publish() and the change trigger before reading the mode) and every 1.2 drain (which
--      deletes from it) has ended, and none starts until this commits; producers that come after
--      it read the mode with the latest snapshot and write the log;
--   2. the batch lock (as a pass and rotation), then the row of outbox.log_state;
--   3. base_pos := the 1.2 head; outbox.log_channels := every channel's 1.2 last seq and pos;
--   4. pending's rows into the current segment (same ids, this transaction's xid), pending empty;
--      1.2's retry bookkeeping of them (outbox.failures) is dropped: the log pass publishes them;
--   5. active := true.
-- READ COMMITTED only: each statement then reads what committed before the locks were granted;
-- an older snapshot (REPEATABLE READ, SERIALIZABLE) could miss pending rows.
CREATE FUNCTION outbox.use_log_storage(OUT events_moved bigint, OUT base_pos bigint, OUT failures_dropped bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE st outbox.log_state; s integer; head bigint;
BEGIN
    PERFORM outbox._check_writable('outbox.use_log_storage()');
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'outbox.use_log_storage() must run in a READ COMMITTED transaction, not %',
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'An older snapshot could miss events committed into outbox.pending before the switch''s lock.',
                  HINT = 'Call it on its own: SELECT * FROM outbox.use_log_storage();';
    END IF;
    LOCK TABLE outbox.pending IN EXCLUSIVE MODE;
    LOCK TABLE outbox.batches IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO st FROM outbox.log_state FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the row of outbox.log_state is missing' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Reinstall the extension.';
    END IF;
    IF st.active THEN
        RAISE EXCEPTION 'database % already stores its events in the log', current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The switch is made once and cannot be undone; nothing is left to do.';
    END IF;
    IF EXISTS (SELECT FROM outbox.log) OR EXISTS (SELECT FROM outbox.batches) THEN
        RAISE EXCEPTION 'the log of database % is not empty', current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The switch continues 1.2''s positions in a log that was never used.',
                  HINT = 'Something wrote the log before the switch (outbox._log_publish(), a restore): TRUNCATE outbox.log_0, outbox.log_1, outbox.log_2, outbox.batches_0, outbox.batches_1, outbox.batches_2 if those events are not needed.';
    END IF;
    -- the 1.2 head (outbox.head()'s rule: a restore may leave the history ahead of the state row)
    head := greatest((SELECT max(x.last_pos) FROM outbox.state x), (SELECT coalesce(max(h.pos), 0) FROM outbox.history h));
    INSERT INTO outbox.log_channels AS lc (channel, last_seq, last_pos)
    SELECT c.channel, c.last_seq,
           coalesce((SELECT h.pos FROM outbox.history h WHERE h.channel = c.channel ORDER BY h.seq DESC LIMIT 1), 0)
      FROM outbox.channels c
    ON CONFLICT (channel) DO UPDATE SET last_seq = greatest(lc.last_seq, EXCLUDED.last_seq),
                                        last_pos = greatest(lc.last_pos, EXCLUDED.last_pos);
    s := st.cur_seg;
    EXECUTE format('WITH d AS (DELETE FROM outbox.pending RETURNING id, channel, key, type, payload, created_at) '
                   'INSERT INTO outbox.log_%s (id, channel, key, type, payload, created_at) '
                   'SELECT id, channel, key, type, payload, created_at FROM d ORDER BY id', s);
    GET DIAGNOSTICS events_moved = ROW_COUNT;
    DELETE FROM outbox.failures;
    GET DIAGNOSTICS failures_dropped = ROW_COUNT;
    -- channels_flushed_pos := head: the log and its batches are empty (checked above), so
    -- log_channels covers every batch up to it; an older, higher value (passes of
    -- pg_outbox.drain_log before the switch, their batches truncated since as the hint above says)
    -- would say batches are missing, and the pass refuses such a log
    UPDATE outbox.log_state
       SET active = true, base_pos = head, channels_flushed_pos = head;
    base_pos := head;
    PERFORM outbox._wake_at_commit();
END $$;
COMMENT ON FUNCTION outbox.use_log_storage() IS
    'switch this database to the write-once log (once, never back): moves pending events into it, positions and seqs continue';

-- A dead letter back into outbox.pending (1.2) or, through outbox._pending_to_log(), the log.
-- CREATE OR REPLACE: the upgrade from 1.2 runs this piece too.
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
    -- in log mode outbox._pending_to_log() put the row into the log instead (65_log_switch.sql)
    IF stored <> moved AND NOT EXISTS (SELECT FROM outbox.log l WHERE l.id = event_id) THEN
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
