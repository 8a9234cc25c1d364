-- pg_outbox 1.1 -> 1.2 upgrade. Each change of 1.2 appends its section here, in the same order
-- as the matching change in src/sql/NN_*.sql, so that the upgraded objects equal a fresh install
-- (test/t/080_upgrade.pl compares them object by object).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.2'" to load this file. \quit

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
DECLARE was boolean;
BEGIN
    PERFORM outbox._check_writable('outbox.resume()');
    SELECT paused INTO was FROM outbox.state FOR UPDATE;
    UPDATE outbox.state SET paused = false;
    PERFORM outbox._wake_at_commit();
    RETURN CASE WHEN was THEN 'resumed' ELSE 'not paused' END
        || format(': database %I publishes again; %s events pending', current_database(),
                  (SELECT count(*) FROM outbox.pending));
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
