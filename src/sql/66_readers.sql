
-- ---------------------------------------------------------------------------------------
-- The public readers (replay, replay_channel, head, event), in both storages (issue #15)
-- ---------------------------------------------------------------------------------------
-- Each public reader has one definition, here (CREATE OR REPLACE: the upgrade from 1.2 runs
-- this file too). It checks its arguments and the caller's rights, then chooses: in 1.2 mode
-- (outbox._log_active() false, the default) its 1.2 body, unchanged; in log mode an internal
-- function of this file that answers from the frozen history (outbox.history_frozen, positions up to
-- outbox.log_state.base_pos: nothing writes it in log mode, retention still purges it) and
-- from the log above it (outbox._log_replay(), outbox._log_replay_channel(), outbox._log_event(),
-- outbox._log_head(): 60_log.sql, 64_log_readers.sql), with 1.2's columns, errors and hints.
--
-- The mode is read with the statement's snapshot. A REPEATABLE READ transaction whose snapshot
-- predates the switch reads 1.2 mode: the history as it was, up to the 1.2 head, which the switch
-- made base_pos, so it sees a prefix of the positions, never a gap (its later replays after its
-- own head answer OB002-free empty sets until it begins a new transaction).
-- Locks: ACCESS SHARE on the history and on the log (segments, batches) before the first
-- snapshot, as each storage's readers do (TRUNCATE, of retention or of a rotation, is not
-- MVCC-safe). The retention horizon is the highest of the history's (outbox.state.purged_pos)
-- and the log's (outbox.log_state.purged_pos), each read with the latest snapshot too.

-- The replays' OB001/OB002, one definition for both storages: a replay after after_pos when the
-- events up to purged are gone (OB001) or when head_pos, the latest published position, is behind
-- it (OB002); per channel, after_seq above the channel's latest seq (OB002), or the events up to
-- seq upto gone (OB001).
CREATE FUNCTION outbox._check_replay_range(after_pos bigint, purged bigint, head_pos bigint) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF after_pos < purged THEN
        RAISE EXCEPTION 'cannot replay after position %: the events up to position % have been removed', after_pos, purged
            USING ERRCODE = 'OB001',
                  DETAIL = format('Events are kept for pg_outbox.retention; the replay would miss positions %s to %s.',
                                  after_pos + 1, purged),
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head().';
    END IF;
    IF after_pos > head_pos THEN
        RAISE EXCEPTION 'cannot replay after position %: the latest published position is %', after_pos, head_pos
            USING ERRCODE = 'OB002',
                  DETAIL = 'The outbox was reset or restored from an older backup, so positions are being handed out again.',
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head().';
    END IF;
END $$;
CREATE FUNCTION outbox._check_channel_ahead(ch text, after_seq bigint, last bigint) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF after_seq > last THEN
        RAISE EXCEPTION 'cannot replay channel "%" after seq %: its latest seq is %', ch, after_seq, last
            USING ERRCODE = 'OB002',
                  DETAIL = 'The outbox was reset or restored from an older backup, so seqs are being handed out again.',
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head(channel).';
    END IF;
END $$;
CREATE FUNCTION outbox._raise_channel_removed(ch text, after_seq bigint, upto bigint) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'cannot replay channel "%" after seq %: the events up to seq % have been removed', ch, after_seq, upto
        USING ERRCODE = 'OB001',
              DETAIL = format('Events are kept for pg_outbox.retention; the replay would miss seqs %s to %s.',
                              after_seq + 1, upto),
              HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head(channel).';
END $$;
COMMENT ON FUNCTION outbox._check_replay_range(bigint, bigint, bigint) IS 'internal: replay()''s OB001 and OB002';
COMMENT ON FUNCTION outbox._check_channel_ahead(text, bigint, bigint) IS 'internal: replay_channel()''s OB002';
COMMENT ON FUNCTION outbox._raise_channel_removed(text, bigint, bigint) IS 'internal: replay_channel()''s OB001';

-- outbox.replay() in log mode, after its argument and rights checks (all_channels: theirs).
CREATE FUNCTION outbox._replay_log(after_pos bigint, channels text[], max_events integer, after_epoch bigint,
                                   all_channels boolean)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    base bigint; head_pos bigint; purged bigint; expect bigint; got integer := 0; cur bigint; n integer;
    filtered boolean := channels IS NOT NULL OR NOT all_channels; r record;
