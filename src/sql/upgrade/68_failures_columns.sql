
-- 1.3, issue #15: outbox.failures names the row of the log that failed (50_admin.sql, 68_log_failures.sql)
ALTER TABLE outbox.failures ADD COLUMN xid xid8, ADD COLUMN seg integer, ADD COLUMN copied boolean NOT NULL DEFAULT false;
