-- pg_outbox 1.1 -> 1.2 upgrade. Each change of 1.2 appends its section here, in the same order
-- as the matching change in src/sql/NN_*.sql, so that the upgraded objects equal a fresh install
-- (test/t/080_upgrade.pl compares them object by object).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.2'" to load this file. \quit

-- ---------------------------------------------------------------------------------------
-- [consumers] One event shape: replay() and replay_channel() return the NOTIFY envelope as
-- their last column (their return type changes: dropped and created again, with their
-- privileges); replay() reads the retention horizon with the latest snapshot (OB001 in every
-- isolation level). Then outbox.wait(), named consumers, and outbox.status's consumer counts.
-- (40_replay.sql, 45_consumers.sql, 50_admin.sql, 90_privileges.sql)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION outbox._envelope(pos bigint, seq bigint, id bigint, key text, type text, payload jsonb)
    RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN pg_catalog.jsonb_build_object('id', id, 'pos', pos, 'seq', seq, 'payload', payload)
           OPERATOR(pg_catalog.||) CASE WHEN key IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('key', key) END
           OPERATOR(pg_catalog.||) CASE WHEN type IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('type', type) END;
COMMENT ON FUNCTION outbox._envelope(bigint, bigint, bigint, text, text, jsonb) IS
    'internal: the NOTIFY envelope of an event, complete, as jsonb';
REVOKE ALL ON FUNCTION outbox._envelope(bigint, bigint, bigint, text, text, jsonb) FROM PUBLIC;

CREATE FUNCTION outbox._purged_pos() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_purged_pos';
COMMENT ON FUNCTION outbox._purged_pos() IS 'internal: the retention horizon, read with the latest snapshot';
REVOKE ALL ON FUNCTION outbox._purged_pos() FROM PUBLIC;

DROP FUNCTION outbox.replay_channel(text, bigint, integer);
DROP FUNCTION outbox._replay_channel(text, bigint, integer);
DROP FUNCTION outbox.replay(bigint, text[], integer);

CREATE FUNCTION outbox.replay(after_pos bigint, channels text[] DEFAULT NULL, max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, envelope jsonb)
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
    -- [consumers] purged_pos from the latest snapshot: OB001 in every isolation level
    SELECT greatest(s.last_pos, (SELECT coalesce(max(h.pos), 0) FROM outbox.history h)),
           greatest(s.purged_pos, outbox._purged_pos())
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
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at,
               outbox._envelope(h.pos, h.seq, h.id, h.key, h.type, h.payload) AS envelope
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
        envelope := r.envelope; -- [consumers]
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

CREATE FUNCTION outbox._replay_channel(ch text, after_seq bigint, max_events integer)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, envelope jsonb)
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
        SELECT h.pos, h.seq, h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.published_at,
               outbox._envelope(h.pos, h.seq, h.id, h.key, h.type, h.payload) AS envelope
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
        envelope := r.envelope; -- [consumers]
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
                   created_at timestamptz, published_at timestamptz, envelope jsonb)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT * FROM outbox._replay_channel($1, $2, $3) $$;
COMMENT ON FUNCTION outbox.replay_channel(text, bigint, integer) IS
    'published events of one channel after a seq, in seq order; OB001 if they have been removed';

REVOKE ALL ON FUNCTION outbox.replay(bigint, text[], integer), outbox._replay_channel(text, bigint, integer),
                       outbox.replay_channel(text, bigint, integer) FROM PUBLIC;
ALTER FUNCTION outbox.replay(bigint, text[], integer) SECURITY DEFINER;
ALTER FUNCTION outbox.replay_channel(text, bigint, integer) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION outbox.replay(bigint, text[], integer), outbox.replay_channel(text, bigint, integer)
    TO outbox_reader;

-- ---------------------------------------------------------------------------------------
-- Consumers without LISTEN: a statement that waits (outbox.wait), and named consumers whose
-- acknowledged position the server keeps and retention respects (src/consumers.cpp)
-- ---------------------------------------------------------------------------------------
--
-- outbox.wait() returns what outbox.replay() returns, calling replay() itself (so replay's
-- checks and privileges apply), as soon as there is something: when nothing is there yet, the
-- backend sleeps on a condition variable in shared memory that every drain transaction which
-- published events broadcasts when it commits. No polling; a sleeping waiter holds no lock.
-- It works through transaction poolers (PgBouncer pool_mode = transaction): one statement.
--
-- A named consumer is a row of outbox.consumer: its channels and the position up to which it
-- has processed their events (acked_pos). outbox.next() returns the events after acked_pos
-- (long-polling like wait()), outbox.ack() moves acked_pos forward. Retention keeps every event
-- an active consumer has not acknowledged, up to pg_outbox.consumer_max_retention; past that
-- the consumer is marked lost and its next call raises OB001.

