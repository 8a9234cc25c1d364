-- pg_outbox install script, assembled from src/sql/NN_*.sql by `make`.
-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_outbox" to load this file. \quit

-- Objects live in schema outbox (the control file's schema): a schema named pg_outbox cannot
-- be created, the pg_ prefix is reserved for system schemas.
REVOKE ALL ON SCHEMA outbox FROM PUBLIC;

-- Every function that writes calls this first: on a hot standby or in a read-only transaction
-- it fails with 25006 (read_only_sql_transaction) and says what to do, before any lock or
-- transaction ID is asked for.
CREATE FUNCTION outbox._check_writable(what text) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_check_writable';
COMMENT ON FUNCTION outbox._check_writable(text) IS
    'internal: raise read_only_sql_transaction on a hot standby or in a read-only transaction';
