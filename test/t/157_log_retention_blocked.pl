# Retention of the write-once log while the worker publishes nothing (issue #15; src/worker.cpp,
# log_maintenance()): paused (outbox.pause()), with every pass failing (a system error, the
# test-only fault hook pg_outbox._fail_event_ids with SQLSTATE 53100), and under backpressure
# (pg_outbox.max_queue_usage 0, a listener that holds a transaction open). The worker rotated the
# log only after a pass that drained: in these three states the published segments were never
# removed, whatever pg_outbox.retention said, and the log grew without bound. Now it rotates in
# every state, as 1.2's retention purges while paused: the published segment past retention goes,
# the events not published yet stay (their segment is never truncated), and once the cause is gone
# every event is published once, positions gap-free after the horizon.
#
# Each database is set up the same way, its worker paused: a published batch in one segment, a
# published batch in another (the latest), then unpublished events. With pg_outbox.retention at one
# second the worker's rotation truncates the first segment (purged_pos 3) and stops at the latest
# batch's (the next pass needs it) or the unpublished events'.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use OutboxNode qw(outbox_node poll_is);

my $node = outbox_node('log_retention_blocked', 'pg_outbox.retention' => '3600s');

sub wait_for { poll_is($node, @_) }

sub reload_with {
	my (%set) = @_;
	$node->safe_psql('postgres', join('; ', map { "ALTER SYSTEM SET $_ = '$set{$_}'" } sort keys %set));
	$node->reload;
	usleep(300_000);
}

# the two segments of published events and 4 unpublished ones (the last with id $last_id if given):
# 3 events published in the current segment A; once the paused worker has rotated on (it makes an
# empty segment current every second: retention keeps nothing there), 2 published in another
# segment B (the latest batch), then the 4 not published
sub setup_db {
	my ($db, $last_id) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION pg_outbox');
	$node->safe_psql($db, 'SELECT outbox.pause()');
	wait_for($db, q{SELECT state FROM outbox.status}, 'paused', "$db: the worker is paused");
	$node->safe_psql($db, 'SELECT * FROM outbox.use_log_storage()');
	$node->safe_psql($db, q{SELECT outbox.publish('a', jsonb_build_object('n', g)) FROM generate_series(1, 3) g});
	$node->safe_psql($db, 'SELECT outbox.drain()');
	my $a = $node->safe_psql($db, q{SELECT seg FROM outbox._log_latest()});
	wait_for($db, qq{SELECT cur_seg <> $a FROM outbox.log_state}, 't', "$db: the paused worker rotates on from segment $a (empty segments)");
	$node->safe_psql($db, q{SELECT outbox.publish('a', jsonb_build_object('n', g)) FROM generate_series(4, 5) g});
	$node->safe_psql($db, 'SELECT outbox.drain()');
	$node->safe_psql($db, q{SELECT outbox.publish('a', jsonb_build_object('n', g)) FROM generate_series(6, 8) g});
	$node->safe_psql($db, qq{SELECT setval('outbox.pending_id_seq', $last_id - 1)}) if $last_id;
	$node->safe_psql($db, q{SELECT outbox.publish('a', jsonb_build_object('n', 9))});
	is($node->safe_psql($db, qq{SELECT outbox.head() || ':' || (seg <> $a) || ':' || (SELECT purged_pos FROM outbox.log_state) FROM outbox._log_latest()}),
		'5:true:0', "$db: head 5, its latest batch in another segment, nothing purged");
}

my $horizon = q{SELECT purged_pos FROM outbox.log_state};
my $all_once = q{SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || min(pos) || '-' || max(pos) || ' '
                      || string_agg(payload->>'n', ',' ORDER BY pos) FROM outbox.replay(3, NULL, 1000)};