CREATE TABLE outbox.consumer (
    name        text PRIMARY KEY CONSTRAINT consumer_name_length CHECK (octet_length(name) BETWEEN 1 AND 63),
    channels    text[],                 -- NULL: every channel
    owner       regrole NOT NULL,       -- the role that created it: it (and its members) may use it
    acked_pos   bigint NOT NULL,        -- every event of its channels up to here is processed
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_ack_at timestamptz,
    state       text NOT NULL DEFAULT 'active' CONSTRAINT consumer_state CHECK (state IN ('active', 'lost')),
    lost_at     timestamptz,
    lost_reason text
);
COMMENT ON TABLE outbox.consumer IS 'named consumers: their channels and acknowledged positions';
SELECT pg_catalog.pg_extension_config_dump('outbox.consumer', '');

CREATE FUNCTION outbox.wait(after_pos bigint, channels text[] DEFAULT NULL, timeout interval DEFAULT '30s',
                            max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, envelope jsonb)
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100 AS 'MODULE_PATHNAME', 'outbox_wait';
COMMENT ON FUNCTION outbox.wait(bigint, text[], interval, integer) IS
    'outbox.replay(), but waits up to timeout for events after after_pos to be published; an empty set at timeout';

CREATE FUNCTION outbox.create_consumer(name text, channels text[] DEFAULT NULL, start text DEFAULT 'now')
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'outbox_create_consumer';
COMMENT ON FUNCTION outbox.create_consumer(text, text[], text) IS
    'register a named consumer (start: ''now'', ''earliest'' or a position); returns its acknowledged position';

CREATE FUNCTION outbox.next(name text, max_events integer DEFAULT 1000, timeout interval DEFAULT '30s')
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, envelope jsonb)
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100 AS 'MODULE_PATHNAME', 'outbox_next';
COMMENT ON FUNCTION outbox.next(text, integer, interval) IS
    'the events after a consumer''s acknowledged position (waits up to timeout for some); acknowledge with outbox.ack()';

CREATE FUNCTION outbox.ack(name text, pos bigint)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'outbox_ack';
COMMENT ON FUNCTION outbox.ack(text, bigint) IS
    'a consumer has processed its events up to pos (an older pos is a no-op); returns its acknowledged position';

