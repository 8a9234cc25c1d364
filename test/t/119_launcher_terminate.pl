# The launcher reads pg_database every second. A session holding a lock on pg_database (LOCK
# TABLE, VACUUM FULL pg_database) makes it wait for that lock; pg_terminate_backend() and a
# shutdown must still end it at once, as they end a drain worker waiting for a lock (its SIGTERM
# asks for die(), like PostgreSQL's own launchers), and it comes back afterwards.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OutboxFault qw(poll_until);

my $node = PostgreSQL::Test::Cluster->new('launcher_term');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
my $launcher_pid = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher'};
ok(poll_until($node, 'postgres', "SELECT count(*) = 1 FROM ($launcher_pid) l", 30), 'the launcher runs');
my $pid = $node->safe_psql('postgres', $launcher_pid);

# one session holds pg_database; the launcher's next look at the databases waits for it
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE pg_catalog.pg_database IN ACCESS EXCLUSIVE MODE');
my $waiting = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher' AND wait_event_type = 'Lock'};
my $waited = 0;
for (1 .. 100) {
	if ($locker->query_safe($waiting) =~ /^\s*1\s*$/m) { $waited = 1; last }
	usleep(100_000);
}
ok($waited, 'the launcher waits for the lock on pg_database');

# terminated from the locking session itself (a new connection would wait for pg_database too)
$locker->query_safe("SELECT pg_terminate_backend($pid)");
my $gone = 0;
for (1 .. 100) {
	# pg_stat_activity's rows are a snapshot kept for the transaction (wait events are read live)
	$locker->query_safe('SELECT pg_stat_clear_snapshot()');
	if ($locker->query_safe("SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") =~ /^\s*0\s*$/m) { $gone = 1; last }
	usleep(100_000);
}
ok($gone, 'pg_terminate_backend() ends a launcher that waits for a lock, while the lock is still held');
$locker->query_safe('COMMIT');
$locker->quit;

ok(poll_until($node, 'postgres', "SELECT count(*) = 1 FROM ($launcher_pid) l WHERE pid <> $pid", 60),
	'the postmaster starts the launcher again');
ok(poll_until($node, 'postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'}, 30),
	'and it starts the drain worker');
$node->safe_psql('postgres', q{SELECT outbox.publish('after', '{}')});
ok(poll_until($node, 'postgres', 'SELECT count(*) = 1 FROM outbox.history', 30), 'events are published again');

# an idle launcher terminated between passes exits cleanly: its own message, no FATAL (the die()
# its SIGTERM also asks for is held once the loop has ended; found by the red team)
$pid = $node->safe_psql('postgres', $launcher_pid);
my $offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(poll_until($node, 'postgres', "SELECT count(*) = 1 FROM ($launcher_pid) l WHERE pid <> $pid", 60),
	'terminated while idle, the launcher is started again');
my $log = slurp_file($node->logfile, $offset);
like($log, qr/\[$pid\] LOG:  pg_outbox launcher shutting down/, 'the idle launcher logged its clean exit');
unlike($log, qr/\[$pid\] FATAL:/, 'and ended without a FATAL');

# a fast shutdown while the launcher waits for pg_database ends at once
my $locker2 = $node->background_psql('postgres');
$locker2->query_safe('BEGIN');
$locker2->query_safe('LOCK TABLE pg_catalog.pg_database IN ACCESS EXCLUSIVE MODE');
$waited = 0;
for (1 .. 100) {
	if ($locker2->query_safe($waiting) =~ /^\s*1\s*$/m) { $waited = 1; last }
	usleep(100_000);
}
ok($waited, 'the new launcher waits for pg_database too');
my $t0 = time;
$node->stop('fast');
cmp_ok(time - $t0, '<', 30, 'a fast shutdown is not held up by it');
eval { $locker2->quit };
done_testing();
