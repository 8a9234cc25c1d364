
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #15 (the storage), part 3: the producer into the log in C (src/log_publish.cpp).
-- One row in outbox.log_<cur_seg>, written without the executor, with the arguments checked as
-- outbox.publish() checks them; outbox._log_insert() (60_log.sql) is the reference it is compared
-- with (regress log_publish). Internal, like the rest of the log until the switch moves
-- outbox.publish() here: no role is granted it.
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION outbox._log_publish(channel text, payload jsonb DEFAULT NULL, key text DEFAULT NULL,
                                    type text DEFAULT NULL) RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_log_publish';
COMMENT ON FUNCTION outbox._log_publish(text, jsonb, text, text) IS
    'internal (issue #15): insert one event into the log''s current segment, in C (the reference is outbox._log_insert())';
-- The segment producers write into is remembered by each backend (src/log_publish.cpp) until a
-- relcache invalidation of outbox.log_state or of a segment: a rotation TRUNCATEs the segment it
-- makes current (that sends one), and this trigger sends one for every other change of cur_seg
-- (a DBA's UPDATE, the switch, a restore's INSERT). ALWAYS: under session_replication_role =
-- replica too. Not covered: ALTER TABLE ... DISABLE TRIGGER ALL; producers then keep the segment
-- they knew until the next rotation (harmless: a pass reads every segment, doc/storage.md).
CREATE FUNCTION outbox._log_state_moved() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'outbox_log_state_moved';
COMMENT ON FUNCTION outbox._log_state_moved() IS
    'internal: every backend reads the log''s current segment again after outbox.log_state changed';
CREATE TRIGGER log_state_moved AFTER INSERT OR DELETE OR UPDATE OF cur_seg ON outbox.log_state
    FOR EACH STATEMENT EXECUTE FUNCTION outbox._log_state_moved();
ALTER TABLE outbox.log_state ENABLE ALWAYS TRIGGER log_state_moved;
