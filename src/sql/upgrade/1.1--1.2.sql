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

-- ---------------------------------------------------------------------------------------
-- [epochs] Positions that survive failover: outbox.state gains the identity, the epoch and the
-- cluster the epoch began on; outbox.epochs; OB003. replay(), replay_channel(), wait() and
-- next() return an epoch column before the envelope (whose JSON carries "epoch"), and replay()
-- and replay_channel() take after_epoch: their return types change, so they are dropped and
-- created again, with their privileges. The history of 1.1 is epoch 1; the first drain after
-- the upgrade begins epoch 2 at head + 1 (it knows no timeline for epoch 1), which diverges
-- no consumer. (22_epochs.sql, 40_replay.sql, 45_consumers.sql, 90_privileges.sql)
-- ---------------------------------------------------------------------------------------
--
-- A position is only as durable as the WAL. After an unplanned failover to an asynchronous
-- standby, a point-in-time recovery, a restore into another cluster or database, or DROP +
-- CREATE EXTENSION, the outbox hands out positions again that a consumer may already have seen
-- with other events. So every position belongs to an epoch: the epoch grows whenever the
-- history may have diverged from what a consumer saw, and outbox.epochs records where each
-- epoch began (first_pos). A consumer at (epoch E, pos P) is still on the preserved history
-- exactly when no epoch after E began at or before P: the positions >= first_pos of the epoch
-- after E may have been reissued. (A new epoch that began at head + 1 after a planned
-- switchover or a restart therefore diverges nobody: nothing was reissued.)
--
-- Detection costs publishing nothing: the drain's own UPDATE of outbox.state (the position
-- bump) compares the timeline, system identifier and database OID stored in the row with the
-- process's (GetWALInsertionTimeLine(), GetSystemIdentifier(), MyDatabaseId); only when they
-- differ does it call outbox._epoch_begin(), in the same transaction, before the history rows
-- of the batch are written: the new epoch and its first event commit or roll back together.
-- The identity is made at CREATE EXTENSION: a re-created extension is another outbox.
--
-- Epoch numbers grow, but not always by one: a new epoch is numbered at least the new timeline
-- ID, so that two forks of one history (a promoted standby and a point-in-time recovery of the
-- old primary, each on its own timeline) do not hand out the same epoch number.

ALTER TABLE outbox.state
    ADD COLUMN identity text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text,
    ADD COLUMN epoch bigint NOT NULL DEFAULT 0,        -- 0 until the first drain
    ADD COLUMN timeline bigint,                        -- as the last epoch's drain saw them
    ADD COLUMN system_identifier text,
    ADD COLUMN database_oid oid;

CREATE TABLE outbox.epochs (
    epoch      bigint PRIMARY KEY,
    first_pos  bigint NOT NULL,        -- the first position handed out in this epoch
    started_at timestamptz NOT NULL DEFAULT now(),
    reason     text NOT NULL,
    timeline   bigint                  -- the WAL timeline the epoch began on
);
COMMENT ON TABLE outbox.epochs IS
    'epochs of the position history: positions from first_pos of an epoch on may differ from what a consumer of an older epoch saw';
SELECT pg_catalog.pg_extension_config_dump('outbox.epochs', '');

-- The state row a restore brings merges into the one CREATE EXTENSION made (20_outbox.sql):
-- the identity, epoch and recorded cluster come from the dump, so the restored copy is the
-- same outbox, and its first drain sees another database OID (or system identifier) and
-- begins a new epoch at the restored head + 1.
CREATE OR REPLACE FUNCTION outbox._state_merge() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE outbox.state
       SET last_pos = greatest(last_pos, NEW.last_pos), purged_pos = greatest(purged_pos, NEW.purged_pos),
           cur_seg = NEW.cur_seg, seg_started_at = NEW.seg_started_at, paused = NEW.paused,
           identity = NEW.identity, epoch = greatest(epoch, NEW.epoch), timeline = NEW.timeline, -- [epochs]
           system_identifier = NEW.system_identifier, database_oid = NEW.database_oid;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

