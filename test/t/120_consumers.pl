# Consumers without LISTEN, against the real drain worker:
#   * the envelope column of replay() is the NOTIFY envelope the worker sent, field for field
#     (and complete where the NOTIFY one was truncated);
#   * a thousand backends waiting in outbox.wait() cost nothing while idle (no re-checks) and all
#     return, with the event, as soon as the worker's drain commits;
#   * a waiter ends at once on cancel, statement_timeout and pg_terminate_backend();
#   * retention keeps what named consumers have not acknowledged; past
#     pg_outbox.consumer_max_retention the consumer is marked lost and its calls raise OB001.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep time);

my $waiters = 1000;
my $node = PostgreSQL::Test::Cluster->new('consumers');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
max_connections = @{[ $waiters + 50 ]}
track_functions = 'all'
max_prepared_transactions = 2
wal_level = logical
pg_outbox.consumer_max_retention = '8s'
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
sub asleep {
	my ($n) = @_;
	return "SELECT count(*) >= $n FROM pg_stat_activity WHERE wait_event_type = 'Extension'"
	  . " AND wait_event = 'Extension' AND query LIKE '%outbox.wait(%' AND backend_type = 'client backend'";
}
ok(defined wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'"),
	'the drain worker runs');

# ---------------------------------------------------------------------------------------
# the envelope column is the NOTIFY envelope
# ---------------------------------------------------------------------------------------
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN orders');
sql(q{SELECT outbox.publish('orders', '{"a": 1, "b": [true, null]}', key => 'k-1', type => 'created');
      SELECT outbox.publish('orders', NULL);
      SELECT outbox.publish('orders', to_jsonb(text E'quote " backslash \\\\ tab \t unicode \u00e9 \u20ac'), key => E'\u00fcber');
      SELECT outbox.publish('orders', jsonb_build_object('blob', repeat('x', 9000)), type => 'big');});
my @got;
my $t0 = time;
while (@got < 4 && time - $t0 < 60) {
	for my $line (split /\n/, $listener->query_safe('SELECT 1')) {
		push @got, $1 if $line =~ /^Asynchronous notification "orders" with payload "(.*)" received from server process with PID \d+\.$/;
	}
	usleep(50_000);
}
is(scalar @got, 4, 'four NOTIFY envelopes received');
for my $env (@got) {
	my $e = decode_json($env);
	my $q = $env =~ s/'/''/gr;
	if ($e->{truncated}) {
		is(sql("SELECT (envelope - 'payload') = ('$q'::jsonb - 'truncated') AND envelope->'payload'->>'blob' = repeat('x', 9000)"
			  . " FROM outbox.replay($e->{pos} - 1, max_events => 1)"),
			't', "pos $e->{pos}: NOTIFY truncated it, the envelope column is complete and otherwise the same");
	} else {
		is(sql("SELECT envelope = '$q'::jsonb FROM outbox.replay($e->{pos} - 1, max_events => 1)"),
			't', "pos $e->{pos}: the envelope column equals the NOTIFY envelope");
	}
}
$listener->quit;

# ---------------------------------------------------------------------------------------
# a thousand waiters
# ---------------------------------------------------------------------------------------
my $head = sql('SELECT outbox.head()');
sql('SELECT pg_stat_reset()');
my $script = PostgreSQL::Test::Utils::tempdir . '/wait.sql';
open my $fh, '>', $script or die;
# 1/0 when the waiter came back empty: pgbench then reports the failure
print $fh "SELECT 1 / count(*)::int FROM outbox.wait($head, NULL, '120s');\n";
close $fh;
my ($pout, $perr) = ('', '');
my $pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', $waiters, '-j', '2', '-t', '1', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'<', \undef, '>', \$pout, '2>', \$perr);
my $took = wait_until(asleep($waiters), 180);
ok(defined $took, "$waiters backends sleep in outbox.wait()") or diag($perr);
# idle: they stay asleep and re-check nothing (replay() is called only when something wakes them)
sleep 3;
is(sql(asleep($waiters)), 't', '... and stay asleep');
my $t_pub = time;
sql(q{SELECT outbox.publish('orders', '{"wake": true}')});
$pgbench->finish;
my $woke = time - $t_pub;
is($pgbench->result(0), 0, 'every waiter returned with the event') or diag($perr);
cmp_ok($woke, '<', 30, "all $waiters waiters returned within 30 s of the commit (took " . sprintf('%.1f', $woke) . ' s)');
like($pout, qr/number of failed transactions: 0|number of transactions actually processed: $waiters\/$waiters/,
	'pgbench: no failed transaction');
