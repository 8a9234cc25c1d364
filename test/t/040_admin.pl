# Administration with the real drain worker: status, pause/resume (persistent across a
# restart), retention by segment rotation, dead letters that never block the queue.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('admin');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.retention = '4s'
pg_outbox.idle_interval = '200ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');

ok($node->poll_query_until('postgres', "SELECT state = 'idle' FROM outbox.status"), 'worker is idle');
is($node->safe_psql('postgres', "SELECT pid IS NOT NULL, pid = (SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = current_database()) FROM outbox.status"),
   't|t', 'status shows the worker that pg_stat_activity shows');

# the worker publishes what producers commit; status counts it
$node->safe_psql('postgres', "SELECT outbox.publish('c', jsonb_build_object('n', g)) FROM generate_series(1, 100) g");
ok($node->poll_query_until('postgres', "SELECT pending = 0 AND published_total = 100 FROM outbox.status"),
   'worker published 100 events');
cmp_ok($node->safe_psql('postgres', "SELECT events_per_sec FROM outbox.status"), '>=', 0, 'events_per_sec is reported');

# the worker vacuums the pending table itself (autovacuum's one-minute naptime would let it
# bloat under sustained load): after 20000 published events its VACUUM shows up
$node->safe_psql('postgres', "SELECT outbox.publish('bulk', NULL) FROM generate_series(1, 25000)");
ok($node->poll_query_until('postgres',
    "SELECT vacuum_count > 0 FROM pg_stat_user_tables WHERE relid = 'outbox.pending'::regclass"),
   'the worker vacuumed outbox.pending');
