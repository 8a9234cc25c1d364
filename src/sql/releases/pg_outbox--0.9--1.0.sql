-- pg_outbox upgrade 0.9 -> 1.0, assembled by `make`: this file (the changes to objects 0.9
-- already had), then every src/sql/ piece that 0.9 did not have (test/t/080_upgrade.pl checks
-- that the result equals a fresh 1.0 install).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.0'" to load this file. \quit

ALTER TABLE outbox.state ADD COLUMN purged_pos bigint NOT NULL DEFAULT 0;

-- the history's indexes never hold duplicates: no deduplication pass on insert
ALTER INDEX outbox.history_0_id_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_1_id_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_2_id_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_0_channel_seq_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_1_channel_seq_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_2_channel_seq_idx SET (deduplicate_items = off);

CREATE OR REPLACE FUNCTION outbox._state_merge() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE outbox.state
       SET last_pos = greatest(last_pos, NEW.last_pos), purged_pos = greatest(purged_pos, NEW.purged_pos),
           cur_seg = NEW.cur_seg, seg_started_at = NEW.seg_started_at, paused = NEW.paused;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

-- ---------------------------------------------------------------------------------------
-- The generic change trigger: outbox.attach(), outbox.detach(), outbox.attachments
-- ---------------------------------------------------------------------------------------
-- An attachment is the trigger(s) themselves: outbox._change(mode, channel, key_columns,
-- include_columns) with the configuration in its arguments. pg_dump (also pg_dump -t) and
-- pg_upgrade keep it with the table, DROP TABLE removes it, and there is no second copy
-- that could disagree with the triggers that exist.

CREATE FUNCTION outbox._change() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'outbox_change_trigger';
COMMENT ON FUNCTION outbox._change() IS
    'the change trigger created by outbox.attach(); arguments: mode, channel, key columns, included columns';

CREATE FUNCTION outbox._check_attachment(relation regclass, mode text, channel text, key_columns text[],
                                         include_columns text[], operations text[],
                                         OUT table_name text, OUT channel_template text,
                                         OUT resolved_key text[], OUT ops text[])
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_check_attachment';
COMMENT ON FUNCTION outbox._check_attachment(regclass, text, text, text[], text[], text[]) IS
    'internal: validates the arguments of outbox.attach()';

CREATE FUNCTION outbox._split_tgargs(tgargs bytea) RETURNS text[]
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'outbox_split_tgargs';
CREATE FUNCTION outbox._resolved_key(relation regclass, key_columns text[]) RETURNS text[]
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'outbox_resolved_key';

CREATE FUNCTION outbox.attach(relation regclass, channel text DEFAULT NULL, mode text DEFAULT 'outbox',
                              key_columns text[] DEFAULT NULL, include_columns text[] DEFAULT NULL,
                              operations text[] DEFAULT '{INSERT,UPDATE,DELETE}') RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    chk record;
    other record;
    args text;
    row_ops text[];
BEGIN
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation cannot be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- ownership, kind of relation, mode, columns, key, channel template, operations
    chk := outbox._check_attachment(relation, mode, channel, key_columns, include_columns, operations);
    FOR other IN
        SELECT t.tgname FROM pg_trigger t
         WHERE t.tgrelid = relation AND t.tgname IN ('outbox_change', 'outbox_flush', 'outbox_truncate')
           AND t.tgfoid <> 'outbox._change()'::regprocedure
    LOOP
        RAISE EXCEPTION 'table % already has a trigger named "%"', relation, other.tgname
            USING ERRCODE = 'duplicate_object',
                  DETAIL = 'pg_outbox names its triggers outbox_change, outbox_flush and outbox_truncate.',
                  HINT = 'Rename or drop that trigger, then attach again.';
    END LOOP;
    args := format('%L, %L, %L, %L', mode, coalesce(channel, ''), coalesce(key_columns::text, ''),
                   coalesce(include_columns::text, ''));
    -- replace: both statements run in the caller's transaction
    FOR other IN
        SELECT t.tgname FROM pg_trigger t
         WHERE t.tgrelid = relation AND t.tgname IN ('outbox_change', 'outbox_flush', 'outbox_truncate')
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', other.tgname, relation);
    END LOOP;
    row_ops := array_remove(chk.ops, 'TRUNCATE');
    IF cardinality(row_ops) > 0 THEN
        EXECUTE format('CREATE TRIGGER outbox_change AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION outbox._change(%s)',
                       array_to_string(row_ops, ' OR '), relation, args);
        IF mode = 'outbox' THEN
            -- writes the events of the statement's rows into outbox.pending with one INSERT
            EXECUTE format('CREATE TRIGGER outbox_flush AFTER %s ON %s FOR EACH STATEMENT'
                           ' EXECUTE FUNCTION outbox._change(%s)', array_to_string(row_ops, ' OR '), relation, args);
        END IF;
    END IF;
    IF 'TRUNCATE' = ANY (chk.ops) THEN
        EXECUTE format('CREATE TRIGGER outbox_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT'
                       ' EXECUTE FUNCTION outbox._change(%s)', relation, args);
    END IF;
    RETURN format('attached %s: mode %s, channel %s, key (%s)%s, operations %s',
                  chk.table_name, mode, quote_literal(chk.channel_template), array_to_string(chk.resolved_key, ', '),
                  CASE WHEN cardinality(include_columns) > 0
                       THEN format(', data (%s)', array_to_string(include_columns, ', ')) ELSE '' END,
                  array_to_string(chk.ops, ', '));
