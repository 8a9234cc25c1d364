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