# ---- 1. paused, and 2. every pass failing ----
my $poison = 1000000;
setup_db('paused');
setup_db('failing', $poison);
reload_with('pg_outbox._fail_event_ids' => "$poison:53100");
$node->safe_psql('failing', 'SELECT outbox.resume()');
wait_for('failing', q{SELECT last_error LIKE '%_fail_event_ids%' FROM outbox.status}, 't',
	'failing: the worker\'s passes fail (outbox.status.last_error)');
reload_with('pg_outbox.retention' => '1s');
wait_for('paused', $horizon, '3', 'paused: retention removed segment 0 (published, past retention) while paused');
wait_for('failing', $horizon, '3', 'failing: retention removed segment 0 while every pass fails');
sleep 2;
for my $db ('paused', 'failing') {
	is($node->safe_psql($db, $horizon), '3', "$db: the segment of the latest batch (and of the events not published) is kept");
	is($node->safe_psql($db, q{SELECT outbox.head() || ' ' || (SELECT count(*) FROM outbox.log)}), '5 6',
		"$db: nothing published; the 2 published events of the latest batch and the 4 unpublished ones still there");
}
is($node->safe_psql('paused', q{SELECT state FROM outbox.status}), 'paused', 'paused: still paused');
like($node->safe_psql('paused', q{SELECT string_agg(status || ' ' || coalesce(hint, ''), '; ') FROM outbox.health() WHERE "check" = 'worker'}),
	qr/paused/i, 'paused: outbox.health() says so');
# the cause gone: every event once, after the horizon
$node->safe_psql('paused', 'SELECT outbox.resume()');
reload_with('pg_outbox._fail_event_ids' => '');
for my $db ('paused', 'failing') {
	wait_for($db, q{SELECT outbox.head()}, '9', "$db: the 4 events published once the cause is gone");
	is($node->safe_psql($db, $all_once), '6 6 4-9 4,5,6,7,8,9', "$db: positions 4..9, each event once, in order");
}
is($node->safe_psql('failing', qq{SELECT pos FROM outbox.replay(3, NULL, 1000) WHERE id = $poison}), '9',
	'failing: the poison is published (the fault hook removed)');

# ---- 3. backpressure ----
reload_with('pg_outbox.retention' => '3600s');
setup_db('bp');
my $listener = $node->background_psql('bp');
my $listener_pid = $listener->query_safe('SELECT pg_backend_pid()');
$listener->query_safe('LISTEN fill');
$listener->query_safe('BEGIN');
$listener->query_safe('SELECT 1');
$node->safe_psql('bp', q{SELECT pg_notify('fill', g || repeat('x', 7000)) FROM generate_series(1, 6) g});
cmp_ok($node->safe_psql('bp', 'SELECT pg_notification_queue_usage()'), '>', 0, 'bp: the NOTIFY queue is in use');
reload_with('pg_outbox.max_queue_usage' => '0');
$node->safe_psql('bp', 'SELECT outbox.resume()');
wait_for('bp', q{SELECT state FROM outbox.status}, 'backpressure', 'bp: the worker waits (backpressure)');
reload_with('pg_outbox.retention' => '1s');
wait_for('bp', $horizon, '3', 'bp: retention removed segment 0 under backpressure');
is($node->safe_psql('bp', q{SELECT outbox.head() || ' ' || (SELECT count(*) FROM outbox.log)}), '5 6',
	'bp: nothing published under backpressure; the latest batch\'s segment kept');
# (ended, not committed: psql would print 42 kB of notifications into this test's log)
$node->safe_psql('postgres', "SELECT pg_terminate_backend($listener_pid, 10000)");
eval { $listener->quit };
wait_for('bp', q{SELECT outbox.head()}, '9', 'bp: the listener gone, the 4 events published');
is($node->safe_psql('bp', $all_once), '6 6 4-9 4,5,6,7,8,9', 'bp: positions 4..9, each event once, in order');

# ---- 4. a log restored from a cluster ahead is never rotated: see t/156 (its every pass fails) ----

$node->stop;
done_testing();
