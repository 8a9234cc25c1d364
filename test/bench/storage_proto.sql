-- storage_proto.sql — the storage of doc/storage.md as plain SQL in schema proto, for
-- test/bench/storage_proto.sh to measure next to today's outbox and PgQ. A prototype of the
-- tables and of one drain pass (PL/pgSQL: the C drain will do the same without SPI); not part
-- of the extension.
CREATE SCHEMA proto;
CREATE SEQUENCE proto.event_id_seq;
CREATE TABLE proto.log (
    id         bigint NOT NULL DEFAULT nextval('proto.event_id_seq'),
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    channel    text NOT NULL,
    key        text,
    type       text,
    payload    jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE proto.log_0 () INHERITS (proto.log);
CREATE TABLE proto.log_1 () INHERITS (proto.log);
CREATE TABLE proto.log_2 () INHERITS (proto.log);
CREATE INDEX ON proto.log_0 (xid, id);
CREATE INDEX ON proto.log_1 (xid, id);
CREATE INDEX ON proto.log_2 (xid, id);
CREATE INDEX ON proto.log_0 USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX ON proto.log_1 USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX ON proto.log_2 USING brin (id) WITH (pages_per_range = 16);

-- One row per pass: the window (lo_snap, hi_snap] cut at the key range (after, upto].
CREATE TABLE proto.batches (
    first_pos    bigint PRIMARY KEY,
    n            integer NOT NULL,
    lo_snap      pg_snapshot NOT NULL,
    hi_snap      pg_snapshot NOT NULL,
    after_xid    xid8 NOT NULL,
    after_id     bigint NOT NULL,
    upto_xid     xid8 NOT NULL,
    upto_id      bigint NOT NULL,
    channels     text[] NOT NULL,
    first_seqs   bigint[] NOT NULL,
    counts       integer[] NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    -- the batch stopped at max_events: its window may have rows after upto, and the next pass
    -- continues it (whatever its own max_events: inferring this from n loses the rest of the
    -- window when a later pass asks for more than this one did)
    cut          boolean NOT NULL DEFAULT false
);
CREATE INDEX ON proto.batches USING gin (channels);
CREATE TABLE proto.channels (
    channel           text PRIMARY KEY,
    last_seq          bigint NOT NULL,
    published         bigint NOT NULL DEFAULT 0,
    last_published_at timestamptz
) WITH (fillfactor = 25);
-- the batch before the first one: nothing is visible in it
INSERT INTO proto.batches VALUES (0, 0, '1:1:', '1:1:', '0', 0, '0', 0, '{}', '{}', '{}');

CREATE FUNCTION proto.publish(ch text, p jsonb) RETURNS bigint LANGUAGE sql
    AS $$ INSERT INTO proto.log_0 (channel, payload) VALUES (ch, p) RETURNING id $$;

-- The events of the window (lo, hi] after key (a_xid, a_id), in (xid, id) order, at most lim.
CREATE FUNCTION proto.window(lo pg_snapshot, hi pg_snapshot, a_xid xid8, a_id bigint, lim integer)
    RETURNS SETOF proto.log LANGUAGE sql STABLE AS $$
    -- the xids of lo.xip that hi sees committed all precede lo.xmax: each part in index order
    SELECT * FROM (
        (SELECT e.* FROM proto.log e
          WHERE e.xid = ANY (ARRAY(SELECT x FROM pg_snapshot_xip(lo) x WHERE pg_visible_in_snapshot(x, hi)))
            AND (e.xid, e.id) > (a_xid, a_id)
          ORDER BY e.xid, e.id LIMIT lim)
        UNION ALL
        -- one row comparison as the scan's start key: next to a separate "xid >= lo.xmax", btree
        -- (15) starts at the row comparison's bound and walks every older entry of the log
        (SELECT e.* FROM proto.log e
          WHERE (e.xid, e.id) > (greatest(pg_snapshot_xmax(lo), a_xid),
                                 CASE WHEN a_xid >= pg_snapshot_xmax(lo) THEN a_id ELSE -9223372036854775808 END)
            AND e.xid < pg_snapshot_xmax(hi) AND pg_visible_in_snapshot(e.xid, hi)
          ORDER BY e.xid, e.id LIMIT lim)
    ) w ORDER BY xid, id LIMIT lim
$$;

-- One pass: at most max_events events, NOTIFYed with their pos and seq, one batch row.
-- SET proto.write_behind = on: the channels' last_seq come from a session-local cache (a temp
-- table: transactional like the C drain's cache applied at commit, and pruned whatever other
-- sessions' snapshots), flushed into proto.channels at most once a second.
CREATE FUNCTION proto.drain(max_events integer DEFAULT 1000) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    b proto.batches;
    lo pg_snapshot; hi pg_snapshot; ax xid8; ai bigint;
    cnt bigint; ux xid8; ui bigint; nf bigint;
    chs text[]; firsts bigint[]; cnts integer[]; wb boolean;
BEGIN
    LOCK TABLE proto.batches IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO b FROM proto.batches ORDER BY first_pos DESC LIMIT 1;
    -- continue the last window if it was cut, else open the next one
    nf := greatest(b.first_pos + b.n, 1);
    hi := pg_current_snapshot();
    IF b.cut THEN
        lo := b.lo_snap; ax := b.upto_xid; ai := b.upto_id;
        -- is the cut window exhausted? then the next one
        IF NOT EXISTS (SELECT FROM proto.window(b.lo_snap, b.hi_snap, ax, ai, 1)) THEN
            lo := b.hi_snap; ax := '0'; ai := 0;
        ELSE
            hi := b.hi_snap;
        END IF;
    ELSE
        lo := b.hi_snap; ax := '0'; ai := 0;
    END IF;
    IF to_regclass('pg_temp.pass') IS NULL THEN
        CREATE TEMP TABLE pass (pos bigint, seq bigint, id bigint, xid xid8, channel text, payload jsonb)
            ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE chan_cache (channel text PRIMARY KEY, last_seq bigint NOT NULL, published bigint NOT NULL,
                                      dirty boolean NOT NULL);
        CREATE TEMP TABLE flushed (at timestamptz NOT NULL);
        INSERT INTO flushed VALUES (clock_timestamp());
    END IF;
    wb := coalesce(current_setting('proto.write_behind', true), 'off') = 'on';
    WITH w AS (SELECT * FROM proto.window(lo, hi, ax, ai, max_events)),
         r AS (SELECT w.*, row_number() OVER (ORDER BY xid, id) AS k,
                      row_number() OVER (PARTITION BY channel ORDER BY xid, id) AS j FROM w)
    INSERT INTO pass
    SELECT nf + r.k - 1, coalesce(CASE WHEN wb THEN cc.last_seq END, c.last_seq, 0) + r.j, r.id, r.xid, r.channel, r.payload
      FROM r LEFT JOIN chan_cache cc ON wb AND cc.channel = r.channel
             LEFT JOIN proto.channels c ON (NOT wb OR cc.channel IS NULL) AND c.channel = r.channel;
    SELECT count(*), max(xid) INTO cnt, ux FROM pass;
    IF cnt = 0 THEN
        IF wb THEN -- idle: flush what is written behind (the C drain also does it when idle)
            INSERT INTO proto.channels AS c (channel, last_seq, published, last_published_at)
            SELECT channel, last_seq, published, now() FROM chan_cache WHERE dirty
            ON CONFLICT (channel) DO UPDATE SET last_seq = excluded.last_seq, published = excluded.published,
                                                last_published_at = excluded.last_published_at;
            UPDATE chan_cache SET dirty = false WHERE dirty;
        END IF;
        RETURN 0;
    END IF;
    SELECT max(id) INTO ui FROM pass WHERE xid = ux;
    PERFORM count(pg_notify(p.channel, '{"id":' || p.id || ',"pos":' || p.pos || ',"epoch":1,"seq":' || p.seq
                                        || ',"payload":' || coalesce(p.payload::text, 'null') || '}'))
       FROM pass p;
    SELECT array_agg(channel ORDER BY channel), array_agg(f ORDER BY channel), array_agg(c ORDER BY channel)
      INTO chs, firsts, cnts
      FROM (SELECT channel, min(seq) AS f, count(*)::integer AS c FROM pass GROUP BY channel) g;
    IF NOT wb THEN
        INSERT INTO proto.channels AS c (channel, last_seq, published, last_published_at)
        SELECT ch, f + n - 1, n, now() FROM unnest(chs, firsts, cnts) u(ch, f, n)
        ON CONFLICT (channel) DO UPDATE SET last_seq = excluded.last_seq, published = c.published + excluded.published,
                                            last_published_at = excluded.last_published_at;
    ELSE
        INSERT INTO chan_cache AS c (channel, last_seq, published, dirty)
        SELECT ch, f + n - 1, n, true FROM unnest(chs, firsts, cnts) u(ch, f, n)
        ON CONFLICT (channel) DO UPDATE SET last_seq = excluded.last_seq, published = c.published + excluded.published,
                                            dirty = true;
        IF (SELECT at FROM flushed) < clock_timestamp() - interval '1 second' THEN
            INSERT INTO proto.channels AS c (channel, last_seq, published, last_published_at)
            SELECT channel, last_seq, published, now() FROM chan_cache WHERE dirty
            ON CONFLICT (channel) DO UPDATE SET last_seq = excluded.last_seq, published = excluded.published,
                                                last_published_at = excluded.last_published_at;
            UPDATE chan_cache SET dirty = false WHERE dirty;
            UPDATE flushed SET at = clock_timestamp();
        END IF;
    END IF;
    INSERT INTO proto.batches VALUES (nf, cnt, lo, hi, ax, ai, ux, ui, chs, firsts, cnts, now(), cnt >= max_events);
    RETURN cnt;
END $$;

CREATE PROCEDURE proto.drain_all(max_events integer DEFAULT 1000) LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    LOOP
        n := proto.drain(max_events);
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
END $$;

-- Replay recomputed from the batch rows: the events after after_pos, with pos and seq.
CREATE FUNCTION proto.replay(after_pos bigint, max_events integer DEFAULT 1000)
    RETURNS TABLE (pos bigint, seq bigint, id bigint, channel text, payload jsonb) LANGUAGE plpgsql STABLE AS $$
DECLARE b proto.batches; remaining integer := max_events; got integer;
BEGIN
    FOR b IN SELECT * FROM proto.batches x WHERE x.n > 0 AND x.first_pos + x.n - 1 > after_pos ORDER BY x.first_pos LOOP
        RETURN QUERY
            SELECT r.pos, r.seq, r.id, r.channel, r.payload FROM (
                SELECT b.first_pos + row_number() OVER (ORDER BY w.xid, w.id) - 1 AS pos,
                       b.first_seqs[array_position(b.channels, w.channel)]
                         + row_number() OVER (PARTITION BY w.channel ORDER BY w.xid, w.id) - 1 AS seq,
                       w.id, w.channel, w.payload
                  FROM proto.window(b.lo_snap, b.hi_snap, b.after_xid, b.after_id, b.n) w) r
             WHERE r.pos > after_pos ORDER BY r.pos LIMIT remaining;
        GET DIAGNOSTICS got = ROW_COUNT;
        remaining := remaining - got;
        EXIT WHEN remaining <= 0;
    END LOOP;
END $$;
