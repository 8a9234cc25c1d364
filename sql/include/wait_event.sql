\set ECHO none
-- pg_temp.waiting(query_like, event_type): polls pg_stat_activity for up to 3 s until a backend
-- whose query is LIKE query_like waits on event_type ('Lock', 'Extension': outbox.wait() and
-- outbox.next() asleep), then returns how many do (0 when none came). A test that sent a query
-- through dblink asserts with it where that query is. Read with
--     \getenv abs_srcdir PG_ABS_SRCDIR
--     \i :abs_srcdir/sql/include/wait_event.sql
-- pg_stat_activity is read once per transaction (the stats snapshot): each round clears it, or a
-- backend not yet waiting at the first read is never seen.
CREATE FUNCTION pg_temp.waiting(query_like text, event_type text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    FOR i IN 1..300 LOOP
        SELECT count(*) INTO n FROM pg_stat_activity a
         WHERE a.query LIKE query_like AND a.wait_event_type = event_type AND a.pid <> pg_backend_pid();
        EXIT WHEN n > 0;
        PERFORM pg_sleep(0.01);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
    RETURN n;
END $$;
\set ECHO all
