
-- ---------------------------------------------------------------------------------------
-- Who sent a notification (issue #11 part 2)
-- ---------------------------------------------------------------------------------------
-- NOTIFY needs no privilege. outbox.worker_pids() (50_admin.sql) tells a consumer which
-- backends' notifications are envelopes; whoever may replay may ask.
GRANT EXECUTE ON FUNCTION outbox.worker_pids() TO outbox_reader;

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
GRANT EXECUTE ON FUNCTION outbox.replay(bigint, text[], integer, bigint), outbox.replay_channel(text, bigint, integer, bigint),
                          outbox.head(), outbox.head(text), outbox.event(bigint), outbox.worker_pids(),
                          outbox.max_payload_bytes(), outbox.max_channel_bytes()
    TO outbox_consumer;
-- waiting and named consumers (45_consumers.sql) call outbox.replay() as the caller, so channel
-- rights apply to them; the view outbox.consumers (every consumer's name and channels) is not
-- granted: it would show a tenant the other tenants' consumers
GRANT EXECUTE ON FUNCTION outbox.wait(bigint, text[], interval, integer), outbox.create_consumer(text, text[], text),
                          outbox.next(text, integer, interval), outbox.ack(text, bigint), outbox.drop_consumer(text)
    TO outbox_consumer;
