# Red team of issue #19 (observability): what a tenant learns about other tenants through
# outbox.channel_stats, outbox.health() and outbox.status; whether reading them in a long
# transaction blocks a producer or the drain; whether they can be made to error (parallel plans,
# hostile GUC values set by ALTER ROLE); whether the per-channel counters stay exact after a dead
# letter and its retry. Every wait polls with a deadline.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OutboxFault qw(poll_until);

my $node = PostgreSQL::Test::Cluster->new('redteam_observe');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '200ms'
pg_outbox.max_attempts = 2
pg_outbox.retry_delay = '100ms'
max_worker_processes = 8
max_parallel_workers_per_gather = 2
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', q{
CREATE EXTENSION pg_outbox;
CREATE ROLE monitor LOGIN IN ROLE outbox_reader;
CREATE ROLE tenant_a LOGIN IN ROLE outbox_consumer;
CREATE ROLE tenant_b LOGIN IN ROLE outbox_consumer;
SELECT outbox.grant_channel('a_%', 'tenant_a', '{read}');
SELECT outbox.grant_channel('b_%', 'tenant_b', '{read}');
});
sub as {
	my ($role, $sql) = @_;
	return $node->psql('app', $sql, extra_params => ['-U', $role]);
}

# ---- a tenant sees its channels only ----
$node->safe_psql('app', q{SELECT outbox.publish('a_orders', '{"n": 1}'), outbox.publish('b_secret', '{"n": 1}'),
                                 outbox.publish('b_secret', '{"n": 2}')});
ok(poll_until($node, 'app', q{SELECT count(*) = 0 FROM outbox.pending}, 60), 'published');
my ($rc, $out, $err) = as('tenant_a', q{SELECT string_agg(channel || '=' || published, ',' ORDER BY channel) FROM outbox.channel_stats});
is($out, 'a_orders=1', "tenant_a sees its channel only, not b_secret");
($rc, $out) = as('tenant_b', q{SELECT string_agg(channel, ',' ORDER BY channel) FROM outbox.channel_stats});
is($out, 'b_secret', 'tenant_b sees its channel only');
($rc, $out) = as('monitor', q{SELECT string_agg(channel, ',' ORDER BY channel) FROM outbox.channel_stats});
is($out, 'a_orders,b_secret', 'outbox_reader sees every channel');
# a leaky function in the tenant's own WHERE clause runs on the filtered rows only (security_barrier)
$node->safe_psql('app', q{CREATE FUNCTION public.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
	$$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$; GRANT EXECUTE ON FUNCTION public.leak(text) TO PUBLIC});
($rc, $out, $err) = as('tenant_a', q{SELECT count(*) FROM outbox.channel_stats WHERE public.leak(channel)});
is($out, '1', 'one row through a leaky qual');
unlike($err, qr/b_secret/, 'the leaky function never sees another tenant\'s channel');
# EXPLAIN ANALYZE (the documented limit, README "Per-channel figures"): row counts below the
# rights filter show, never another tenant's channel name
($rc, $out, $err) = as('tenant_a', q{EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) SELECT * FROM outbox.channel_stats});
is($rc, 0, 'a tenant may EXPLAIN ANALYZE the view') or diag($err);
unlike($out, qr/b_secret/, 'the plan names no channel of another tenant');
like($out, qr/Rows Removed by Filter: 1/, 'it shows how many rows the rights filter removed (documented limit)')
	or diag($out);
# the other observation points are closed to a tenant
for my $q ('SELECT * FROM outbox.health()', 'SELECT * FROM outbox.status', 'SELECT * FROM outbox.consumers',
	'SELECT outbox._health_threshold(\'pending\')', 'SELECT * FROM outbox._waiting_databases()') {
	($rc, $out, $err) = as('tenant_a', $q);
	like($err, qr/permission denied/, "tenant: $q is refused");
}

# ---- parallel plans: no error, same answer ----
# debug_parallel_query (16+) was force_parallel_mode before
my $par = q{SELECT FROM set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
            THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', false);
            SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; };
($rc, $out, $err) = as('tenant_a', $par . q{SELECT string_agg(channel, ',') FROM outbox.channel_stats});
is($rc, 0, 'channel_stats under debug_parallel_query (tenant)') or diag($err);
is($out, 'a_orders', 'and the same rows');
($rc, $out, $err) = as('monitor', $par . q{SELECT count(*) FROM outbox.health()});
is($rc, 0, 'health() under debug_parallel_query') or diag($err);
is($out, '9', 'nine checks');

