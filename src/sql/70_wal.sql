
-- ---------------------------------------------------------------------------------------
-- Publication targets: NOTIFY, the WAL (logical decoding messages), or both
-- ---------------------------------------------------------------------------------------

-- Where the drain sends each channel's events. No row: the '*' row (the default of every
-- channel without a row of its own); no '*' row either: 'notify'. The drain reads this table
-- once per batch, in its own transaction: a change applies from the next batch on.
CREATE TABLE outbox.channel_targets (
    channel text PRIMARY KEY
            CONSTRAINT channel_targets_channel CHECK (channel = '*' OR octet_length(channel) BETWEEN 1 AND @MAX_CHANNEL_BYTES@),
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
COMMENT ON FUNCTION outbox.set_target(text, text) IS
    'send the events of a channel (''*'': of every channel without a target of its own) to notify, wal or both';
REVOKE ALL ON FUNCTION outbox.set_target(text, text) FROM PUBLIC;

CREATE FUNCTION outbox.reset_target(channel text) RETURNS boolean
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
