
-- ---------------------------------------------------------------------------------------
-- 1.3, issue #15 (the storage), part 1: the write-once log, beside the 1.2 storage.
--
-- doc/storage.md is the design. Producers will insert each event once into a log segment and
-- never touch it again; a drain pass records one row per batch in outbox.batches_N (the snapshot
-- pair and key range that define which rows it published, and the first pos/seq it gave them);
-- positions are recomputed from those rows. Segments are emptied by TRUNCATE only.
--
-- In this release nothing publishes through these tables yet: outbox.publish(), the change
-- trigger and the drain worker still use outbox.pending and outbox.history_N. The functions here
-- are internal (no role is granted them) and work in their own position space, so the pieces of
-- the new storage (the pass in C, the readers, rotation) are built and tested on main before the
-- switch moves producers and worker onto them.
-- ---------------------------------------------------------------------------------------

-- The number of log segments, defined once (the C++ reads it through this function).
CREATE FUNCTION outbox._log_segments() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 3;
COMMENT ON FUNCTION outbox._log_segments() IS 'internal: the number of log segments (outbox.log_0 ...)';

-- The log: one row per event, inserted once by its producer, never updated or deleted.
-- xid is the producer's top-level transaction id: the window of a batch is defined by it.
CREATE TABLE outbox.log (
    id          bigint NOT NULL DEFAULT nextval('outbox.pending_id_seq'),
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    channel     text NOT NULL
                CONSTRAINT log_channel_length CHECK (octet_length(channel) BETWEEN 1 AND @MAX_CHANNEL_BYTES@),
    key         text,
    type        text,
    payload     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_enabled = false); -- insert-only, emptied by TRUNCATE: nothing to vacuum
COMMENT ON TABLE outbox.log IS 'internal (issue #15, not used yet): events, written once; the parent is always empty';
-- One btree on (xid, id): the batch scan, in batch order. One BRIN on id: lookups by event id.
-- (No CHECK on the children: the parent's is inherited.)
CREATE TABLE outbox.log_0 () INHERITS (outbox.log) WITH (autovacuum_enabled = false);
CREATE TABLE outbox.log_1 () INHERITS (outbox.log) WITH (autovacuum_enabled = false);
CREATE TABLE outbox.log_2 () INHERITS (outbox.log) WITH (autovacuum_enabled = false);
CREATE INDEX log_0_xid_id ON outbox.log_0 (xid, id) WITH (deduplicate_items = off);
CREATE INDEX log_1_xid_id ON outbox.log_1 (xid, id) WITH (deduplicate_items = off);
CREATE INDEX log_2_xid_id ON outbox.log_2 (xid, id) WITH (deduplicate_items = off);
CREATE INDEX log_0_id ON outbox.log_0 USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX log_1_id ON outbox.log_1 USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX log_2_id ON outbox.log_2 USING brin (id) WITH (pages_per_range = 16);

-- One row per pass that published something. The batch is
--   the rows of log_<seg> whose xid is visible in hi_snap and not in lo_snap (the window),
--   with (xid, id) in ((after_xid, after_id), (upto_xid, upto_id)], in (xid, id) order,
--   less the ids in skipped;
-- its k-th event (from 0) has pos first_pos + k, and the j-th event of channels[c] has seq
-- first_seqs[c] + j. cut: the pass stopped at its size limit (the window may have rows after
-- upto in this segment, or rows in a later segment): the next pass continues the window.
-- Rows live in the batches_N of the segment they read and are truncated with it.
CREATE TABLE outbox.batches (
    first_pos    bigint NOT NULL,
    n            integer NOT NULL,
    seg          integer NOT NULL,
    lo_snap      pg_snapshot NOT NULL,
    hi_snap      pg_snapshot NOT NULL,
    after_xid    xid8 NOT NULL,
    after_id     bigint NOT NULL,
    upto_xid     xid8 NOT NULL,
    upto_id      bigint NOT NULL,
    cut          boolean NOT NULL,
    skipped      bigint[] NOT NULL DEFAULT '{}',
    channels     text[] NOT NULL,
    first_seqs   bigint[] NOT NULL,
    counts       integer[] NOT NULL,
    epoch        bigint NOT NULL DEFAULT 0,
    -- the time of the insert, not of the transaction's start (now()): a pass that waited long for
    -- the batch lock would backdate its batch, and retention would take it early
    published_at timestamptz NOT NULL DEFAULT clock_timestamp()
) WITH (autovacuum_enabled = false);
COMMENT ON TABLE outbox.batches IS 'internal (issue #15, not used yet): one row per published batch; the parent is always empty';
CREATE TABLE outbox.batches_0 (PRIMARY KEY (first_pos)) INHERITS (outbox.batches) WITH (autovacuum_enabled = false);
CREATE TABLE outbox.batches_1 (PRIMARY KEY (first_pos)) INHERITS (outbox.batches) WITH (autovacuum_enabled = false);
CREATE TABLE outbox.batches_2 (PRIMARY KEY (first_pos)) INHERITS (outbox.batches) WITH (autovacuum_enabled = false);
-- The arrays of a wide batch (a pass over 1,000 new channels: channels about 20 kB, first_seqs 8 kB,
-- counts 4 kB) are compressed with lz4: pglz took 2.5M of such a pass's 27M instructions
-- (test/bench/channels_cg.sh), lz4 about 0.2M, for about the same size. A server built without
-- lz4 stores channels out of line uncompressed instead (about 17 bytes of WAL per event more for
-- 1,000 channels a batch). (Each table: ALTER TABLE does not pass a compression on to the children.)
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['batches', 'batches_0', 'batches_1', 'batches_2'] LOOP
        BEGIN
            EXECUTE format('ALTER TABLE outbox.%I ALTER COLUMN channels SET COMPRESSION lz4,'
                           ' ALTER COLUMN first_seqs SET COMPRESSION lz4, ALTER COLUMN counts SET COMPRESSION lz4', t);
        EXCEPTION WHEN feature_not_supported THEN
            EXECUTE format('ALTER TABLE ONLY outbox.%I ALTER COLUMN channels SET STORAGE EXTERNAL', t);
        END;
    END LOOP;
END $$;
-- A channel's batches (replay_channel, head(channel)): the narrow ones (64 channels or fewer, the
-- usual batch) through a GIN index on their channels, the wide ones (many channels: per-tenant
-- channels under load) through a btree on first_pos of those alone. A wide batch holds many events
-- per row, so there are few of them to read; indexed in GIN, its hundreds of keys made the pending
-- list's merge the larger part of a pass (test/bench/log_bench.sh, 100,000 channels: 42% of a perf
-- profile). A reader asks for both: "cardinality(channels) <= 64" and "> 64" (the predicates).
CREATE INDEX batches_0_channels ON outbox.batches_0 USING gin (channels) WHERE cardinality(channels) <= 64;
CREATE INDEX batches_1_channels ON outbox.batches_1 USING gin (channels) WHERE cardinality(channels) <= 64;
CREATE INDEX batches_2_channels ON outbox.batches_2 USING gin (channels) WHERE cardinality(channels) <= 64;
CREATE INDEX batches_0_wide ON outbox.batches_0 (first_pos) WHERE cardinality(channels) > 64;
CREATE INDEX batches_1_wide ON outbox.batches_1 (first_pos) WHERE cardinality(channels) > 64;
CREATE INDEX batches_2_wide ON outbox.batches_2 (first_pos) WHERE cardinality(channels) > 64;

