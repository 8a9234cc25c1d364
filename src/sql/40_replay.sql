
-- ---------------------------------------------------------------------------------------
-- Replay: consumers that were away read what they missed, by position or by channel seq
-- ---------------------------------------------------------------------------------------
--
-- Why a consumer can trust a position cursor: the drain stamps positions while it holds the
-- row lock of outbox.state, so positions are handed out in the commit order of the drains,
-- and a drain is visible (ProcArrayEndTransaction) before it releases that lock. A snapshot
-- that sees position N therefore sees every position below N: "pos > last seen" never skips
-- a late-committing event (producers' own commit order does not matter; their events get a
-- position only when drained).
--
-- Retention horizon: outbox.state.purged_pos is the highest position removed from the
-- history. Replaying after a position below it would silently skip the removed events, so it
-- is an error with its own SQLSTATE:
--   OB001  the replay point is older than the retention horizon (events are gone)
--   OB002  the replay point is ahead of the outbox (the outbox was reset or restored from an
--          older backup: positions or seqs were handed out again)
--   OB003  [epochs] the consumer's position (after_epoch, after_pos) was not preserved: an epoch
--          after after_epoch began at or before after_pos (22_epochs.sql)
-- Both say "resynchronise from the source of truth, then continue from outbox.head()".
--
-- The per-channel horizon (replay_channel) is derived from the history itself rather than
-- from purged_pos: per channel, seqs are gap-free and grow with pos, and retention removes
-- a prefix of positions, so the history holds a contiguous suffix [min_seq, last_seq] of
-- every channel. Events after after_seq are all present exactly when min_seq <= after_seq + 1
-- (or, with no row of the channel left, when after_seq = last_seq). A horizon from
-- purged_pos alone would be too coarse: it cannot say which seq the last removed event of a
-- channel had.
--
-- Replay takes ACCESS SHARE on the history (segments included) before it takes its snapshot:
-- TRUNCATE is not MVCC-safe, and a snapshot older than a concurrent TRUNCATE of a segment
-- would see that segment empty. Retention must update purged_pos in the transaction that
-- truncates; then a replay either runs before the TRUNCATE (which waits) or sees the new
-- purged_pos. The unfiltered replay also checks that the positions it returns are contiguous.

-- Channel names are checked by outbox._require_channel() (10_notify.sql: the one rule of
-- src/limits.hpp, with its one error); NULL is refused here first, as it is the caller's to name.

CREATE FUNCTION outbox._check_max_events(max_events integer) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF max_events IS NULL THEN
        RAISE EXCEPTION 'max_events cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    ELSIF max_events < 1 THEN
        RAISE EXCEPTION 'max_events must be at least 1, not %', max_events
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Replay reads in batches: call it again after the last position it returned.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox._check_max_events(integer) IS 'internal: raise invalid_parameter_value for a bad batch size';

-- [consumers] The NOTIFY envelope of an event as jsonb, complete (never truncated): the same
-- object build_event_envelope() (src/envelope.cpp) sends, key and type left out when NULL,
-- payload always there (JSON null when NULL). Replay, wait() and next() return it as their last
-- column, so a consumer handles one shape whether an event came by NOTIFY or by a query.
-- (A SQL-standard body: names are resolved when it is created, no search_path at run time.)
CREATE FUNCTION outbox._envelope(pos bigint, seq bigint, id bigint, key text, type text, payload jsonb, epoch bigint)
    RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN pg_catalog.jsonb_build_object('id', id, 'pos', pos, 'epoch', epoch, 'seq', seq, 'payload', payload) -- [epochs] epoch
           OPERATOR(pg_catalog.||) CASE WHEN key IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('key', key) END
           OPERATOR(pg_catalog.||) CASE WHEN type IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('type', type) END;
COMMENT ON FUNCTION outbox._envelope(bigint, bigint, bigint, text, text, jsonb, bigint) IS
    'internal: the NOTIFY envelope of an event, complete, as jsonb';

-- [consumers] outbox.state.purged_pos as the latest committed state shows it, whatever the
-- transaction's snapshot: a REPEATABLE READ snapshot taken before a retention TRUNCATE sees the
-- emptied segment (TRUNCATE is not MVCC-safe) but the old purged_pos; read after LOCK TABLE
-- outbox.history, this value covers every TRUNCATE that can have hidden rows from the snapshot.
CREATE FUNCTION outbox._purged_pos() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_purged_pos';
COMMENT ON FUNCTION outbox._purged_pos() IS 'internal: the retention horizon, read with the latest snapshot';

-- The latest published position (0 before the first event).
CREATE FUNCTION outbox.head() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    -- greatest(): after a restore the history may be ahead of a state row restored later
    RETURN (SELECT greatest(max(s.last_pos), (SELECT coalesce(max(h.pos), 0) FROM outbox.history h))
              FROM outbox.state s);
