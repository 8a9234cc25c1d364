# Producers that die or wait across a crash in log mode (issue #15, the red team of session 12):
# a producer SIGKILLed inside its transaction while the worker publishes others' events (its xid in
# every pass's snapshot as in progress), and a prepared transaction (two-phase commit) holding
# published events across the crash restart, committed afterwards. Asserted: the killed
# transaction's events are nowhere, the prepared transaction's are published once after COMMIT
# PREPARED (in the first pass that sees it committed) and nothing of a ROLLBACK PREPARED one,
# positions gap-free, every event once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use OutboxNode qw(outbox_node poll_is);

my $node = outbox_node('log_crash_producer', 'restart_after_crash' => 'on', 'max_prepared_transactions' => '5');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('postgres', 'SELECT * FROM outbox.use_log_storage()');

sub wait_for { poll_is($node, 'postgres', @_) }
sub publish {
	my ($tag, $from, $to) = @_;
	$node->safe_psql('postgres', qq{SELECT outbox.publish('c', jsonb_build_object('t', '$tag', 'n', g)) FROM generate_series($from, $to) g});
}

# the prepared transactions: one committed after the crash, one rolled back
$node->safe_psql('postgres', q{BEGIN; SELECT outbox.publish('c', '{"t": "prep", "n": 1}'); SELECT outbox.publish('c', '{"t": "prep", "n": 2}'); PREPARE TRANSACTION 'p_commit'});
$node->safe_psql('postgres', q{BEGIN; SELECT outbox.publish('c', '{"t": "gone", "n": 1}'); PREPARE TRANSACTION 'p_rollback'});
# the producer that will be killed: inside its transaction, two events written
my $victim = $node->background_psql('postgres');
my $pid = $victim->query_safe('SELECT pg_backend_pid()');
$victim->query_safe('BEGIN');
$victim->query_safe(q{SELECT outbox.publish('c', jsonb_build_object('t', 'killed', 'n', g)) FROM generate_series(1, 2) g});
# others publish meanwhile, over several passes
for my $i (1 .. 5) {
	publish('before', $i, $i);
}
wait_for(q{SELECT outbox.head()}, '5', 'the worker publishes the 5 committed events; the open and prepared ones wait');

my $offset = -s $node->logfile;
ok(kill('KILL', $pid), 'SIGKILL of the producer inside its transaction');
ok($node->wait_for_log(qr/database system is ready to accept connections/, $offset), 'the server is back after the crash');
eval { $victim->quit };
wait_for(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'}, '1', 'the drain worker runs again');
publish('after', 1, 3);
wait_for(q{SELECT outbox.head()}, '8', 'the 3 events after the crash are published');
is($node->safe_psql('postgres', q{SELECT string_agg(gid, ',' ORDER BY gid) FROM pg_prepared_xacts}), 'p_commit,p_rollback',
	'the prepared transactions survived the crash');
$node->safe_psql('postgres', q{COMMIT PREPARED 'p_commit'});
$node->safe_psql('postgres', q{ROLLBACK PREPARED 'p_rollback'});
wait_for(q{SELECT outbox.head()}, '10', 'COMMIT PREPARED: its 2 events are published (by the safety tick at the latest)');
publish('last', 1, 1);
wait_for(q{SELECT outbox.head()}, '11', 'and the next event after them');
sleep 1;
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || min(pos) || '-' || max(pos) FROM outbox.replay(0, NULL, 1000)}),
	'11 11 1-11', 'positions 1..11, each event once');
is($node->safe_psql('postgres', q{SELECT string_agg(payload->>'t', ',' ORDER BY pos) FROM outbox.replay(0, NULL, 1000)}),
	'before,before,before,before,before,after,after,after,prep,prep,last',
	'the killed and the rolled-back transactions\' events are nowhere; the prepared one\'s after what committed before it');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.log l WHERE l.payload->>'t' IN ('killed', 'gone')}), '0',
	'... not even in the log (aborted rows are invisible)');
is($node->safe_psql('postgres', q{SELECT outbox.head() || ' ' || (SELECT count(*) FROM outbox.pending)}), '11 0', 'nothing pending');

$node->stop;
done_testing();