-- The log's own counters, apart from outbox.state (1.2's) until the switch.
--   cur_seg: the segment producers write into; seg_started_at: when it became current;
--   base_pos: the position before the first batch; purged_pos: the highest position removed
--   by retention; channels_flushed_pos: outbox.log_channels covers every batch up to it.
-- The latest batch, not this row, is the truth of positions: a pass does not update it.
CREATE TABLE outbox.log_state (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cur_seg              integer NOT NULL DEFAULT 0,
    seg_started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    base_pos             bigint NOT NULL DEFAULT 0,
    base_snap            pg_snapshot NOT NULL DEFAULT '1:1:',
    purged_pos           bigint NOT NULL DEFAULT 0,
    channels_flushed_pos bigint NOT NULL DEFAULT 0,
    -- the database's events are stored in the log (true), or in 1.2's outbox.pending and
    -- outbox.history (false); set once, by the switch, never back (issue #15)
    active               boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE outbox.log_state IS 'internal (issue #15): the log''s segment and horizons, and whether the database uses it';
INSERT INTO outbox.log_state DEFAULT VALUES;
-- Whether the database stores its events in the log (outbox.log_state.active), as the
-- statement's snapshot shows it; C code reads it with log_storage_active() (src/storage_mode.cpp).
CREATE FUNCTION outbox._log_active() RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT coalesce((SELECT s.active FROM outbox.log_state s), false) $$;
COMMENT ON FUNCTION outbox._log_active() IS 'internal: does this database store its events in the log (issue #15)?';
-- pg_restore inserting the dumped row merges it into the one CREATE EXTENSION made (as
-- outbox.state does): horizons never go backwards, the segment comes from the dump.
-- Into that row while it is still pristine (its defaults: nothing was ever published, rotated or
-- switched here) the dumped row goes in as it is, replacing it (DELETE, then the INSERT goes on):
-- the UPDATE would go through outbox._log_state_check(), which judges the dump's row against
-- whatever part of the restore has arrived. With the latest batch restored first and cut, a dumped
-- cur_seg other than 0 was refused (a); with log_state restored before the batches (pg_restore -j),
-- a dumped channels_flushed_pos above the head they make was refused (b). pg_restore went on
-- without the row: the database stayed in 1.2 mode with its log restored, and handed positions
-- out again. A DBA's UPDATE of the row still goes through the check; only the singleton's INSERT
-- (a restore) comes here, and a row that is not pristine is merged by that UPDATE, checked.
-- The 1.2 head, where the log's positions continue (base_pos) at the switch: outbox.head()'s rule
-- (a restore may leave the history ahead of the state row).
CREATE FUNCTION outbox._frozen_head() RETURNS bigint
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT greatest((SELECT max(x.last_pos) FROM outbox.state x), (SELECT coalesce(max(h.pos), 0) FROM outbox.history_frozen h)) $$;
COMMENT ON FUNCTION outbox._frozen_head() IS 'internal: the highest position of 1.2''s storage';
-- Log mode with base_pos below the 1.2 head would hand the positions between them out twice (the
-- readers read 1.2's history only up to base_pos): refused by the merge and the check below, e.g. a
-- data-only restore of a log-mode dump into a database that published in 1.2 mode meanwhile.
CREATE FUNCTION outbox._log_refuse_base(base_pos bigint) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE head bigint := outbox._frozen_head();
BEGIN
    IF base_pos < head THEN
        RAISE EXCEPTION 'log mode cannot begin after position %: 1.2''s storage of this database is at position %',
                        base_pos, head
            USING ERRCODE = 'check_violation',
                  DETAIL = 'Positions from ' || (base_pos + 1) || ' to ' || head || ' would be handed out twice.',
                  HINT = 'Restore a dump into a new database (or after DROP EXTENSION and CREATE EXTENSION pg_outbox) that published nothing meanwhile; outbox.use_log_storage() switches with the right base_pos.';
    END IF;
END $$;
COMMENT ON FUNCTION outbox._log_refuse_base(bigint) IS 'internal: refuse log mode whose base_pos is below the 1.2 head';
CREATE FUNCTION outbox._log_state_merge() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE cur outbox.log_state;
BEGIN
    SELECT * INTO cur FROM outbox.log_state FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    IF NOT cur.active AND cur.cur_seg = 0 AND cur.base_pos = 0 AND cur.purged_pos = 0
       AND cur.channels_flushed_pos = 0 AND cur.base_snap::text = '1:1:' THEN
        -- what the check would refuse on an UPDATE whatever was restored: a segment that does not exist
        IF NEW.cur_seg IS NULL OR NEW.cur_seg NOT BETWEEN 0 AND outbox._log_segments() - 1 THEN
            RAISE EXCEPTION 'the dumped row of outbox.log_state names segment %, not 0 to %',
                            coalesce(NEW.cur_seg::text, 'NULL'), outbox._log_segments() - 1
                USING ERRCODE = 'check_violation',
                      HINT = 'The dump was edited or comes from another version; restore an unmodified dump.';
        END IF;
        IF NEW.active THEN
            PERFORM outbox._log_refuse_base(NEW.base_pos);
        END IF;
        DELETE FROM outbox.log_state;
        RETURN NEW;
    END IF;
    IF NEW.active AND NOT cur.active THEN
        PERFORM outbox._log_refuse_base(greatest(cur.base_pos, NEW.base_pos));
    END IF;
    UPDATE outbox.log_state
       SET cur_seg = NEW.cur_seg, seg_started_at = NEW.seg_started_at, base_pos = greatest(base_pos, NEW.base_pos),
           base_snap = NEW.base_snap, purged_pos = greatest(purged_pos, NEW.purged_pos),
           channels_flushed_pos = greatest(channels_flushed_pos, NEW.channels_flushed_pos),
           active = active OR NEW.active;
    RETURN NULL;
END $$;
CREATE TRIGGER log_state_merge BEFORE INSERT ON outbox.log_state
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION outbox._log_state_merge();

-- The segment order (oldest: cur_seg + 1) is the order a window is read in, so cur_seg may not
-- change while the latest batch is cut: the pass continuing the window would read it in another
-- order and skip segments (a window in log_1 and log_0, cut in log_1, then cur_seg 0 -> 1: the
-- rest of it in log_0 was never published). The check reads the latest committed batch: a
-- rotation must hold the batch lock (as a pass does) for it to see a pass's cut batch.
CREATE FUNCTION outbox._log_state_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- a segment that does not exist: producers named a table that is not there (outbox.log_3,
    -- outbox.log_-1), the reference pass took it modulo the number of segments
    IF NEW.cur_seg IS NULL OR NEW.cur_seg < 0 OR NEW.cur_seg >= outbox._log_segments() THEN
        RAISE EXCEPTION 'the log''s current segment must be 0 to %, not %', outbox._log_segments() - 1,
                        coalesce(NEW.cur_seg::text, 'NULL')
            USING ERRCODE = 'check_violation',
                  HINT = format('The log has %s segments, outbox.log_0 to outbox.log_%s.', outbox._log_segments(),
                                outbox._log_segments() - 1);
    END IF;
    IF NEW.cur_seg IS DISTINCT FROM OLD.cur_seg AND (outbox._log_latest()).cut THEN
        RAISE EXCEPTION 'the log''s current segment cannot change while the latest batch is cut'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rotate after a pass that finished its window (the latest batch has cut = false).';
    END IF;
    -- the horizons only grow: positions at or below base_pos are 1.2's (the readers send them to
    -- outbox.history), those at or below purged_pos are gone; either moved back, the readers would
    -- look for events in the wrong storage or answer for removed ones. The switch is one-way.
    -- One exception: the switch (active false -> true) in an empty log resets purged_pos to 0..base_pos
    -- (nothing of the log removed), which a use of the log by hand before it had moved.
    IF NEW.base_pos < OLD.base_pos
       OR (NEW.purged_pos < OLD.purged_pos
           AND NOT (NOT OLD.active AND NEW.active AND NEW.purged_pos BETWEEN 0 AND NEW.base_pos
                    AND outbox._log_latest() IS NULL)) THEN
        RAISE EXCEPTION 'the log''s % cannot go back from % to %',
                        CASE WHEN NEW.base_pos < OLD.base_pos THEN 'base_pos' ELSE 'purged_pos' END,
                        CASE WHEN NEW.base_pos < OLD.base_pos THEN OLD.base_pos ELSE OLD.purged_pos END,
                        CASE WHEN NEW.base_pos < OLD.base_pos THEN NEW.base_pos ELSE NEW.purged_pos END
            USING ERRCODE = 'check_violation',
                  HINT = 'Positions are handed out once: base_pos and purged_pos only grow.';
    END IF;
    IF NEW.active AND NOT OLD.active THEN
        PERFORM outbox._log_refuse_base(NEW.base_pos);
    END IF;
    IF OLD.active AND NOT NEW.active THEN
        RAISE EXCEPTION 'the log''s storage cannot be switched off'
            USING ERRCODE = 'check_violation',
                  HINT = 'The switch to the log (outbox.log_state.active) is one-way: 1.2''s tables no longer hold the events published since.';
    END IF;
    -- channels_flushed_pos tells a cold seq cache (and outbox._log_last_seq()) that
    -- outbox.log_channels covers every batch up to it: above the log's head, the batches after
    -- the head would be skipped and their seqs handed out again. It may go back (more is read).
    IF NEW.channels_flushed_pos > OLD.channels_flushed_pos
       AND NEW.channels_flushed_pos > greatest(coalesce((SELECT b.first_pos + b.n - 1 FROM outbox._log_latest() b), 0),
                                               NEW.base_pos, OLD.purged_pos) THEN
        RAISE EXCEPTION 'the log''s channels_flushed_pos cannot be %, above the log''s head %', NEW.channels_flushed_pos,
                        greatest(coalesce((SELECT b.first_pos + b.n - 1 FROM outbox._log_latest() b), 0), NEW.base_pos,
                                 OLD.purged_pos)
            USING ERRCODE = 'check_violation',
                  HINT = 'Only a log pass moves it, to the last position it has written into outbox.log_channels.';
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION outbox._log_state_check() IS
    'internal: refuse a cur_seg out of range or changed in the middle of a cut window, horizons going back, the switch undone, channels_flushed_pos above the head';
CREATE TRIGGER log_state_check BEFORE UPDATE ON outbox.log_state
    FOR EACH ROW EXECUTE FUNCTION outbox._log_state_check();
-- also under session_replication_role = replica (a DBA's or a replication tool's session)
ALTER TABLE outbox.log_state ENABLE ALWAYS TRIGGER log_state_check;
-- The row of a database in log mode is not deleted (nor truncated): without it the database is in
-- 1.2 mode, with its events in the log, while a backend that wrote the log keeps writing it (its
-- remembered mode, src/storage_mode.cpp, is forgotten by a change of the relation, not by a DELETE
-- of its row), and a data-only restore of a 1.2 dump then inserted active = false under it: events
-- written into a log nothing drains. The switch is one-way; a restore merges into the row
-- (outbox._log_state_merge()). The pristine row of 1.2 mode may go (the merge deletes it).
CREATE FUNCTION outbox._log_state_keep() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' AND NOT OLD.active THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'TRUNCATE' AND NOT EXISTS (SELECT FROM outbox.log_state s WHERE s.active) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the row of outbox.log_state cannot be removed: this database stores its events in the log'
        USING ERRCODE = 'check_violation',
              HINT = 'The switch to the log is one-way. To restore a dump, restore it into a new database (or after DROP EXTENSION pg_outbox and CREATE EXTENSION pg_outbox): the dumped row is merged into the one there.';
END $$;
COMMENT ON FUNCTION outbox._log_state_keep() IS
    'internal: refuse DELETE and TRUNCATE of outbox.log_state in log mode (the switch is one-way)';
CREATE TRIGGER log_state_keep BEFORE DELETE ON outbox.log_state
    FOR EACH ROW EXECUTE FUNCTION outbox._log_state_keep();
CREATE TRIGGER log_state_keep_truncate BEFORE TRUNCATE ON outbox.log_state
    FOR EACH STATEMENT EXECUTE FUNCTION outbox._log_state_keep();
ALTER TABLE outbox.log_state ENABLE ALWAYS TRIGGER log_state_keep;
ALTER TABLE outbox.log_state ENABLE ALWAYS TRIGGER log_state_keep_truncate;

-- last_seq per channel, written behind by the pass (the batches after channels_flushed_pos
-- are the truth for a channel they name).
CREATE TABLE outbox.log_channels (
    channel  text PRIMARY KEY,
    last_seq bigint NOT NULL,
    last_pos bigint NOT NULL
) WITH (fillfactor = 50);
COMMENT ON TABLE outbox.log_channels IS 'internal (issue #15, not used yet): last seq per channel, written behind';

SELECT pg_catalog.pg_extension_config_dump('outbox.log_0', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.log_1', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.log_2', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.batches_0', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.batches_1', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.batches_2', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.log_state', '');
SELECT pg_catalog.pg_extension_config_dump('outbox.log_channels', '');

-- The latest batch (NULL before the first one).
CREATE FUNCTION outbox._log_latest() RETURNS outbox.batches
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    RETURN (SELECT b FROM outbox.batches b ORDER BY b.first_pos DESC LIMIT 1);
COMMENT ON FUNCTION outbox._log_latest() IS 'internal: the batch with the highest first_pos';

-- The rows of segment seg in the window (lo, hi] with (xid, id) > (a_xid, a_id), in (xid, id)
-- order, at most lim. Two halves, each in index order: the xids of lo's xip that hi sees
-- committed (all below lo's xmax), then the range [lo.xmax, hi.xmax). The range half has one
-- start key (a row comparison): next to a separate "xid >= lo.xmax", PostgreSQL 15's btree
-- starts at the row comparison's bound and walks every older entry of the segment.
-- The three branches are gated by seg (constants), so one segment is read.
CREATE FUNCTION outbox._log_window(seg integer, lo pg_snapshot, hi pg_snapshot, a_xid xid8, a_id bigint,
                                   lim integer)
    RETURNS SETOF outbox.log LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH xip AS MATERIALIZED (
        SELECT array_agg(x) AS xs FROM pg_snapshot_xip(lo) x WHERE pg_visible_in_snapshot(x, hi))
    SELECT w.* FROM (
        (SELECT e.* FROM outbox.log_0 e WHERE seg = 0 AND e.xid = ANY ((SELECT xs FROM xip)::xid8[])
            AND (e.xid, e.id) > (a_xid, a_id) ORDER BY e.xid, e.id LIMIT lim)
        UNION ALL
        (SELECT e.* FROM outbox.log_1 e WHERE seg = 1 AND e.xid = ANY ((SELECT xs FROM xip)::xid8[])
            AND (e.xid, e.id) > (a_xid, a_id) ORDER BY e.xid, e.id LIMIT lim)
        UNION ALL
        (SELECT e.* FROM outbox.log_2 e WHERE seg = 2 AND e.xid = ANY ((SELECT xs FROM xip)::xid8[])
            AND (e.xid, e.id) > (a_xid, a_id) ORDER BY e.xid, e.id LIMIT lim)
        UNION ALL
        (SELECT e.* FROM outbox.log_0 e WHERE seg = 0
            AND (e.xid, e.id) > (greatest(pg_snapshot_xmax(lo), a_xid),
                                 CASE WHEN a_xid >= pg_snapshot_xmax(lo) THEN a_id ELSE -9223372036854775808 END)
            AND e.xid < pg_snapshot_xmax(hi) AND pg_visible_in_snapshot(e.xid, hi)
            ORDER BY e.xid, e.id LIMIT lim)
        UNION ALL
        (SELECT e.* FROM outbox.log_1 e WHERE seg = 1
            AND (e.xid, e.id) > (greatest(pg_snapshot_xmax(lo), a_xid),
                                 CASE WHEN a_xid >= pg_snapshot_xmax(lo) THEN a_id ELSE -9223372036854775808 END)
            AND e.xid < pg_snapshot_xmax(hi) AND pg_visible_in_snapshot(e.xid, hi)
            ORDER BY e.xid, e.id LIMIT lim)
        UNION ALL
        (SELECT e.* FROM outbox.log_2 e WHERE seg = 2
            AND (e.xid, e.id) > (greatest(pg_snapshot_xmax(lo), a_xid),
                                 CASE WHEN a_xid >= pg_snapshot_xmax(lo) THEN a_id ELSE -9223372036854775808 END)
            AND e.xid < pg_snapshot_xmax(hi) AND pg_visible_in_snapshot(e.xid, hi)
            ORDER BY e.xid, e.id LIMIT lim)
    ) w ORDER BY w.xid, w.id LIMIT lim
$$;
COMMENT ON FUNCTION outbox._log_window(integer, pg_snapshot, pg_snapshot, xid8, bigint, integer) IS
    'internal: the rows of one log segment that committed between two snapshots, after a key, in batch order';

-- The events of one batch, with their pos and seq recomputed. The window's rows are read from
-- after on, at most n + cardinality(skipped) of them (the batch's rows come first): a batch of a
-- large cut window does not read the rest of the window.
CREATE FUNCTION outbox._log_batch_events(b outbox.batches)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, xid xid8, epoch bigint, published_at timestamptz)
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT b.first_pos + row_number() OVER (ORDER BY w.xid, w.id) - 1,
           b.first_seqs[array_position(b.channels, w.channel)]
             + row_number() OVER (PARTITION BY w.channel ORDER BY w.xid, w.id) - 1,
           w.id, w.channel, w.key, w.type, w.payload, w.created_at, w.xid, b.epoch, b.published_at
      FROM outbox._log_window(b.seg, b.lo_snap, b.hi_snap, b.after_xid, b.after_id, b.n + cardinality(b.skipped)) w
     WHERE (w.xid, w.id) <= (b.upto_xid, b.upto_id) AND w.id <> ALL (b.skipped)
     ORDER BY 1
$$;
COMMENT ON FUNCTION outbox._log_batch_events(outbox.batches) IS 'internal: one batch''s events with pos and seq';

-- The first segment, from s on in the window's segment order (oldest first: cur_seg + 1,
-- cyclically, up to cur_seg), that has rows of the window (lo, hi]; the key (a_xid, a_id)
-- applies to s itself, later segments are read from their start. NULL: none.
CREATE FUNCTION outbox._log_next_seg(lo pg_snapshot, hi pg_snapshot, s integer, a_xid xid8, a_id bigint)
    RETURNS integer LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nseg integer := outbox._log_segments();
    oldest integer := ((SELECT st.cur_seg FROM outbox.log_state st) + 1) % nseg;
    k integer;
BEGIN
    FOR k IN ((s - oldest + nseg) % nseg) .. nseg - 1 LOOP
        IF EXISTS (SELECT FROM outbox._log_window((oldest + k) % nseg, lo, hi, a_xid, a_id, 1)) THEN
            RETURN (oldest + k) % nseg;
        END IF;
        a_xid := '0'; a_id := 0;
    END LOOP;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION outbox._log_next_seg(pg_snapshot, pg_snapshot, integer, xid8, bigint) IS
    'internal: the next log segment with rows of a window';

-- The snapshot a pass records as its hi: the current one, with the pass's own transaction in
-- progress. A snapshot leaves its own transaction out of xip, so a pass inside a transaction that
-- already has an xid below xmax (a producer that runs a pass by hand, after another transaction
-- committed) would record its own xid as committed: the rows that transaction writes after the
-- pass would then be behind every later window's lo, never published. With its xid in xip, all
-- of its rows, before and after the pass, fall into the first window after it commits.
CREATE FUNCTION outbox._log_pass_snapshot() RETURNS pg_snapshot
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    snap pg_snapshot := pg_current_snapshot(); own xid8 := pg_current_xact_id_if_assigned();
BEGIN
    IF own IS NULL OR own >= pg_snapshot_xmax(snap) THEN
        RETURN snap;
    END IF;
    RETURN format('%s:%s:%s', least(pg_snapshot_xmin(snap), own), pg_snapshot_xmax(snap),
                  (SELECT string_agg(x::text, ',' ORDER BY x)
                     FROM (SELECT x FROM pg_snapshot_xip(snap) x UNION SELECT own) u))::pg_snapshot;
END $$;
COMMENT ON FUNCTION outbox._log_pass_snapshot() IS
    'internal: the current snapshot with the caller''s own transaction counted as in progress';

-- The NOTIFY envelope of a log event, as 1.2's drain builds it (build_event_envelope, drain.cpp):
-- longer than NOTIFY takes (publish() accepts such payloads), payload left out and "truncated":
-- true, and if even that is too long, key and type too (sent whole, pg_notify raised "payload
-- string too long" in every pass and the log was stuck behind the event); id_only (read rights
-- are enforced: any role may LISTEN on any channel) nothing but id, pos, epoch, seq, "truncated"
-- (sent whole, a restricted channel's payload went to every listener). The length that decides
-- is that of the compact text the drain sends (outbox._payload_text: no blank after ':' and ','),
-- and epoch 0 (none begun yet) is left out, as the drain does: measured on jsonb's own text, with
-- its blanks, a payload of many small values that the drain sends whole was cut here.
CREATE FUNCTION outbox._log_envelope(pos bigint, seq bigint, id bigint, key text, type text, payload jsonb,
                                     epoch bigint, id_only boolean) RETURNS text
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE env text; no_epoch text[] := CASE WHEN epoch = 0 THEN ARRAY['epoch'] ELSE '{}' END;
BEGIN
    IF NOT id_only THEN
        env := outbox._payload_text(outbox._envelope(pos, seq, id, key, type, payload, epoch) - no_epoch);
        IF octet_length(env) <= outbox.max_payload_bytes() THEN
            RETURN env;
        END IF;
        env := outbox._payload_text(((outbox._envelope(pos, seq, id, key, type, NULL, epoch) - 'payload')
                                     || '{"truncated": true}'::jsonb) - no_epoch);
        IF octet_length(env) <= outbox.max_payload_bytes() THEN
            RETURN env;
        END IF;
    END IF;
    RETURN outbox._payload_text(((outbox._envelope(pos, seq, id, NULL, NULL, NULL, epoch) - 'payload')
                                 || '{"truncated": true}'::jsonb) - no_epoch);
END $$;
COMMENT ON FUNCTION outbox._log_envelope(bigint, bigint, bigint, text, text, jsonb, bigint, boolean) IS
    'internal: the NOTIFY envelope of a log event (truncated when too long or when read rights are enforced)';

-- The reference pass, in PL/pgSQL: the specification the C pass is checked against (regress
-- log_pass compares their batches and envelopes). At most max_events events of one segment,
-- NOTIFYed with their pos and seq, one batch row, in the caller's transaction. Returns how many.
-- A window that has rows in several segments is cut where one segment's rows end, and the next
-- pass continues it in the next segment. (Rotation changes cur_seg, and so the segment order,
-- only when the latest batch is not cut.)
CREATE FUNCTION outbox._log_pass_sql(max_events integer DEFAULT 1000) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b outbox.batches; st outbox.log_state; nseg integer := outbox._log_segments();
    lo pg_snapshot; hi pg_snapshot; ax xid8 := '0'; ai bigint := 0; s integer;
    nf bigint; cnt bigint; ux xid8; ui bigint; more boolean;
    chs text[]; firsts bigint[]; cnts integer[]; ep bigint;
    r record; id_only boolean;
BEGIN
    -- the notifications reach listeners at commit: that commit must be durable first, or a crash
    -- would hand the same positions out again (as outbox.drain(); SET LOCAL, for the transaction)
    PERFORM pg_catalog.set_config('synchronous_commit', 'on', true);
    PERFORM outbox._check_max_events(max_events);
    -- the latest batch must be read after the batch lock is granted: with a transaction snapshot
    -- (taken before the lock) a pass that waited for another would hand out its positions again
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'outbox._log_pass_sql() cannot run in a REPEATABLE READ or SERIALIZABLE transaction'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Call it in autocommit mode or in a READ COMMITTED transaction.';
    END IF;
    LOCK TABLE outbox.batches IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO st FROM outbox.log_state;
    b := outbox._log_latest();
    -- after the lock too: an epoch begun while this pass waited is the one its batch belongs to
    ep := outbox.epoch();
    s := (st.cur_seg + 1) % nseg;
    IF b.first_pos IS NULL THEN -- no batch yet: the first window opens at base_snap
        nf := st.base_pos + 1; lo := st.base_snap; hi := outbox._log_pass_snapshot();
    ELSE
        nf := b.first_pos + b.n;
        IF b.cut THEN -- continue the cut window where it stopped
            lo := b.lo_snap; hi := b.hi_snap;
            s := outbox._log_next_seg(lo, hi, b.seg, b.upto_xid, b.upto_id);
            IF s = b.seg THEN
                ax := b.upto_xid; ai := b.upto_id;
            END IF;
        END IF;
        IF s IS NULL OR NOT b.cut THEN -- the next window
            lo := b.hi_snap; hi := outbox._log_pass_snapshot(); s := (st.cur_seg + 1) % nseg;
        END IF;
    END IF;
    IF ax = '0' THEN
        s := outbox._log_next_seg(lo, hi, s, ax, ai);
    END IF;
    IF s IS NULL THEN
        RETURN 0;
    END IF;
    IF to_regclass('pg_temp._log_pass_rows') IS NULL THEN
        CREATE TEMP TABLE _log_pass_rows (pos bigint, seq bigint, id bigint, xid xid8, channel text,
                                          key text, type text, payload jsonb) ON COMMIT DROP;
    ELSE
        TRUNCATE _log_pass_rows;
    END IF;
    WITH w AS (SELECT * FROM outbox._log_window(s, lo, hi, ax, ai, max_events)),
         nw AS (SELECT w.*, row_number() OVER (ORDER BY w.xid, w.id) AS k,
                       row_number() OVER (PARTITION BY w.channel ORDER BY w.xid, w.id) AS j FROM w),
         base AS (SELECT c.channel, outbox._log_last_seq(c.channel) AS last_seq FROM (SELECT DISTINCT nw.channel FROM nw) c)
    INSERT INTO _log_pass_rows
    SELECT nf + nw.k - 1, base.last_seq + nw.j, nw.id, nw.xid, nw.channel, nw.key, nw.type, nw.payload
      FROM nw JOIN base ON base.channel = nw.channel;
    SELECT count(*) INTO cnt FROM _log_pass_rows;
    SELECT p.xid, p.id INTO ux, ui FROM _log_pass_rows p ORDER BY p.pos DESC LIMIT 1;
    -- cut: rows of this window are left after upto, in this segment or in a newer one
    more := outbox._log_next_seg(lo, hi, s, ux, ui) IS NOT NULL;
    id_only := EXISTS (SELECT FROM outbox.channel_rights cr WHERE cr.privilege = 'read');
    -- per event, by its channel's target (outbox.channel_targets; '*' the default, else notify):
    -- a transactional logical decoding message with the whole envelope and the channel (never
    -- truncated), and/or a NOTIFY with the size-checked one, as 1.2's drain (hand_off_event)
    FOR r IN SELECT p.channel, p.payload, p.key, p.type, p.pos, p.seq, p.id,
                    coalesce((SELECT t.target FROM outbox.channel_targets t WHERE t.channel = p.channel),
                             (SELECT d.target FROM outbox.channel_targets d WHERE d.channel = '*'), 'notify') AS target
               FROM _log_pass_rows p ORDER BY p.pos LOOP
        IF r.target IN ('wal', 'both') THEN
            PERFORM pg_logical_emit_message(true, 'pg_outbox',
                jsonb_build_object('id', r.id, 'pos', r.pos, 'epoch', ep, 'seq', r.seq, 'channel', r.channel,
                                   'key', r.key, 'type', r.type, 'payload', r.payload)::text);
        END IF;
        IF r.target IN ('notify', 'both') THEN
            PERFORM pg_notify(r.channel, outbox._log_envelope(r.pos, r.seq, r.id, r.key, r.type, r.payload, ep, id_only));
        END IF;
    END LOOP;
    SELECT array_agg(g.channel ORDER BY g.channel COLLATE "C"), array_agg(g.f ORDER BY g.channel COLLATE "C"), array_agg(g.c ORDER BY g.channel COLLATE "C")
      INTO chs, firsts, cnts
      FROM (SELECT p.channel, min(p.seq) AS f, count(*)::integer AS c FROM _log_pass_rows p GROUP BY p.channel) g;
    EXECUTE format('INSERT INTO outbox.batches_%s (first_pos, n, seg, lo_snap, hi_snap, after_xid, after_id, upto_xid,'
                   ' upto_id, cut, channels, first_seqs, counts, epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,'
                   ' $11, $12, $13, $14)', s)
        USING nf, cnt::integer, s, lo, hi, ax, ai, ux, ui, more, chs, firsts, cnts, ep;
    RETURN cnt;
END $$;
COMMENT ON FUNCTION outbox._log_pass_sql(integer) IS
    'internal (issue #15): the reference drain pass over the log, in PL/pgSQL (the C pass is checked against it)';

-- The last seq handed out on a channel: outbox.log_channels, or the newest batch that names it.
CREATE FUNCTION outbox._log_last_seq(ch text) RETURNS bigint
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    RETURN greatest(coalesce((SELECT c.last_seq FROM outbox.log_channels c WHERE c.channel = ch), 0),
                    coalesce((SELECT b.first_seqs[array_position(b.channels, ch)] + b.counts[array_position(b.channels, ch)] - 1
                                FROM outbox.batches b
                               WHERE b.channels @> ARRAY[ch]
                                 AND b.first_pos > (SELECT s.channels_flushed_pos FROM outbox.log_state s)
                               ORDER BY b.first_pos DESC LIMIT 1), 0));
COMMENT ON FUNCTION outbox._log_last_seq(text) IS 'internal: the last seq a channel got in the log';

-- outbox.log_state.purged_pos as the latest committed state shows it, whatever the transaction's
-- snapshot (as outbox._purged_pos() reads outbox.state for 1.2's replay).
CREATE FUNCTION outbox._log_purged_pos() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'outbox_log_purged_pos';
COMMENT ON FUNCTION outbox._log_purged_pos() IS 'internal: the log''s retention horizon, read with the latest snapshot';

-- Replay over the log: the events after after_pos, recomputed from the batches, at most max_events.
-- OB001 (as 1.2's outbox.replay) when after_pos is below purged_pos: retention removed positions
-- up to it, and a position at or below it can be missing while later ones are kept (a producer
-- that wrote into the old segment after a rotation: its events get positions among those of the
-- newer segment's and leave with the old segment, the newer one's stay).
-- TRUNCATE is not MVCC-safe: a snapshot older than a rotation's TRUNCATE sees the segment (its
-- events and its batches) empty. So replay takes ACCESS SHARE on outbox.log and outbox.batches
-- (every segment) before it reads (a rotation then waits for it, NOWAIT: it defers) and reads
-- purged_pos with the latest snapshot, which covers every TRUNCATE that can have hidden rows from
-- the transaction's snapshot (rotation moves purged_pos in the transaction that truncates). In
-- READ COMMITTED its statements' snapshots are then taken after the lock; in REPEATABLE READ the
-- snapshot may predate a rotation, and that rotation's purged_pos gives OB001 instead of a short
-- answer. VOLATILE: LOCK is refused in a STABLE function, and a STABLE function's statements
-- would all use the caller's snapshot, taken before the lock.
CREATE FUNCTION outbox._log_replay(after_pos bigint, max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, key text, type text, payload jsonb,
                   created_at timestamptz, epoch bigint, published_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE b outbox.batches; remaining integer := max_events; got integer; purged bigint; expect bigint;
BEGIN
    IF after_pos IS NULL THEN
        RAISE EXCEPTION 'after_pos cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass 0 to read from the oldest kept event.';
    ELSIF after_pos < 0 THEN
        RAISE EXCEPTION 'after_pos must be 0 or more, not %', after_pos USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Positions start at 1; pass 0 to replay from the beginning.';
    END IF;
    PERFORM outbox._check_max_events(max_events);
    -- before the snapshot of the next statement: no TRUNCATE of a segment can slip in between
    LOCK TABLE outbox.log, outbox.batches IN ACCESS SHARE MODE;
    purged := greatest((SELECT s.purged_pos FROM outbox.log_state s), outbox._log_purged_pos());
    IF after_pos < purged THEN
        RAISE EXCEPTION 'cannot replay after position %: the events up to position % have been removed', after_pos, purged
            USING ERRCODE = 'OB001',
                  DETAIL = format('Events are kept for pg_outbox.retention; the replay would miss positions %s to %s.',
                                  after_pos + 1, purged),
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox._log_head().';
    END IF;
    -- never a short answer: the positions returned are contiguous from after_pos + 1 (or from
    -- base_pos + 1, the log's first), and each batch gives all of its events (as 1.2's replay
    -- checks the history's positions); a gap is a batch or an event that is gone
    expect := greatest(after_pos, (SELECT s.base_pos FROM outbox.log_state s)) + 1;
    -- from the batch that holds after_pos + 1 (the last non-empty one that begins at or before it),
    -- through the first_pos keys: a filter on first_pos + n alone read every earlier batch (29 ms
    -- per call after 126,000 batches), so paging through the log was quadratic
    FOR b IN SELECT * FROM outbox.batches x
              WHERE x.first_pos >= coalesce((SELECT max(y.first_pos) FROM outbox.batches y
                                              WHERE y.first_pos <= after_pos + 1 AND y.n > 0), 0)
                AND x.n > 0 AND x.first_pos + x.n - 1 > after_pos
              ORDER BY x.first_pos LOOP
        IF greatest(b.first_pos, after_pos + 1) <> expect THEN
            RAISE EXCEPTION 'position % is missing from the log', expect
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('The next batch of outbox.batches begins at position %s.', b.first_pos),
                      HINT = 'Retry the replay; if this persists, the log was modified by hand.';
        END IF;
        RETURN QUERY
            SELECT e.pos, e.seq, e.id, e.channel, e.key, e.type, e.payload, e.created_at, e.epoch, e.published_at
              FROM outbox._log_batch_events(b) e WHERE e.pos > after_pos ORDER BY e.pos LIMIT remaining;
        GET DIAGNOSTICS got = ROW_COUNT;
        IF got <> least(remaining, b.first_pos + b.n - expect) THEN
            RAISE EXCEPTION 'the batch at position % is missing events', b.first_pos
                USING ERRCODE = 'serialization_failure',
                      DETAIL = format('It has %s events after position %s; %s were found in outbox.log_%s.',
                                      b.first_pos + b.n - expect, expect - 1, got, b.seg),
                      HINT = 'Retry the replay; if this persists, the log was modified by hand.';
        END IF;
        expect := b.first_pos + b.n;
        remaining := remaining - got;
        EXIT WHEN remaining <= 0;
    END LOOP;
END $$;
COMMENT ON FUNCTION outbox._log_replay(bigint, integer) IS
    'internal (issue #15): replay recomputed from the log''s batches; OB001 if the events have been removed';

-- The log's head: the last position handed out (base_pos before the first batch).
CREATE FUNCTION outbox._log_head() RETURNS bigint
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    RETURN coalesce((SELECT b.first_pos + b.n - 1 FROM outbox.batches b ORDER BY b.first_pos DESC LIMIT 1),
                    (SELECT s.base_pos FROM outbox.log_state s));
COMMENT ON FUNCTION outbox._log_head() IS 'internal (issue #15): the last position the log handed out';

-- A test producer's insert (the switch moves outbox.publish() here): one row in the current segment.
CREATE FUNCTION outbox._log_insert(channel text, payload jsonb DEFAULT NULL, key text DEFAULT NULL,
                                   type text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE s integer; new_id bigint;
BEGIN
    -- NULL first, with its own error (the NOT NULL constraint's 23502 named no argument)
    IF channel IS NULL THEN
        RAISE EXCEPTION 'channel name cannot be NULL' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Every event is published on a channel: pass its name.';
    END IF;
    PERFORM outbox._require_channel(channel, 'channel name');
    SELECT st.cur_seg INTO s FROM outbox.log_state st;
    EXECUTE format('INSERT INTO outbox.log_%s (channel, key, type, payload) VALUES ($1, $2, $3, $4) RETURNING id', s)
        INTO new_id USING channel, key, type, payload;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION outbox._log_insert(text, jsonb, text, text) IS
    'internal (issue #15): insert one event into the log''s current segment (what publish() will do)';
