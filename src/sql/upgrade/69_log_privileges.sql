
-- 1.3, issue #15: the log's objects are internal; CREATE EXTENSION revokes them in 90_privileges.sql
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON outbox.log, outbox.log_0, outbox.log_1, outbox.log_2, outbox.batches, outbox.batches_0, outbox.batches_1,
              outbox.batches_2, outbox.log_state, outbox.log_channels FROM PUBLIC;
GRANT SELECT ON outbox.log, outbox.log_0, outbox.log_1, outbox.log_2, outbox.batches, outbox.batches_0, outbox.batches_1,
                outbox.batches_2, outbox.log_state, outbox.log_channels TO outbox_admin;
GRANT EXECUTE ON FUNCTION outbox.use_log_storage() TO outbox_admin;
REVOKE ALL ON outbox.withheld FROM PUBLIC;
GRANT SELECT ON outbox.withheld TO outbox_admin;
-- the view outbox.history (67_history_view.sql): granted as the table it replaces was (the table,
-- renamed history_frozen, keeps its grants), in the order of 90_privileges.sql
GRANT SELECT ON outbox.history TO outbox_reader;
GRANT SELECT ON outbox.history TO outbox_admin;
GRANT EXECUTE ON FUNCTION outbox._history_log() TO outbox_reader;
