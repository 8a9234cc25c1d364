-- pg_outbox 1.1 -> 1.2 upgrade. Each change of 1.2 appends its section here, in the same order
-- as the matching change in src/sql/NN_*.sql, so that the upgraded objects equal a fresh install
-- (test/t/080_upgrade.pl compares them object by object).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.2'" to load this file. \quit

-- ---------------------------------------------------------------------------------------
-- The extension's own schema (issue #11): refuse to upgrade an install whose schema someone
-- else controls. 1.1 installed into an existing schema "outbox" as it was; if a non-superuser
-- created it first, they own it and can put their objects in the way of the drain worker and the
-- SECURITY DEFINER functions (which run as a superuser). This check runs first (in a function of
-- its own with search_path pinned, dropped again), before anything below names an object of the schema.
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.pg_outbox_check_upgrade_schema() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ext oid;
    nsp oid;
    nsp_name name;
    owner_name name;
    owner_super boolean;
    creator text;
    what text;
    fix constant text := 'As a superuser: drop the objects in schema "outbox" that are not part of the extension '
                         '(\dn+ and \df outbox.* in psql list them), '
                         'ALTER SCHEMA outbox OWNER TO a superuser, REVOKE CREATE ON SCHEMA outbox from every other role, '
                         'then run ALTER EXTENSION pg_outbox UPDATE again.';
BEGIN
    SELECT e.oid, e.extnamespace INTO ext, nsp FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_outbox';
    SELECT n.nspname, r.rolname, r.rolsuper INTO nsp_name, owner_name, owner_super
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner WHERE n.oid = nsp;
    IF nsp_name <> 'outbox' THEN
        RAISE EXCEPTION 'cannot update pg_outbox: its schema is called "%", not "outbox"', nsp_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'pg_outbox names its objects outbox.<name>; a schema now called "outbox" would be used instead.',
                  HINT = pg_catalog.format('As a superuser, check what schema "outbox" contains and drop it, rename '
                                           'schema %I back to "outbox", then run ALTER EXTENSION pg_outbox UPDATE again.',
                                           nsp_name);
    END IF;
    IF NOT coalesce(owner_super, false) THEN
        RAISE EXCEPTION 'cannot update pg_outbox: schema "outbox" is owned by role "%", which is not a superuser', owner_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The drain worker and pg_outbox''s SECURITY DEFINER functions run as a superuser and find '
                           'their objects in schema "outbox": its owner could replace them.',
                  HINT = fix;
    END IF;
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE r.rolname::text END INTO creator
      FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
     WHERE n.oid = nsp AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner AND NOT coalesce(r.rolsuper, false)
     LIMIT 1;
    IF creator IS NOT NULL THEN
        RAISE EXCEPTION 'cannot update pg_outbox: role "%" may create objects in schema "outbox"', creator
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Whoever may create objects in schema "outbox" could put their own in the way of pg_outbox''s.',
                  HINT = fix;
    END IF;
    -- objects in the schema that are not the extension's and that a non-superuser owns (owners
    -- other than the bootstrap superuser are recorded in pg_shdepend)
    SELECT pg_catalog.format('%s (owned by role %I)', pg_catalog.pg_describe_object(d.classid, d.objid, 0), r.rolname)
      INTO what
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_shdepend s ON s.classid = d.classid AND s.objid = d.objid AND s.deptype = 'o'
       AND s.dbid = (SELECT db.oid FROM pg_catalog.pg_database db WHERE db.datname = pg_catalog.current_database())
      JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid
     WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = nsp AND NOT r.rolsuper
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend m
                        WHERE m.classid = d.classid AND m.objid = d.objid AND m.deptype = 'e'
                          AND m.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND m.refobjid = ext)
     LIMIT 1;
    IF what IS NOT NULL THEN
        RAISE EXCEPTION 'cannot update pg_outbox: schema "outbox" holds % that is not part of the extension', what
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'pg_outbox runs its SQL as a superuser in this schema; an object a non-superuser put there '
                           'could stand in for one of pg_outbox''s.',
                  HINT = fix;
    END IF;
    -- the relations pg_outbox names must be its own (not a view put in place of outbox.state)
    SELECT pg_catalog.format('%s %I', CASE c.relkind WHEN 'v' THEN 'view' ELSE 'relation' END, c.relname) INTO what
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = nsp
       AND c.relname IN ('pending', 'history', 'history_0', 'history_1', 'history_2', 'state', 'channels',
                         'channel_targets', 'dead_letter')
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend m
                        WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND m.objid = c.oid
                          AND m.deptype = 'e' AND m.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                          AND m.refobjid = ext)
     LIMIT 1;
    IF what IS NOT NULL THEN
        RAISE EXCEPTION 'cannot update pg_outbox: % in schema "outbox" is not part of the extension', what
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'pg_outbox does not read or run an object it did not create.',
                  HINT = fix;
    END IF;
