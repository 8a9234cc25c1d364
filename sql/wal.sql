-- Publication targets: 'notify' (default), 'wal' (a transactional logical decoding message,
-- prefix 'pg_outbox', with the full envelope) or 'both'; read back with real logical decoding
-- (a test_decoding slot and a pgoutput slot with messages 'true'). The drain is driven by hand.
-- Positions are printed relative to the position before the test; no LSN or xid is printed.
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

SHOW wal_level;

-- ---- set_target() / reset_target(): every bad input ----
SELECT pg_temp.err($$SELECT outbox.set_target(NULL, 'wal')$$);
SELECT pg_temp.err($$SELECT outbox.set_target('', 'wal')$$);
SELECT pg_temp.err($$SELECT outbox.set_target(repeat('c', 64), 'wal')$$);
SELECT pg_temp.err($$SELECT outbox.set_target(repeat('é', 32), 'wal')$$);
SELECT pg_temp.err($$SELECT outbox.set_target('wal.orders', NULL)$$);
SELECT pg_temp.err($$SELECT outbox.set_target('wal.orders', 'kafka')$$);
SELECT pg_temp.err($$SELECT outbox.set_target('wal.orders', '')$$);
SELECT pg_temp.err($$SELECT outbox.reset_target(NULL)$$);
SELECT pg_temp.err($$SELECT outbox.reset_target('')$$);
SELECT pg_temp.err($$SELECT outbox.reset_target(repeat('c', 64))$$);
-- ... and a direct INSERT that bypasses set_target()
SELECT split_part(pg_temp.err($$INSERT INTO outbox.channel_targets VALUES ('x', 'kafka')$$), ' | detail', 1);
SELECT split_part(pg_temp.err($$INSERT INTO outbox.channel_targets VALUES (repeat('c', 64), 'wal')$$), ' | detail', 1);
SELECT count(*) AS no_rows_written FROM outbox.channel_targets;

-- good calls: case and blanks do not matter, a second call replaces the first, 63 bytes fit
SELECT outbox.set_target('wal.orders', 'notify');
SELECT outbox.set_target('wal.orders', ' WAL ');
SELECT outbox.set_target('wal.both', 'both');
SELECT outbox.set_target('wal.explicit-notify', 'notify');
SELECT outbox.set_target(repeat('c', 63), 'both');
SELECT * FROM outbox.channel_targets ORDER BY channel;
SELECT outbox.reset_target(repeat('c', 63)) AS removed, outbox.reset_target('never-set') AS removed_nothing;
-- the effective targets; a channel that only published so far follows the built-in default
SELECT outbox.publish('wal.plain', '{"before": "slots"}') > 0 AS ok;
SELECT * FROM outbox.targets WHERE channel LIKE 'wal.%' OR channel = '*' ORDER BY channel;

-- ---- logical decoding slots ----
-- publish everything pending from earlier tests first: positions below are relative to this
SELECT outbox.drain(1000000) >= 1 AS drained;
SELECT last_pos AS base FROM outbox.state \gset
CREATE PUBLICATION wal_pub; -- no tables: the pgoutput slot carries only the messages
SELECT 'init' FROM pg_create_logical_replication_slot('wal_td', 'test_decoding');
SELECT 'init' FROM pg_create_logical_replication_slot('wal_po', 'pgoutput');

