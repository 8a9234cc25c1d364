
-- ---------------------------------------------------------------------------------------
-- [epochs] Positions that survive failover: an identity and epochs (issue #13)
-- ---------------------------------------------------------------------------------------
--
-- A position is only as durable as the WAL. After an unplanned failover to an asynchronous
-- standby, a point-in-time recovery, a restore into another cluster or database, or DROP +
-- CREATE EXTENSION, the outbox hands out positions again that a consumer may already have seen
-- with other events. So every position belongs to an epoch: the epoch grows whenever the
-- history may have diverged from what a consumer saw, and outbox.epochs records where each
-- epoch began (first_pos). A consumer at (epoch E, pos P) is still on the preserved history
-- exactly when no epoch after E began at or before P: the positions >= first_pos of the epoch
-- after E may have been reissued. (A new epoch that began at head + 1 after a planned
-- switchover or a restart therefore diverges nobody: nothing was reissued.)
--
-- Detection costs publishing nothing: the drain's own UPDATE of outbox.state (the position
-- bump) compares the timeline, system identifier and database OID stored in the row with the
-- process's (GetWALInsertionTimeLine(), GetSystemIdentifier(), MyDatabaseId); only when they
-- differ does it call outbox._epoch_begin(), in the same transaction, before the history rows
-- of the batch are written: the new epoch and its first event commit or roll back together.
-- The identity is made at CREATE EXTENSION: a re-created extension is another outbox.
--
-- Epoch numbers grow, but not always by one: a new epoch is numbered at least the new timeline
-- ID, so that two forks of one history (a promoted standby and a point-in-time recovery of the
-- old primary, each on its own timeline) do not hand out the same epoch number.

ALTER TABLE outbox.state
    ADD COLUMN identity text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text,
    ADD COLUMN epoch bigint NOT NULL DEFAULT 0,        -- 0 until the first drain
    ADD COLUMN timeline bigint,                        -- as the last epoch's drain saw them
    ADD COLUMN system_identifier text,
    ADD COLUMN database_oid oid;

CREATE TABLE outbox.epochs (
    epoch      bigint PRIMARY KEY,
    first_pos  bigint NOT NULL,        -- the first position handed out in this epoch
    started_at timestamptz NOT NULL DEFAULT now(),
    reason     text NOT NULL,
    timeline   bigint                  -- the WAL timeline the epoch began on
);
COMMENT ON TABLE outbox.epochs IS
    'epochs of the position history: positions from first_pos of an epoch on may differ from what a consumer of an older epoch saw';
SELECT pg_catalog.pg_extension_config_dump('outbox.epochs', '');

-- The state row a restore brings merges into the one CREATE EXTENSION made (20_outbox.sql):
-- the identity, epoch and recorded cluster come from the dump, so the restored copy is the
-- same outbox, and its first drain sees another database OID (or system identifier) and
-- begins a new epoch at the restored head + 1.
CREATE OR REPLACE FUNCTION outbox._state_merge() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE outbox.state
       SET last_pos = greatest(last_pos, NEW.last_pos), purged_pos = greatest(purged_pos, NEW.purged_pos),
           cur_seg = NEW.cur_seg, seg_started_at = NEW.seg_started_at, paused = NEW.paused,
           identity = NEW.identity, epoch = greatest(epoch, NEW.epoch), timeline = NEW.timeline, -- [epochs]
           system_identifier = NEW.system_identifier, database_oid = NEW.database_oid;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

-- Called by the drain (src/drain.cpp) with the state row locked, when the cluster it runs on
-- is not the one the current epoch began on. Records the new epoch; returns its number.
CREATE FUNCTION outbox._epoch_begin(first_pos bigint, tli bigint, sysid text, dboid oid) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
    e bigint;
    why text;
BEGIN
    SELECT * INTO s FROM outbox.state FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the row of outbox.state is missing' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    why := CASE
        WHEN s.epoch = 0 THEN 'created'
        WHEN s.system_identifier IS NULL THEN 'first drain since the upgrade to 1.2'
        WHEN s.system_identifier IS DISTINCT FROM sysid THEN
            format('system identifier changed from %s to %s (restored into another cluster)', s.system_identifier, sysid)
        WHEN s.database_oid IS DISTINCT FROM dboid THEN
            format('database OID changed from %s to %s (restored into another database)', s.database_oid, dboid)
        ELSE format('timeline changed from %s to %s (promotion or point-in-time recovery)', s.timeline, tli) END;
    e := greatest(s.epoch + 1, (SELECT coalesce(max(x.epoch), 0) + 1 FROM outbox.epochs x), tli);
    INSERT INTO outbox.epochs (epoch, first_pos, reason, timeline) VALUES (e, first_pos, why, tli);
    UPDATE outbox.state SET epoch = e, timeline = tli, system_identifier = sysid, database_oid = dboid;
    RETURN e;