COMMENT ON FUNCTION outbox.head() IS
    'latest published position: a new consumer that starts "from now" replays after it';

-- The latest seq published on a channel (0 if the channel never had an event).
CREATE FUNCTION outbox.head(channel text) RETURNS bigint
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF channel IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass a channel name; outbox.head() without an argument gives the last position of every channel.';
    END IF;
    PERFORM outbox._require_channel(channel, 'channel name');
    PERFORM outbox._check_read(ARRAY[channel]); -- channel rights (95_channels.sql)
    RETURN coalesce((SELECT c.last_seq FROM outbox.channels c WHERE c.channel = head.channel), 0);
END $$;
COMMENT ON FUNCTION outbox.head(text) IS
    'latest seq published on a channel (0 if none yet); call it in the same statement as outbox.head() for a consistent pair';

CREATE FUNCTION outbox.replay(after_pos bigint, channels text[] DEFAULT NULL, max_events integer DEFAULT 1000,
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

    -- before the snapshot of the next statement: no TRUNCATE of a segment can slip in between
    LOCK TABLE outbox.history IN ACCESS SHARE MODE;
    -- [consumers] purged_pos from the latest snapshot: OB001 in every isolation level
    SELECT greatest(s.last_pos, (SELECT coalesce(max(h.pos), 0) FROM outbox.history h)),
           greatest(s.purged_pos, outbox._purged_pos())
      INTO head_pos, purged FROM outbox.state s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the row of outbox.state is missing' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Recreate it with INSERT INTO outbox.state DEFAULT VALUES, or reinstall the extension.';
    END IF;
    -- [epochs] OB003 first: a diverged consumer is told so, even while it is still ahead of the head
    PERFORM outbox._check_epoch(after_pos, after_epoch);
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

    expect := after_pos + 1;
    FOR r IN
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at,
               outbox._epoch_of(h.pos) AS epoch,
               outbox._envelope(h.pos, h.seq, h.id, h.key, h.type, h.payload, outbox._epoch_of(h.pos)) AS envelope
          FROM outbox.history h
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
CREATE FUNCTION outbox._replay_channel(ch text, after_seq bigint, max_events integer, after_epoch bigint)
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

    LOCK TABLE outbox.history IN ACCESS SHARE MODE;
    IF after_epoch IS NOT NULL THEN -- [epochs] OB003: the position of the consumer's last event decides
        PERFORM outbox._check_epoch(coalesce((SELECT h.pos FROM outbox.history h WHERE h.channel = ch AND h.seq = after_seq),
                                             (SELECT h.pos FROM outbox.history h WHERE h.channel = ch AND h.seq <= after_seq ORDER BY h.seq DESC LIMIT 1),
                                             0), after_epoch);
    END IF;
    SELECT coalesce((SELECT c.last_seq FROM outbox.channels c WHERE c.channel = ch), 0),
           (SELECT min(h.seq) FROM outbox.history h WHERE h.channel = ch)
      INTO last, first_kept;
    IF after_seq > last THEN
        RAISE EXCEPTION 'cannot replay channel "%" after seq %: its latest seq is %', ch, after_seq, last
            USING ERRCODE = 'OB002',
                  DETAIL = 'The outbox was reset or restored from an older backup, so seqs are being handed out again.',
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head(channel).';
    END IF;
    IF after_seq < last AND (first_kept IS NULL OR first_kept > after_seq + 1) THEN
        RAISE EXCEPTION 'cannot replay channel "%" after seq %: the events up to seq % have been removed',
                        ch, after_seq, coalesce(first_kept - 1, last)
            USING ERRCODE = 'OB001',
                  DETAIL = format('Events are kept for pg_outbox.retention; the replay would miss seqs %s to %s.',
                                  after_seq + 1, coalesce(first_kept - 1, last)),
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head(channel).';
    END IF;

    expect := after_seq + 1;
    FOR r IN
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at,
               outbox._epoch_of(h.pos) AS epoch,
               outbox._envelope(h.pos, h.seq, h.id, h.key, h.type, h.payload, outbox._epoch_of(h.pos)) AS envelope
          FROM outbox.history h
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

CREATE FUNCTION outbox.replay_channel(channel text, after_seq bigint, max_events integer DEFAULT 1000,
                                      after_epoch bigint DEFAULT NULL)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM outbox._replay_channel($1, $2, $3, $4) $$;
COMMENT ON FUNCTION outbox.replay_channel(text, bigint, integer, bigint) IS
    'published events of one channel after a seq, in seq order; OB001 if they have been removed';
