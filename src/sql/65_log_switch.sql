
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
-- ALWAYS: under session_replication_role = replica (a replication tool's or a DBA's session) an
-- ORIGIN trigger does not fire, and a row inserted by hand or by retry() in log mode stayed in
-- outbox.pending, where nothing drains it in log mode. (pg_restore --disable-triggers leaves it
-- ORIGIN, as log_channels_changed: the switch refuses then, doc/storage.md.)
ALTER TABLE outbox.pending ENABLE ALWAYS TRIGGER pending_to_log;

-- Tells the producers of the switch's own transaction to read the mode again (src/storage_mode.cpp):
-- those that ran before the switch read 1.2. Internal, granted to no role.
CREATE FUNCTION outbox._log_mode_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_log_mode_changed';
COMMENT ON FUNCTION outbox._log_mode_changed() IS
    'internal (issue #15): the producers of this transaction read the storage mode again (the switch ran in it)';

-- The switch, once per database, never back (doc/storage.md, "The switch"). In one transaction:
--   1. EXCLUSIVE on outbox.pending: every producer that inserted into it (each took ROW EXCLUSIVE,
--      publish() and the change trigger before reading the mode) and every 1.2 drain (which
--      deletes from it) has ended, and none starts until this commits; producers that come after
--      it read the mode with the latest snapshot and write the log. The wait is bounded (the
--      caller's lock_timeout, 5s when it is 0): a forgotten prepared transaction that wrote pending
--      would hold the switch forever, and every new producer queues behind the switch's request;
--   2. the batch lock (as a pass and rotation), then the row of outbox.log_state;
--   3. refusals, under those locks: a log already active or not empty; events being retried by the
--      1.2 drain (their outbox.failures rows track rows of outbox.pending; the log's failure path
--      tracks rows of the log, by xid and segment: 1.2's attempts and delays do not carry over); a DBA's trigger, rule, constraint or row security on outbox.pending (in log mode
--      publish() and the change trigger no longer go through it: they would silently stop applying);
--   4. the log's state as a log never used has it (a log used by hand before, then truncated as the
--      hint below says, left its purged_pos, channels_flushed_pos and log_channels rows):
--      base_pos := the 1.2 head, channels_flushed_pos := the 1.2 head, purged_pos := 0 (nothing of the
--      log removed; the history's horizon is outbox.state's); outbox.log_channels := every channel's
--      1.2 last seq and pos;
--   5. pending's rows into the current segment (same ids, this transaction's xid), pending empty;
--   6. active := true; this transaction's producers read the mode again (outbox._log_mode_changed()).
-- READ COMMITTED only: each statement then reads what committed before the locks were granted;
-- an older snapshot (REPEATABLE READ, SERIALIZABLE) could miss pending rows.
CREATE FUNCTION outbox.use_log_storage(OUT events_moved bigint, OUT base_pos bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st outbox.log_state; s integer; head bigint; n bigint; added text;
    caller_lock_timeout text := current_setting('lock_timeout'); locking text;
BEGIN
    PERFORM outbox._check_writable('outbox.use_log_storage()');
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'outbox.use_log_storage() must run in a READ COMMITTED transaction, not %',
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'An older snapshot could miss events committed into outbox.pending before the switch''s lock.',
                  HINT = 'Call it on its own: SELECT * FROM outbox.use_log_storage();';
    END IF;
    IF caller_lock_timeout = '0' THEN
        PERFORM set_config('lock_timeout', '5s', true);
    END IF;
    BEGIN
        locking := 'outbox.pending';
        LOCK TABLE outbox.pending IN EXCLUSIVE MODE;
        locking := 'outbox.batches';
        LOCK TABLE outbox.batches IN SHARE ROW EXCLUSIVE MODE;
        locking := 'the row of outbox.log_state';
        SELECT * INTO st FROM outbox.log_state FOR UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'outbox.use_log_storage() could not lock % within lock_timeout %', locking, current_setting('lock_timeout')
            USING ERRCODE = 'lock_not_available',
                  DETAIL = 'Another transaction holds it: a producer or a 1.2 drain that wrote outbox.pending and is still open, a prepared transaction, a log pass. New producers wait behind the switch while it waits. Nothing was changed.',
                  HINT = 'Look at pg_prepared_xacts and at pg_locks for outbox.pending (SELECT * FROM pg_locks WHERE relation = ''outbox.pending''::regclass), end what holds it, and call outbox.use_log_storage() again. The switch waits at most lock_timeout, 5s when it is 0.';
    END;
    PERFORM set_config('lock_timeout', caller_lock_timeout, true);
    IF st.singleton IS NULL THEN
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
    n := (SELECT count(*) FROM outbox.failures);
    IF n > 0 THEN
        RAISE EXCEPTION 'database % has events being retried by the 1.2 drain', current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s event(s) in outbox.failures are being retried by the 1.2 drain; their attempts and delays do not carry over into the log.', n),
                  HINT = 'Wait until the drain worker delivers them or moves them to outbox.dead_letter (see outbox.failures), or remove them with outbox.discard(id); then call outbox.use_log_storage() again.';
    END IF;
    -- what a DBA added to outbox.pending: the extension's own are the triggers pending_to_log
    -- (ENABLE ALWAYS) and pending_wake (enabled) on their functions, and the constraints pending_pkey
    -- and pending_channel_length (NOT NULL constraints, PostgreSQL 18's, are the columns')
    SELECT string_agg(a, ', ' ORDER BY a) INTO added FROM (
        SELECT format('trigger %I%s', t.tgname, CASE WHEN t.tgenabled = 'D' THEN ' (disabled)'
                                                     WHEN t.tgname = 'pending_to_log' THEN ' (not ENABLE ALWAYS)'
                                                     ELSE '' END) AS a
          FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = 'outbox.pending'::regclass AND NOT t.tgisinternal
           AND ((t.tgname, t.tgfoid) NOT IN (('pending_to_log', 'outbox._pending_to_log()'::regprocedure),
                                             ('pending_wake', 'outbox._wake()'::regprocedure))
                OR t.tgenabled = 'D' OR (t.tgname = 'pending_to_log' AND t.tgenabled <> 'A'))
        UNION ALL
        SELECT format('rule %I', r.rulename) FROM pg_catalog.pg_rewrite r WHERE r.ev_class = 'outbox.pending'::regclass
        UNION ALL
        SELECT format('constraint %I', c.conname) FROM pg_catalog.pg_constraint c
         WHERE c.conrelid = 'outbox.pending'::regclass AND c.contype <> 'n'
           AND c.conname NOT IN ('pending_pkey', 'pending_channel_length')
        UNION ALL
        SELECT 'row level security' FROM pg_catalog.pg_class k
         WHERE k.oid = 'outbox.pending'::regclass AND (k.relrowsecurity OR k.relforcerowsecurity)) x;
    IF added IS NOT NULL THEN
        RAISE EXCEPTION 'outbox.pending has what the switch would silently bypass: %', added
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'In log mode outbox.publish() and the change trigger write the log, not outbox.pending: triggers, rules, constraints and row security on outbox.pending would no longer apply to their events.',
                  HINT = 'Move that logic into the application (or the tables the change trigger is attached to) and drop it from outbox.pending (DROP TRIGGER, DROP RULE, ALTER TABLE ... DROP CONSTRAINT, ALTER TABLE ... DISABLE ROW LEVEL SECURITY); the extension''s own trigger pending_to_log must be ENABLE ALWAYS, pending_wake enabled. Then call outbox.use_log_storage() again.';
    END IF;
    head := outbox._frozen_head();
    DELETE FROM outbox.log_channels;
    INSERT INTO outbox.log_channels (channel, last_seq, last_pos)
    SELECT c.channel, c.last_seq,
           coalesce((SELECT h.pos FROM outbox.history_frozen h WHERE h.channel = c.channel ORDER BY h.seq DESC LIMIT 1), 0)
      FROM outbox.channels c;
    s := st.cur_seg;
    EXECUTE format('WITH d AS (DELETE FROM outbox.pending RETURNING id, channel, key, type, payload, created_at) '
                   'INSERT INTO outbox.log_%s (id, channel, key, type, payload, created_at) '
                   'SELECT id, channel, key, type, payload, created_at FROM d ORDER BY id', s);
    GET DIAGNOSTICS events_moved = ROW_COUNT;
    -- (outbox._log_state_check() lets purged_pos go back in this update alone: active false -> true;
    -- channels_flushed_pos := head: the log and its batches are empty, checked above, and an older,
    -- higher value would say batches are missing, which the pass refuses)
    UPDATE outbox.log_state
       SET active = true, base_pos = head, purged_pos = 0, channels_flushed_pos = head,
           seg_started_at = clock_timestamp();
    base_pos := head;
    PERFORM outbox._log_mode_changed();
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
    -- a pending event being retried: try it at the next drain, with a fresh count. In log mode its
    -- failures row is what keeps its failed row out of the batches and copies it when it is due
    -- (68_log_failures.sql): kept, due now, its count started again
    IF outbox._log_active() THEN
        UPDATE outbox.failures f SET attempts = 0, next_attempt_at = now() WHERE f.id = event_id AND f.xid IS NOT NULL;
    ELSE
        DELETE FROM outbox.failures f WHERE f.id = event_id
           AND EXISTS (SELECT FROM outbox.pending p WHERE p.id = event_id);
    END IF;
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
