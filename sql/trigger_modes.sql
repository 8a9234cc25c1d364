-- The same data gives the same result in both trigger modes (issue 12): a json column holding
-- \u0000 (json accepts it, jsonb cannot store it) or duplicate keys; and notify mode's size
-- limit is NOTIFY's own: a 7999-byte payload is sent, an 8000-byte one refused.
-- (What a listener receives in notify mode: test/isolation/specs/trigger_modes.spec.)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_outbox;
RESET client_min_messages;
SELECT outbox.drain(1000000) >= 0 AS drained_leftovers;
\set err_style message
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- json with \u0000 and duplicate keys: accepted in both modes, the last key wins in both
CREATE TABLE jm_outbox (id int PRIMARY KEY, j json);
CREATE TABLE jm_notify (id int PRIMARY KEY, j json);
SELECT outbox.attach('jm_outbox', channel => 'jm', include_columns => '{j}') IS NOT NULL AS attached;
SELECT outbox.attach('jm_notify', channel => 'jm', include_columns => '{j}', mode => 'notify') IS NOT NULL AS attached;
SELECT pg_temp.err($$INSERT INTO jm_outbox VALUES (1, '{"a":1,"a":2,"s":"x\u0000y","\u0000":[1,{"k":1,"k":"last"}]}')$$);
SELECT pg_temp.err($$INSERT INTO jm_notify VALUES (1, '{"a":1,"a":2,"s":"x\u0000y","\u0000":[1,{"k":1,"k":"last"}]}')$$);
SELECT pg_temp.err($$INSERT INTO jm_outbox VALUES (2, '"\\u0000 is text here, \u0000 is not"')$$);
SELECT pg_temp.err($$INSERT INTO jm_notify VALUES (2, '"\\u0000 is text here, \u0000 is not"')$$);
SELECT pg_temp.err($$INSERT INTO jm_outbox VALUES (3, '[1.5e3, -0, 12345678901234567890.5]')$$);
SELECT key, payload->'data'->'j' AS j FROM outbox.pending WHERE channel = 'jm' ORDER BY id;
SELECT payload->'data'->'j'->>'s' = E'x\uFFFDy' AS replacement_character FROM outbox.pending WHERE key = '1';
SELECT outbox.drain(1000000) > 0 AS drained;

-- notify mode at NOTIFY's limit: the payload of a row with a 7999-byte payload is sent
CREATE TABLE bk (k text PRIMARY KEY);
SELECT outbox.attach('bk', channel => 'bk', mode => 'notify') IS NOT NULL AS attached;
SELECT octet_length('{"op":"INSERT","table":"public.bk","id":""}') AS overhead \gset
SELECT pg_temp.err(format('INSERT INTO bk VALUES (repeat(%L, %s))', 'k', 7999 - :overhead)) AS payload_7999_bytes;
SELECT pg_temp.err(format('INSERT INTO bk VALUES (repeat(%L, %s))', 'k', 8000 - :overhead)) AS payload_8000_bytes;
SELECT octet_length(k) + :overhead AS payload_bytes_sent FROM bk;
-- the same for a truncated "data": 7999 bytes with data are sent whole
CREATE TABLE bd (id int PRIMARY KEY, d text);
SELECT outbox.attach('bd', channel => 'bd', mode => 'notify', include_columns => '{d}') IS NOT NULL AS attached;
SELECT octet_length('{"op":"INSERT","table":"public.bd","id":1,"data":{"d":""}}') AS overhead_d \gset
SELECT pg_temp.err(format('INSERT INTO bd VALUES (1, repeat(%L, %s))', 'd', 7999 - :overhead_d)) AS data_7999_bytes;

SELECT outbox.detach('jm_outbox'), outbox.detach('jm_notify'), outbox.detach('bk'), outbox.detach('bd');
DROP TABLE jm_outbox, jm_notify, bk, bd;
