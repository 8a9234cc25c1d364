-- pg_outbox install script, assembled from src/sql/NN_*.sql by `make`.
-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_outbox" to load this file. \quit

-- Objects live in schema outbox (the control file's schema): a schema named pg_outbox cannot
-- be created, the pg_ prefix is reserved for system schemas.
REVOKE ALL ON SCHEMA outbox FROM PUBLIC;
