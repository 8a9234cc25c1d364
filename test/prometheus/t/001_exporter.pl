# The Prometheus queries file (contrib/prometheus/pg_outbox_queries.yaml) in Debian's real
# prometheus-postgres-exporter (issue #19): the exporter runs on 127.0.0.1 against a throwaway
# cluster as a member of outbox_reader, /metrics is scraped with curl while events flow, and the
# values move as they should — pending rises while the drain is paused and falls after resume, a
# dead letter appears, a named consumer's lag grows and shrinks — and the exporter reports no
# error for any of the queries. Every wait polls with a deadline.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run ();

my $exporter_bin = $ENV{PG_OUTBOX_EXPORTER} // '/usr/bin/prometheus-postgres-exporter';
# not skipped when missing: test/setup.sh installs it, a missing exporter is a failure
BAIL_OUT("$exporter_bin not installed (test/setup.sh installs prometheus-postgres-exporter)") unless -x $exporter_bin;
my $queries = $ENV{PG_OUTBOX_QUERIES} // "$ENV{TESTDIR}/../contrib/prometheus/pg_outbox_queries.yaml";
ok(-r $queries, 'the queries file is readable') or BAIL_OUT("no $queries");
my $curl = '/usr/bin/curl';

my $node = PostgreSQL::Test::Cluster->new('prometheus');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '200ms'
pg_outbox.max_attempts = 2
pg_outbox.retry_delay = '100ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('app', 'CREATE ROLE monitor LOGIN IN ROLE outbox_reader');

# ---- the exporter, on loopback, on a free port ----
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $log = "${PostgreSQL::Test::Utils::tmp_check}/exporter.log";
my ($in, $out) = ('', '');
my $dsn = sprintf('host=%s port=%d user=monitor dbname=app sslmode=disable', $node->host, $node->port);
my $exporter = IPC::Run::start(
	[ 'env', "DATA_SOURCE_NAME=$dsn", $exporter_bin, "--web.listen-address=127.0.0.1:$port",
	  "--extend.query-path=$queries", '--disable-default-metrics', '--disable-settings-metrics' ],
	'<', \$in, '>&', $log);
END { $exporter->kill_kill if $exporter; }

