
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #17 (the layout): the channel rule has one definition (src/limits.hpp) and one
-- error, raised by outbox._require_channel(); outbox.set_target() uses it instead of its own
-- wording (its CHECK, octet_length() BETWEEN 1 AND @MAX_CHANNEL_BYTES@, is unchanged).
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION outbox._require_channel(channel text, what text) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'outbox_require_channel';
COMMENT ON FUNCTION outbox._require_channel(text, text) IS
    'internal: raise invalid_parameter_value when channel is not 1 to @MAX_CHANNEL_BYTES@ bytes long (what names it in the message)';
REVOKE ALL ON FUNCTION outbox._require_channel(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION outbox.set_target(channel text, target text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    t text := lower(btrim(set_target.target));
BEGIN
    PERFORM outbox._check_writable('outbox.set_target()');
    IF set_target.channel IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a channel name, or ''*'' to set the default target of the channels without one.';
    END IF;
    PERFORM outbox._require_channel(set_target.channel, 'channel name');
    IF set_target.target IS NULL THEN
        RAISE EXCEPTION 'target cannot be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use outbox.reset_target(channel) to make a channel follow the default target again.';
    END IF;
    IF t NOT IN ('notify', 'wal', 'both') THEN
        RAISE EXCEPTION 'invalid target "%"', set_target.target
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The target is ''notify'' (LISTEN/NOTIFY), ''wal'' (a logical decoding message with prefix '
                         '''pg_outbox'') or ''both''.';
    END IF;
    IF t <> 'notify' AND current_setting('wal_level') <> 'logical' THEN
        RAISE WARNING 'wal_level is "%": the events of channel "%" are written to the WAL but no logical decoding slot can read them',
                      current_setting('wal_level'), set_target.channel
            USING HINT = 'Set wal_level = logical (this needs a restart) before consumers create their replication slots.';
    END IF;
    INSERT INTO outbox.channel_targets AS ct (channel, target) VALUES (set_target.channel, t)
        ON CONFLICT ON CONSTRAINT channel_targets_pkey DO UPDATE SET target = excluded.target;
END $$;
ALTER FUNCTION outbox.set_target(text, text) SECURITY DEFINER;

-- One canonical payload text in both trigger modes (compact, jsonb's key order): the text the
-- drain sends for a stored payload, callable for tests and checks.
CREATE FUNCTION outbox._payload_text(payload jsonb) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'outbox_payload_text';
COMMENT ON FUNCTION outbox._payload_text(jsonb) IS
    'internal: the text pg_outbox sends for a stored payload (compact, in jsonb''s key order): what notify mode sends for the same row';
REVOKE ALL ON FUNCTION outbox._payload_text(jsonb) FROM PUBLIC;

-- The boundary self-test moved out of the module into a test module (test/selftest).
DROP FUNCTION outbox._boundary_selftest(text);

-- The channel rule in the readers too: outbox.head(channel), outbox.replay() and
-- outbox.replay_channel() check channel names with outbox._require_channel() (after their own
-- NULL check); outbox._check_channel(), the rule's PL/pgSQL copy, is dropped. CREATE OR REPLACE
-- resets SECURITY DEFINER: it is set again as 90_privileges.sql sets it.
CREATE OR REPLACE FUNCTION outbox.head(channel text) RETURNS bigint
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
ALTER FUNCTION outbox.replay(bigint, text[], integer, bigint) SECURITY DEFINER;
ALTER FUNCTION outbox.head(text) SECURITY DEFINER;
DROP FUNCTION outbox._check_channel(text, text);

-- outbox.reset_target() refuses a name no channel can have (22023, the rule's one message), as
-- set_target() does, instead of answering false.
CREATE OR REPLACE FUNCTION outbox.reset_target(channel text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM outbox._check_writable('outbox.reset_target()');
    IF reset_target.channel IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a channel name, or ''*'' to reset the default target to ''notify''.';
    END IF;
    PERFORM outbox._require_channel(reset_target.channel, 'channel name');
    DELETE FROM outbox.channel_targets ct WHERE ct.channel = reset_target.channel;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION outbox.reset_target(text) IS
    'drop the target of a channel, which then follows the ''*'' default (''*'': the default becomes notify); true if there was one';
ALTER FUNCTION outbox.reset_target(text) SECURITY DEFINER;
