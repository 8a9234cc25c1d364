
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
