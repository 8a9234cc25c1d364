
-- ---------------------------------------------------------------------------------------
-- Size-checked NOTIFY (direct mode, best effort)
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION outbox.notify(channel text, payload text) RETURNS void
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'outbox_notify';
COMMENT ON FUNCTION outbox.notify(text, text) IS
    'NOTIFY channel with payload, after checking both against NOTIFY''s limits (clear errors instead of a failed commit)';

CREATE FUNCTION outbox.max_payload_bytes() RETURNS integer
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'outbox_max_payload_bytes';
COMMENT ON FUNCTION outbox.max_payload_bytes() IS 'largest NOTIFY payload, in bytes (@MAX_PAYLOAD_BYTES@)';

CREATE FUNCTION outbox.max_channel_bytes() RETURNS integer
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'outbox_max_channel_bytes';
COMMENT ON FUNCTION outbox.max_channel_bytes() IS 'longest NOTIFY channel name, in bytes (@MAX_CHANNEL_BYTES@)';

CREATE FUNCTION outbox._require_channel(channel text, what text) RETURNS void
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'outbox_require_channel';
COMMENT ON FUNCTION outbox._require_channel(text, text) IS
    'internal: raise invalid_parameter_value when channel is not 1 to @MAX_CHANNEL_BYTES@ bytes long (what names it in the message)';