END $$;
SELECT pg_temp.pg_outbox_check_upgrade_schema();
DROP FUNCTION pg_temp.pg_outbox_check_upgrade_schema();

-- ---------------------------------------------------------------------------------------
-- Everything a publisher can call (issue #11, part 3): no internal helper is granted but
-- outbox._change() (CREATE TRIGGER needs it) and outbox._worker_status() (the status view).
-- attach() checks by itself in C and makes the triggers through outbox._attach_triggers(),
-- which it calls without the caller needing a right on it; the attachments view reads the
-- catalogs itself. _check_attachment(), _split_tgargs() and _resolved_key() are gone.
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION outbox._attach_triggers(relation regclass, mode text, channel text, key_columns text[],
                                        include_columns text[], table_name text, resolved_key text[],
                                        channel_template text, ops text[]) RETURNS text
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    other record;
    args text;
    row_ops text[];
BEGIN
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
    row_ops := array_remove(ops, 'TRUNCATE');
    IF cardinality(row_ops) > 0 THEN
        EXECUTE format('CREATE TRIGGER outbox_change AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION outbox._change(%s)',
                       array_to_string(row_ops, ' OR '), relation, args);
        IF mode = 'outbox' THEN
            -- writes the events of the statement's rows into outbox.pending with one INSERT
            EXECUTE format('CREATE TRIGGER outbox_flush AFTER %s ON %s FOR EACH STATEMENT'
                           ' EXECUTE FUNCTION outbox._change(%s)', array_to_string(row_ops, ' OR '), relation, args);
        END IF;
    END IF;
    IF 'TRUNCATE' = ANY (ops) THEN
        EXECUTE format('CREATE TRIGGER outbox_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT'
                       ' EXECUTE FUNCTION outbox._change(%s)', relation, args);
    END IF;
    RETURN format('attached %s: mode %s, channel %s, key (%s)%s, operations %s',
                  table_name, mode, quote_literal(channel_template), array_to_string(resolved_key, ', '),
                  CASE WHEN cardinality(include_columns) > 0
                       THEN format(', data (%s)', array_to_string(include_columns, ', ')) ELSE '' END,
                  array_to_string(ops, ', '));
END $$;
COMMENT ON FUNCTION outbox._attach_triggers(regclass, text, text, text[], text[], text, text[], text, text[]) IS
    'internal: the trigger DDL of outbox.attach(), after its checks';

CREATE OR REPLACE FUNCTION outbox.attach(relation regclass, channel text DEFAULT NULL, mode text DEFAULT 'outbox',
                              key_columns text[] DEFAULT NULL, include_columns text[] DEFAULT NULL,
                              operations text[] DEFAULT '{INSERT,UPDATE,DELETE}') RETURNS text
    LANGUAGE c VOLATILE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'outbox_attach';
COMMENT ON FUNCTION outbox.attach(regclass, text, text, text[], text[], text[]) IS
    'send {"op","table","id"} for every change of a table: NOTIFY at commit (mode notify) or a durable event (mode outbox)';

CREATE OR REPLACE VIEW outbox.attachments AS
SELECT s.relid::regclass AS "table",
       coalesce(nullif(a.args[2], ''), n.nspname || '.' || c.relname) AS channel,
       a.args[1] AS mode,
       coalesce(nullif(a.args[3], '')::text[], k.key) AS key_columns,
       nullif(a.args[4], '')::text[] AS include_columns,
       ARRAY(SELECT o.op FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'], ARRAY[4, 16, 8, 32]) AS o(op, bit)
              WHERE (s.bits & o.bit) <> 0) AS operations
  FROM (SELECT t.tgrelid AS relid, bit_or(t.tgtype::integer) AS bits,
               (array_agg(t.tgargs ORDER BY t.tgname))[1] AS tgargs
          FROM pg_catalog.pg_trigger t
         WHERE t.tgfoid = 'outbox._change()'::regprocedure AND t.tgparentid = 0
         GROUP BY t.tgrelid) s
  -- the trigger's arguments (pg_trigger.tgargs: each one followed by a zero byte), checked to be
  -- text of the database encoding by convert_from()
  CROSS JOIN LATERAL (
        SELECT array_agg(convert_from(substring(s.tgargs FROM z.prev + 2 FOR z.pos - z.prev - 1),
                                      getdatabaseencoding()) COLLATE "default" ORDER BY z.pos) AS args
          FROM (SELECT g.i AS pos, coalesce(lag(g.i) OVER (ORDER BY g.i), -1) AS prev
                  FROM generate_series(0, length(s.tgargs) - 1) AS g(i)
                 WHERE get_byte(s.tgargs, g.i) = 0) z) a
  -- the key in effect when key_columns is not given: the primary key, else the replica identity
  -- index (from the catalogs: no lock on the table)
  LEFT JOIN LATERAL (
        SELECT ARRAY(SELECT att.attname::text COLLATE "default"
                       FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS ik(attnum, n)
                       JOIN pg_catalog.pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = ik.attnum
                      WHERE ik.n <= i.indnkeyatts ORDER BY ik.n) AS key
          FROM pg_catalog.pg_index i
         WHERE i.indrelid = s.relid AND (i.indisprimary OR i.indisreplident) AND i.indimmediate
           AND i.indexprs IS NULL AND i.indpred IS NULL
         ORDER BY i.indisprimary DESC LIMIT 1) k ON true
  JOIN pg_catalog.pg_class c ON c.oid = s.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;
DROP FUNCTION outbox._check_attachment(regclass, text, text, text[], text[], text[]);
DROP FUNCTION outbox._split_tgargs(bytea);
DROP FUNCTION outbox._resolved_key(regclass, text[]);
REVOKE ALL ON FUNCTION outbox._attach_triggers(regclass, text, text, text[], text[], text, text[], text, text[]) FROM PUBLIC;

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
                   created_at timestamptz, published_at timestamptz, envelope jsonb)
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
        envelope := r.envelope; -- [consumers]
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
                   created_at timestamptz, published_at timestamptz, envelope jsonb)
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
-- waiting and named consumers (45_consumers.sql) call outbox.replay() as the caller, so channel
-- rights apply to them; the view outbox.consumers (every consumer's name and channels) is not
-- granted: it would show a tenant the other tenants' consumers
GRANT EXECUTE ON FUNCTION outbox.wait(bigint, text[], interval, integer), outbox.create_consumer(text, text[], text),
                          outbox.next(text, integer, interval), outbox.ack(text, bigint), outbox.drop_consumer(text)
    TO outbox_consumer;


-- ---- rob-events: retries of events that fail alone, outbox.discard(), stuck events in status ----
-- Events that failed alone and are being retried (pg_outbox.max_attempts, pg_outbox.retry_delay);
-- the drain leaves them out of its batches until next_attempt_at. Rows go when the event is
-- published, dead-lettered or discarded.
CREATE TABLE outbox.failures (
    id              bigint PRIMARY KEY,
    attempts        integer NOT NULL,
    first_failed_at timestamptz NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    error           text NOT NULL,
    sqlstate        text NOT NULL
);
COMMENT ON TABLE outbox.failures IS
    'pending events that failed alone and are retried; after pg_outbox.max_attempts they become dead letters';

-- Events an admin discarded with outbox.discard(): recorded, never silent (the payload is not
-- kept, its size is).
CREATE TABLE outbox.discarded (
    id            bigint PRIMARY KEY,
    channel       text NOT NULL,
    key           text,
    type          text,
    payload_bytes integer,
    created_at    timestamptz NOT NULL,
    discarded_at  timestamptz NOT NULL,
    discarded_by  name NOT NULL,
    was           text NOT NULL,
    reason        text,
    error         text,
    sqlstate      text
);
COMMENT ON TABLE outbox.discarded IS 'events removed by outbox.discard(), with who, when, why and their last error';
SELECT pg_catalog.pg_extension_config_dump('outbox.discarded', '');

CREATE OR REPLACE FUNCTION outbox.retry(event_id bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE moved bigint; stored bigint;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a pending event being retried: try it at the next drain, with a fresh count
    DELETE FROM outbox.failures f WHERE f.id = event_id
       AND EXISTS (SELECT FROM outbox.pending p WHERE p.id = event_id);
    IF FOUND THEN
        PERFORM outbox._wake_at_commit();
        RETURN event_id;
    END IF;
    WITH d AS (DELETE FROM outbox.dead_letter WHERE id = event_id RETURNING *),
         i AS (INSERT INTO outbox.pending (id, channel, key, type, payload, created_at)
               SELECT id, channel, key, type, payload, created_at FROM d RETURNING id)
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i) INTO moved, stored;
    IF moved = 0 THEN
        RAISE EXCEPTION 'event % is neither a dead letter nor being retried', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'outbox.dead_letters lists the events that failed, outbox.failures those being retried.';
    END IF;
    IF stored <> moved THEN
        RAISE EXCEPTION 'event % could not be put back into outbox.pending', event_id
            USING ERRCODE = 'triggered_action_exception',
                  DETAIL = 'A trigger, rule or policy on outbox.pending skipped the row.',
                  HINT = 'Drop what was added to outbox.pending.';
    END IF;
    PERFORM outbox._wake_at_commit();
    RETURN event_id;
END $$;
COMMENT ON FUNCTION outbox.retry(bigint) IS
    'put a dead letter back into the outbox, or try an event being retried at once with a fresh count';

CREATE FUNCTION outbox.discard(event_id bigint, reason text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE moved bigint; stored bigint; source text;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id cannot be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    source := 'dead letter';
    WITH d AS (DELETE FROM outbox.dead_letter WHERE id = event_id RETURNING *),
         i AS (INSERT INTO outbox.discarded (id, channel, key, type, payload_bytes, created_at, discarded_at,
                                             discarded_by, was, reason, error, sqlstate)
               SELECT id, channel, key, type, pg_column_size(payload), created_at, clock_timestamp(),
                      session_user, 'dead letter', reason, error, sqlstate FROM d RETURNING id)
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i) INTO moved, stored;
    IF moved = 0 THEN
        source := 'pending';
        WITH d AS (DELETE FROM outbox.pending WHERE id = event_id RETURNING *),
             i AS (INSERT INTO outbox.discarded (id, channel, key, type, payload_bytes, created_at, discarded_at,
                                                 discarded_by, was, reason, error, sqlstate)
                   SELECT d.id, d.channel, d.key, d.type, pg_column_size(d.payload), d.created_at, clock_timestamp(),
                          session_user, 'pending', reason, f.error, f.sqlstate
                     FROM d LEFT JOIN outbox.failures f ON f.id = d.id RETURNING id)
        SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM i) INTO moved, stored;
    END IF;
    IF moved = 0 THEN
        RAISE EXCEPTION 'event % is neither pending nor a dead letter', event_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'outbox.event(id) tells whether it was published; outbox.discarded lists what was discarded.';
    END IF;
    IF stored <> moved THEN
        RAISE EXCEPTION 'event % could not be recorded in outbox.discarded', event_id
            USING ERRCODE = 'triggered_action_exception',
                  DETAIL = 'A trigger, rule or policy on outbox.discarded skipped the row; nothing was discarded.',
                  HINT = 'Drop what was added to outbox.discarded.';
    END IF;
    DELETE FROM outbox.failures WHERE id = event_id;
    RAISE LOG 'pg_outbox: event % (%) discarded by %: %', event_id, source, session_user, coalesce(reason, 'no reason given');
    RETURN format('discarded event %s (%s); recorded in outbox.discarded', event_id, source);
