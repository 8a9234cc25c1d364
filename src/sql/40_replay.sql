
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