CREATE FUNCTION outbox.drop_consumer(name text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'outbox_drop_consumer';
COMMENT ON FUNCTION outbox.drop_consumer(text) IS 'remove a named consumer: retention no longer keeps events for it';

CREATE VIEW outbox.consumers AS
    SELECT c.name,
           c.channels,
           c.owner,
           c.state,
           c.acked_pos,
           CASE WHEN c.channels IS NULL THEN greatest(hd.head - c.acked_pos, 0)
                ELSE (SELECT count(*) FROM outbox.history h
                       WHERE h.pos > c.acked_pos AND h.channel = ANY (c.channels)) END AS lag_events,
           coalesce(extract(epoch FROM now() - (SELECT h.published_at FROM outbox.history h
                                                 WHERE h.pos > c.acked_pos
                                                   AND (c.channels IS NULL OR h.channel = ANY (c.channels))
                                                 ORDER BY h.pos LIMIT 1)), 0)::double precision AS lag_seconds,
           c.last_ack_at,
           c.created_at,
           c.lost_at,
           c.lost_reason
      FROM outbox.consumer c,
           LATERAL (SELECT greatest(s.last_pos, (SELECT coalesce(max(h.pos), 0) FROM outbox.history h)) AS head
                      FROM outbox.state s) hd;
COMMENT ON VIEW outbox.consumers IS
    'named consumers: acknowledged position, lag in events and seconds (age of the oldest unacknowledged event), state';

REVOKE ALL ON FUNCTION outbox.wait(bigint, text[], interval, integer), outbox.create_consumer(text, text[], text),
                       outbox.next(text, integer, interval), outbox.ack(text, bigint), outbox.drop_consumer(text)
    FROM PUBLIC;
REVOKE ALL ON outbox.consumer, outbox.consumers FROM PUBLIC;
GRANT SELECT ON outbox.consumer, outbox.consumers TO outbox_admin;
GRANT EXECUTE ON FUNCTION outbox.wait(bigint, text[], interval, integer), outbox.create_consumer(text, text[], text),
                          outbox.next(text, integer, interval), outbox.ack(text, bigint), outbox.drop_consumer(text)
    TO outbox_reader;
GRANT SELECT ON outbox.consumers TO outbox_reader;

CREATE OR REPLACE VIEW outbox.status AS
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
           w.last_batch_at,
           -- [consumers] named consumers (outbox.consumers has the details)
           (SELECT count(*) FROM outbox.consumer c WHERE c.state = 'active') AS consumers,
           (SELECT count(*) FROM outbox.consumer c WHERE c.state = 'lost') AS lost_consumers
      FROM outbox.state s, outbox._worker_status() w;

-- [consumers] outbox.event(): the hint tells a dead letter, an id never handed out and a removed
-- event apart; outbox.resume(): "1 event pending", not "1 events pending" (20_outbox.sql,
-- 50_admin.sql)
CREATE OR REPLACE FUNCTION outbox.event(event_id bigint)
    RETURNS TABLE (id bigint, channel text, key text, type text, payload jsonb, created_at timestamptz,
                   pos bigint, seq bigint, published_at timestamptz)
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    last_id bigint;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
        SELECT h.id, h.channel, h.key, h.type, h.payload, h.created_at, h.pos, h.seq, h.published_at
          FROM outbox.history h WHERE h.id = event_id
        UNION ALL
        SELECT p.id, p.channel, p.key, p.type, p.payload, p.created_at, NULL::bigint, NULL::bigint,
               NULL::timestamptz
          FROM outbox.pending p WHERE p.id = event_id;
    IF NOT FOUND THEN
        -- [consumers] the hint says which it is: a dead letter, an id never handed out, or removed
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
        ELSE
            RAISE EXCEPTION 'event % does not exist', event_id
                USING ERRCODE = 'no_data_found',
                      HINT = 'Published events are kept for pg_outbox.retention; this one has been removed, or its transaction rolled back.';
        END IF;
    END IF;
END $$;
COMMENT ON FUNCTION outbox.event(bigint) IS
    'one stored event, pending or published (for consumers of a "truncated" envelope)';
ALTER FUNCTION outbox.event(bigint) SECURITY DEFINER; -- (as 90_privileges.sql makes it)

CREATE OR REPLACE FUNCTION outbox.resume() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE was boolean; n bigint;
BEGIN
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = false;
    PERFORM outbox._wake_at_commit();
    n := (SELECT count(*) FROM outbox.pending);
    RETURN CASE WHEN was THEN 'resumed' ELSE 'not paused' END  -- [consumers] 1 event, 2 events
        || format(': database %I publishes again; %s pending', current_database(),
                  CASE WHEN n = 1 THEN '1 event' ELSE n || ' events' END);
END $$;
COMMENT ON FUNCTION outbox.resume() IS 'publish again after outbox.pause()';
-- ---- 1.2: writing functions fail with 25006 on a hot standby and in read-only transactions ----
CREATE FUNCTION outbox._check_writable(what text) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_check_writable';
COMMENT ON FUNCTION outbox._check_writable(text) IS
    'internal: raise read_only_sql_transaction on a hot standby or in a read-only transaction';
REVOKE ALL ON FUNCTION outbox._check_writable(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox._check_writable(text) TO outbox_publisher, outbox_reader;
CREATE OR REPLACE FUNCTION outbox.attach(relation regclass, channel text DEFAULT NULL, mode text DEFAULT 'outbox',
                              key_columns text[] DEFAULT NULL, include_columns text[] DEFAULT NULL,
                              operations text[] DEFAULT '{INSERT,UPDATE,DELETE}') RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    chk record;
    other record;
    args text;
    row_ops text[];
BEGIN
    PERFORM outbox._check_writable('outbox.attach()');
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
CREATE OR REPLACE FUNCTION outbox.detach(relation regclass) RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    trig record;
    parent regclass;
    n integer := 0;
BEGIN
    PERFORM outbox._check_writable('outbox.detach()');
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
CREATE OR REPLACE FUNCTION outbox.pause() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE was boolean;
BEGIN
    PERFORM outbox._check_writable('outbox.pause()');
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = true;
    PERFORM outbox._wake_at_commit();
    RETURN CASE WHEN was THEN 'already paused' ELSE 'paused' END
        || format(': database %I publishes nothing until outbox.resume(); producers keep writing', current_database());
END $$;
CREATE OR REPLACE FUNCTION outbox.resume() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE was boolean; n bigint;
BEGIN
    PERFORM outbox._check_writable('outbox.resume()');
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = false;
    PERFORM outbox._wake_at_commit();
    n := (SELECT count(*) FROM outbox.pending);
    RETURN CASE WHEN was THEN 'resumed' ELSE 'not paused' END  -- [consumers] 1 event, 2 events
        || format(': database %I publishes again; %s pending', current_database(),
                  CASE WHEN n = 1 THEN '1 event' ELSE n || ' events' END);
END $$;
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
    DELETE FROM outbox.channel_targets ct WHERE ct.channel = reset_target.channel;
    RETURN FOUND;
END $$;
-- CREATE OR REPLACE resets what 90_privileges.sql set with ALTER FUNCTION
ALTER FUNCTION outbox.set_target(text, text) SECURITY DEFINER;
ALTER FUNCTION outbox.reset_target(text) SECURITY DEFINER;