BEGIN
    LOCK TABLE outbox.history_frozen, outbox.log, outbox.batches IN ACCESS SHARE MODE;
    SELECT l.base_pos, greatest(s.purged_pos, outbox._purged_pos(), l.purged_pos, outbox._log_purged_pos())
      INTO base, purged FROM outbox.state s, outbox.log_state l;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the row of outbox.state is missing' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Recreate it with INSERT INTO outbox.state DEFAULT VALUES, or reinstall the extension.';
    END IF;
    head_pos := greatest(base, outbox._log_head());
    PERFORM outbox._check_epoch(after_pos, after_epoch);
    PERFORM outbox._check_replay_range(after_pos, purged, head_pos);

    -- the frozen history: positions after_pos + 1 .. base, contiguous as in 1.2
    expect := after_pos + 1;
    IF after_pos < base THEN
        FOR r IN
            SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at,
                   outbox._epoch_of(h.pos) AS epoch
              FROM outbox.history_frozen h
             WHERE h.pos > after_pos AND h.pos <= base AND (channels IS NULL OR h.channel = ANY (channels))
               AND (all_channels OR outbox._may_read(h.channel))
             ORDER BY h.pos
             LIMIT max_events
        LOOP
            IF NOT filtered AND r.pos <> expect THEN
                RAISE EXCEPTION 'position % is missing from the history', expect
                    USING ERRCODE = 'serialization_failure',
                          DETAIL = format('The next position in outbox.history is %s.', r.pos),
                          HINT = 'Retry the replay; if this persists, the history was modified by hand.';
            END IF;
            expect := r.pos + 1;
            got := got + 1;
            pos := r.pos; seq := r.seq; id := r.id; channel := r.channel; key := r.key; type := r.type;
            payload := r.payload; created_at := r.created_at; published_at := r.published_at; epoch := r.epoch;
            envelope := outbox._envelope(r.pos, r.seq, r.id, r.key, r.type, r.payload, r.epoch);
            RETURN NEXT;
        END LOOP;
        IF NOT filtered AND expect <= base AND got < max_events THEN
            RAISE EXCEPTION 'position % is missing from the history', expect
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('The frozen history ends at position %s.', base),
                      HINT = 'Retry the replay; if this persists, the history was modified by hand.';
        END IF;
    END IF;

    -- the log above base: _log_replay() checks its positions are contiguous; a filtered replay
    -- reads it in chunks of at least 1000 and keeps the rows the caller asked for and may read
    cur := greatest(after_pos, base);
    WHILE got < max_events AND cur < head_pos LOOP
        n := 0;
        FOR r IN
            SELECT * FROM outbox._log_replay(cur, CASE WHEN filtered THEN greatest(max_events - got, 1000)
                                                       ELSE max_events - got END)
        LOOP
            n := n + 1;
            cur := r.pos;
            CONTINUE WHEN filtered AND NOT ((channels IS NULL OR r.channel = ANY (channels))
                                            AND (all_channels OR outbox._may_read(r.channel)));
            got := got + 1;
            pos := r.pos; seq := r.seq; id := r.id; channel := r.channel; key := r.key; type := r.type;
            payload := r.payload; created_at := r.created_at; published_at := r.published_at; epoch := r.epoch;
            envelope := outbox._envelope(r.pos, r.seq, r.id, r.key, r.type, r.payload, r.epoch);
            RETURN NEXT;
            EXIT WHEN got >= max_events;
        END LOOP;
        IF n = 0 THEN
            RAISE EXCEPTION 'position % is missing from the log', cur + 1
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('The latest published position is %s.', head_pos),
                      HINT = 'Retry the replay; if this persists, the log was modified by hand.';
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION outbox._replay_log(bigint, text[], integer, bigint, boolean) IS
    'internal: outbox.replay() in log mode, from the frozen history and the log';

-- outbox.replay_channel() in log mode, after its argument and rights checks. The channel's
-- seqs up to its 1.2 last seq (outbox.channels, frozen since the switch) are in the history,
-- the later ones in the log (the switch seeded outbox.log_channels with the 1.2 last seqs).
CREATE FUNCTION outbox._replay_channel_log(ch text, after_seq bigint, max_events integer, after_epoch bigint)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    frozen bigint; last bigint; first_kept bigint; expect bigint; got integer := 0; at_pos bigint; r record;
    msg text; det text;