ok($node->poll_query_until('postgres', "SELECT pending = 0 FROM outbox.status"), 'bulk published');
# the history's BRIN index on the event id is kept summarized by the worker (about once a
# second): a lookup of the newest event reads one range of pages, not every page filled since
# the last VACUUM (25,000 events here; nothing else summarizes: autovacuum has not run)
$node->safe_psql('postgres', q{
CREATE FUNCTION public.brin_rechecked(seg int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE plan json; newest bigint;
BEGIN
    EXECUTE format('SELECT max(id) FROM outbox.history_%s', seg) INTO newest;
    IF newest IS NULL THEN
        -- the segment rotated (retention 4s) before this poll, as on a slow machine: it holds
        -- nothing yet; give it an event and look again at the next poll
        PERFORM outbox.publish('bulk', NULL);
        RETURN NULL;
    END IF;
    PERFORM set_config('enable_seqscan', 'off', true);
    EXECUTE format('EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM outbox.history_%s WHERE id = %s', seg, newest) INTO plan;
    RETURN (plan->0->'Plan'->>'Rows Removed by Index Recheck')::int;
END $$});
# (in the segment that holds the newest event: with this test's 4 s retention the worker may
# have rotated to an empty segment meanwhile)
# (outbox.history_frozen: the table, whose rows say which segment holds them; outbox.history is a view)
ok($node->poll_query_until('postgres',
    "SELECT public.brin_rechecked(substr(h.tableoid::regclass::text, 16)::int) < 2000"
    . " FROM outbox.history_frozen h ORDER BY h.pos DESC LIMIT 1"),
   'the worker keeps the history BRIN index summarized');
$node->safe_psql('postgres', "DROP FUNCTION public.brin_rechecked(int)");
is($node->safe_psql('postgres', "SELECT count(*) FROM outbox.event((SELECT max(id) FROM outbox.history))"), '1',
   'outbox.event() finds the newest event');
unlike(slurp_file($node->logfile), qr/ERROR/, 'no errors in the log so far');
$node->safe_psql('postgres', "SELECT outbox.purge('0')");

# pause: the worker stops publishing, producers keep writing, and it survives a restart
$node->safe_psql('postgres', "SELECT outbox.pause()");
ok($node->poll_query_until('postgres', "SELECT state = 'paused' FROM outbox.status"), 'worker says paused');
$node->safe_psql('postgres', "SELECT outbox.publish('c', '{\"paused\": true}') FROM generate_series(1, 10)");
sleep 1;
is($node->safe_psql('postgres', "SELECT pending, published_total FROM outbox.status"), '10|25100',
   'nothing published while paused');
$node->restart;
ok($node->poll_query_until('postgres', "SELECT state = 'paused' FROM outbox.status"), 'still paused after a restart');
is($node->safe_psql('postgres', "SELECT pending FROM outbox.status"), '10', 'pending events kept across the restart');
$node->safe_psql('postgres', "SELECT outbox.resume()");
ok($node->poll_query_until('postgres', "SELECT pending = 0 AND published_total = 25110 AND state = 'idle' FROM outbox.status"),
   'resume publishes the backlog');
is($node->safe_psql('postgres', "SELECT count(*), count(DISTINCT pos), min(pos), max(pos) FROM outbox.history"),
   '10|10|25101|25110', 'positions go on after the purge: no gap, no repeat');

# retention: after pg_outbox.retention (4 s) the oldest events are gone, by whole segments,
# oldest first, and the history starts right after purged_pos (no hole)
ok($node->poll_query_until('postgres', "SELECT purged_pos >= 25110 FROM outbox.state", 't'),
   'retention removed the published events');
$node->safe_psql('postgres', "SELECT outbox.publish('c', '{\"late\": true}')");
ok($node->poll_query_until('postgres', "SELECT pending = 0 FROM outbox.status"), 'published after purge');
is($node->safe_psql('postgres',
    "SELECT min(pos) = (SELECT purged_pos + 1 FROM outbox.state) FROM outbox.history"), 't',
   'the history starts right after the retention horizon');
like(slurp_file($node->logfile), qr/pg_outbox: retention removed \d+ published events/, 'retention says what it removed');
is($node->safe_psql('postgres', "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname LIKE 'history_%' AND n_dead_tup > 0"),
   '', 'no dead tuples in the history segments');

# retention keeps every event at least pg_outbox.retention (4 s) and at most 1.5 times that:
# publish twice a second for 14 s and watch the age of the oldest event kept
{
    my ($min_oldest, $max_oldest) = (1e9, 0);
    for my $i (1 .. 28) {
        $node->safe_psql('postgres', "SELECT outbox.publish('ages', '{}')");
        select(undef, undef, undef, 0.5);
        next if $i < 14;    # after a warm-up longer than 1.5 × retention
        my $age = $node->safe_psql('postgres',
            "SELECT extract(epoch FROM now() - min(published_at)) FROM outbox.history WHERE channel = 'ages'");
        $min_oldest = $age if $age < $min_oldest;
        $max_oldest = $age if $age > $max_oldest;
    }
    cmp_ok($max_oldest, '<', 7.5, "no event kept much longer than 1.5 x retention (oldest seen: ${max_oldest}s)");
    cmp_ok($min_oldest, '>', 2.5, "events kept about as long as the retention (youngest oldest: ${min_oldest}s)");
}

# dead letters: an event that cannot be published does not block the ones behind it
for my $s (0 .. 2) {
    $node->safe_psql('postgres',
        "ALTER TABLE outbox.history_$s ADD CONSTRAINT no_poison CHECK (payload IS NULL OR NOT payload ? 'poison')");
}
$node->safe_psql('postgres', "SELECT outbox.publish('c', '{\"poison\": 1}'), outbox.publish('c', '{\"after\": 1}')");
# (the event behind it is published at once, while the poison event is retried
# pg_outbox.max_attempts times, about 15 s: longer than this test's 4 s retention keeps it)
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM outbox.history WHERE payload ? 'after'"),
   'event behind it published');
ok($node->poll_query_until('postgres', "SELECT dead_letters = 1 AND pending = 0 FROM outbox.status"),
   'the poison event is a dead letter, the one behind it is published');
is($node->safe_psql('postgres', "SELECT sqlstate FROM outbox.dead_letters"), '23514', 'dead letter keeps its error');
for my $s (0 .. 2) {
    $node->safe_psql('postgres', "ALTER TABLE outbox.history_$s DROP CONSTRAINT no_poison");
}
$node->safe_psql('postgres', "SELECT outbox.retry(id) FROM outbox.dead_letters");
ok($node->poll_query_until('postgres', "SELECT dead_letters = 0 AND pending = 0 FROM outbox.status"),
   'retried dead letter published');
is($node->safe_psql('postgres', "SELECT count(*) FROM outbox.history WHERE payload ? 'poison'"), '1', 'once');

