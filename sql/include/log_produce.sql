-- sql/include/log_produce.sql — the producers' script of regress log_publish, run once per
-- producer: :f is outbox._log_insert (the PL/pgSQL reference) or outbox._log_publish (C). Three
-- segments, several channels, transactions of several events, savepoints rolled back and
-- released, a transaction rolled back, NULL payload, key and type, an oversized payload and key.
BEGIN;
SELECT count(outbox.:f('a', jsonb_build_object('n', g))) FROM generate_series(1, 3) g;
SELECT outbox.:f('b', '{"n": 4}', 'key4', 'type4') > 0 AS ok;
SAVEPOINT s;
SELECT outbox.:f('b', '{"n": 99}') > 0 AS ok;
ROLLBACK TO s;
SAVEPOINT s2;
SELECT outbox.:f('c1', '{"n": 5}', NULL, 'only_type') > 0 AS ok;
RELEASE s2;
SELECT outbox.:f('b', NULL) > 0 AS ok;
COMMIT;
BEGIN;
SELECT outbox.:f('a', '{"n": 98}') > 0 AS ok;
ROLLBACK;
SELECT outbox.:f('big', jsonb_build_object('n', 6, 'blob', repeat('x', 9000))) > 0 AS ok;
SELECT outbox.:f('big', '{"n": 7}', repeat('k', 9000), 't') > 0 AS ok;
UPDATE outbox.log_state SET cur_seg = 1;
SELECT count(outbox.:f('c' || (g % 3 + 1), jsonb_build_object('n', 10 + g))) FROM generate_series(1, 9) g;
BEGIN;
SELECT outbox.:f('a', '{"n": 20}') > 0 AS ok;
SAVEPOINT s;
SELECT outbox.:f('c1', '{"n": 21}') > 0 AS ok;
COMMIT;
UPDATE outbox.log_state SET cur_seg = 2;
SELECT count(outbox.:f('a', jsonb_build_object('n', 30 + g))) FROM generate_series(1, 4) g;
SELECT outbox.:f('c2', '{"n": 40}', 'k', NULL) > 0 AS ok;
-- where the rows went
SELECT tableoid::regclass AS seg, count(*) FROM outbox.log GROUP BY 1 ORDER BY 1;
