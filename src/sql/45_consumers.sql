
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
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100 AS 'MODULE_PATHNAME', 'outbox_wait';
COMMENT ON FUNCTION outbox.wait(bigint, text[], interval, integer) IS
    'outbox.replay(), but waits up to timeout for events after after_pos to be published; an empty set at timeout';

CREATE FUNCTION outbox.create_consumer(name text, channels text[] DEFAULT NULL, start text DEFAULT 'now')
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'outbox_create_consumer';
COMMENT ON FUNCTION outbox.create_consumer(text, text[], text) IS
    'register a named consumer (start: ''now'', ''earliest'' or a position); returns its acknowledged position';

CREATE FUNCTION outbox.next(name text, max_events integer DEFAULT 1000, timeout interval DEFAULT '30s')
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz, epoch bigint, envelope jsonb)
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

-- outbox.consumers (the view): 98_observe_log.sql (lag over the frozen history and the log)