END $$;
COMMENT ON FUNCTION outbox.discard(bigint, text) IS
    'remove a pending or dead-letter event without publishing it; recorded in outbox.discarded';

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
           (SELECT count(*) FROM outbox.consumer c WHERE c.state = 'lost') AS lost_consumers,
           -- [rob-events] events that fail alone and are retried (outbox.failures has them all)
           (SELECT count(*) FROM outbox.failures) AS retrying,
           f.id AS stuck_event,
           f.sqlstate || ': ' || f.error || format(' (attempt %s of %s, next at %s)', f.attempts,
               coalesce(current_setting('pg_outbox.max_attempts', true), '?'), f.next_attempt_at) AS stuck_error,
           f.first_failed_at AS stuck_since
      FROM outbox.state s CROSS JOIN outbox._worker_status() w
      LEFT JOIN LATERAL (SELECT * FROM outbox.failures ORDER BY id LIMIT 1) f ON true;
REVOKE ALL ON outbox.failures, outbox.discarded FROM PUBLIC;
GRANT SELECT ON outbox.failures, outbox.discarded TO outbox_admin;
REVOKE ALL ON FUNCTION outbox.discard(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.discard(bigint, text) TO outbox_admin;

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

-- ---- merge of channel rights and epochs: replay(), replay_channel(), wait() and next() were
-- dropped and created again above with their epoch column; outbox_consumer keeps its rights ----
GRANT EXECUTE ON FUNCTION outbox.replay(bigint, text[], integer, bigint), outbox.replay_channel(text, bigint, integer, bigint)
    TO outbox_consumer;
GRANT EXECUTE ON FUNCTION outbox.wait(bigint, text[], interval, integer), outbox.next(text, integer, interval)
    TO outbox_consumer;

-- ---- the functions several changes of 1.2 edit, in their final form (as src/sql/30_trigger.sql
-- and 40_replay.sql define them): channel rights and epochs in replay(), attach() in C with its
-- read-only check ----
CREATE OR REPLACE FUNCTION outbox.replay(after_pos bigint, channels text[] DEFAULT NULL, max_events integer DEFAULT 1000,
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
        epoch := r.epoch; envelope := r.envelope; -- [consumers] [epochs]
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

CREATE OR REPLACE FUNCTION outbox._replay_channel(ch text, after_seq bigint, max_events integer, after_epoch bigint)
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

CREATE OR REPLACE FUNCTION outbox.attach(relation regclass, channel text DEFAULT NULL, mode text DEFAULT 'outbox',
                              key_columns text[] DEFAULT NULL, include_columns text[] DEFAULT NULL,
                              operations text[] DEFAULT '{INSERT,UPDATE,DELETE}') RETURNS text
    LANGUAGE c VOLATILE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'outbox_attach';
ALTER FUNCTION outbox.replay(bigint, text[], integer, bigint) SECURITY DEFINER;
