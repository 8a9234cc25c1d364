
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #15 (the storage), part 3: the readers of the write-once log that the switch still
-- needs beside outbox._log_replay() and outbox._log_head() (60_log.sql): replay by channel seq,
-- one event by id, a channel's head, the events not published yet. Each has 1.2's semantics and
-- errors (40_replay.sql, 20_outbox.sql), read from the batches: outbox.replay_channel(),
-- outbox.event(), outbox.head(channel) and the pending table become these when the switch moves
-- the public readers onto the log. Internal until then: no role is granted them.
--
-- The rules of outbox._log_replay() hold for each of them. TRUNCATE is not MVCC-safe: a snapshot
-- older than a rotation's TRUNCATE sees the segment and its batches empty. So each takes ACCESS
-- SHARE on outbox.log and outbox.batches (LOCK TABLE covers every segment) before its first
-- snapshot (VOLATILE: a STABLE function's statements would use the caller's snapshot, taken
-- before the lock), and reads purged_pos with the latest snapshot too. In REPEATABLE READ the
-- transaction's snapshot can still predate a rotation: replay_channel then answers OB001 for a
-- seq the rotation removed (never a short answer), and head(channel) and pending, which would
-- answer from half a log (a truncated segment's batches gone, the log_channels rows the rotation
-- wrote for them not yet visible), raise serialization_failure.
-- ---------------------------------------------------------------------------------------