sub scrape {
	my $text = `$curl -s --max-time 5 http://127.0.0.1:$port/metrics`;
	return $? == 0 ? $text : '';
}
# the value of a metric whose labels include all of %want, or undef
sub metric {
	my ($text, $name, %want) = @_;
	for my $line (split /\n/, $text) {
		next unless $line =~ /^\Q$name\E(?:\{([^}]*)\})? (\S+)$/;
		my ($labels, $value) = ($1 // '', $2);
		my %l = $labels =~ /(\w+)="((?:[^"\\]|\\.)*)"/g;
		next if grep { !defined $l{$_} || $l{$_} ne $want{$_} } keys %want;
		return $value;
	}
	return undef;
}
# poll until the metric satisfies $test (a sub on its value); returns the last value seen
sub poll_metric {
	my ($what, $name, $labels, $test, $timeout) = @_;
	my $deadline = time + ($timeout // 60);
	my $v;
	while (time < $deadline) {
		$v = metric(scrape(), $name, %$labels);
		return (1, $v) if defined $v && $test->($v);
		usleep(100_000);
	}
	diag("$what: $name is " . ($v // 'absent'));
	return (0, $v);
}
my %db = (database => 'app');

my ($ok, $v) = poll_metric('up', 'pg_outbox_worker_up', \%db, sub { $_[0] == 1 }, 60);
ok($ok, 'pg_outbox_worker_up is 1: the exporter runs the queries file and the worker runs');
my $m = scrape();
for my $name (qw(pg_outbox_pending_events pg_outbox_published_events_total pg_outbox_notify_queue_usage_ratio
                 pg_outbox_dead_letters pg_outbox_oldest_pending_age_seconds)) {
	ok(defined metric($m, $name, %db), "$name is exported");
}
is(metric($m, 'pg_outbox_health_status', %db, check => 'worker'), '0', 'pg_outbox_health_status{check="worker"} is 0 (ok)');
like($m, qr/^# TYPE pg_outbox_published_events_total counter$/m, 'published_events_total is a counter');
like($m, qr/^# TYPE pg_outbox_pending_events gauge$/m, 'pending_events is a gauge');

# ---- pending rises while paused, falls after resume ----
$node->safe_psql('app', 'SELECT outbox.pause()');
ok((poll_metric('paused', 'pg_outbox_paused', \%db, sub { $_[0] == 1 }))[0], 'pg_outbox_paused is 1');
my $last = 0;
my $rose = 1;
for my $round (1 .. 3) {
	$node->safe_psql('app', "SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 5) g");
	my ($got, $val) = poll_metric("round $round", 'pg_outbox_channel_pending_events', { %db, channel => 'orders' },
		sub { $_[0] == 5 * $round });
	$rose &&= $got && $val > $last;
	$last = $val // $last;
}
ok($rose, 'pg_outbox_channel_pending_events{channel="orders"} rises 5, 10, 15 while paused');
$m = scrape();
is(metric($m, 'pg_outbox_pending_events', %db), '15', 'pg_outbox_pending_events is 15');
cmp_ok(metric($m, 'pg_outbox_oldest_pending_age_seconds', %db), '>', 0, 'the oldest pending event has an age');
is(metric($m, 'pg_outbox_health_status', %db, check => 'worker'), '1', 'health: worker warning (paused)');
$node->safe_psql('app', 'SELECT outbox.resume()');
ok((poll_metric('resume', 'pg_outbox_channel_pending_events', { %db, channel => 'orders' }, sub { $_[0] == 0 }))[0],
	'after resume pending falls to 0');
$m = scrape();
is(metric($m, 'pg_outbox_channel_published_events_total', %db, channel => 'orders'), '15', 'the channel published 15 events');
is(metric($m, 'pg_outbox_channel_last_seq', %db, channel => 'orders'), '15', 'last seq 15');
cmp_ok(metric($m, 'pg_outbox_channel_published_events_last_minute', %db, channel => 'orders'), '>', 0,
	'published in the last minute');
is(metric($m, 'pg_outbox_channel_pending_events', %db, channel => 'orders', target => 'notify'), '0', 'target label notify');

# ---- a dead letter appears ----
$node->safe_psql('app', q{
CREATE FUNCTION public.dba_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ? 'poison' THEN
        RAISE EXCEPTION 'no such thing' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_0 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_1 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_2 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
SELECT outbox.publish('poisoned', '{"poison": true}');
});
ok((poll_metric('dead letter', 'pg_outbox_channel_dead_letters', { %db, channel => 'poisoned' }, sub { $_[0] == 1 }))[0],
	'pg_outbox_channel_dead_letters{channel="poisoned"} becomes 1');
$m = scrape();
is(metric($m, 'pg_outbox_dead_letters', %db), '1', 'pg_outbox_dead_letters is 1');
is(metric($m, 'pg_outbox_health_status', %db, check => 'dead_letters'), '1', 'health: dead_letters warning');

# ---- a consumer's lag grows and shrinks ----
$node->safe_psql('app', q{SELECT outbox.create_consumer('billing')});
ok((poll_metric('consumer', 'pg_outbox_consumer_lag_events', { %db, consumer => 'billing', state => 'active' },
	sub { $_[0] == 0 }))[0], 'a new consumer: lag 0');
$node->safe_psql('app', "SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 4) g");
ok((poll_metric('lag 4', 'pg_outbox_consumer_lag_events', { %db, consumer => 'billing' }, sub { $_[0] == 4 }))[0],
	'4 events published: lag 4');
$node->safe_psql('app', "SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 6) g");
ok((poll_metric('lag 10', 'pg_outbox_consumer_lag_events', { %db, consumer => 'billing' }, sub { $_[0] == 10 }))[0],
	'6 more: lag grows to 10');
ok((poll_metric('lag seconds', 'pg_outbox_consumer_lag_seconds', { %db, consumer => 'billing' }, sub { $_[0] > 0 }))[0],
	'and its lag in seconds is above 0');
$node->safe_psql('app', q{SELECT outbox.ack('billing', max(pos)) FROM outbox.next('billing', 6, '0')});
ok((poll_metric('lag 4 again', 'pg_outbox_consumer_lag_events', { %db, consumer => 'billing' }, sub { $_[0] == 4 }))[0],
	'6 acknowledged: lag shrinks to 4');
$node->safe_psql('app', q{SELECT outbox.ack('billing', max(pos)) FROM outbox.next('billing', 100, '0')});
ok((poll_metric('lag 0', 'pg_outbox_consumer_lag_events', { %db, consumer => 'billing' }, sub { $_[0] == 0 }))[0],
	'all acknowledged: lag 0');

# ---- a logical slot that retains WAL ----
$node->safe_psql('app', q{SELECT 'init' FROM pg_create_logical_replication_slot('obs_slot', 'test_decoding')});
$node->safe_psql('app', q{CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 2000) g});
ok((poll_metric('slot', 'pg_outbox_slot_retained_bytes', { %db, slot => 'obs_slot' }, sub { $_[0] > 1000000 }))[0],
	'pg_outbox_slot_retained_bytes{slot="obs_slot"} grows past 1 MB');
is(metric(scrape(), 'pg_outbox_slot_active', %db, slot => 'obs_slot'), '0', 'the slot is not active');
# every metric the alert rules use is exported (a consumer and a slot exist now)
my %exported = map { /^(\w+)[{ ]/ ? ($1 => 1) : () } grep { !/^#/ } split /\n/, scrape();
my $rules = slurp_file("$ENV{TESTDIR}/../contrib/prometheus/pg_outbox_alerts.yml");
my %used = map { $_ => 1 } join(' ', $rules =~ /^\s*expr:\s*(.*)$/mg) =~ /\b(pg_\w+)/g;
ok(scalar(keys %used) >= 8, 'the alert rules use ' . scalar(keys %used) . ' metrics');
ok($exported{$_}, "alert rules: $_ is exported") for sort keys %used;
$node->safe_psql('app', q{SELECT pg_drop_replication_slot('obs_slot')});
ok((poll_metric('slot gone', 'pg_outbox_health_value', { %db, check => 'wal_retained' }, sub { $_[0] == 0 }))[0],
	'slot dropped: health wal_retained value 0');

# ---- no query of the file failed ----
$exporter->pump_nb;
my $exporter_log = slurp_file($log);
unlike($exporter_log, qr/level=error/, 'the exporter logged no error') or diag($exporter_log);
$exporter->kill_kill;
$exporter = undef;
$node->stop;
done_testing();
