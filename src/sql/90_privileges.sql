
-- ---------------------------------------------------------------------------------------
-- Privileges. Nothing is granted to PUBLIC. Three roles (cluster-wide, created once, kept by
-- DROP EXTENSION; names without the reserved pg_ prefix):
--   outbox_publisher  write events: publish(), notify(), attach()/detach() of tables it owns
--   outbox_reader     read events: event(), replay(), head(), the history, status
--   outbox_admin      both, plus drain(), pause(), resume(), purge(), retry(), all tables
-- Functions that touch the outbox tables for their caller are SECURITY DEFINER with a pinned
-- search_path; the tables themselves are granted to outbox_admin only.
-- ---------------------------------------------------------------------------------------
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['outbox_publisher', 'outbox_reader', 'outbox_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
    FOREACH r IN ARRAY ARRAY['outbox_publisher', 'outbox_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members
                        WHERE roleid = r::regrole AND member = 'outbox_admin'::regrole) THEN
            EXECUTE pg_catalog.format('GRANT %I TO outbox_admin', r);
        END IF;
    END LOOP;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA outbox FROM PUBLIC;
GRANT USAGE ON SCHEMA outbox TO outbox_publisher, outbox_reader, outbox_admin;

-- functions that act for their caller on tables the caller cannot touch
ALTER FUNCTION outbox.drain(integer) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION outbox.event(bigint) SECURITY DEFINER;

-- everybody with a role may ask for the limits
GRANT EXECUTE ON FUNCTION outbox.max_payload_bytes(), outbox.max_channel_bytes()
    TO outbox_publisher, outbox_reader;

-- publish() runs no SQL: it writes outbox.pending itself, so EXECUTE is the whole right to publish
GRANT EXECUTE ON FUNCTION outbox.publish(text, jsonb, text, text), outbox.notify(text, text)
    TO outbox_publisher;

GRANT EXECUTE ON FUNCTION outbox.event(bigint), outbox.notify_queue_usage(), outbox._worker_status()
    TO outbox_reader;
-- the view outbox.history and the table under it (67_history_view.sql; in the order of an upgraded database)
GRANT SELECT ON outbox.history_frozen, outbox.history TO outbox_reader; -- outbox.status: 98_observe_log.sql
-- the view outbox.history calls it (67_history_view.sql): it returns what the view shows
GRANT EXECUTE ON FUNCTION outbox._history_log() TO outbox_reader;

GRANT EXECUTE ON FUNCTION outbox.drain(integer), outbox.pause(), outbox.purge(interval), outbox.use_log_storage(),
                          outbox.retry(bigint), outbox.discard(bigint, text)
    TO outbox_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA outbox TO outbox_admin;

-- publishing to the WAL (70_wal.sql)
ALTER FUNCTION outbox.set_target(text, text) SECURITY DEFINER;
ALTER FUNCTION outbox.reset_target(text) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION outbox.set_target(text, text), outbox.reset_target(text) TO outbox_admin;
GRANT SELECT ON outbox.targets, outbox.debezium_events TO outbox_reader;

-- replay (40_replay.sql): readers replay without any right on the tables themselves
ALTER FUNCTION outbox.replay(bigint, text[], integer, bigint) SECURITY DEFINER;
ALTER FUNCTION outbox.replay_channel(text, bigint, integer, bigint) SECURITY DEFINER;
ALTER FUNCTION outbox.head() SECURITY DEFINER;
ALTER FUNCTION outbox.head(text) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION outbox.replay(bigint, text[], integer, bigint), outbox.replay_channel(text, bigint, integer, bigint),
                          outbox.head(), outbox.head(text)
    TO outbox_reader;
-- a reader that queries the history itself also reads the segments (and LOCK TABLE checks them)
GRANT SELECT ON outbox.history_0, outbox.history_1, outbox.history_2 TO outbox_reader;

-- the change trigger (30_trigger.sql): a publisher attaches tables it owns (attach() checks the
-- ownership; CREATE TRIGGER needs EXECUTE on the trigger function, which cannot be called any
-- other way than as a trigger). Writers of an attached table need no right in schema outbox: the
-- trigger stores events as the owner of outbox.pending. No other internal function (outbox._*) is
-- granted to anyone but outbox._worker_status(), which the outbox.status view calls (a view's
-- functions are checked against the view's user): it takes no argument and returns the view's data.
GRANT EXECUTE ON FUNCTION outbox.attach(regclass, text, text, text[], text[], text[]), outbox.detach(regclass),
                          outbox._change()
    TO outbox_publisher;
GRANT SELECT ON outbox.attachments TO outbox_publisher, outbox_reader;

-- [consumers] waiting and named consumers (45_consumers.sql): readers wait, and create, use and
-- drop consumers of their own (the C functions check that the caller is the consumer's owner, a
-- member of it, or outbox_admin, and write outbox.consumer as its owner). wait() and next()
-- call outbox.replay() as the caller: replay's privileges apply to them.
GRANT EXECUTE ON FUNCTION outbox.wait(bigint, text[], interval, integer), outbox.create_consumer(text, text[], text),
                          outbox.next(text, integer, interval), outbox.ack(text, bigint), outbox.drop_consumer(text)
    TO outbox_reader;
-- (outbox.consumers: granted in 98_observe_log.sql)

-- [epochs] identity and epochs (22_epochs.sql): readers check where their positions stand
ALTER FUNCTION outbox.identity() SECURITY DEFINER;
ALTER FUNCTION outbox.epoch() SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION outbox.identity(), outbox.epoch() TO outbox_reader;
GRANT SELECT ON outbox.epochs TO outbox_reader;

-- the read-only check of the writing functions (00_schema.sql): attach() and detach() run as their caller
GRANT EXECUTE ON FUNCTION outbox._check_writable(text) TO outbox_publisher, outbox_reader;
