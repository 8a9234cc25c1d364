-- pg_outbox upgrade 1.0 -> 1.1 (test/t/080_upgrade.pl checks that the result equals a fresh
-- 1.1 install). 1.1 makes publishing and draining cheaper: no CHECK constraints on the state
-- row (the executor re-planned them on every drain's UPDATE), early pruning of the rows every
-- drain updates, a BRIN index instead of a btree on the history's event id, and publish() as a
-- plain function (since 1.1 it runs no SQL, so it needs neither the owner's rights nor a pinned
-- search_path).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.1'" to load this file. \quit

ALTER TABLE outbox.state DROP CONSTRAINT state_one_row, DROP CONSTRAINT state_segment;
ALTER TABLE outbox.state SET (fillfactor = 10);
ALTER TABLE outbox.channels SET (fillfactor = 25);

DROP INDEX outbox.history_0_id_idx, outbox.history_1_id_idx, outbox.history_2_id_idx;
CREATE INDEX ON outbox.history_0 USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX ON outbox.history_1 USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX ON outbox.history_2 USING brin (id) WITH (pages_per_range = 16);

ALTER FUNCTION outbox.publish(text, jsonb, text, text) SECURITY INVOKER RESET search_path;
