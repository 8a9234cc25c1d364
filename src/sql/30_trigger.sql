
-- ---------------------------------------------------------------------------------------
-- The generic change trigger: outbox.attach(), outbox.detach(), outbox.attachments
-- ---------------------------------------------------------------------------------------
-- An attachment is the trigger(s) themselves: outbox._change(mode, channel, key_columns,
-- include_columns) with the configuration in its arguments. pg_dump (also pg_dump -t) and
-- pg_upgrade keep it with the table, DROP TABLE removes it, and there is no second copy
-- that could disagree with the triggers that exist.

CREATE FUNCTION outbox._change() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'outbox_change_trigger';
COMMENT ON FUNCTION outbox._change() IS
    'the change trigger created by outbox.attach(); arguments: mode, channel, key columns, included columns';

-- outbox.attach() is C: it checks its arguments (ownership first, before any lock: an
-- unprivileged caller locks nothing it does not own), then calls outbox._attach_triggers()
-- through fmgr, as the caller (CREATE TRIGGER checks the caller's rights). The caller needs no
-- right on _attach_triggers(), and nobody can call it without attach()'s checks.
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

CREATE FUNCTION outbox.attach(relation regclass, channel text DEFAULT NULL, mode text DEFAULT 'outbox',
                              key_columns text[] DEFAULT NULL, include_columns text[] DEFAULT NULL,
                              operations text[] DEFAULT '{INSERT,UPDATE,DELETE}') RETURNS text
    LANGUAGE c VOLATILE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'outbox_attach';
COMMENT ON FUNCTION outbox.attach(regclass, text, text, text[], text[], text[]) IS
    'send {"op","table","id"} for every change of a table: NOTIFY at commit (mode notify) or a durable event (mode outbox)';

CREATE FUNCTION outbox.detach(relation regclass) RETURNS text
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
COMMENT ON FUNCTION outbox.detach(regclass) IS 'remove the change trigger(s) outbox.attach() created';

CREATE VIEW outbox.attachments AS
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
COMMENT ON VIEW outbox.attachments IS 'tables attached with outbox.attach()';

CREATE FUNCTION outbox._payload_text(payload jsonb) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'outbox_payload_text';
COMMENT ON FUNCTION outbox._payload_text(jsonb) IS
    'internal: the text pg_outbox sends for a stored payload (compact, in jsonb''s key order): what notify mode sends for the same row';
