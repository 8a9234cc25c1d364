
-- 1.3, issue #15: outbox.debezium_events reads the view outbox.history again (after the rename in
-- 50_history_frozen.sql it read outbox.history_frozen): the log's events too, as 70_wal.sql has it
CREATE OR REPLACE VIEW outbox.debezium_events AS
    SELECT h.id, h.channel AS aggregatetype, h.key AS aggregateid, h.type, h.payload,
           h.pos, h.seq, h.created_at, h.published_at
      FROM outbox.history h;