BEGIN
    LOCK TABLE outbox.history_frozen, outbox.log, outbox.batches IN ACCESS SHARE MODE;
    frozen := coalesce((SELECT c.last_seq FROM outbox.channels c WHERE c.channel = ch), 0);
    last := greatest(frozen, outbox._log_last_seq(ch));
    IF after_epoch IS NOT NULL THEN -- [epochs] OB003: the position of the consumer's last event decides
        IF after_seq <= frozen THEN
            at_pos := coalesce((SELECT h.pos FROM outbox.history_frozen h WHERE h.channel = ch AND h.seq = after_seq),
                               (SELECT h.pos FROM outbox.history_frozen h WHERE h.channel = ch AND h.seq <= after_seq ORDER BY h.seq DESC LIMIT 1),
                               0);
        ELSE
            BEGIN -- the log's event of seq after_seq; base_pos if the log no longer has it
                at_pos := (SELECT e.pos FROM outbox._log_replay_channel(ch, after_seq - 1, 1) e);
            EXCEPTION WHEN SQLSTATE 'OB001' OR SQLSTATE 'OB002' THEN
                at_pos := NULL;
            END;
            at_pos := coalesce(at_pos, (SELECT l.base_pos FROM outbox.log_state l));
        END IF;
        PERFORM outbox._check_epoch(at_pos, after_epoch);
    END IF;
    PERFORM outbox._check_channel_ahead(ch, after_seq, last);

    -- the frozen history: seqs after_seq + 1 .. frozen, gap-free as in 1.2
    expect := after_seq + 1;
    IF after_seq < frozen THEN
        first_kept := (SELECT min(h.seq) FROM outbox.history_frozen h WHERE h.channel = ch);
        IF first_kept IS NULL OR first_kept > after_seq + 1 THEN
            PERFORM outbox._raise_channel_removed(ch, after_seq, coalesce(first_kept - 1, frozen));
        END IF;
        FOR r IN
            SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at,
                   outbox._epoch_of(h.pos) AS epoch
              FROM outbox.history_frozen h
             WHERE h.channel = ch AND h.seq > after_seq AND h.seq <= frozen
             ORDER BY h.seq
             LIMIT max_events
        LOOP
            IF r.seq <> expect THEN
                RAISE EXCEPTION 'seq % of channel "%" is missing from the history', expect, ch
                    USING ERRCODE = 'serialization_failure',
                          DETAIL = format('The next seq in outbox.history is %s.', r.seq),
                          HINT = 'Retry the replay; if this persists, the history was modified by hand.';
            END IF;
            expect := r.seq + 1;
            got := got + 1;
            pos := r.pos; seq := r.seq; id := r.id; channel := r.channel; key := r.key; type := r.type;
            payload := r.payload; created_at := r.created_at; published_at := r.published_at; epoch := r.epoch;
            envelope := outbox._envelope(r.pos, r.seq, r.id, r.key, r.type, r.payload, r.epoch);
            RETURN NEXT;
        END LOOP;
        IF expect <= frozen AND got < max_events THEN
            RAISE EXCEPTION 'seq % of channel "%" is missing from the history', expect, ch
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('The channel''s last seq in the frozen history is %s.', frozen),
                      HINT = 'Retry the replay; if this persists, the history was modified by hand.';
        END IF;
    END IF;

    -- the log: its own horizon (a rotation) is OB001 with the public hint
    IF got < max_events AND last > greatest(after_seq, frozen) THEN
        BEGIN
            RETURN QUERY
                SELECT e.pos, e.seq, e.id, e.channel, e.key, e.type, e.payload, e.created_at, e.published_at, e.epoch,
                       outbox._envelope(e.pos, e.seq, e.id, e.key, e.type, e.payload, e.epoch)
                  FROM outbox._log_replay_channel(ch, greatest(after_seq, frozen), max_events - got) e;
        EXCEPTION WHEN SQLSTATE 'OB001' THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
            RAISE EXCEPTION USING MESSAGE = msg, ERRCODE = 'OB001', DETAIL = det,
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head(channel).';
        END;
    END IF;