-- Called by the drain (src/outbox.cpp) with the state row locked, when the cluster it runs on
-- is not the one the current epoch began on. Records the new epoch; returns its number.
CREATE FUNCTION outbox._epoch_begin(first_pos bigint, tli bigint, sysid text, dboid oid) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
    e bigint;
    why text;
BEGIN
    SELECT * INTO s FROM outbox.state FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the row of outbox.state is missing' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    why := CASE
        WHEN s.epoch = 0 THEN 'created'
        WHEN s.system_identifier IS NULL THEN 'first drain since the upgrade to 1.2'
        WHEN s.system_identifier IS DISTINCT FROM sysid THEN
            format('system identifier changed from %s to %s (restored into another cluster)', s.system_identifier, sysid)
        WHEN s.database_oid IS DISTINCT FROM dboid THEN
            format('database OID changed from %s to %s (restored into another database)', s.database_oid, dboid)
        ELSE format('timeline changed from %s to %s (promotion or point-in-time recovery)', s.timeline, tli) END;
    e := greatest(s.epoch + 1, (SELECT coalesce(max(x.epoch), 0) + 1 FROM outbox.epochs x), tli);
    INSERT INTO outbox.epochs (epoch, first_pos, reason, timeline) VALUES (e, first_pos, why, tli);
    UPDATE outbox.state SET epoch = e, timeline = tli, system_identifier = sysid, database_oid = dboid;
    RETURN e;
END $$;
COMMENT ON FUNCTION outbox._epoch_begin(bigint, bigint, text, oid) IS 'internal: the drain begins a new epoch';

-- This outbox's identity (made at CREATE EXTENSION) and current epoch (0 before the first event).
CREATE FUNCTION outbox.identity() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    RETURN (SELECT s.identity FROM outbox.state s);
COMMENT ON FUNCTION outbox.identity() IS 'this outbox''s identity: a re-created extension has another one';

CREATE FUNCTION outbox.epoch() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    RETURN (SELECT greatest(s.epoch, (SELECT coalesce(max(e.epoch), 0) FROM outbox.epochs e)) FROM outbox.state s);
COMMENT ON FUNCTION outbox.epoch() IS 'the current epoch of positions (0 before the first event)';

-- The epoch an event at pos was published in.
CREATE FUNCTION outbox._epoch_of(pos bigint) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (SELECT coalesce(max(e.epoch), 0) FROM outbox.epochs e WHERE e.first_pos OPERATOR(pg_catalog.<=) pos);
COMMENT ON FUNCTION outbox._epoch_of(bigint) IS 'internal: the epoch of a position';

-- OB003: was the history a consumer saw up to after_pos in epoch after_epoch preserved here?
CREATE FUNCTION outbox._check_epoch(after_pos bigint, after_epoch bigint) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cur bigint;
    known boolean;
    next_first bigint;
    next_epoch bigint;
BEGIN
    IF after_epoch IS NULL THEN
        RETURN;
    ELSIF after_epoch < 0 THEN
        RAISE EXCEPTION 'after_epoch must be 0 or more, not %', after_epoch USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the "epoch" of the last event the consumer processed, or NULL.';
    END IF;
    cur := outbox.epoch();
    IF after_epoch > cur THEN
        RAISE EXCEPTION 'cannot replay after position % of epoch %: this outbox''s latest epoch is %', after_pos, after_epoch, cur
            USING ERRCODE = 'OB003',
                  DETAIL = 'The consumer saw a history this server does not have: it was restored from an older backup, or is another outbox.',
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head() in epoch outbox.epoch().';
    END IF;
    known := after_epoch = 0 OR EXISTS (SELECT FROM outbox.epochs e WHERE e.epoch = after_epoch);
    SELECT e.first_pos, e.epoch INTO next_first, next_epoch
      FROM outbox.epochs e WHERE e.epoch > after_epoch ORDER BY e.epoch LIMIT 1;
    IF NOT known THEN
        RAISE EXCEPTION 'cannot replay after position % of epoch %: epoch % is not in this outbox''s history', after_pos, after_epoch, after_epoch
            USING ERRCODE = 'OB003',
                  DETAIL = format('The consumer saw another branch of the history; positions from %s on may have been handed out again.',
                                  coalesce(least(next_first, after_pos), after_pos)),
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head() in epoch outbox.epoch().';
    END IF;
    IF next_first IS NOT NULL AND after_pos >= next_first THEN
        RAISE EXCEPTION 'cannot replay after position % of epoch %: positions from % on were handed out again in epoch %',
                        after_pos, after_epoch, next_first, next_epoch
            USING ERRCODE = 'OB003',
                  DETAIL = format('Epoch %s began at position %s (%s); the events the consumer saw at positions %s to %s were lost, and these positions now hold other events.',
                                  next_epoch, next_first,
                                  (SELECT e.reason FROM outbox.epochs e WHERE e.epoch = next_epoch), next_first, after_pos),
                  HINT = format('The consumer must resynchronise from the source of truth, then continue from outbox.head() in epoch %s; or replay after position %s of epoch %s to read the events of the new history.',
                                cur, next_first - 1, after_epoch);
    END IF;
