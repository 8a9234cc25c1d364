# The failure path over the write-once log with the drain worker running (issue #15;
# src/drain_failures.cpp: log_pass()). A poison event (the test-only fault hook
# pg_outbox._fail_event_ids, set in the configuration and reloaded) among 10: the worker publishes
# the 9 others (its first pass, without subtransactions, fails whole; the next narrows), retries the poison (pg_outbox.retry_delay) and dead-letters it after
# pg_outbox.max_attempts. Then SIGKILL of a backend inside outbox.drain() — once after a pass that
# left a poison out and recorded it, once after a pass that copied it for its retry, both before
# commit: the crash loses nothing (no failures row, no copy, no position survives), and once the
# cause is fixed every event is published exactly once, positions gap-free.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use OutboxNode qw(outbox_node poll_is);

my $node = outbox_node('log_failures', 'pg_outbox.retry_delay' => '200ms', 'pg_outbox.max_attempts' => '3',
	'restart_after_crash' => 'on');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('postgres', 'SELECT * FROM outbox.use_log_storage()');

# SIGKILL of a backend, then the crash restart: the postmaster reinitializes and recovers (a query
# right after the kill could still reach the old server before the postmaster noticed)
sub kill_and_wait {
	my ($pid, $what) = @_;
	my $offset = -s $node->logfile;
	ok(kill('KILL', $pid), $what);
	ok($node->wait_for_log(qr/database system is ready to accept connections/, $offset), 'the server is back after the crash');
}

sub wait_for { poll_is($node, 'postgres', @_) }

# the hook for the worker: postgresql.conf and a reload, while the worker is paused
sub set_hook {
	my ($ids) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET pg_outbox._fail_event_ids = '$ids'");
	$node->reload;
	usleep(500_000);
}

my $gap_free = q{SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || coalesce(min(pos), 0) || '-' || coalesce(max(pos), 0)
                   FROM outbox.replay(0, NULL, 100000)};

# ---- 1. one poison among 10, the worker running ----
$node->safe_psql('postgres', 'SELECT outbox.pause()');
my $next = $node->safe_psql('postgres', q{SELECT nextval('outbox.pending_id_seq')});
my $poison = $next + 5;
$node->safe_psql('postgres', q{SELECT outbox.publish('a', jsonb_build_object('n', g)) FROM generate_series(1, 10) g});
set_hook($poison);
$node->safe_psql('postgres', 'SELECT outbox.resume()');
wait_for(q{SELECT outbox.head()}, '9', 'the worker publishes the 9 others');
is($node->safe_psql('postgres', $gap_free), '9 9 1-9', 'positions 1..9, each event once');
wait_for(q{SELECT count(*) FROM outbox.dead_letter WHERE id = } . $poison, '1',
	'the poison is retried and dead-lettered after pg_outbox.max_attempts');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.failures}), '0', 'no failures row left');
ok($node->log_contains("ERROR:  pg_outbox: the hand-off of event $poison failed by pg_outbox._fail_event_ids"),
	'the worker\'s first pass (no subtransaction while nothing fails) failed whole; the next one narrowed');
ok($node->log_contains("event $poison could not be published and was moved to outbox.dead_letters after 3 attempts"),
	'the dead letter is logged with its attempts');

# ---- 2. SIGKILL of a backend in outbox.drain() after it left a poison out ----
$node->safe_psql('postgres', 'SELECT outbox.pause()');
$next = $node->safe_psql('postgres', q{SELECT nextval('outbox.pending_id_seq')});
my $poison2 = $next + 3;
$node->safe_psql('postgres', q{SELECT outbox.publish('b', jsonb_build_object('n', g)) FROM generate_series(1, 5) g});
set_hook("$poison,$poison2");

my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe('BEGIN');
is($bg->query_safe('SELECT outbox.drain()'), '4', 'outbox.drain() publishes 4 and leaves the poison out');
is($bg->query_safe('SELECT count(*) FROM outbox.failures'), '1', 'its failure recorded in the transaction');
kill_and_wait($pid, 'SIGKILL of that backend before its commit');
eval { $bg->quit };
is($node->safe_psql('postgres', q{SELECT outbox.head() || ' ' || (SELECT count(*) FROM outbox.failures)}), '9 0',
	'nothing of that pass survived: head 9, no failures row');

# ---- 3. SIGKILL after a pass that copied the poison for its retry ----
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_safe('SELECT outbox.drain()'); # autocommit: the failure is recorded
is($node->safe_psql('postgres', q{SELECT attempts || ' ' || copied FROM outbox.failures WHERE id = } . $poison2), '1 false',
	'the poison recorded, not copied yet');
usleep(300_000); # past pg_outbox.retry_delay
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe('BEGIN');
$bg->query_safe('SELECT outbox.drain()');
is($bg->query_safe(q{SELECT copied || ' ' || (SELECT count(*) FROM outbox.log WHERE id = } . $poison2 . q{) FROM outbox.failures WHERE id = } . $poison2),
	'true 2', 'the pass copied it (two rows of it in the log)');
kill_and_wait($pid, 'SIGKILL of that backend before its commit');
eval { $bg->quit };
is($node->safe_psql('postgres', q{SELECT copied || ' ' || (SELECT count(*) FROM outbox.log WHERE id = } . $poison2 . q{) FROM outbox.failures WHERE id = } . $poison2),
	'false 1', 'the copy is gone with its transaction, the failures row as it was');

# ---- 4. the cause fixed: everything published once ----
set_hook('');
$node->safe_psql('postgres', "SELECT outbox.retry($poison)");
$node->safe_psql('postgres', 'SELECT outbox.resume()');
wait_for(q{SELECT outbox.head()}, '15', 'the worker publishes the rest, the dead letter retried and the poison copied');
is($node->safe_psql('postgres', $gap_free), '15 15 1-15', 'positions 1..15, each of the 15 events once');
is($node->safe_psql('postgres', q{SELECT (SELECT count(*) FROM outbox.failures) || ' ' || (SELECT count(*) FROM outbox.dead_letter)}),
	'0 0', 'no failures, no dead letters');
is($node->safe_psql('postgres', qq{SELECT pos IS NOT NULL FROM outbox.event($poison2)}), 't', 'event() finds the poison published');

$node->stop;
done_testing();