-- serialization_failure when a rotation committed after the transaction's snapshot (the snapshot
-- sees its segment emptied but not the rest of what it did); what names the caller in the error.
CREATE FUNCTION outbox._log_check_rotation(what text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE seen bigint := (SELECT s.purged_pos FROM outbox.log_state s); latest bigint := outbox._log_purged_pos();
BEGIN
    IF seen < latest THEN
        RAISE EXCEPTION 'could not read % from the log: it was rotated after this transaction''s snapshot', what
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('The snapshot sees the events up to position %s removed; they are removed up to position %s.',
                                  seen, latest),
                  HINT = 'Retry in a new transaction; in READ COMMITTED every call reads after the rotation.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox._log_check_rotation(text) IS
    'internal: serialization_failure if the log was rotated after the transaction''s snapshot';

-- Replay of one channel by seq. The channel's batches are found through the GIN index on
-- batches_N.channels (the narrow batches; the wide ones through their first_pos btree); each one's first_seqs and counts give its range of the channel's seqs, so
-- only the batches with seqs above after_seq are recomputed, and only as far as max_events.
-- Per channel, seqs grow with pos and are gap-free as handed out; retention removes what it
-- truncates, every position up to purged_pos or some of them (a producer that wrote into an old
-- segment after a rotation: its events have positions among the newer segment's, and leave with
-- the old one). So the kept events of a channel are a suffix, every event above purged_pos, and
-- before it runs with holes. The seq ranges of the batches must join up from after_seq + 1 to
-- the channel's last seq; where they do not, the events between are gone:
--   OB001 when they can be retention's (positions at or below purged_pos: a hole before the
--         first kept batch, or after a batch that ends below purged_pos), as 1.2's replay_channel
--         when the successor of after_seq is no longer kept;
--   serialization_failure (the log was modified by hand) when they cannot.
-- OB002 (after_seq above the channel's last seq) as 1.2, but only from a snapshot that no
-- rotation postdates (one that does may not see the last seq a rotation moved into log_channels).
-- Channel rights as 1.2: 42501 for a channel the caller may not read.
CREATE FUNCTION outbox._log_replay_channel_rows(ch text, after_seq bigint, max_events integer)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, epoch bigint, published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record; remaining integer := max_events; got integer; want bigint; purged bigint; last bigint;
    stale boolean; expect bigint; prev_end bigint := 0; missing_to bigint;
BEGIN
    IF ch IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the name of the channel to replay; outbox._log_replay() replays every channel by position.';
    END IF;
    PERFORM outbox._require_channel(ch, 'channel name');
    PERFORM outbox._check_read(ARRAY[ch]); -- channel rights (95_channels.sql)
    IF after_seq IS NULL THEN
        RAISE EXCEPTION 'after_seq cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the last seq the consumer has processed on this channel, 0 for the beginning, or outbox._log_head(channel) to start from now.';
    ELSIF after_seq < 0 THEN
        RAISE EXCEPTION 'after_seq must be 0 or more, not %', after_seq USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Seqs start at 1 on every channel; pass 0 to replay from the beginning.';
    END IF;
    PERFORM outbox._check_max_events(max_events);
    -- before the snapshot of the next statement: no TRUNCATE of a segment can slip in between
    LOCK TABLE outbox.log, outbox.batches IN ACCESS SHARE MODE;
    purged := outbox._log_purged_pos();
    stale := (SELECT s.purged_pos FROM outbox.log_state s) < purged;
    last := outbox._log_last_seq(ch);
    IF after_seq > last AND NOT stale THEN
        RAISE EXCEPTION 'cannot replay channel "%" after seq %: its latest seq is %', ch, after_seq, last
            USING ERRCODE = 'OB002',
                  DETAIL = 'The log was reset or restored from an older backup, so seqs are being handed out again.',
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox._log_head(channel).';
    END IF;
    expect := after_seq + 1;
    FOR b IN
        SELECT x AS bb, x.first_pos, x.n, x.seg, x.first_seqs[i.i] AS fs, x.counts[i.i] AS cnt
          FROM outbox.batches x, LATERAL (SELECT array_position(x.channels, ch) AS i) i
         -- both predicates of the batches' channel indexes (60_log.sql): the GIN index of the
         -- narrow batches, the first_pos btree of the wide ones
         WHERE ((cardinality(x.channels) <= 64 AND x.channels @> ARRAY[ch])
                OR (cardinality(x.channels) > 64 AND x.channels @> ARRAY[ch]))
           AND x.first_seqs[i.i] + x.counts[i.i] - 1 > after_seq
         ORDER BY x.first_pos
    LOOP
        IF b.fs > expect THEN -- seqs expect .. b.fs - 1 are gone
            missing_to := b.fs - 1;
            EXIT;
        END IF;
        want := least(remaining, b.fs + b.cnt - expect);
        RETURN QUERY
            SELECT e.pos, e.seq, e.id, e.channel, e.key, e.type, e.payload, e.created_at, e.epoch, e.published_at
              FROM outbox._log_batch_events(b.bb) e
             WHERE e.channel = ch AND e.seq >= expect ORDER BY e.seq LIMIT remaining;
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got <> want THEN
            RAISE EXCEPTION 'the batch at position % is missing events', b.first_pos
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('It has %s events of channel "%s" after seq %s; %s were found in outbox.log_%s.',
                                      b.fs + b.cnt - expect, ch, expect - 1, got, b.seg),
                      HINT = 'Retry the replay; if this persists, the log was modified by hand.';
        END IF;
        remaining := remaining - got;
        expect := b.fs + b.cnt;
        prev_end := b.first_pos + b.n - 1;
        IF remaining <= 0 THEN
            RETURN;
        END IF;
    END LOOP;
    -- the batches ran out before the channel's last seq, or left a hole
    missing_to := coalesce(missing_to, CASE WHEN expect <= last THEN last END);
    IF missing_to IS NOT NULL THEN
        IF prev_end < purged THEN
            RAISE EXCEPTION 'cannot replay channel "%" after seq %: the events up to seq % have been removed',
                            ch, after_seq, missing_to
                USING ERRCODE = 'OB001',
                      DETAIL = format('Events are kept for pg_outbox.retention; the replay would miss seqs %s to %s.',
                                      expect, missing_to),
                      HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox._log_head(channel).';
        END IF;
        RAISE EXCEPTION 'seq % of channel "%" is missing from the log', expect, ch
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('Its batches after position %s hold no seq from %s to %s.', prev_end, expect, missing_to),
                  HINT = 'Retry the replay; if this persists, the log was modified by hand.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox._log_replay_channel_rows(text, bigint, integer) IS 'internal: the body of outbox._log_replay_channel()';

-- (PL/pgSQL cannot name an argument like an output column, hence the SQL wrapper, as 1.2's)
CREATE FUNCTION outbox._log_replay_channel(channel text, after_seq bigint, max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, epoch bigint, published_at timestamptz)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM outbox._log_replay_channel_rows($1, $2, $3) $$;
COMMENT ON FUNCTION outbox._log_replay_channel(text, bigint, integer) IS
    'internal (issue #15): the events of one channel after a seq, recomputed from its batches; OB001 if they have been removed';

-- outbox.event()'s no_data_found, in both storages: the hint says which it is, a dead letter, an
-- id never handed out, or an event removed (or rolled back).
CREATE FUNCTION outbox._raise_no_event(event_id bigint) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE last_id bigint;
BEGIN
    SELECT CASE WHEN q.is_called THEN q.last_value ELSE 0 END INTO last_id FROM outbox.pending_id_seq q;
    IF EXISTS (SELECT FROM outbox.dead_letter d WHERE d.id = event_id) THEN
        RAISE EXCEPTION 'event % does not exist', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = format('It could not be published and is a dead letter: SELECT * FROM outbox.dead_letters WHERE id = %s.',
                                event_id);
    ELSIF event_id < 1 OR event_id > last_id THEN
        RAISE EXCEPTION 'event % does not exist', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = format('No event ever had this id: the ids handed out so far are 1 to %s.', last_id);
    END IF;
    RAISE EXCEPTION 'event % does not exist', event_id
        USING ERRCODE = 'no_data_found',
              HINT = 'Published events are kept for pg_outbox.retention; this one has been removed, or its transaction rolled back.';
END $$;
COMMENT ON FUNCTION outbox._raise_no_event(bigint) IS 'internal: outbox.event()''s no_data_found with the hint that says why';

-- One event by id, as 1.2's outbox.event(): its row with pos, seq and published_at, NULL in them
-- while it is not published; no_data_found (with 1.2's hints) for an id that is not in the log.
-- The row: the BRIN index on each log_N.id. Its batch: the window it was published in is that
-- of the first batch whose hi sees its xid (hi grows with first_pos, so "hi sees the xid" is
-- false and then true along the batches: a binary search over first_pos, each step one probe of
-- the batches' primary keys); among that window's batches (consecutive, the next window's lo
-- sees the xid), the one of its segment whose key range holds (xid, id). None: not published yet.
-- Its pos and seq: that batch recomputed (the cost of one lookup is that of its batch).
-- The lookup by id runs with enable_seqscan off: the log's tables are never analyzed (autovacuum
-- is off on them), and without statistics the planner scans a whole segment for one id rather
-- than read its BRIN (1,273 buffers against 30 for an id among 200,000, once the BRIN is
-- summarized: see doc/storage.md on summarizing it), and jit off: the cost of a disabled seq scan
-- (of the always empty parent) is above jit_above_cost, and compiling took 130 ms a lookup. Only
-- that statement: the batch's recomputation would be compiled too. (A SET LOCAL inside a
-- function that has a SET clause ends with the function.)
CREATE FUNCTION outbox._log_event(event_id bigint)
    RETURNS TABLE (id bigint, channel text, key text, type text, payload jsonb, created_at timestamptz,
                   pos bigint, seq bigint, published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record; b outbox.batches; e_seg integer; lo_p bigint; hi_p bigint; mid bigint;
    seqscan text := current_setting('enable_seqscan'); jit text := current_setting('jit'); found_row boolean;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE outbox.log, outbox.batches IN ACCESS SHARE MODE;
    PERFORM set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true);
    -- the event's newest row: a retry copies the failed row (same id, a later xid), and only the
    -- last copy can be published (68_log_failures.sql); a dead letter or a discarded event is none
    SELECT r.*, c.relname INTO e
      FROM outbox.log r JOIN pg_class c ON c.oid = r.tableoid WHERE r.id = event_id ORDER BY r.xid DESC LIMIT 1;
    found_row := FOUND AND NOT EXISTS (SELECT FROM outbox.dead_letter d WHERE d.id = event_id)
                       AND NOT EXISTS (SELECT FROM outbox.discarded d WHERE d.id = event_id);
    PERFORM set_config('enable_seqscan', seqscan, true), set_config('jit', jit, true);
    IF NOT found_row THEN
        PERFORM outbox._raise_no_event(event_id);
    END IF;
    -- channel rights (95_channels.sql): 42501 (and no row) if the caller may not read its channel
    PERFORM outbox._check_read(ARRAY[e.channel]);
    e_seg := substr(e.relname, 5)::integer; -- log_N
    SELECT min(x.first_pos), max(x.first_pos) INTO lo_p, hi_p FROM outbox.batches x;
    -- the smallest m in [lo_p, hi_p + 1] such that the first batch at or after m has a hi that
    -- sees the xid (m = hi_p + 1: none has); that batch is the first one whose hi sees it
    hi_p := hi_p + 1;
    WHILE lo_p < hi_p LOOP
        mid := lo_p + (hi_p - lo_p) / 2;
        SELECT x.* INTO b FROM outbox.batches x WHERE x.first_pos >= mid ORDER BY x.first_pos LIMIT 1;
        IF pg_visible_in_snapshot(e.xid, b.hi_snap) THEN
            hi_p := mid;
        ELSE
            lo_p := b.first_pos + 1; -- every m up to b's first_pos finds b
        END IF;
    END LOOP;
    b := NULL;
    IF lo_p IS NOT NULL THEN
        SELECT x.* INTO b FROM outbox.batches x
         WHERE x.first_pos >= lo_p AND x.seg = e_seg
           AND (e.xid, e.id) > (x.after_xid, x.after_id) AND (e.xid, e.id) <= (x.upto_xid, x.upto_id)
           AND e.id <> ALL (x.skipped)
           AND NOT pg_visible_in_snapshot(e.xid, x.lo_snap)
           -- the window's batches, not a later one's
           AND x.first_pos < coalesce((SELECT y.first_pos FROM outbox.batches y
                                        WHERE y.first_pos >= lo_p AND pg_visible_in_snapshot(e.xid, y.lo_snap)
                                        ORDER BY y.first_pos LIMIT 1), 9223372036854775807)
         ORDER BY x.first_pos LIMIT 1;
    END IF;
    IF b.first_pos IS NULL THEN
        RETURN QUERY SELECT e.id, e.channel, e.key, e.type, e.payload, e.created_at, NULL::bigint, NULL::bigint,
                            NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT e.id, e.channel, e.key, e.type, e.payload, e.created_at, be.pos, be.seq, be.published_at
          FROM outbox._log_batch_events(b) be WHERE be.id = event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % is missing from its batch at position %', event_id, b.first_pos
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Retry; if this persists, the log was modified by hand.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox._log_event(bigint) IS
    'internal (issue #15): one event of the log, pending or published, with its pos and seq recomputed';

-- A channel's last seq, as 1.2's outbox.head(channel) (0 if it never had an event): outbox.log_channels
-- and the batches after channels_flushed_pos (outbox._log_last_seq()).
CREATE FUNCTION outbox._log_head(channel text) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF channel IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass a channel name; outbox._log_head() without an argument gives the last position of every channel.';
    END IF;
    PERFORM outbox._require_channel(channel, 'channel name');
    PERFORM outbox._check_read(ARRAY[channel]); -- channel rights (95_channels.sql)
    LOCK TABLE outbox.batches IN ACCESS SHARE MODE;
    PERFORM outbox._log_check_rotation(format('the head of channel "%s"', channel));
    RETURN outbox._log_last_seq(channel);
END $$;
COMMENT ON FUNCTION outbox._log_head(text) IS
    'internal (issue #15): the last seq a channel got in the log (0 if none yet)';

-- The log's rows not in any committed batch yet (what the pending view will show): the rest of
-- the latest window when its batch is cut (after upto in its segment, then the window's rows in
-- the later segments of its order), and every row the latest batch's hi does not see (an index
-- range from hi's xmin on each segment's (xid, id) btree). Rows of transactions in progress are
-- not visible to the caller; its own are, as its own rows of 1.2's outbox.pending.
-- The last range runs with enable_seqscan and jit off, as _log_event()'s lookup: without
-- statistics the planner read every row of the log for it (outbox.status, health(), polled by
-- monitoring, scanned 1,000,000 published rows to find none pending; sw-red, regress
-- log_redteam_s10 4).
CREATE FUNCTION outbox._log_pending() RETURNS SETOF outbox.log
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b outbox.batches; nseg integer := outbox._log_segments(); oldest integer; k integer; hi pg_snapshot;
    seqscan text := current_setting('enable_seqscan'); jit text := current_setting('jit');
BEGIN
    LOCK TABLE outbox.log, outbox.batches IN ACCESS SHARE MODE;
    PERFORM outbox._log_check_rotation('the pending events');
    b := outbox._log_latest();
    hi := coalesce(b.hi_snap, (SELECT s.base_snap FROM outbox.log_state s));
    IF b.cut THEN
        oldest := ((SELECT s.cur_seg FROM outbox.log_state s) + 1) % nseg;
        RETURN QUERY SELECT * FROM outbox._log_window(b.seg, b.lo_snap, b.hi_snap, b.upto_xid, b.upto_id, 2147483647);
        FOR k IN ((b.seg - oldest + nseg) % nseg) + 1 .. nseg - 1 LOOP
            RETURN QUERY SELECT * FROM outbox._log_window((oldest + k) % nseg, b.lo_snap, b.hi_snap, '0', 0, 2147483647);
        END LOOP;
    END IF;
    PERFORM set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true);
    RETURN QUERY
        SELECT e.* FROM outbox.log e
         WHERE e.xid >= pg_snapshot_xmin(hi) AND NOT pg_visible_in_snapshot(e.xid, hi)
         ORDER BY e.xid, e.id;
    PERFORM set_config('enable_seqscan', seqscan, true), set_config('jit', jit, true);
END $$;
COMMENT ON FUNCTION outbox._log_pending() IS
    'internal (issue #15): the log''s events not published yet';