END $$;
COMMENT ON FUNCTION outbox.attach(regclass, text, text, text[], text[], text[]) IS
    'send {"op","table","id"} for every change of a table: NOTIFY at commit (mode notify) or a durable event (mode outbox)';

CREATE FUNCTION outbox.detach(relation regclass) RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    trig record;
    parent regclass;
    n integer := 0;
BEGIN
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation cannot be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = relation), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', relation USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOR trig IN
        SELECT t.tgname FROM pg_trigger t
         WHERE t.tgrelid = relation AND t.tgfoid = 'outbox._change()'::regprocedure AND t.tgparentid = 0
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trig.tgname, relation);
        n := n + 1;
    END LOOP;
    IF n = 0 THEN
        SELECT p.tgrelid::regclass INTO parent
          FROM pg_trigger t JOIN pg_trigger p ON p.oid = t.tgparentid
         WHERE t.tgrelid = relation AND t.tgfoid = 'outbox._change()'::regprocedure
         LIMIT 1;
        IF parent IS NOT NULL THEN
            RAISE EXCEPTION 'table % is not attached itself', relation
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('It is a partition of %s, whose attachment covers it.', parent),
                      HINT = format('Run outbox.detach(%L) to stop sending its changes.', parent);
        END IF;
        RAISE EXCEPTION 'table % is not attached', relation
            USING ERRCODE = 'undefined_object', HINT = 'outbox.attachments lists the attached tables.';
    END IF;
    RETURN format('detached %s', relation);
END $$;
COMMENT ON FUNCTION outbox.detach(regclass) IS 'remove the change trigger(s) outbox.attach() created';

CREATE VIEW outbox.attachments AS
SELECT s.relid::regclass AS "table",
       coalesce(nullif(a.args[2], ''), n.nspname || '.' || c.relname) AS channel,
       a.args[1] AS mode,
       outbox._resolved_key(s.relid, nullif(a.args[3], '')::text[]) AS key_columns,
       nullif(a.args[4], '')::text[] AS include_columns,
       ARRAY(SELECT o.op FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'], ARRAY[4, 16, 8, 32]) AS o(op, bit)
              WHERE (s.bits & o.bit) <> 0) AS operations
  FROM (SELECT t.tgrelid AS relid, bit_or(t.tgtype::integer) AS bits,
               (array_agg(t.tgargs ORDER BY t.tgname))[1] AS tgargs
          FROM pg_catalog.pg_trigger t
         WHERE t.tgfoid = 'outbox._change()'::regprocedure AND t.tgparentid = 0
         GROUP BY t.tgrelid) s
  CROSS JOIN LATERAL (SELECT outbox._split_tgargs(s.tgargs) AS args) a
  JOIN pg_catalog.pg_class c ON c.oid = s.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
COMMENT ON VIEW outbox.attachments IS 'tables attached with outbox.attach()';

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

