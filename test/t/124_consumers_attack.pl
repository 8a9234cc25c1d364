# Attacks on the consumer API (outbox.wait(), named consumers) that need a whole server:
#   * a waiter of exactly one channel is woken by the COMMIT PREPARED of a drain (wal-only
#     channel: a NOTIFYing transaction cannot be prepared), not at its 10 s safety tick;
#   * the drain worker's retention removes other channels' events behind a filtered consumer
#     (even one whose row an open transaction has locked): the consumer stays active and its
#     next() does not raise OB001 for them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $node = PostgreSQL::Test::Cluster->new('consumers_attack');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
max_prepared_transactions = 2
pg_outbox.idle_interval = '100ms'
});
$node->start;
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql('CREATE EXTENSION pg_outbox');

# Poll a boolean query until true; the seconds it took, or undef after $timeout seconds.
sub wait_until {
	my ($q, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $t0 = time;
	while (time - $t0 < $timeout) {
		return time - $t0 if sql($q) eq 't';
		usleep(20_000);
	}
	return undef;
}
my $asleep = "SELECT count(*) >= 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension'"
  . " AND wait_event = 'Extension' AND query LIKE '%outbox.wait(%' AND backend_type = 'client backend'";
ok(defined wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'"),
	'the drain worker runs');

sub start_waiter {
	my ($q) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $q ],
		'>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}

# ---------------------------------------------------------------------------------------
# COMMIT PREPARED of a drain wakes the waiters of one channel
# ---------------------------------------------------------------------------------------
sql(q{SELECT outbox.set_target('to_wal', 'wal')});
sql(q{SELECT outbox.pause()}); # the worker must not drain it first: the drain is prepared below
my $head = sql('SELECT outbox.head()');
my ($h, $out, $err) = start_waiter("SELECT pos FROM outbox.wait($head, ARRAY['to_wal'], '60s')");
my ($h2, $out2, $err2) = start_waiter("SELECT pos FROM outbox.wait($head, ARRAY['to_wal', 'other'], '60s')");
ok(defined wait_until(
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE wait_event_type = 'Extension'"
		  . " AND wait_event = 'Extension' AND query LIKE '%outbox.wait(%' AND backend_type = 'client backend'"),
	'two waiters asleep (one of exactly one channel, one of two)');
sql(q{BEGIN; SELECT outbox.publish('to_wal', '{"prepared": true}'); SELECT outbox.drain(); PREPARE TRANSACTION 'p1';});
my $t0 = time;
sql(q{COMMIT PREPARED 'p1'});
$h2->finish;
my $dt2 = time - $t0;
$h->finish;
my $dt = time - $t0;
is($$out2, ($head + 1) . "\n", 'the waiter of two channels (the database\'s wait list) gets the event of the prepared drain');
cmp_ok($dt2, '<', 8, sprintf('... at COMMIT PREPARED (%.1f s)', $dt2));
is($$out, ($head + 1) . "\n", 'the waiter of one channel (its own wait list) gets it too');
cmp_ok($dt, '<', 8, sprintf('... at COMMIT PREPARED as well (%.1f s), not at the 10 s safety tick', $dt));
sql(q{SELECT outbox.resume()});

# ---------------------------------------------------------------------------------------
# the worker's retention and a filtered consumer whose row is locked
# ---------------------------------------------------------------------------------------
sql(q{SELECT outbox.create_consumer('rare_c', ARRAY['rare'], 'now')});
sql(q{SELECT outbox.publish('rare', '{"n": "rare"}')});
ok(defined wait_until(q{SELECT count(*) = 1 FROM outbox.history WHERE channel = 'rare'}), 'the rare event is published');
my $rare_pos = sql(q{SELECT pos FROM outbox.next('rare_c', timeout => '0')});
sql("SELECT outbox.ack('rare_c', $rare_pos)");
sql(q{SELECT count(outbox.publish('busy', jsonb_build_object('n', g))) FROM generate_series(1, 20) g});
ok(defined wait_until(q{SELECT outbox.head() = } . ($rare_pos + 20)), 'the busy events are published');

# an open transaction holds rare_c's row: retention does not need it (rare_c has processed every
# event of its channels), so it removes the busy events all the same. (Locked by hand: an open
# transaction that called ack() also holds its ACCESS SHARE lock on the history, which keeps
# retention waiting like any open transaction that read the history.)
my $locker = $node->background_psql('postgres');
$locker->query_safe(q{BEGIN; SELECT 1 FROM outbox.consumer WHERE name = 'rare_c' FOR UPDATE;});
sql(q{ALTER SYSTEM SET pg_outbox.retention = '1s'});
$node->reload;
ok(defined wait_until(q{SELECT purged_pos >= } . ($rare_pos + 20) . q{ FROM outbox.state}),
	'retention removes the busy events behind the filtered consumer');
is(sql(q{SELECT state || ' ' || acked_pos FROM outbox.consumer WHERE name = 'rare_c'}), "active $rare_pos",
	'... which stays active, at its position');
$locker->query_safe('COMMIT');
$locker->quit;
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{SELECT count(*) FROM outbox.next('rare_c', timeout => '0')});
is($ret, 0, 'next() of rare_c works (no OB001 for the other channels\' removed events)') or diag($stderr);
is($stdout, '0', '... and returns nothing');
sql(q{SELECT outbox.publish('rare', '{"n": "rare again"}')});
ok(defined wait_until(q{SELECT count(*) = 1 FROM outbox.history WHERE channel = 'rare'}), 'a new rare event is published');
is(sql(q{SELECT payload->>'n' FROM outbox.next('rare_c', timeout => '10s')}), 'rare again', 'next() returns it');

$node->stop;
done_testing();
