# DROP EXTENSION pg_outbox under load in log mode (issue #15, flip finding 2; t/113 is 1.2 mode):
# the DROP counts the log's unpublished events (outbox._pending_summary() in a subtransaction, after
# the lock on outbox.pending) without deadlocking with the producers or the worker, and says how
# many were in the log; a DROP that is rolled back loses nothing: every acknowledged event is
# published once, positions gap-free.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run ();
use OutboxNode qw(outbox_node poll_is);
use OutboxFault qw(start_producers wait_producers acked_ids drop_rolled_back);

my $producers = 3;
my $node = outbox_node('log_drop_ext', 'deadlock_timeout' => '100ms', 'max_connections' => '30');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('postgres', 'SELECT * FROM outbox.use_log_storage()');
my $worker_sql = "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'";
poll_is($node, 'postgres', $worker_sql, 't', 'log mode: drain worker running', 600);

my $dir = PostgreSQL::Test::Utils::tempdir;
my $failures = 0;
my $kids = start_producers(node => $node, db => 'postgres', dir => $dir, producers => $producers,
	first => 1, last => 1500, sleep => 0.005);

# ---- rolled back, under load, several times ----
my ($rounds_ok, $in_log) = (0, 0);
for my $round (1 .. 5) {
	usleep(400_000);
	my ($ok, $err) = drop_rolled_back($node, 'postgres', $round);
	$rounds_ok++ if $ok && $err !~ /deadlock|ERROR|unknown number/;
	$in_log++ if $err =~ /\(\d+ of them in the write-once log\)/;
	poll_is($node, 'postgres', $worker_sql, 't', "round $round: the worker is back after the rolled-back DROP", 600);
}
is($rounds_ok, 5, 'five DROP EXTENSION under load in log mode, each without deadlock, error or an uncounted log');
note "$in_log of the DROPs found unpublished events in the log and said how many";
wait_producers($kids, \$failures);
is($failures, 0, 'every producer got all its transactions acknowledged (the DROPs only made them wait)');
my $acked = acked_ids($dir, $producers);
is(scalar keys %$acked, $producers * 1500, 'all events acknowledged');
poll_is($node, 'postgres', 'SELECT pending FROM outbox.status', '0', 'the worker publishes them all', 1200);
my %seen;
$seen{$_}++ for split /\n/, $node->safe_psql('postgres', 'SELECT id FROM outbox.history');
is(scalar(grep { !$seen{$_} } keys %$acked), 0, 'every acknowledged event is published');
is(scalar(grep { $seen{$_} > 1 } keys %seen), 0, 'none twice');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.history WHERE payload @> '{"rb": true}'}), '0',
	'nothing rolled back is published');
is($node->safe_psql('postgres', 'SELECT count(*) = count(DISTINCT pos) AND min(pos) = 1 AND max(pos) = count(*) FROM outbox.history'),
	't', 'positions 1..N, no gap, no repeat');

# ---- committed, with a backlog in the log ----
$node->safe_psql('postgres', 'SELECT outbox.pause()');
$node->safe_psql('postgres', q{SELECT count(outbox.publish('late', jsonb_build_object('n', g))) FROM generate_series(1, 300) g});
my ($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION pg_outbox CASCADE', timeout => 60);
is($rc, 0, 'DROP EXTENSION in log mode succeeds') or diag $err;
like($err, qr/WARNING:  dropping extension pg_outbox discarded 300 pending events that were never published \(300 of them in the write-once log\)/,
	'and says the 300 events of the log it discarded');
poll_is($node, 'postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", '0',
	'no worker after the DROP', 600);

my $log = slurp_file($node->logfile);
unlike($log, qr/deadlock detected/, 'no deadlock in the server log');
unlike($log, qr/terminated by signal|was terminated/, 'no crash');
$node->stop;
done_testing();
