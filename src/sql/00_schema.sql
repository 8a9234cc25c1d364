-- pg_outbox install script, assembled from src/sql/NN_*.sql by `make`.
-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_outbox" to load this file. \quit

-- Objects live in schema outbox (the control file's schema): a schema named pg_outbox cannot
-- be created, the pg_ prefix is reserved for system schemas.
--
-- The schema must be pg_outbox's own (issue #11). CREATE EXTENSION creates it, owned by the
-- installing superuser, when it does not exist; when it does, PostgreSQL installs into it as it
-- is, and whoever owns it (or may create objects in it) could later put their own objects in the
-- way of the drain worker and the SECURITY DEFINER functions, which run as a superuser. The
-- library's utility hook refuses such a schema before CREATE EXTENSION runs; this block refuses
-- it again for the paths the hook does not see (CREATE EXTENSION ... CASCADE). Accepted: a
-- schema owned by a superuser, in which no other role may create objects, that holds nothing
-- (the one CREATE EXTENSION just made, or the one a DROP EXTENSION left behind).
-- The check runs with search_path pinned (a function of its own, in pg_temp, dropped again: no
-- trace) so that nothing in the schema being checked can stand in for a pg_catalog function or operator.
CREATE FUNCTION pg_temp.pg_outbox_check_new_schema() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nsp oid;
    owner_name name;
    owner_super boolean;
    creator text;
    what text;
BEGIN
    SELECT e.extnamespace INTO nsp FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_outbox';
    SELECT r.rolname, r.rolsuper INTO owner_name, owner_super
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner WHERE n.oid = nsp;
    IF NOT coalesce(owner_super, false) THEN
        RAISE EXCEPTION 'schema "outbox" already exists and is owned by role "%", which is not a superuser', owner_name
            USING ERRCODE = 'duplicate_schema',
                  DETAIL = 'The drain worker and pg_outbox''s SECURITY DEFINER functions run as a superuser and find '
                           'their objects in schema "outbox": its owner could replace them.',
                  HINT = 'pg_outbox installs into a schema "outbox" that it creates itself: drop or rename the '
                         'existing schema (after checking what it contains), then run CREATE EXTENSION pg_outbox again.';
    END IF;
    SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE r.rolname::text END INTO creator
      FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
     WHERE n.oid = nsp AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner
       AND NOT coalesce(r.rolsuper, false)
     LIMIT 1;
    IF creator IS NOT NULL THEN
        RAISE EXCEPTION 'schema "outbox" already exists and role "%" may create objects in it', creator
            USING ERRCODE = 'duplicate_schema',
                  DETAIL = 'The drain worker and pg_outbox''s SECURITY DEFINER functions run as a superuser and find '
                           'their objects in schema "outbox": whoever may create objects there could put their own '
                           'in the way.',
                  HINT = 'pg_outbox installs into a schema "outbox" that it creates itself: drop or rename the '
                         'existing schema (after checking what it contains), then run CREATE EXTENSION pg_outbox again.';
    END IF;
    SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) INTO what
      FROM pg_catalog.pg_depend d
     WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = nsp
       AND d.classid <> 'pg_catalog.pg_extension'::pg_catalog.regclass
     LIMIT 1;
    IF what IS NULL THEN
        SELECT pg_catalog.format('relation %s', c.relname) INTO what FROM pg_catalog.pg_class c
         WHERE c.relnamespace = nsp LIMIT 1;
    END IF;
    IF what IS NULL THEN
        SELECT pg_catalog.format('function %s', p.proname) INTO what FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = nsp LIMIT 1;
    END IF;
    IF what IS NOT NULL THEN
        RAISE EXCEPTION 'schema "outbox" already exists and is not empty'
            USING ERRCODE = 'duplicate_schema',
                  DETAIL = pg_catalog.format('It contains %s (and maybe more); pg_outbox installs only into a '
                                             'schema that holds nothing but its own objects.', what),
                  HINT = 'pg_outbox installs into a schema "outbox" that it creates itself: drop or rename the '
                         'existing schema (after checking what it contains), then run CREATE EXTENSION pg_outbox again.';
    END IF;
END $$;
SELECT pg_temp.pg_outbox_check_new_schema();
DROP FUNCTION pg_temp.pg_outbox_check_new_schema();

REVOKE ALL ON SCHEMA outbox FROM PUBLIC;

-- Every function that writes calls this first: on a hot standby or in a read-only transaction
-- it fails with 25006 (read_only_sql_transaction) and says what to do, before any lock or
-- transaction ID is asked for.
CREATE FUNCTION outbox._check_writable(what text) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_check_writable';
COMMENT ON FUNCTION outbox._check_writable(text) IS
    'internal: raise read_only_sql_transaction on a hot standby or in a read-only transaction';
