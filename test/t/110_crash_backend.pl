# Faults (issue 12): a producer backend SIGKILLed under load (the postmaster resets the whole
# cluster: crash recovery), then the postmaster itself SIGKILLed under load and started again.
# Verdict (OutboxFault::verdict): every acknowledged event published exactly once, pos 1..N,
# nothing rolled back published, nothing left pending, no manual step.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OutboxFault qw(start_producers reap_producers wait_producers acked_ids verdict poll_until);

my $producers = 3;
my $node = PostgreSQL::Test::Cluster->new('crash_backend');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
restart_after_crash = on
max_connections = 20
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
ok(poll_until($node, 'postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 60),
	'drain worker running');

my $dir = PostgreSQL::Test::Utils::tempdir;
my $failures = 0;

# ---- phase 1: SIGKILL a producer's backend, five times, while the producers commit ----
my $kids = start_producers(node => $node, db => 'postgres', dir => $dir, producers => $producers,
	first => 1, last => 3000, sleep => 0.01);
my $kills = 0;
my $deadline = time + 120;
while (reap_producers($kids, \$failures) > 0 && time < $deadline) {
	if ($kills < 5) {
		# (eval: psql may die with "Broken pipe" while the server restarts; try again)
		my ($rc, $pid) = eval { $node->psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'producer_%' AND state <> 'idle' LIMIT 1") };
		if (defined $rc && $rc == 0 && defined $pid && $pid =~ /^\d+$/ && kill('KILL', $pid)) {
			$kills++;
			# wait for the crash restart to be over before the next kill
			poll_until($node, 'postgres',
				"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 60);
			usleep(300_000);
		}
	}
	usleep(100_000);
}
wait_producers($kids, \$failures);
is($failures, 0, 'phase 1: every producer got all its transactions acknowledged');
is($kills, 5, 'phase 1: a producer backend was SIGKILLed five times');
my $log = slurp_file($node->logfile);
my $resets = () = $log =~ /terminating any other active server processes/g;
cmp_ok($resets, '>=', 5, "the postmaster reset the cluster after each SIGKILL ($resets times)");
verdict($node, 'postgres', acked_ids($dir, $producers), $producers * 3000, 'after backend crashes');

# ---- phase 2: SIGKILL the postmaster under load, twice; start it again ----
$kids = start_producers(node => $node, db => 'postgres', dir => $dir, producers => $producers,
	first => 3001, last => 4500, sleep => 0.01);
for my $round (1 .. 2) {
	usleep(800_000);
	my $old_pm = $node->{_pid};
	$node->kill9;
	# the orphaned children notice the postmaster's death and exit; until then the old shared
	# memory is in use and a new postmaster refuses to start. The dead postmaster itself must
	# be reaped first (a zombie still "exists" for its lock file check).
	my $started = 0;
	my $until = time + 90;
	while (!$started && time < $until) {
		usleep(300_000);
		next if kill(0, $old_pm);
		$node->{_pid} = undef; # a failed attempt may have read the stale postmaster.pid
		$started = $node->start(fail_ok => 1);
	}
	ok($started, "postmaster SIGKILL $round: the server starts again");
}
wait_producers($kids, \$failures);
is($failures, 0, 'phase 2: every producer got all its transactions acknowledged');
ok(poll_until($node, 'postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 60),
	'the drain worker is back after the postmaster SIGKILLs');
verdict($node, 'postgres', acked_ids($dir, $producers), $producers * 4500, 'after postmaster SIGKILLs');

$log = slurp_file($node->logfile);
unlike($log, qr/duplicate key|PANIC/, 'no duplicate key error, no PANIC in the server log');
$node->stop;
done_testing();