my $calls_q = "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE schemaname = 'outbox' AND funcname = 'replay'";
wait_until("SELECT ($calls_q) >= $waiters", 30);    # the waiters' statistics are flushed as they exit
my $calls = sql($calls_q);
cmp_ok($calls, '>=', $waiters, 'replay() statistics of the waiters are in');
cmp_ok($calls, '<=', 3 * $waiters, "replay() was called $calls times: a check on arrival and one per wake-up, no polling");

# waiters of one channel sleep through other channels' events: 200 of them wait on 'quiet' for 8 s
# while 30 transactions publish on 'orders'; each calls replay() only on arrival and at its timeout
$head = sql('SELECT outbox.head()');
sql('SELECT pg_stat_reset()');
open $fh, '>', $script or die;
print $fh "SELECT count(*) FROM outbox.wait($head, ARRAY['quiet'], '8s');\n";
close $fh;
$pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', 200, '-j', '2', '-t', '1', '-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ],
	'<', \undef, '>', \$pout, '2>', \$perr);
ok(defined wait_until(asleep(200), 120), '200 waiters of channel quiet asleep');
sql(q{SELECT outbox.publish('orders', jsonb_build_object('n', 1))}) for 1 .. 30;
$pgbench->finish;
is($pgbench->result(0), 0, '... they time out with nothing') or diag($perr);
wait_until("SELECT ($calls_q) >= 200", 30);
$calls = sql($calls_q);
cmp_ok($calls, '<=', 3 * 200, "replay() was called $calls times: the 30 drains of channel orders woke none of them");