END $$;
COMMENT ON FUNCTION outbox._epoch_begin(bigint, bigint, text, oid) IS 'internal: the drain begins a new epoch';

-- This outbox's identity (made at CREATE EXTENSION) and current epoch (0 before the first event).
CREATE FUNCTION outbox.identity() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    RETURN (SELECT s.identity FROM outbox.state s);
COMMENT ON FUNCTION outbox.identity() IS 'this outbox''s identity: a re-created extension has another one';

CREATE FUNCTION outbox.epoch() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
    RETURN (SELECT greatest(s.epoch, (SELECT coalesce(max(e.epoch), 0) FROM outbox.epochs e)) FROM outbox.state s);
COMMENT ON FUNCTION outbox.epoch() IS 'the current epoch of positions (0 before the first event)';

-- The epoch an event at pos was published in.
CREATE FUNCTION outbox._epoch_of(pos bigint) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (SELECT coalesce(max(e.epoch), 0) FROM outbox.epochs e WHERE e.first_pos OPERATOR(pg_catalog.<=) pos);
COMMENT ON FUNCTION outbox._epoch_of(bigint) IS 'internal: the epoch of a position';

-- OB003: was the history a consumer saw up to after_pos in epoch after_epoch preserved here?
CREATE FUNCTION outbox._check_epoch(after_pos bigint, after_epoch bigint) RETURNS void
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cur bigint;
    known boolean;
    next_first bigint;
    next_epoch bigint;
BEGIN
    IF after_epoch IS NULL THEN
        RETURN;
    ELSIF after_epoch < 0 THEN
        RAISE EXCEPTION 'after_epoch must be 0 or more, not %', after_epoch USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the "epoch" of the last event the consumer processed, or NULL.';
    END IF;
    cur := outbox.epoch();
    IF after_epoch > cur THEN
        RAISE EXCEPTION 'cannot replay after position % of epoch %: this outbox''s latest epoch is %', after_pos, after_epoch, cur
            USING ERRCODE = 'OB003',
                  DETAIL = 'The consumer saw a history this server does not have: it was restored from an older backup, or is another outbox.',
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head() in epoch outbox.epoch().';
    END IF;
    known := after_epoch = 0 OR EXISTS (SELECT FROM outbox.epochs e WHERE e.epoch = after_epoch);
    SELECT e.first_pos, e.epoch INTO next_first, next_epoch
      FROM outbox.epochs e WHERE e.epoch > after_epoch ORDER BY e.epoch LIMIT 1;
    IF NOT known THEN
        RAISE EXCEPTION 'cannot replay after position % of epoch %: epoch % is not in this outbox''s history', after_pos, after_epoch, after_epoch
            USING ERRCODE = 'OB003',
                  DETAIL = format('The consumer saw another branch of the history; positions from %s on may have been handed out again.',
                                  coalesce(least(next_first, after_pos), after_pos)),
                  HINT = 'The consumer must resynchronise from the source of truth, then continue from outbox.head() in epoch outbox.epoch().';
    END IF;
    IF next_first IS NOT NULL AND after_pos >= next_first THEN
        RAISE EXCEPTION 'cannot replay after position % of epoch %: positions from % on were handed out again in epoch %',
                        after_pos, after_epoch, next_first, next_epoch
            USING ERRCODE = 'OB003',
                  DETAIL = format('Epoch %s began at position %s (%s); the events the consumer saw at positions %s to %s were lost, and these positions now hold other events.',
                                  next_epoch, next_first,
                                  (SELECT e.reason FROM outbox.epochs e WHERE e.epoch = next_epoch), next_first, after_pos),
                  HINT = format('The consumer must resynchronise from the source of truth, then continue from outbox.head() in epoch %s; or replay after position %s of epoch %s to read the events of the new history.',
                                cur, next_first - 1, after_epoch);
    END IF;
END $$;
COMMENT ON FUNCTION outbox._check_epoch(bigint, bigint) IS 'internal: raise OB003 when a consumer''s position was not preserved';
