-- pg_outbox upgrade 0.9 -> 1.0, assembled by `make`: this file (the changes to objects 0.9
-- already had), then every src/sql/ piece that 0.9 did not have (test/t/080_upgrade.pl checks
-- that the result equals a fresh 1.0 install).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.0'" to load this file. \quit

ALTER TABLE outbox.state ADD COLUMN purged_pos bigint NOT NULL DEFAULT 0;

-- the history's indexes never hold duplicates: no deduplication pass on insert
ALTER INDEX outbox.history_0_id_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_1_id_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_2_id_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_0_channel_seq_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_1_channel_seq_idx SET (deduplicate_items = off);
ALTER INDEX outbox.history_2_channel_seq_idx SET (deduplicate_items = off);

CREATE OR REPLACE FUNCTION outbox._state_merge() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE outbox.state
       SET last_pos = greatest(last_pos, NEW.last_pos), purged_pos = greatest(purged_pos, NEW.purged_pos),
           cur_seg = NEW.cur_seg, seg_started_at = NEW.seg_started_at, paused = NEW.paused;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
