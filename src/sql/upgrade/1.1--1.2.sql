-- pg_outbox 1.1 -> 1.2 upgrade. Each change of 1.2 appends its section here, in the same order
-- as the matching change in src/sql/NN_*.sql, so that the upgraded objects equal a fresh install
-- (test/t/080_upgrade.pl compares them object by object).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.2'" to load this file. \quit

-- ---- outbox.worker_pids(): which backends' notifications are envelopes (sec-channels) ----
CREATE FUNCTION outbox.worker_pids() RETURNS integer[]
    LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'outbox_worker_pids';
COMMENT ON FUNCTION outbox.worker_pids() IS
    'PIDs of this database''s running drain worker(s): trust a NOTIFY envelope only if its be_pid is one of them';
REVOKE ALL ON FUNCTION outbox.worker_pids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.worker_pids() TO outbox_reader;

-- ---- channel rights (sec-channels): the reading functions check them (the same bodies as
-- src/sql/20_outbox.sql and 40_replay.sql; SECURITY DEFINER as 90_privileges.sql makes them) ----
CREATE OR REPLACE FUNCTION outbox.event(event_id bigint)
    RETURNS TABLE (id bigint, channel text, key text, type text, payload jsonb, created_at timestamptz,
                   pos bigint, seq bigint, published_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
        RAISE EXCEPTION 'event % does not exist', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Published events are kept for pg_outbox.retention; older ones have been removed.';
    END IF;
    -- channel rights (95_channels.sql): 42501 (and no row) if the caller may not read its channel
    PERFORM outbox._check_read(ARRAY(SELECT h.channel FROM outbox.history h WHERE h.id = event_id
                                     UNION SELECT p.channel FROM outbox.pending p WHERE p.id = event_id));
END $$;

CREATE OR REPLACE FUNCTION outbox.head(channel text) RETURNS bigint
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM outbox._check_channel(channel, 'channel name');
    PERFORM outbox._check_read(ARRAY[channel]); -- channel rights (95_channels.sql)
    RETURN coalesce((SELECT c.last_seq FROM outbox.channels c WHERE c.channel = head.channel), 0);
END $$;

CREATE OR REPLACE FUNCTION outbox.replay(after_pos bigint, channels text[] DEFAULT NULL, max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
            PERFORM outbox._check_channel(ch, 'channel name in channels');
        END LOOP;
    END IF;
    PERFORM outbox._check_max_events(max_events);
    -- channel rights (95_channels.sql): 42501 for a channel in channels the caller may not read;
    -- false: no filter, and the caller may read only some channels: only theirs are returned
    all_channels := outbox._check_read(channels);

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

CREATE OR REPLACE FUNCTION outbox._replay_channel(ch text, after_seq bigint, max_events integer)
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

-- ---------------------------------------------------------------------------------------
-- Channel rights (issue #11 part 5): who may publish on, and read, which channels
-- ---------------------------------------------------------------------------------------
-- The model is in src/rights.cpp. In short: per privilege ('publish', 'read'), as long as no
-- right of that kind exists, nothing changes; from the first one on, a role needs a right on
-- the channel (or on a pattern that covers it), held directly or through membership.
-- Superusers and outbox_admin hold every right; outbox_reader holds 'read' everywhere (it may
-- SELECT the history itself). Tenants read through the role outbox_consumer.
-- Patterns: '%' is any string, '\' makes the next character literal, '_' is a plain '_'.

CREATE TABLE outbox.channel_rights (
    pattern    text NOT NULL,
    role       regrole NOT NULL, -- pg_dump writes the role's name, a restore finds its new OID
    privilege  text NOT NULL CONSTRAINT channel_rights_privilege CHECK (privilege IN ('publish', 'read')),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pattern, role, privilege)
);
COMMENT ON TABLE outbox.channel_rights IS
    'channel rights: role may publish on / read the channels that pattern covers (outbox.grant_channel())';
SELECT pg_catalog.pg_extension_config_dump('outbox.channel_rights', '');

CREATE FUNCTION outbox._rights_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'outbox_rights_changed';
COMMENT ON FUNCTION outbox._rights_changed() IS 'internal: every backend reloads the channel rights after a change';
-- every write (grant_channel, revoke_channel, a DBA's own DML, pg_restore's COPY) reaches every
-- backend's cache at commit
CREATE TRIGGER channel_rights_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON outbox.channel_rights
    FOR EACH STATEMENT EXECUTE FUNCTION outbox._rights_changed();

CREATE FUNCTION outbox._check_read(channels text[]) RETURNS boolean
    LANGUAGE c STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'outbox_check_read';
COMMENT ON FUNCTION outbox._check_read(text[]) IS
    'internal: 42501 for a channel the caller may not read; false if channels is NULL and it may read only some';
CREATE FUNCTION outbox._may_read(channel text) RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'outbox_may_read';
COMMENT ON FUNCTION outbox._may_read(text) IS 'internal: may the caller read this channel';
CREATE FUNCTION outbox._check_channel_pattern(pattern text) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'outbox_check_channel_pattern';
COMMENT ON FUNCTION outbox._check_channel_pattern(text) IS
    'internal: invalid_parameter_value for a bad channel pattern; true if it has a wildcard';

CREATE FUNCTION outbox._channel_privileges(privileges text[]) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p text;
    out text[] := '{}';
BEGIN
    IF privileges IS NULL OR cardinality(privileges) = 0 THEN
        RAISE EXCEPTION 'privileges cannot be NULL or empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass ''{publish}'', ''{read}'' or ''{publish,read}''.';
    END IF;
    FOREACH p IN ARRAY privileges LOOP
        IF p IS NULL OR lower(btrim(p)) NOT IN ('publish', 'read') THEN
            RAISE EXCEPTION 'invalid channel privilege "%"', p USING ERRCODE = 'invalid_parameter_value',
                HINT = 'A channel privilege is publish or read.';
        END IF;
        IF NOT lower(btrim(p)) = ANY (out) THEN
            out := out || lower(btrim(p));
        END IF;
    END LOOP;
    RETURN (SELECT array_agg(x ORDER BY x) FROM unnest(out) x);
END $$;
COMMENT ON FUNCTION outbox._channel_privileges(text[]) IS 'internal: the checked, sorted privileges of grant/revoke_channel';

CREATE FUNCTION outbox.grant_channel(pattern text, role regrole, privileges text[] DEFAULT '{publish,read}')
    RETURNS text LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    privs text[];
    wildcard boolean;
    p text;
BEGIN
    wildcard := outbox._check_channel_pattern(grant_channel.pattern);
    IF grant_channel.role IS NULL OR grant_channel.role = 0 THEN
        RAISE EXCEPTION 'role cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the role that may publish or read (its members get the right too).';
    END IF;
    privs := outbox._channel_privileges(privileges);
    FOREACH p IN ARRAY privs LOOP
        IF NOT EXISTS (SELECT FROM outbox.channel_rights r WHERE r.privilege = p) THEN
            RAISE WARNING 'channel rights are now enforced for %: roles without a % right can no longer % any channel',
                          p, p, CASE p WHEN 'publish' THEN 'publish on' ELSE 'read' END
                USING DETAIL = 'Superusers and members of outbox_admin hold every right'
                               || CASE p WHEN 'read' THEN ', members of outbox_reader may read every channel.' ELSE '.' END,
                      HINT = 'outbox.channel_privileges lists the rights; grant the pattern ''%'' to a role that needs every channel.';
        END IF;
        INSERT INTO outbox.channel_rights AS r (pattern, role, privilege)
            VALUES (grant_channel.pattern, grant_channel.role, p)
            ON CONFLICT ON CONSTRAINT channel_rights_pkey DO NOTHING;
    END LOOP;
    RETURN format('granted %s on %s %L to %s', array_to_string(privs, ' and '),
                  CASE WHEN wildcard THEN 'the channels matching' ELSE 'channel' END, grant_channel.pattern,
                  grant_channel.role);
END $$;
COMMENT ON FUNCTION outbox.grant_channel(text, regrole, text[]) IS
    'let a role (and its members) publish on and/or read a channel or the channels a pattern covers (% any string, \ escapes)';

CREATE FUNCTION outbox.revoke_channel(pattern text, role regrole, privileges text[] DEFAULT '{publish,read}')
    RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    privs text[];
    n bigint;
    p text;
BEGIN
    PERFORM outbox._check_channel_pattern(revoke_channel.pattern);
    IF revoke_channel.role IS NULL THEN
        RAISE EXCEPTION 'role cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    privs := outbox._channel_privileges(privileges);
    DELETE FROM outbox.channel_rights r
     WHERE r.pattern = revoke_channel.pattern AND r.role = revoke_channel.role AND r.privilege = ANY (privs);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE WARNING 'no channel right was revoked: role % has no % right on pattern %',
                      revoke_channel.role, array_to_string(privs, ' or '), quote_literal(revoke_channel.pattern)
            USING HINT = 'A right is revoked with the exact pattern it was granted with; outbox.channel_privileges lists them.';
    END IF;
    FOREACH p IN ARRAY privs LOOP
        IF n > 0 AND NOT EXISTS (SELECT FROM outbox.channel_rights r WHERE r.privilege = p) THEN
            RAISE WARNING 'no % right is left: channel rights are no longer enforced for %', p, p
                USING DETAIL = CASE p WHEN 'publish' THEN 'Every role with EXECUTE on outbox.publish() may publish on every channel again.'
                                      ELSE 'Every role with EXECUTE on the reading functions may read every channel again.' END;
        END IF;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION outbox.revoke_channel(text, regrole, text[]) IS
    'take back rights given by outbox.grant_channel() (the same pattern); returns how many were revoked';

-- Who may do what: each role sees the rights it holds (directly or through membership); members
-- of outbox_admin see every right. A right of a role that was dropped shows its OID as role.
CREATE VIEW outbox.channel_privileges WITH (security_barrier) AS
    SELECT r.pattern, r.role,
           bool_or(r.privilege = 'publish') AS publish,
           bool_or(r.privilege = 'read') AS read,
           max(r.granted_at) AS granted_at
      FROM outbox.channel_rights r
      LEFT JOIN pg_catalog.pg_roles ro ON ro.oid = r.role
     WHERE CASE WHEN ro.oid IS NULL THEN false ELSE pg_catalog.pg_has_role(ro.oid, 'USAGE') END
        OR pg_catalog.pg_has_role('outbox_admin', 'USAGE')
     GROUP BY r.pattern, r.role;
COMMENT ON VIEW outbox.channel_privileges IS
    'channel rights: which role may publish on / read the channels of which pattern (see outbox.grant_channel())';

-- A role for tenants: it calls the reading functions (where channel rights apply) and has no
-- right on the tables (outbox_reader may SELECT the history itself, so it reads every channel).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'outbox_consumer') THEN
        CREATE ROLE outbox_consumer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members
                    WHERE roleid = 'outbox_consumer'::regrole AND member = 'outbox_admin'::regrole) THEN
        GRANT outbox_consumer TO outbox_admin;
    END IF;
END $$;

REVOKE ALL ON FUNCTION outbox._rights_changed(), outbox._check_read(text[]), outbox._may_read(text),
                       outbox._check_channel_pattern(text), outbox._channel_privileges(text[]),
                       outbox.grant_channel(text, regrole, text[]), outbox.revoke_channel(text, regrole, text[])
    FROM PUBLIC;
REVOKE ALL ON outbox.channel_rights, outbox.channel_privileges FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.grant_channel(text, regrole, text[]), outbox.revoke_channel(text, regrole, text[])
    TO outbox_admin;
GRANT SELECT ON outbox.channel_rights TO outbox_admin;
GRANT SELECT ON outbox.channel_privileges TO outbox_publisher, outbox_reader, outbox_consumer, outbox_admin;
GRANT USAGE ON SCHEMA outbox TO outbox_consumer;
GRANT EXECUTE ON FUNCTION outbox.replay(bigint, text[], integer), outbox.replay_channel(text, bigint, integer),
                          outbox.head(), outbox.head(text), outbox.event(bigint), outbox.worker_pids(),
                          outbox.max_payload_bytes(), outbox.max_channel_bytes()
    TO outbox_consumer;
