# Backpressure: above pg_outbox.max_queue_usage (here 0: any page of the NOTIFY queue that
# a listener has not consumed) the drain worker stops publishing and says so, in
# pg_stat_activity and in the server log; producers' commits keep succeeding (they never
# NOTIFY); once the listener ends its transaction and consumes the queue, the worker
# catches up and every event is delivered once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use JSON::PP;

my $node = PostgreSQL::Test::Cluster->new('backpressure');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.max_queue_usage = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'"),
	'drain worker running');

# The envelopes psql printed after a command.
sub parse {
	my ($out) = @_;
	return map { /^Asynchronous notification "bp" with payload "(.*)" received from server process/ ? decode_json($1) : () }
	  split /\n/, $out;
}

sub collect {
	my ($session, $want, $timeout) = @_;
	my @got;
	my $t0 = time;
	while (1) {
		push @got, parse($session->query_safe('SELECT 1'));
		last if @got >= $want || time - $t0 > $timeout;
		usleep(50_000);
	}
	return @got;
}

my $drain_query = "SELECT query FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'";

# A listener that holds a transaction open: notifications are not consumed meanwhile, so
# the queue tail cannot move past the listener's position.
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN bp');
$listener->query_safe('BEGIN');
$listener->query_safe('SELECT 1');

# 40 events of ~1 kB: about 6 pages of the 8 kB NOTIFY queue. The queue is empty, so the
# worker publishes them (in one batch).
my $payload = "jsonb_build_object('n', g, 'pad', repeat('p', 1000))";
$node->safe_psql('postgres', "SELECT outbox.publish('bp', $payload) FROM generate_series(1, 40) g");
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM outbox.pending'),
	'the first 40 events are published while the queue is empty');
cmp_ok($node->safe_psql('postgres', 'SELECT pg_notification_queue_usage()'), '>', 0,
	'the NOTIFY queue is now in use (more than one page unconsumed)');

# Nothing is pending: the worker has no reason to wait and stays idle.
sleep 1;
is($node->safe_psql('postgres', $drain_query), 'pg_outbox: idle, waiting for commits',
	'with nothing pending the worker stays idle even above the limit');

# Producers keep committing; the worker notices the queue and waits instead of publishing.
my ($ret, $out, $err) =
  $node->psql('postgres', "SELECT count(outbox.publish('bp', $payload)) FROM generate_series(41, 50) g");
is($ret, 0, 'producers commit while the queue is over the limit') or diag $err;
ok($node->poll_query_until('postgres',
		"SELECT ($drain_query) = 'pg_outbox: waiting, NOTIFY queue above max_queue_usage'"),
	'the worker says it waits, in pg_stat_activity.query');
ok($node->wait_for_log(qr/NOTIFY queue usage [0-9.e-]+ is above pg_outbox\.max_queue_usage \(0\): waiting for listeners to catch up/),
	'... and in the server log');
is($node->safe_psql('postgres', "SELECT state FROM outbox.status"), 'backpressure', '... and in outbox.status');
sleep 2;
is($node->safe_psql('postgres', 'SELECT count(*) FROM outbox.pending'), '10',
	'the 10 new events wait in pending (not published for 2 s)');
is($node->safe_psql('postgres', 'SELECT max(pos) FROM outbox.history'), '40', 'history ends at pos 40');

# The listener ends its transaction and consumes the queue: the worker catches up.
my $log_offset = -s $node->logfile;
my @got = parse($listener->query_safe('COMMIT'));    # psql prints what arrived at COMMIT
push @got, collect($listener, 50 - @got, 60);
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM outbox.pending'),
	'after the listener caught up, the worker published the rest');
push @got, collect($listener, 50 - @got, 30) if @got < 50;
is(scalar @got, 50, 'the listener got all 50 events');
is_deeply([ map { $_->{pos} } @got ], [ 1 .. 50 ], 'every pos once, in order');
is_deeply([ map { $_->{payload}{n} } @got ], [ 1 .. 50 ], 'payloads in publish order');
ok($node->wait_for_log(qr/NOTIFY queue below pg_outbox\.max_queue_usage again, publishing/, $log_offset),
	'the worker logs that it publishes again');
ok($node->poll_query_until('postgres', "SELECT ($drain_query) = 'pg_outbox: idle, waiting for commits'"),
	'and goes back to idle');

$listener->quit;
$node->stop;
done_testing();
