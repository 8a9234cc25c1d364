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