-- test_decoding: "message: transactional: 1 prefix: pg_outbox, sz: N content:<envelope>"
CREATE FUNCTION pg_temp.td_messages()
    RETURNS TABLE (n bigint, header text, sz_ok boolean, msg jsonb) LANGUAGE sql AS $$
    SELECT c.n, regexp_replace(split_part(c.data, ' content:', 1), ', sz: [0-9]+', ''),
           (regexp_match(c.data, ', sz: ([0-9]+) content:'))[1]::bigint
               = octet_length(substr(c.data, position(' content:' in c.data) + 9)),
           substr(c.data, position(' content:' in c.data) + 9)::jsonb
      FROM pg_logical_slot_peek_changes('wal_td', NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1')
           WITH ORDINALITY AS c(lsn, xid, data, n)
     WHERE c.data LIKE 'message:%'
$$;
-- pgoutput, protocol 1: a message record is Byte1('M'), Int8 flags (1 = transactional),
-- Int64 lsn, String prefix (NUL-terminated), Int32 size, Byte{size} content
CREATE FUNCTION pg_temp.po_records()
    RETURNS TABLE (n bigint, data bytea) LANGUAGE sql AS $$
    SELECT c.n, c.data
      FROM pg_logical_slot_peek_binary_changes('wal_po', NULL, NULL, 'proto_version', '1',
                                               'publication_names', 'wal_pub', 'messages', 'true')
           WITH ORDINALITY AS c(lsn, xid, data, n)
$$;
CREATE FUNCTION pg_temp.po_messages()
    RETURNS TABLE (n bigint, flags int, prefix text, sz_ok boolean, msg jsonb) LANGUAGE sql AS $$
    SELECT r.n, get_byte(r.data, 1),
           convert_from(substring(r.data FROM 11 FOR x.plen), 'UTF8'),
           ((get_byte(r.data, 11 + x.plen)::bigint << 24) | (get_byte(r.data, 12 + x.plen) << 16)
            | (get_byte(r.data, 13 + x.plen) << 8) | get_byte(r.data, 14 + x.plen))
               = length(r.data) - (15 + x.plen),
           convert_from(substring(r.data FROM 16 + x.plen), 'UTF8')::jsonb
      FROM pg_temp.po_records() r,
           LATERAL (SELECT position('\x00'::bytea IN substring(r.data FROM 11)) - 1 AS plen) x
     WHERE get_byte(r.data, 0) = ascii('M')
$$;

-- ---- producers: committed, rolled back, savepoints; three targets interleaved ----
BEGIN;
SELECT outbox.publish('wal.orders', '{"order": 1}', key => 'order-1', type => 'created') > 0 AS ok;
SELECT outbox.publish('wal.plain', '{"plain": 1}') > 0 AS ok;
SELECT outbox.publish('wal.both', '{"both": 1}', key => 'b-1') > 0 AS ok;
SELECT outbox.publish('wal.explicit-notify', '{"notify": 1}') > 0 AS ok;
COMMIT;
BEGIN;
SELECT outbox.publish('wal.orders', '{"rolled": "back"}') > 0 AS ok;
SELECT outbox.publish('wal.both', '{"rolled": "back"}') > 0 AS ok;
ROLLBACK;
BEGIN;
SAVEPOINT s1;
SELECT outbox.publish('wal.orders', '{"savepoint": "rolled back"}') > 0 AS ok;
ROLLBACK TO SAVEPOINT s1;
SELECT outbox.publish('wal.orders', NULL) > 0 AS ok;
SELECT outbox.publish('wal.orders', '"a \"quoted\" string with é and a\nnewline"', type => 'odd') > 0 AS ok;
SELECT outbox.publish('wal.both', '[1, 2, 3]') > 0 AS ok;
COMMIT;
SELECT outbox.publish('wal.orders', '{"order": 2}', key => 'order-2') > 0 AS ok;

-- a drain that rolls back writes nothing a decoder will ever see
BEGIN;
SELECT outbox.drain();
ROLLBACK;
SELECT count(*) AS decoded_after_rolled_back_drain FROM pg_temp.td_messages();
SELECT count(*) AS decoded_after_rolled_back_drain FROM pg_temp.po_messages();

-- two batches, two transactions
SELECT outbox.drain(3);
SELECT outbox.drain();
SELECT pos - :base AS pos, seq, channel, key, type, payload FROM outbox.history WHERE pos > :base ORDER BY pos;

-- test_decoding sees exactly the 'wal' and 'both' events, once each, in pos order, with the
-- full envelope; nothing of 'wal.plain' / 'wal.explicit-notify', nothing rolled back
SELECT header, sz_ok, (msg->>'pos')::bigint - :base AS pos, msg->'seq' AS seq, msg->>'channel' AS channel,
       msg->>'key' AS key, msg->>'type' AS type, msg->'payload' AS payload, msg ? 'truncated' AS truncated
  FROM pg_temp.td_messages() ORDER BY n;
-- the envelope is the history row: same id, pos, seq, key, type, payload
SELECT count(*) AS messages, count(DISTINCT h.pos) AS distinct_events,
       bool_and(h.id = (m.msg->>'id')::bigint AND h.seq = (m.msg->>'seq')::bigint
                AND h.key IS NOT DISTINCT FROM m.msg->>'key' AND h.type IS NOT DISTINCT FROM m.msg->>'type'
                AND coalesce(h.payload, 'null') = m.msg->'payload') AS all_match
  FROM pg_temp.td_messages() m JOIN outbox.history h ON h.pos = (m.msg->>'pos')::bigint;
SELECT array_agg((msg->>'pos')::bigint - :base ORDER BY n) AS decoded_in_order,
       (SELECT array_agg(pos - :base ORDER BY pos) FROM outbox.history
         WHERE pos > :base AND channel IN ('wal.orders', 'wal.both')) AS published_wal_events
  FROM pg_temp.td_messages();

-- pgoutput: each drain transaction is Begin, its messages, Commit; 'M' records carry flags 1
-- (transactional), prefix pg_outbox and the same envelopes in the same order
SELECT string_agg(chr(get_byte(data, 0)), '' ORDER BY n) AS record_types FROM pg_temp.po_records();
SELECT flags, prefix, sz_ok, (msg->>'pos')::bigint - :base AS pos, msg->>'channel' AS channel,
       msg->'payload' AS payload
  FROM pg_temp.po_messages() ORDER BY n;
SELECT (SELECT array_agg(msg ORDER BY n) FROM pg_temp.po_messages())
     = (SELECT array_agg(msg ORDER BY n) FROM pg_temp.td_messages()) AS same_messages_in_both_slots;
-- the raw bytes: the prefix and the envelope text are where the protocol puts them
SELECT position(convert_to('pg_outbox', 'UTF8') IN data) AS prefix_at,
       position(convert_to('"channel":"wal.orders"', 'UTF8') IN data) > 0 AS has_channel
  FROM pg_temp.po_records() WHERE get_byte(data, 0) = ascii('M') ORDER BY n LIMIT 1;

-- consume what was checked
SELECT slot_name FROM pg_replication_slot_advance('wal_td', pg_current_wal_lsn());
SELECT slot_name FROM pg_replication_slot_advance('wal_po', pg_current_wal_lsn());
SELECT count(*) AS left_over FROM pg_temp.td_messages();

-- ---- a 1 MB payload travels intact on a 'both' channel: the WAL message carries all of it,
-- the NOTIFY only the id-only envelope (test/isolation/specs/wal_targets.spec shows that side) ----
SELECT outbox.publish('wal.both', jsonb_build_object('blob', string_agg(md5(i::text), '')), key => 'big') AS big_id
  FROM generate_series(1, 32768) AS i \gset
SELECT outbox.drain();
SELECT octet_length(payload::text) AS payload_bytes FROM outbox.history WHERE id = :big_id;
SELECT octet_length(msg::text) > 1048576 AS message_over_1mb, msg ? 'truncated' AS truncated,
       md5((msg->'payload')::text) = (SELECT md5(payload::text) FROM outbox.history WHERE id = :big_id) AS td_payload_intact
  FROM pg_temp.td_messages();
SELECT sz_ok, md5((msg->'payload')::text) = (SELECT md5(payload::text) FROM outbox.history WHERE id = :big_id)
           AS pgoutput_payload_intact
  FROM pg_temp.po_messages();
SELECT slot_name FROM pg_replication_slot_advance('wal_td', pg_current_wal_lsn());
SELECT slot_name FROM pg_replication_slot_advance('wal_po', pg_current_wal_lsn());

-- ---- the '*' default: channels without a row of their own follow it ----
SELECT outbox.set_target('*', 'wal');
SELECT * FROM outbox.targets WHERE channel LIKE 'wal.%' OR channel = '*' ORDER BY channel;
SELECT outbox.publish('wal.plain', '{"plain": "now wal"}') > 0 AS ok;
SELECT outbox.publish('wal.explicit-notify', '{"notify": "still notify"}') > 0 AS ok;
SELECT outbox.publish('wal.new', '{"new": 1}') > 0 AS ok;
SELECT outbox.drain();
SELECT (msg->>'pos')::bigint - :base AS pos, msg->>'channel' AS channel, msg->'payload' AS payload
  FROM pg_temp.td_messages() ORDER BY n;
SELECT outbox.reset_target('*') AS removed;
SELECT * FROM outbox.targets WHERE channel = '*';
SELECT slot_name FROM pg_replication_slot_advance('wal_td', pg_current_wal_lsn());
SELECT slot_name FROM pg_replication_slot_advance('wal_po', pg_current_wal_lsn());
-- back to the built-in default: wal.plain publishes nothing to the WAL any more
SELECT outbox.publish('wal.plain', '{"plain": "notify again"}') > 0 AS ok;
SELECT outbox.drain();
SELECT count(*) AS decoded FROM pg_temp.td_messages();

-- ---- the Debezium outbox router's column shape ----
SELECT aggregatetype, aggregateid, type, payload, pos - :base AS pos
  FROM outbox.debezium_events WHERE pos > :base AND aggregatetype = 'wal.orders'
 ORDER BY pos;
SELECT count(*) = (SELECT count(*) FROM outbox.history) AS one_row_per_event FROM outbox.debezium_events;

-- ---- clean up: slots hold WAL back, and later tests expect the built-in default ----
SELECT pg_drop_replication_slot('wal_td');
SELECT pg_drop_replication_slot('wal_po');
DROP PUBLICATION wal_pub;
SELECT outbox.reset_target(channel) FROM outbox.channel_targets ORDER BY channel;
