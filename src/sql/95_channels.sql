
-- ---------------------------------------------------------------------------------------
-- Who sent a notification (issue #11 part 2)
-- ---------------------------------------------------------------------------------------
-- NOTIFY needs no privilege. outbox.worker_pids() (50_admin.sql) tells a consumer which
-- backends' notifications are envelopes; whoever may replay may ask.
GRANT EXECUTE ON FUNCTION outbox.worker_pids() TO outbox_reader;
