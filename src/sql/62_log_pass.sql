
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #15 (the storage), part 2: the drain pass over the log in C, without SPI
-- (src/log_pass.cpp). It publishes exactly what the reference pass outbox._log_pass_sql() would
-- (regress log_pass_c and isolation log_pass_c compare the two); it is the pass the drain
-- worker will run. Internal, like the rest of the log until the switch: no role is granted it.
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION outbox._log_pass(max_events integer DEFAULT 1000) RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_log_pass';
COMMENT ON FUNCTION outbox._log_pass(integer) IS
    'internal (issue #15): one drain pass over the log, in C (the reference is outbox._log_pass_sql())';

-- outbox.log_channels changed by anything but a pass (a restore, rotation, a DBA): every process's
-- seq cache (log_pass.cpp) followed only the batches, so it loads the table again. The trigger
-- takes the batch lock, so no pass runs between this transaction's commit and the invalidation it
-- sends (a pass that saw the new rows with its old cache would hand out their seqs again).
-- Not on TRUNCATE: it gives the table a new relfilenode, which the cache compares already, and
-- the batch lock taken after TRUNCATE's ACCESS EXCLUSIVE lock could deadlock with a pass that
-- holds the batch lock and waits to read the table.
CREATE FUNCTION outbox._log_channels_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'outbox_log_channels_changed';
COMMENT ON FUNCTION outbox._log_channels_changed() IS
    'internal: every process''s log seq cache reloads outbox.log_channels after a change';
CREATE TRIGGER log_channels_changed BEFORE INSERT OR UPDATE OR DELETE ON outbox.log_channels
    FOR EACH STATEMENT EXECUTE FUNCTION outbox._log_channels_changed();
-- ALWAYS: a write under session_replication_role = replica (a DBA's session, a replication
-- tool's) fired no ORIGIN trigger, and the caches handed out the seqs below the written ones
-- again. Not covered: ALTER TABLE ... DISABLE TRIGGER ALL (pg_restore --disable-triggers), which
-- skips ALWAYS triggers too, and whose ENABLE TRIGGER ALL leaves it ORIGIN (doc/storage.md).
ALTER TABLE outbox.log_channels ENABLE ALWAYS TRIGGER log_channels_changed;
