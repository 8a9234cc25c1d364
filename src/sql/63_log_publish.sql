
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