# The worker runs as a superuser: a search_path set on the database (by its owner, say) must
# not make it call anything but pg_catalog's functions.
$node->safe_psql('postgres', q{
    CREATE SCHEMA evil;
    CREATE FUNCTION evil.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'hijacked by %', current_user; END $$;
    CREATE FUNCTION evil.unnest(bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'hijacked by %', current_user; END $$;
    ALTER DATABASE postgres SET search_path = evil, pg_catalog;
    SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain';
});
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND state IS NOT NULL"),
   'a new worker runs');
$node->safe_psql('postgres', "SELECT outbox.publish('pinned', '{}') FROM generate_series(1, 3)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 3 FROM outbox.history WHERE channel = 'pinned'"),
   'the worker publishes with its search_path pinned');
unlike(slurp_file($node->logfile), qr/ERROR:\s+hijacked/, 'the database\'s search_path reached none of its queries');
$node->safe_psql('postgres', 'ALTER DATABASE postgres RESET search_path; DROP SCHEMA evil CASCADE');

# A role that may not drop (or rename, or copy) a database cannot stop its worker by trying.
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
my $pid_before = $node->safe_psql('postgres', "SELECT pid FROM outbox.status");
my ($rc_drop, $out_drop, $err_drop) = $node->psql('postgres', 'DROP DATABASE postgres', extra_params => [ '-U', 'mallory' ]);
like($err_drop, qr/must be owner of database postgres/, 'mallory may not drop the database');
($rc_drop, $out_drop, $err_drop) = $node->psql('postgres', 'ALTER DATABASE postgres RENAME TO x', extra_params => [ '-U', 'mallory' ]);
like($err_drop, qr/must be owner of database postgres/, '... nor rename it');
is($node->safe_psql('postgres', "SELECT pid, state FROM outbox.status"), "$pid_before|idle",
   'the worker was not stopped by the attempts');

# pg_outbox.batch_delay: after a wake-up the worker waits for more commits, so five quick
# commits are published by one drain transaction (same published_at) instead of five
$node->safe_psql('postgres', "ALTER SYSTEM SET pg_outbox.batch_delay = '1s'");
$node->reload;
ok($node->poll_query_until('postgres', "SELECT current_setting('pg_outbox.batch_delay') = '1s'"), 'batch_delay set');
sleep 1;    # let the worker see the reload
$node->safe_psql('postgres', join("\n", map { "SELECT outbox.publish('delayed', '{\"n\": $_}');" } 1 .. 5));
ok($node->poll_query_until('postgres', "SELECT count(*) = 5 FROM outbox.history WHERE channel = 'delayed'"),
   'delayed events published');
is($node->safe_psql('postgres', "SELECT count(DISTINCT published_at) FROM outbox.history WHERE channel = 'delayed'"),
   '1', 'five commits, one drain transaction');

# A paused worker is not woken by producers' commits (src/wakeup.hpp: each wake-up cost the worker
# a transaction and the producer a kill()); outbox.resume() wakes it. With pg_outbox.idle_interval
# at an hour nothing else wakes it: its last activity report (state_change) stays put through 20
# commits, and resume() publishes them at once.
$node->safe_psql('postgres', "ALTER SYSTEM RESET pg_outbox.batch_delay");
$node->safe_psql('postgres', "ALTER SYSTEM SET pg_outbox.idle_interval = '1h'");
$node->reload;
$node->safe_psql('postgres', "SELECT outbox.pause()");
ok($node->poll_query_until('postgres', "SELECT state = 'paused' FROM outbox.status"), 'paused again');
sleep 1;    # the reload and the pause seen, the worker asleep
my $worker_activity = "SELECT state_change FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = current_database()";
my $asleep_since = $node->safe_psql('postgres', $worker_activity);
$node->safe_psql('postgres', join("\n", map { "SELECT outbox.publish('while_paused', '{\"n\": $_}');" } 1 .. 20));
sleep 1;
is($node->safe_psql('postgres', $worker_activity), $asleep_since, 'a paused worker is not woken by 20 commits');
is($node->safe_psql('postgres', "SELECT count(*) FROM outbox.history WHERE channel = 'while_paused'"), '0',
   'nothing published while paused');
$node->safe_psql('postgres', "SELECT outbox.resume()");
ok($node->poll_query_until('postgres', "SELECT count(*) = 20 FROM outbox.history WHERE channel = 'while_paused'"),
   'outbox.resume() wakes it: the 20 events are published without waiting for the idle interval');

$node->stop;
done_testing();
