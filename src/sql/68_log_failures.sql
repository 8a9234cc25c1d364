
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #15 (the storage): the failure path over the write-once log (doc/storage.md,
-- "Failures, retries, dead letters, discard"). The pass (src/log_pass.cpp, src/drain_failures.cpp:
-- log_pass()) leaves an event that fails alone out of its batch (its id in the batch's skipped) and
-- records it in outbox.failures with the row of the log that failed (xid, seg). When it is due,
-- outbox._log_retry_due() copies that row into the current segment with the pass's xid: a later
-- window tries the copy, and the copy is what gets the event's one position. Rows of the log are
-- never updated or deleted, so a failed row that a pass would still read (its window had no other
-- event: no batch was written to leave it out) is withheld until a batch leaves it out.
-- ---------------------------------------------------------------------------------------

-- Rows of the log a pass must leave out although they are in its window: a failed row copied for
-- its retry, a dead letter or a discarded event whose window no batch has closed yet. A batch that
-- leaves one out retires it (the pass deletes it); an empty table costs a pass one look.
CREATE TABLE outbox.withheld (
    id   bigint NOT NULL,
    xid  xid8 NOT NULL,
    seg  integer NOT NULL,
    PRIMARY KEY (id, xid)
);
COMMENT ON TABLE outbox.withheld IS
    'internal (issue #15): rows of the log that a pass leaves out of its batch (retried, dead-lettered or discarded events)';
SELECT pg_catalog.pg_extension_config_dump('outbox.withheld', '');
-- in log mode outbox.failures points at rows of the log that are in no batch: a restore without it
-- would publish nothing of them again
SELECT pg_catalog.pg_extension_config_dump('outbox.failures', '');

-- Would a pass still read this row of log_<seg> (it is in no batch yet)? (src/log_pass.cpp)
CREATE FUNCTION outbox._log_row_pending(seg integer, xid xid8, id bigint) RETURNS boolean
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'outbox_log_row_pending';
COMMENT ON FUNCTION outbox._log_row_pending(integer, xid8, bigint) IS
    'internal (issue #15): is this row of the log in the open window (no batch has published or left it out)?';

-- The retries that are due, copied into the current segment with the caller's xid (the pass's:
-- its own window leaves its own transaction out, so a later one tries the copy); the failures row
-- follows the copy. The failed row is withheld while a pass would still read it. The pass calls
-- this under the batch lock. Returns how many were copied.
CREATE FUNCTION outbox._log_retry_due() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE s integer := (SELECT st.cur_seg FROM outbox.log_state st); f record; k bigint; n bigint := 0;
BEGIN
    FOR f IN SELECT x.id, x.xid, x.seg FROM outbox.failures x
              WHERE NOT x.copied AND x.xid IS NOT NULL AND x.next_attempt_at <= now() ORDER BY x.id FOR UPDATE LOOP
        IF outbox._log_row_pending(f.seg, f.xid, f.id) THEN
            INSERT INTO outbox.withheld (id, xid, seg) VALUES (f.id, f.xid, f.seg) ON CONFLICT DO NOTHING;
        END IF;
        -- by the (xid, id) btree of the failed row's segment
        EXECUTE format('INSERT INTO outbox.log_%s (id, xid, channel, key, type, payload, created_at) '
                       'SELECT l.id, pg_current_xact_id(), l.channel, l.key, l.type, l.payload, l.created_at '
                       'FROM outbox.log_%s l WHERE l.xid = $1 AND l.id = $2', s, f.seg) USING f.xid, f.id;
        GET DIAGNOSTICS k = ROW_COUNT;
        IF k = 1 THEN
            UPDATE outbox.failures x SET xid = pg_current_xact_id(), seg = s, copied = true WHERE x.id = f.id;
            n := n + 1;
        ELSE
            -- cannot happen while rotation keeps the segments that failures rows point into
            RAISE WARNING 'pg_outbox: event % being retried is missing from outbox.log_% and is lost', f.id, f.seg
                USING DETAIL = format('Its last error: %s', (SELECT x.error FROM outbox.failures x WHERE x.id = f.id)),
                      HINT = 'A segment of the log was truncated by hand.';
            DELETE FROM outbox.failures x WHERE x.id = f.id;
        END IF;
    END LOOP;
    IF n > 0 THEN
        PERFORM outbox._wake_at_commit(); -- the next pass tries the copies at once, not at the idle tick
    END IF;
    RETURN n;
END $$;
COMMENT ON FUNCTION outbox._log_retry_due() IS
    'internal (issue #15): copy the failed events that are due into the current log segment (the pass calls it)';

-- Remove a pending or dead-letter event without publishing it, recorded in outbox.discarded.
-- 1.2: deleted from outbox.pending. Log mode: under the batch lock (no pass publishes it meanwhile),
-- an event being retried or a row of the log in no batch yet is withheld from every pass.
CREATE OR REPLACE FUNCTION outbox.discard(event_id bigint, reason text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE moved bigint; stored bigint; source text; fr outbox.failures; r_seg integer; r_xid xid8;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF outbox._log_active() THEN
        LOCK TABLE outbox.batches IN SHARE ROW EXCLUSIVE MODE;
    END IF;
    source := 'dead letter';
    WITH d AS (DELETE FROM outbox.dead_letter WHERE id = event_id RETURNING *),
         i AS (INSERT INTO outbox.discarded (id, channel, key, type, payload_bytes, created_at, discarded_at,
                                             discarded_by, was, reason, error, sqlstate)
               SELECT id, channel, key, type, pg_column_size(payload), created_at, clock_timestamp(),
                      session_user, 'dead letter', reason, error, sqlstate FROM d RETURNING id)
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i) INTO moved, stored;
    IF moved = 0 AND outbox._log_active() THEN
        source := 'pending';
        -- the row a pass would publish: the one being retried, else the event's newest row in no batch
        -- and not withheld (a row discarded or dead-lettered already: discarding it again is refused)
        SELECT * INTO fr FROM outbox.failures x WHERE x.id = event_id AND x.xid IS NOT NULL FOR UPDATE;
        IF FOUND THEN
            r_seg := fr.seg;
            r_xid := fr.xid;
        ELSE
            SELECT substr(c.relname, 5)::integer, l.xid INTO r_seg, r_xid
              FROM outbox.log l JOIN pg_class c ON c.oid = l.tableoid
             WHERE l.id = event_id AND outbox._log_row_pending(substr(c.relname, 5)::integer, l.xid, l.id)
               AND NOT EXISTS (SELECT FROM outbox.withheld w WHERE w.id = l.id AND w.xid = l.xid)
             ORDER BY l.xid DESC LIMIT 1;
        END IF;
        IF r_seg IS NOT NULL THEN
            IF outbox._log_row_pending(r_seg, r_xid, event_id) THEN
                INSERT INTO outbox.withheld (id, xid, seg) VALUES (event_id, r_xid, r_seg) ON CONFLICT DO NOTHING;
            END IF;
            EXECUTE format('INSERT INTO outbox.discarded (id, channel, key, type, payload_bytes, created_at, discarded_at, '
                           '                             discarded_by, was, reason, error, sqlstate) '
                           'SELECT l.id, l.channel, l.key, l.type, pg_column_size(l.payload), l.created_at, '
                           '       clock_timestamp(), session_user, ''pending'', $3, $4, $5 '
                           'FROM outbox.log_%s l WHERE l.xid = $1 AND l.id = $2', r_seg)
                USING r_xid, event_id, reason, fr.error, fr.sqlstate;
            GET DIAGNOSTICS stored = ROW_COUNT;
            moved := 1;
        END IF;
    ELSIF moved = 0 THEN
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
