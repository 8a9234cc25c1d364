
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #15: 1.2's table outbox.history, the parent of the segments history_0..2, becomes
-- outbox.history_frozen (20_outbox.sql); outbox.history becomes a view of it and of the log
-- (67_history_view.sql). The rename keeps the rows, the segments' inheritance, the grants and
-- every view built on it (by OID: debezium_events is rebuilt on the view, 70_debezium_history.sql);
-- functions that name it are replaced by the pieces after this one (66_readers.sql, ...).
-- ---------------------------------------------------------------------------------------
ALTER TABLE outbox.history RENAME TO history_frozen;
COMMENT ON TABLE outbox.history_frozen IS 'events published by the 1.2 storage (frozen in log mode), for replay; kept for pg_outbox.retention';