END $$;
COMMENT ON FUNCTION outbox._check_epoch(bigint, bigint) IS 'internal: raise OB003 when a consumer''s position was not preserved';

-- what was published before the upgrade belongs to epoch 1
INSERT INTO outbox.epochs (epoch, first_pos, reason) VALUES (1, 1, 'published before the upgrade to 1.2');
UPDATE outbox.state SET epoch = 1;

DROP FUNCTION outbox.next(text, integer, interval);
DROP FUNCTION outbox.wait(bigint, text[], interval, integer);
DROP FUNCTION outbox.replay_channel(text, bigint, integer);
DROP FUNCTION outbox._replay_channel(text, bigint, integer);
DROP FUNCTION outbox.replay(bigint, text[], integer);
DROP FUNCTION outbox._envelope(bigint, bigint, bigint, text, text, jsonb);

CREATE FUNCTION outbox._envelope(pos bigint, seq bigint, id bigint, key text, type text, payload jsonb, epoch bigint)
    RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN pg_catalog.jsonb_build_object('id', id, 'pos', pos, 'epoch', epoch, 'seq', seq, 'payload', payload) -- [epochs] epoch
           OPERATOR(pg_catalog.||) CASE WHEN key IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('key', key) END
           OPERATOR(pg_catalog.||) CASE WHEN type IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('type', type) END;
COMMENT ON FUNCTION outbox._envelope(bigint, bigint, bigint, text, text, jsonb, bigint) IS
    'internal: the NOTIFY envelope of an event, complete, as jsonb';

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
        epoch := r.epoch; envelope := r.envelope; -- [consumers] [epochs]
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

CREATE FUNCTION outbox.wait(after_pos bigint, channels text[] DEFAULT NULL, timeout interval DEFAULT '30s',
                            max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100 AS 'MODULE_PATHNAME', 'outbox_wait';
COMMENT ON FUNCTION outbox.wait(bigint, text[], interval, integer) IS
    'outbox.replay(), but waits up to timeout for events after after_pos to be published; an empty set at timeout';

CREATE FUNCTION outbox.next(name text, max_events integer DEFAULT 1000, timeout interval DEFAULT '30s')
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100 AS 'MODULE_PATHNAME', 'outbox_next';
COMMENT ON FUNCTION outbox.next(text, integer, interval) IS
    'the events after a consumer''s acknowledged position (waits up to timeout for some); acknowledge with outbox.ack()';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON outbox.epochs FROM PUBLIC;
GRANT SELECT ON outbox.epochs TO outbox_admin;
ALTER FUNCTION outbox.replay(bigint, text[], integer, bigint) SECURITY DEFINER;
ALTER FUNCTION outbox.replay_channel(text, bigint, integer, bigint) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION outbox.replay(bigint, text[], integer, bigint), outbox.replay_channel(text, bigint, integer, bigint)
    TO outbox_reader;
GRANT EXECUTE ON FUNCTION outbox.wait(bigint, text[], interval, integer), outbox.next(text, integer, interval)
    TO outbox_reader;
ALTER FUNCTION outbox.identity() SECURITY DEFINER;
ALTER FUNCTION outbox.epoch() SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION outbox.identity(), outbox.epoch() TO outbox_reader;
GRANT SELECT ON outbox.epochs TO outbox_reader;