END $$;
COMMENT ON FUNCTION outbox._replay_channel_log(text, bigint, integer, bigint) IS
    'internal: outbox.replay_channel() in log mode, from the frozen history and the log';

-- outbox.event() in log mode: a published 1.2 event from the frozen history, else the log's
-- (outbox._log_event(): NULL pos, seq and published_at while pending, as 1.2 says of a pending
-- event; 1.2's no_data_found hints; 42501 for a channel the caller may not read).
CREATE FUNCTION outbox._event_log(event_id bigint)
    RETURNS TABLE (id bigint, channel text, key text, type text, payload jsonb, created_at timestamptz,
                   pos bigint, seq bigint, published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE h outbox.history_frozen;
BEGIN
    SELECT * INTO h FROM outbox.history_frozen x WHERE x.id = event_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM outbox._log_event(event_id);
        RETURN;
    END IF;
    PERFORM outbox._check_read(ARRAY[h.channel]); -- channel rights (95_channels.sql)
    RETURN QUERY SELECT h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.pos, h.seq, h.published_at;
END $$;
COMMENT ON FUNCTION outbox._event_log(bigint) IS 'internal: outbox.event() in log mode, from the frozen history and the log';

-- The latest published position (0 before the first event).
CREATE OR REPLACE FUNCTION outbox.head() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    -- greatest(): after a restore the history may be ahead of a state row restored later
    -- log mode (issue #15): the log's head, base_pos before its first batch
    RETURN (SELECT greatest(max(s.last_pos), (SELECT coalesce(max(h.pos), 0) FROM outbox.history_frozen h),
                            CASE WHEN outbox._log_active() THEN outbox._log_head() END)
              FROM outbox.state s);
COMMENT ON FUNCTION outbox.head() IS
    'latest published position: a new consumer that starts "from now" replays after it';

-- The latest seq published on a channel (0 if the channel never had an event).
CREATE OR REPLACE FUNCTION outbox.head(channel text) RETURNS bigint
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF channel IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass a channel name; outbox.head() without an argument gives the last position of every channel.';
    END IF;
    PERFORM outbox._require_channel(channel, 'channel name');
    PERFORM outbox._check_read(ARRAY[channel]); -- channel rights (95_channels.sql)
    IF outbox._log_active() THEN -- log mode (issue #15): log_channels continue 1.2's seqs
        RETURN greatest(coalesce((SELECT c.last_seq FROM outbox.channels c WHERE c.channel = head.channel), 0),
                        outbox._log_head(channel));
    END IF;
    RETURN coalesce((SELECT c.last_seq FROM outbox.channels c WHERE c.channel = head.channel), 0);
END $$;
COMMENT ON FUNCTION outbox.head(text) IS
    'latest seq published on a channel (0 if none yet); call it in the same statement as outbox.head() for a consistent pair';

CREATE OR REPLACE FUNCTION outbox.replay(after_pos bigint, channels text[] DEFAULT NULL, max_events integer DEFAULT 1000,
                              after_epoch bigint DEFAULT NULL)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head_pos bigint;
    purged bigint;
    expect bigint;
    ch text;
    r record;
    all_channels boolean; -- channel rights: the caller may read every channel asked for
BEGIN
    IF after_pos IS NULL THEN
        RAISE EXCEPTION 'after_pos cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the last position the consumer has processed, 0 for the beginning, or outbox.head() to start from now.';
    ELSIF after_pos < 0 THEN
        RAISE EXCEPTION 'after_pos must be 0 or more, not %', after_pos USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Positions start at 1; pass 0 to replay from the beginning.';
    END IF;
    IF channels IS NOT NULL THEN
        IF cardinality(channels) = 0 THEN
            RAISE EXCEPTION 'channels cannot be an empty array' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Pass NULL for every channel.';
        END IF;
        FOREACH ch IN ARRAY channels LOOP
            IF ch IS NULL THEN
                RAISE EXCEPTION 'channel name in channels cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Leave NULL elements out of channels; channels => NULL replays every channel.';
            END IF;
            PERFORM outbox._require_channel(ch, 'channel name in channels');
        END LOOP;
    END IF;
    PERFORM outbox._check_max_events(max_events);
    -- channel rights (95_channels.sql): 42501 for a channel in channels the caller may not read;
    -- false: no filter, and the caller may read only some channels: only theirs are returned
    all_channels := outbox._check_read(channels);
    IF outbox._log_active() THEN -- log mode (issue #15): the frozen history, then the log
        RETURN QUERY SELECT * FROM outbox._replay_log(after_pos, channels, max_events, after_epoch, all_channels);
        RETURN;
    END IF;

    -- before the snapshot of the next statement: no TRUNCATE of a segment can slip in between
    LOCK TABLE outbox.history_frozen IN ACCESS SHARE MODE;
    -- [consumers] purged_pos from the latest snapshot: OB001 in every isolation level
    SELECT greatest(s.last_pos, (SELECT coalesce(max(h.pos), 0) FROM outbox.history_frozen h)),
           greatest(s.purged_pos, outbox._purged_pos())
      INTO head_pos, purged FROM outbox.state s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the row of outbox.state is missing' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Recreate it with INSERT INTO outbox.state DEFAULT VALUES, or reinstall the extension.';
    END IF;
    -- [epochs] OB003 first: a diverged consumer is told so, even while it is still ahead of the head
    PERFORM outbox._check_epoch(after_pos, after_epoch);
    PERFORM outbox._check_replay_range(after_pos, purged, head_pos);

    expect := after_pos + 1;
    FOR r IN
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at,
               outbox._epoch_of(h.pos) AS epoch,
               outbox._envelope(h.pos, h.seq, h.id, h.key, h.type, h.payload, outbox._epoch_of(h.pos)) AS envelope
          FROM outbox.history_frozen h
         WHERE h.pos > after_pos AND (replay.channels IS NULL OR h.channel = ANY (replay.channels))
           AND (all_channels OR outbox._may_read(h.channel))
         ORDER BY h.pos
         LIMIT max_events
    LOOP
        IF channels IS NULL AND all_channels AND r.pos <> expect THEN
            RAISE EXCEPTION 'position % is missing from the history', expect
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('The next position in outbox.history is %s.', r.pos),
                      HINT = 'Retry the replay; if this persists, the history was modified by hand.';
        END IF;
        expect := r.pos + 1;
        pos := r.pos; seq := r.seq; id := r.id; channel := r.channel; key := r.key; type := r.type;
        payload := r.payload; created_at := r.created_at; published_at := r.published_at;
        epoch := r.epoch; envelope := r.envelope; -- [consumers] [epochs]
        RETURN NEXT;
    END LOOP;
    -- an unfiltered replay that stops short of the head must have stopped at max_events
    IF channels IS NULL AND all_channels AND expect <= head_pos AND expect - after_pos - 1 < max_events THEN
        RAISE EXCEPTION 'position % is missing from the history', expect
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('The latest published position is %s.', head_pos),
                  HINT = 'Retry the replay; if this persists, the history was modified by hand.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox.replay(bigint, text[], integer, bigint) IS
    'published events after a position, in position order, optionally of some channels only; OB001 if they have been removed';

-- (PL/pgSQL cannot name an argument like an output column, hence the SQL wrapper below)
CREATE OR REPLACE FUNCTION outbox._replay_channel(ch text, after_seq bigint, max_events integer, after_epoch bigint)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    last bigint;
    first_kept bigint;
    expect bigint;
    r record;
BEGIN
    IF ch IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the name of the channel to replay; outbox.replay() replays every channel by position.';
    END IF;
    PERFORM outbox._require_channel(ch, 'channel name');
    PERFORM outbox._check_read(ARRAY[ch]); -- channel rights (95_channels.sql)
    IF after_seq IS NULL THEN
        RAISE EXCEPTION 'after_seq cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the last seq the consumer has processed on this channel, 0 for the beginning, or outbox.head(channel) to start from now.';
    ELSIF after_seq < 0 THEN
        RAISE EXCEPTION 'after_seq must be 0 or more, not %', after_seq USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Seqs start at 1 on every channel; pass 0 to replay from the beginning.';
    END IF;
    PERFORM outbox._check_max_events(max_events);
    IF outbox._log_active() THEN -- log mode (issue #15): the frozen history, then the log
        RETURN QUERY SELECT * FROM outbox._replay_channel_log(ch, after_seq, max_events, after_epoch);
        RETURN;
    END IF;

    LOCK TABLE outbox.history_frozen IN ACCESS SHARE MODE;
    IF after_epoch IS NOT NULL THEN -- [epochs] OB003: the position of the consumer's last event decides
        PERFORM outbox._check_epoch(coalesce((SELECT h.pos FROM outbox.history_frozen h WHERE h.channel = ch AND h.seq = after_seq),
                                             (SELECT h.pos FROM outbox.history_frozen h WHERE h.channel = ch AND h.seq <= after_seq ORDER BY h.seq DESC LIMIT 1),
                                             0), after_epoch);
    END IF;
    SELECT coalesce((SELECT c.last_seq FROM outbox.channels c WHERE c.channel = ch), 0),
           (SELECT min(h.seq) FROM outbox.history_frozen h WHERE h.channel = ch)
      INTO last, first_kept;
    PERFORM outbox._check_channel_ahead(ch, after_seq, last);
    IF after_seq < last AND (first_kept IS NULL OR first_kept > after_seq + 1) THEN
        PERFORM outbox._raise_channel_removed(ch, after_seq, coalesce(first_kept - 1, last));
    END IF;

    expect := after_seq + 1;
    FOR r IN
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at,
               outbox._epoch_of(h.pos) AS epoch,
               outbox._envelope(h.pos, h.seq, h.id, h.key, h.type, h.payload, outbox._epoch_of(h.pos)) AS envelope
          FROM outbox.history_frozen h
         WHERE h.channel = ch AND h.seq > after_seq
         ORDER BY h.seq
         LIMIT max_events
    LOOP
        IF r.seq <> expect THEN
            RAISE EXCEPTION 'seq % of channel "%" is missing from the history', expect, ch
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('The next seq in outbox.history is %s.', r.seq),
                      HINT = 'Retry the replay; if this persists, the history was modified by hand.';
        END IF;
        expect := r.seq + 1;
        pos := r.pos; seq := r.seq; id := r.id; channel := r.channel; key := r.key; type := r.type;
        payload := r.payload; created_at := r.created_at; published_at := r.published_at;
        epoch := r.epoch; envelope := r.envelope; -- [consumers] [epochs]
        RETURN NEXT;
    END LOOP;
    IF expect <= last AND expect - after_seq - 1 < max_events THEN
        RAISE EXCEPTION 'seq % of channel "%" is missing from the history', expect, ch
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('The latest seq of the channel is %s.', last),
                  HINT = 'Retry the replay; if this persists, the history was modified by hand.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox._replay_channel(text, bigint, integer, bigint) IS 'internal: the body of outbox.replay_channel()';

CREATE OR REPLACE FUNCTION outbox.replay_channel(channel text, after_seq bigint, max_events integer DEFAULT 1000,
                                      after_epoch bigint DEFAULT NULL)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM outbox._replay_channel($1, $2, $3, $4) $$;
COMMENT ON FUNCTION outbox.replay_channel(text, bigint, integer, bigint) IS
    'published events of one channel after a seq, in seq order; OB001 if they have been removed';

CREATE OR REPLACE FUNCTION outbox.event(event_id bigint)
    RETURNS TABLE (id bigint, channel text, key text, type text, payload jsonb, created_at timestamptz,
                   pos bigint, seq bigint, published_at timestamptz)
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF; IF outbox._log_active() THEN RETURN QUERY SELECT * FROM outbox._event_log(event_id); RETURN; END IF; -- log mode (#15); one line: 1.2's line numbers
    RETURN QUERY
        SELECT h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.pos, h.seq, h.published_at
          FROM outbox.history_frozen h WHERE h.id = event_id
        UNION ALL
        SELECT p.id, p.channel, p.key, p.type, p.payload, p.created_at, NULL::bigint, NULL::bigint,
               NULL::timestamptz
          FROM outbox.pending p WHERE p.id = event_id;
    IF NOT FOUND THEN
        PERFORM outbox._raise_no_event(event_id); -- [consumers] a dead letter, an id never handed out, or removed
    END IF;
    -- channel rights (95_channels.sql): 42501 (and no row) if the caller may not read its channel
    PERFORM outbox._check_read(ARRAY(SELECT h.channel FROM outbox.history_frozen h WHERE h.id = event_id
                                     UNION SELECT p.channel FROM outbox.pending p WHERE p.id = event_id));
END $$;
COMMENT ON FUNCTION outbox.event(bigint) IS
    'one stored event, pending or published (for consumers of a "truncated" envelope)';