# ---- hostile settings by ALTER ROLE / ALTER DATABASE are refused when set ----
for my $v ("'100,1'", "'-1,5'", "'nan,1'", "'1,inf'", "'1'", "'1,2,3'", "''", "'1e400,1e400'") {
	($rc, $out, $err) = $node->psql('app', "ALTER ROLE monitor SET pg_outbox.health_pending = $v");
	isnt($rc, 0, "ALTER ROLE ... health_pending = $v refused");
}
($rc, $out, $err) = $node->psql('app', "ALTER DATABASE app SET pg_outbox.health_queue_usage = '0.5,2'");
isnt($rc, 0, 'a queue usage above 1 is refused');
# the widest legal values: health() still answers
$node->safe_psql('app', q{ALTER ROLE monitor SET pg_outbox.health_dead_letter_window = 2147483647;
                          ALTER ROLE monitor SET pg_outbox.health_wal_retained = '1000000000000,1000000000000';
                          ALTER ROLE monitor SET pg_outbox.health_pending_age = '0,0'});
($rc, $out, $err) = as('monitor', q{SELECT string_agg("check" || '=' || status, ',' ORDER BY "check") FROM outbox.health()});
is($rc, 0, 'health() with extreme thresholds') or diag($err);
like($out, qr/pending_age=critical/, 'a zero threshold is critical at once (value >= 0)');
$node->safe_psql('app', q{ALTER ROLE monitor RESET ALL});

# ---- a long monitoring transaction blocks neither a producer nor the drain ----
my $mon = $node->background_psql('app', extra_params => ['-U', 'monitor']);
$mon->query_safe(q{BEGIN ISOLATION LEVEL REPEATABLE READ});
$mon->query_safe(q{SELECT count(*) FROM outbox.channel_stats});
$mon->query_safe(q{SELECT count(*) FROM outbox.health()});
$mon->query_safe(q{SELECT count(*) FROM outbox.status});
$node->safe_psql('app', q{SET statement_timeout = '20s'; SELECT outbox.publish('a_orders', '{"n": 2}')});
ok(poll_until($node, 'app', q{SELECT published = 2 FROM outbox.channels WHERE channel = 'a_orders'}, 60),
	'the drain publishes while a monitor holds channel_stats, health() and status in an open transaction');
# a purge by hand waits (at most its own 5 s lock timeout) for the monitor's ACCESS SHARE on the
# history segments, then gives up: it does not hang
my $t0 = time;
my ($prc, $pout, $perr) = $node->psql('app', q{SELECT outbox.purge('0 s')});
ok(time - $t0 < 30, 'purge by hand returns while the monitor transaction is open (lock timeout)');
diag("purge: rc=$prc $perr");
$mon->query_safe(q{COMMIT});
$mon->quit;

# ---- counters after a dead letter and its retry: each event counted once ----
$node->safe_psql('app', q{
CREATE FUNCTION public.poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ? 'poison' THEN
        RAISE EXCEPTION 'poisoned' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER poison BEFORE INSERT ON outbox.history_0 FOR EACH ROW EXECUTE FUNCTION public.poison();
CREATE TRIGGER poison BEFORE INSERT ON outbox.history_1 FOR EACH ROW EXECUTE FUNCTION public.poison();
CREATE TRIGGER poison BEFORE INSERT ON outbox.history_2 FOR EACH ROW EXECUTE FUNCTION public.poison();
});
$node->safe_psql('app', q{SELECT outbox.publish('a_orders', '{"poison": 1}'), outbox.publish('a_orders', '{"n": 3}')});
ok(poll_until($node, 'app', q{SELECT dead_letters = 1 AND pending = 0 FROM outbox.channel_stats WHERE channel = 'a_orders'}, 60),
	'the poison event is dead-lettered, the other published');
is($node->safe_psql('app', q{SELECT published || '|' || last_seq FROM outbox.channel_stats WHERE channel = 'a_orders'}), '3|3',
	'published counts the published events only (not the failed attempts, not the dead letter)');
$node->safe_psql('app', q{DROP TRIGGER poison ON outbox.history_0; DROP TRIGGER poison ON outbox.history_1;
                          DROP TRIGGER poison ON outbox.history_2});
$node->safe_psql('app', q{SELECT outbox.retry(id) FROM outbox.dead_letter});
ok(poll_until($node, 'app', q{SELECT dead_letters = 0 AND pending = 0 AND published = 4 FROM outbox.channel_stats WHERE channel = 'a_orders'}, 60),
	'retried: published once more, dead letter gone')
	or diag($node->safe_psql('app', q{SELECT * FROM outbox.channel_stats}));
# (the purge above may have removed the first events: the monitor reads the history only for
# named consumers, of which there are none; the kept seqs are then a gap-free suffix)
is($node->safe_psql('app', q{SELECT c.published = (SELECT max(h.seq) FROM outbox.history h WHERE h.channel = c.channel)
                               AND (SELECT count(*) = max(h.seq) - min(h.seq) + 1 FROM outbox.history h WHERE h.channel = c.channel)
                               AND c.published = c.last_seq FROM outbox.channels c WHERE c.channel = 'a_orders'}), 't',
	'published = the last seq in the history = last seq, and the kept seqs are gap-free');
is($node->safe_psql('app', q{SELECT bool_and(published_last_minute BETWEEN 0 AND published) FROM outbox.channel_stats}), 't',
	'the one-minute estimate is between 0 and the total');

$node->stop;
done_testing();
