# Faults (issue 12): DROP EXTENSION pg_outbox under load. The utility hook stops the drain
# worker for the DROP (it would take the outbox's tables in another order than the DROP and
# deadlock with it), the DROP says how many pending events it discards, and a DROP that is
# rolled back loses nothing: publishing goes on, every acknowledged event exactly once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run ();
use OutboxFault qw(start_producers reap_producers wait_producers acked_ids verdict poll_until drop_rolled_back);

my $producers = 3;
my $node = PostgreSQL::Test::Cluster->new('drop_ext');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
deadlock_timeout = 100ms
max_connections = 30
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
my $worker_sql = "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'";
ok(poll_until($node, 'postgres', $worker_sql, 60), 'drain worker running');

my $dir = PostgreSQL::Test::Utils::tempdir;
my $failures = 0;
my $kids = start_producers(node => $node, db => 'postgres', dir => $dir, producers => $producers,
	first => 1, last => 2500, sleep => 0.005);

# ---- DROP EXTENSION under load, rolled back, several times ----
my ($rounds_ok, $warned) = (0, 0);
for my $round (1 .. 6) {
	usleep(400_000);
	my ($ok, $err) = drop_rolled_back($node, 'postgres', $round);
	$rounds_ok++ if $ok && $err !~ /deadlock|ERROR/;
	$warned++ if $err =~ /WARNING:  dropping extension pg_outbox discarded \d+ pending events that were never published/;
	# the worker comes back after each rolled-back DROP
	ok(poll_until($node, 'postgres', $worker_sql, 60), "round $round: the worker is back after the rolled-back DROP");
}
is($rounds_ok, 6, 'six DROP EXTENSION under load, each without deadlock or error');
note "$warned of the DROPs found pending events and said how many";
wait_producers($kids, \$failures);
is($failures, 0, 'every producer got all its transactions acknowledged (the DROPs only made them wait)');
verdict($node, 'postgres', acked_ids($dir, $producers), $producers * 2500, 'after rolled-back DROPs');

# ---- DROP EXTENSION under load, committed ----
$node->safe_psql('postgres', 'SELECT outbox.pause()'); # a backlog, so that something is discarded
my @load;
open my $fh, '>', "$dir/late.sql" or die;
print $fh "SELECT count(outbox.publish('late', jsonb_build_object('n', g))) FROM generate_series(1, 20) g;\n" x 400;
close $fh;
for my $p (1 .. 2) {
	my ($out, $err) = ('', '');
	push @load, IPC::Run::start([ $node->installed_command('psql'), '-XAtq', '-d', $node->connstr('postgres'),
			'-f', "$dir/late.sql" ], '>', \$out, '2>', \$err, IPC::Run::timeout(120));
}
ok(poll_until($node, 'postgres', 'SELECT count(*) > 100 FROM outbox.pending', 60), 'a backlog builds up');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION pg_outbox CASCADE', timeout => 60);
is($rc, 0, 'DROP EXTENSION under load succeeds') or diag $err;
like($err, qr/WARNING:  dropping extension pg_outbox discarded [1-9]\d* pending events that were never published/,
	'and says how many pending events it discarded');
$_->finish for @load;
ok(poll_until($node, 'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 60),
	'no worker after the DROP');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
ok(poll_until($node, 'postgres', $worker_sql, 60), 'CREATE EXTENSION again: the worker is back');
$node->safe_psql('postgres', "SELECT outbox.publish('again', '{}')");
ok(poll_until($node, 'postgres', 'SELECT count(*) = 1 FROM outbox.history', 60), 'and publishes');

my $log = slurp_file($node->logfile);
unlike($log, qr/deadlock detected/, 'no deadlock in the server log');
unlike($log, qr/terminated by signal|was terminated/, 'no crash');
$node->stop;
done_testing();
