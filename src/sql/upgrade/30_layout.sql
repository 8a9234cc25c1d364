
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
