-- The drain takes its batch by ctid (DELETE ... WHERE ctid = ANY (...) RETURNING), which hands
-- the rows back in physical order; positions must still follow the event ids. Here events are
-- written into space VACUUM freed at the front of outbox.pending, so physical order and id order
-- differ, and the drain has to sort.
-- every test file starts from a fresh extension: its output does not depend on the others
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;

SELECT count(outbox.publish('order_test', jsonb_build_object('n', g, 'pad', repeat('x', 500))))
  FROM generate_series(1, 200) g;
SELECT outbox.drain(150);
VACUUM outbox.pending;
SELECT count(outbox.publish('order_test', jsonb_build_object('n', g, 'pad', repeat('x', 500))))
  FROM generate_series(201, 300) g;
-- physical order is no longer id order (else this test would not test the sort)
SELECT count(*) > 0 AS out_of_order
  FROM (SELECT id, lag(id) OVER (ORDER BY ctid) AS prev FROM outbox.pending) s
 WHERE prev > id;
SELECT outbox.drain(1000);
-- every event once, positions 1..300 in id order, seq = pos on this one channel
SELECT count(*) AS events, count(DISTINCT id) AS ids, min(pos), max(pos),
       bool_and(seq = pos) AS seq_is_pos,
       bool_and((payload->>'n')::int = id) AS payload_matches
  FROM outbox.history;
SELECT count(*) AS out_of_id_order
  FROM (SELECT id, lag(id) OVER (ORDER BY pos) AS prev FROM outbox.history) s
 WHERE prev > id;
SELECT count(*) AS pending FROM outbox.pending;
