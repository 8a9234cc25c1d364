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