CREATE FUNCTION outbox._check_channel(channel text, what text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF channel IS NULL THEN
        RAISE EXCEPTION '% cannot be NULL', what USING ERRCODE = 'invalid_parameter_value';
    ELSIF channel = '' THEN
        RAISE EXCEPTION '% cannot be empty', what
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A channel name is 1 to 63 bytes long.';
    ELSIF octet_length(channel) > 63 THEN
        RAISE EXCEPTION '% is too long: % bytes, the limit is 63 bytes', what, octet_length(channel)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Channel "%s..." is %s bytes long.', left(channel, 20), octet_length(channel)),
                  HINT = 'NOTIFY channel names are at most 63 bytes (NAMEDATALEN - 1).';
    END IF;
END $$;
COMMENT ON FUNCTION outbox._check_channel(text, text) IS 'internal: raise invalid_parameter_value for a bad channel name';

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
    LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM outbox._check_channel(channel, 'channel name');
    RETURN coalesce((SELECT c.last_seq FROM outbox.channels c WHERE c.channel = head.channel), 0);
END $$;
COMMENT ON FUNCTION outbox.head(text) IS
    'latest seq published on a channel (0 if none yet); call it in the same statement as outbox.head() for a consistent pair';

CREATE FUNCTION outbox.replay(after_pos bigint, channels text[] DEFAULT NULL, max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head_pos bigint;
    purged bigint;
    expect bigint;
    ch text;
    r record;
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
            PERFORM outbox._check_channel(ch, 'channel name in channels');
        END LOOP;
    END IF;
    PERFORM outbox._check_max_events(max_events);

    -- before the snapshot of the next statement: no TRUNCATE of a segment can slip in between
    LOCK TABLE outbox.history IN ACCESS SHARE MODE;
    SELECT greatest(s.last_pos, (SELECT coalesce(max(h.pos), 0) FROM outbox.history h)), s.purged_pos
      INTO head_pos, purged FROM outbox.state s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the row of outbox.state is missing' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Recreate it with INSERT INTO outbox.state DEFAULT VALUES, or reinstall the extension.';
    END IF;
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
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at
          FROM outbox.history h
         WHERE h.pos > after_pos AND (replay.channels IS NULL OR h.channel = ANY (replay.channels))
         ORDER BY h.pos
         LIMIT max_events
    LOOP
        IF channels IS NULL AND r.pos <> expect THEN
            RAISE EXCEPTION 'position % is missing from the history', expect
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('The next position in outbox.history is %s.', r.pos),
                      HINT = 'Retry the replay; if this persists, the history was modified by hand.';
        END IF;
        expect := r.pos + 1;
        pos := r.pos; seq := r.seq; id := r.id; channel := r.channel; key := r.key; type := r.type;
        payload := r.payload; created_at := r.created_at; published_at := r.published_at;
        RETURN NEXT;
    END LOOP;
    -- an unfiltered replay that stops short of the head must have stopped at max_events
    IF channels IS NULL AND expect <= head_pos AND expect - after_pos - 1 < max_events THEN
        RAISE EXCEPTION 'position % is missing from the history', expect
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('The latest published position is %s.', head_pos),
                  HINT = 'Retry the replay; if this persists, the history was modified by hand.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox.replay(bigint, text[], integer) IS
    'published events after a position, in position order, optionally of some channels only; OB001 if they have been removed';

-- (PL/pgSQL cannot name an argument like an output column, hence the SQL wrapper below)
CREATE FUNCTION outbox._replay_channel(ch text, after_seq bigint, max_events integer)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    last bigint;
    first_kept bigint;
    expect bigint;
    r record;
BEGIN
    PERFORM outbox._check_channel(ch, 'channel name');
    IF after_seq IS NULL THEN
        RAISE EXCEPTION 'after_seq cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the last seq the consumer has processed on this channel, 0 for the beginning, or outbox.head(channel) to start from now.';
    ELSIF after_seq < 0 THEN
        RAISE EXCEPTION 'after_seq must be 0 or more, not %', after_seq USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Seqs start at 1 on every channel; pass 0 to replay from the beginning.';
    END IF;
    PERFORM outbox._check_max_events(max_events);

    LOCK TABLE outbox.history IN ACCESS SHARE MODE;
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
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at
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
        RETURN NEXT;
    END LOOP;
    IF expect <= last AND expect - after_seq - 1 < max_events THEN
        RAISE EXCEPTION 'seq % of channel "%" is missing from the history', expect, ch
            USING ERRCODE = 'serialization_failure',
                  DETAIL = format('The latest seq of the channel is %s.', last),
                  HINT = 'Retry the replay; if this persists, the history was modified by hand.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox._replay_channel(text, bigint, integer) IS 'internal: the body of outbox.replay_channel()';

CREATE FUNCTION outbox.replay_channel(channel text, after_seq bigint, max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM outbox._replay_channel($1, $2, $3) $$;
COMMENT ON FUNCTION outbox.replay_channel(text, bigint, integer) IS
    'published events of one channel after a seq, in seq order; OB001 if they have been removed';

-- ---------------------------------------------------------------------------------------
-- Administration: dead letters, retention, status, pause and resume
-- ---------------------------------------------------------------------------------------

-- Events that could not be published (an error that belongs to the event alone, e.g. a
-- constraint or trigger added to the history). They never block the events behind them.
CREATE TABLE outbox.dead_letter (
    id          bigint PRIMARY KEY,
    channel     text NOT NULL,
    key         text,
    type        text,
    payload     jsonb,
    created_at  timestamptz NOT NULL,
    failed_at   timestamptz NOT NULL,
    error       text NOT NULL,
    sqlstate    text NOT NULL
);
COMMENT ON TABLE outbox.dead_letter IS 'events that could not be published, with their error';
SELECT pg_catalog.pg_extension_config_dump('outbox.dead_letter', '');

CREATE VIEW outbox.dead_letters AS
    SELECT id, channel, key, type, payload, created_at, failed_at, error, sqlstate
      FROM outbox.dead_letter ORDER BY id;
COMMENT ON VIEW outbox.dead_letters IS 'events that could not be published; outbox.retry(id) puts one back';

CREATE FUNCTION outbox._wake_at_commit() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_wake_at_commit';

CREATE FUNCTION outbox.retry(event_id bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH d AS (DELETE FROM outbox.dead_letter WHERE id = event_id RETURNING *)
    INSERT INTO outbox.pending (id, channel, key, type, payload, created_at)
        SELECT id, channel, key, type, payload, created_at FROM d;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % is not a dead letter', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT id, error FROM outbox.dead_letters lists the events that failed.';
    END IF;
    PERFORM outbox._wake_at_commit();
    RETURN event_id;
END $$;
COMMENT ON FUNCTION outbox.retry(bigint) IS 'put a dead letter back into the outbox, to be published again';

CREATE FUNCTION outbox.purge(older_than interval) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'outbox_purge';
COMMENT ON FUNCTION outbox.purge(interval) IS
    'remove published events older than older_than, by whole history segments (TRUNCATE); returns how many';

CREATE FUNCTION outbox.pause() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE was boolean;
BEGIN
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = true;
    PERFORM outbox._wake_at_commit();
    RETURN CASE WHEN was THEN 'already paused' ELSE 'paused' END
        || format(': database %I publishes nothing until outbox.resume(); producers keep writing', current_database());
END $$;
COMMENT ON FUNCTION outbox.pause() IS 'stop publishing in this database (persistent; producers keep writing)';

CREATE FUNCTION outbox.resume() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE was boolean;
BEGIN
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = false;
    PERFORM outbox._wake_at_commit();
    RETURN CASE WHEN was THEN 'resumed' ELSE 'not paused' END
        || format(': database %I publishes again; %s events pending', current_database(),
                  (SELECT count(*) FROM outbox.pending));
END $$;
COMMENT ON FUNCTION outbox.resume() IS 'publish again after outbox.pause()';

CREATE FUNCTION outbox._worker_status(
    OUT pid integer, OUT state text, OUT events_per_sec double precision, OUT last_error text,
    OUT last_error_at timestamptz, OUT started_at timestamptz, OUT last_batch_at timestamptz,
    OUT worker_published bigint)
    RETURNS record LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_worker_status';

CREATE VIEW outbox.status AS
    SELECT current_database() AS database,
           w.pid,
           CASE WHEN w.pid IS NOT NULL AND s.paused AND w.state IN ('idle', 'paused') THEN 'paused'
                ELSE w.state END AS state,
           (SELECT count(*) FROM outbox.pending) AS pending,
           now() - (SELECT p.created_at FROM outbox.pending p ORDER BY p.id LIMIT 1) AS oldest_pending_age,
           s.last_pos AS published_total,
           s.last_pos,
           round(w.events_per_sec::numeric, 1) AS events_per_sec,
           round(outbox.notify_queue_usage()::numeric, 4) AS queue_usage,
           (SELECT count(*) FROM outbox.dead_letter) AS dead_letters,
           w.last_error,
           w.last_error_at,
           s.paused,
           s.purged_pos,
           w.started_at,
           w.last_batch_at
      FROM outbox.state s, outbox._worker_status() w;
COMMENT ON VIEW outbox.status IS 'the drain worker of this database: state, backlog, throughput, errors';

-- ---------------------------------------------------------------------------------------
-- Publication targets: NOTIFY, the WAL (logical decoding messages), or both
-- ---------------------------------------------------------------------------------------

-- Where the drain sends each channel's events. No row: the '*' row (the default of every
-- channel without a row of its own); no '*' row either: 'notify'. The drain reads this table
-- once per batch, in its own transaction: a change applies from the next batch on.
CREATE TABLE outbox.channel_targets (
    channel text PRIMARY KEY
            CONSTRAINT channel_targets_channel CHECK (channel = '*' OR octet_length(channel) BETWEEN 1 AND 63),
    target  text NOT NULL
            CONSTRAINT channel_targets_target CHECK (target IN ('notify', 'wal', 'both'))
);
COMMENT ON TABLE outbox.channel_targets IS
    'where published events go per channel: notify, wal (logical decoding message, prefix pg_outbox) or both; channel ''*'' is the default';
SELECT pg_catalog.pg_extension_config_dump('outbox.channel_targets', '');

CREATE FUNCTION outbox.set_target(channel text, target text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    t text := lower(btrim(set_target.target));
BEGIN
    IF set_target.channel IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a channel name, or ''*'' to set the default target of the channels without one.';
    END IF;
    IF set_target.channel = '' THEN
        RAISE EXCEPTION 'channel name cannot be empty'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A channel name is 1 to 63 bytes long.';
    END IF;
    IF octet_length(set_target.channel) > 63 THEN
        RAISE EXCEPTION 'channel name is too long: % bytes, the limit is 63 bytes', octet_length(set_target.channel)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Channel "%s..." is %s bytes long.', left(set_target.channel, 40),
                                  octet_length(set_target.channel)),
                  HINT = 'NOTIFY channel names are at most 63 bytes (NAMEDATALEN - 1), counted in bytes, not characters.';
    END IF;
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
COMMENT ON FUNCTION outbox.set_target(text, text) IS
    'send the events of a channel (''*'': of every channel without a target of its own) to notify, wal or both';
REVOKE ALL ON FUNCTION outbox.set_target(text, text) FROM PUBLIC;

CREATE FUNCTION outbox.reset_target(channel text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF reset_target.channel IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a channel name, or ''*'' to reset the default target to ''notify''.';
    END IF;
    DELETE FROM outbox.channel_targets ct WHERE ct.channel = reset_target.channel;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION outbox.reset_target(text) IS
    'drop the target of a channel, which then follows the ''*'' default (''*'': the default becomes notify); true if there was one';
REVOKE ALL ON FUNCTION outbox.reset_target(text) FROM PUBLIC;

-- The effective target of every channel that has published events or has a target of its own,
-- and of '*' (the default). source: 'channel' (its own row), '*' (the default row) or
-- 'built-in' (no row at all: notify).
CREATE VIEW outbox.targets AS
    SELECT c.channel,
           coalesce(t.target, d.target, 'notify') AS target,
           CASE WHEN t.target IS NOT NULL THEN 'channel' WHEN d.target IS NOT NULL THEN '*' ELSE 'built-in' END AS source
      FROM (SELECT ch.channel FROM outbox.channels ch
            UNION
            SELECT ct.channel FROM outbox.channel_targets ct WHERE ct.channel <> '*') c
      LEFT JOIN outbox.channel_targets t ON t.channel = c.channel
      LEFT JOIN outbox.channel_targets d ON d.channel = '*'
    UNION ALL
    SELECT '*', coalesce(d.target, 'notify'), CASE WHEN d.target IS NOT NULL THEN '*' ELSE 'built-in' END
      FROM (SELECT NULL) AS one LEFT JOIN outbox.channel_targets d ON d.channel = '*';
COMMENT ON VIEW outbox.targets IS 'effective target (notify, wal, both) of each known channel and of the default ''*''';

-- ---------------------------------------------------------------------------------------
-- The published events in the column shape of Debezium's outbox event router
-- ---------------------------------------------------------------------------------------
-- Debezium captures tables, not views: to capture the history with the router, capture its
-- segments outbox.history_0, _1 and _2 (see README, "Scaling out"). This view is for queries,
-- JDBC-polling connectors (incrementing column pos) and for checking the mapping.
CREATE VIEW outbox.debezium_events AS
    SELECT h.id, h.channel AS aggregatetype, h.key AS aggregateid, h.type, h.payload,
           h.pos, h.seq, h.created_at, h.published_at
      FROM outbox.history h;
COMMENT ON VIEW outbox.debezium_events IS
    'published events as id, aggregatetype (channel), aggregateid (key), type, payload (+ pos, seq, times)';

-- ---------------------------------------------------------------------------------------
-- Privileges. Nothing is granted to PUBLIC. Three roles (cluster-wide, created once, kept by
-- DROP EXTENSION; names without the reserved pg_ prefix):
--   outbox_publisher  write events: publish(), notify(), attach()/detach() of tables it owns
--   outbox_reader     read events: event(), replay(), head(), the history, status
--   outbox_admin      both, plus drain(), pause(), resume(), purge(), retry(), all tables
-- Functions that touch the outbox tables for their caller are SECURITY DEFINER with a pinned
-- search_path; the tables themselves are granted to outbox_admin only.
-- ---------------------------------------------------------------------------------------
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['outbox_publisher', 'outbox_reader', 'outbox_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
    FOREACH r IN ARRAY ARRAY['outbox_publisher', 'outbox_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members
                        WHERE roleid = r::regrole AND member = 'outbox_admin'::regrole) THEN
            EXECUTE pg_catalog.format('GRANT %I TO outbox_admin', r);
        END IF;
    END LOOP;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA outbox FROM PUBLIC;
GRANT USAGE ON SCHEMA outbox TO outbox_publisher, outbox_reader, outbox_admin;

-- functions that act for their caller on tables the caller cannot touch
ALTER FUNCTION outbox.publish(text, jsonb, text, text) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.drain(integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.event(bigint) SECURITY DEFINER;

-- everybody with a role may ask for the limits
GRANT EXECUTE ON FUNCTION outbox.max_payload_bytes(), outbox.max_channel_bytes()
    TO outbox_publisher, outbox_reader;

GRANT EXECUTE ON FUNCTION outbox.publish(text, jsonb, text, text), outbox.notify(text, text)
    TO outbox_publisher;

GRANT EXECUTE ON FUNCTION outbox.event(bigint), outbox.notify_queue_usage(), outbox._worker_status()
    TO outbox_reader;
GRANT SELECT ON outbox.history, outbox.status TO outbox_reader;

GRANT EXECUTE ON FUNCTION outbox.drain(integer), outbox.pause(), outbox.resume(), outbox.purge(interval),
                          outbox.retry(bigint)
    TO outbox_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA outbox TO outbox_admin;

-- publishing to the WAL (70_wal.sql)
ALTER FUNCTION outbox.set_target(text, text) SECURITY DEFINER;
ALTER FUNCTION outbox.reset_target(text) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION outbox.set_target(text, text), outbox.reset_target(text) TO outbox_admin;
GRANT SELECT ON outbox.targets, outbox.debezium_events TO outbox_reader;

-- replay (40_replay.sql): readers replay without any right on the tables themselves
ALTER FUNCTION outbox.replay(bigint, text[], integer) SECURITY DEFINER;
ALTER FUNCTION outbox.replay_channel(text, bigint, integer) SECURITY DEFINER;
ALTER FUNCTION outbox.head() SECURITY DEFINER;
ALTER FUNCTION outbox.head(text) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION outbox.replay(bigint, text[], integer), outbox.replay_channel(text, bigint, integer),
                          outbox.head(), outbox.head(text)
    TO outbox_reader;
-- a reader that queries the history itself also reads the segments (and LOCK TABLE checks them)
GRANT SELECT ON outbox.history_0, outbox.history_1, outbox.history_2 TO outbox_reader;

-- the change trigger (30_trigger.sql): a publisher attaches tables it owns (attach() checks the
-- ownership; CREATE TRIGGER needs EXECUTE on the trigger function). Writers of an attached table
-- need no right in schema outbox: the trigger stores events as the owner of outbox.pending.
GRANT EXECUTE ON FUNCTION outbox.attach(regclass, text, text, text[], text[], text[]), outbox.detach(regclass),
                          outbox._change(), outbox._check_attachment(regclass, text, text, text[], text[], text[]),
                          outbox._split_tgargs(bytea), outbox._resolved_key(regclass, text[])
    TO outbox_publisher;
GRANT SELECT ON outbox.attachments TO outbox_publisher, outbox_reader;