# ---------------------------------------------------------------------------------------
# cancel, statement_timeout, terminate, timeout
# ---------------------------------------------------------------------------------------
$head = sql('SELECT outbox.head()');
sub start_waiter {
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', $sql ],
		'<', \undef, '>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}
sub waiter_pid {
	ok(defined wait_until(asleep(1), 60), 'a waiter sleeps');
	return sql("SELECT pid FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%outbox.wait(%'"
		  . " AND backend_type = 'client backend' LIMIT 1");
}
my ($h, $out, $err) = start_waiter("SELECT * FROM outbox.wait($head, timeout => '60s')");
my $pid = waiter_pid();
$t0 = time;
sql("SELECT pg_cancel_backend($pid)");
$h->finish;
like($$err, qr/canceling statement due to user request/, 'pg_cancel_backend() ends the wait');
cmp_ok(time - $t0, '<', 10, '... at once');

($h, $out, $err) = start_waiter("SET statement_timeout = '500ms'; SELECT * FROM outbox.wait($head, timeout => '60s')");
$t0 = time;
$h->finish;
like($$err, qr/canceling statement due to statement timeout/, 'statement_timeout ends the wait');
cmp_ok(time - $t0, '<', 10, '... at once');

($h, $out, $err) = start_waiter("SELECT * FROM outbox.wait($head, timeout => '60s')");
$pid = waiter_pid();
$t0 = time;
sql("SELECT pg_terminate_backend($pid)");
$h->finish;
like($$err, qr/terminating connection due to administrator command/, 'pg_terminate_backend() ends the wait');
cmp_ok(time - $t0, '<', 10, '... at once');

($h, $out, $err) = start_waiter("SELECT count(*) FROM outbox.wait($head, timeout => '1.5s')");
$t0 = time;
$h->finish;
my $dt = time - $t0;
is($$out, "0\n", 'at its timeout, wait() returns an empty set');
ok($dt >= 1.4 && $dt < 10, sprintf('... after its timeout (%.1f s)', $dt));

# a drain in a prepared transaction (possible for channels whose target is 'wal' only: a
# transaction that NOTIFYs cannot be prepared) wakes the waiters at COMMIT PREPARED, not at the
# 10 s safety tick
sql(q{SELECT outbox.set_target('to_wal', 'wal')});
$head = sql('SELECT outbox.head()');
($h, $out, $err) = start_waiter("SELECT pos FROM outbox.wait($head, timeout => '60s')");
waiter_pid();
sql(q{BEGIN; SELECT outbox.publish('to_wal', '{"prepared": true}'); SELECT outbox.drain(); PREPARE TRANSACTION 'p1';});
$t0 = time;
sql(q{COMMIT PREPARED 'p1'});
$h->finish;
$dt = time - $t0;
is($$out, ($head + 1) . "\n", 'a drain committed by COMMIT PREPARED is returned to the waiter');
cmp_ok($dt, '<', 8, sprintf('... at once (%.1f s), not at the safety tick', $dt));

# ---------------------------------------------------------------------------------------
# retention and named consumers (pg_outbox.retention = 1s, consumer_max_retention = 8s)
# ---------------------------------------------------------------------------------------
sql(q{ALTER SYSTEM SET pg_outbox.retention = '1s'});
$node->reload;
ok(defined wait_until('SELECT purged_pos = outbox.head() FROM outbox.state', 30),
	'without consumers, retention removes the published events after about a second');
sql(q{SELECT outbox.create_consumer('keeper', ARRAY['orders']); SELECT outbox.create_consumer('slow');});
my $start = sql('SELECT outbox.head()');
sql(q{SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 5) g});
ok(defined wait_until("SELECT outbox.head() = $start + 5", 30), 'five events published');
my $t_published = time;
sleep 3;    # three times pg_outbox.retention: without consumers they would be gone
is(sql('SELECT purged_pos FROM outbox.state'), $start, 'retention keeps the events the consumers have not acknowledged');
is(sql("SELECT count(*) FROM outbox.replay($start)"), '5', '... all of them can be replayed');
is(sql("SELECT string_agg(pos::text, ',') FROM outbox.next('keeper', timeout => '0')"),
	join(',', map { $start + $_ } 1 .. 5), 'keeper gets them from next()');
sql("SELECT outbox.ack('keeper', $start + 5)");
# 'slow' never acknowledges: past consumer_max_retention it is lost and the events go
ok(defined wait_until("SELECT state = 'lost' FROM outbox.consumers WHERE name = 'slow'", 60),
	'the consumer that never acknowledged is marked lost past pg_outbox.consumer_max_retention');
cmp_ok(time - $t_published, '>=', 7.5, '... not before the cap');
ok(defined wait_until("SELECT purged_pos = $start + 5 FROM outbox.state", 30), '... and the events are removed');
is(sql("SELECT state, acked_pos FROM outbox.consumers WHERE name = 'keeper'"), "active|" . ($start + 5),
	'the consumer that acknowledged is still active');
is(sql('SELECT consumers, lost_consumers FROM outbox.status'), '1|1', 'outbox.status counts active and lost consumers');
my ($rc, $o, $e) = $node->psql('postgres', "SELECT * FROM outbox.next('slow', timeout => '0')");
like($e, qr/consumer "slow" is lost: events it had not acknowledged have been removed.*DETAIL:  Retention removed the events it had not acknowledged \(positions \d+ to \d+\)/s,
	"the lost consumer's next() raises an error saying so");
($rc, $o, $e) = $node->psql('postgres', "SELECT outbox.ack('slow', $start + 5)", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e, qr/ERROR:  OB001: consumer "slow" is lost/, '... ack() too, with SQLSTATE OB001');
is(sql("SELECT count(*) FROM outbox.next('keeper', timeout => '0')"), '0', 'keeper goes on');
like(slurp_file($node->logfile), qr/WARNING:  pg_outbox: consumer "slow" is lost: retention removed events it had not acknowledged/,
	'the server log says which consumer was lost');
sql(q{SELECT outbox.drop_consumer('slow')});
is(sql('SELECT consumers, lost_consumers FROM outbox.status'), '1|0', 'a dropped consumer is gone from outbox.status');

$node->stop;
done_testing();
