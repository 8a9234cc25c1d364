# outbox.health() against a real server (issue #19): every check is driven into warning or
# critical by what it watches, and back to ok — the drain paused (worker, pending events, age of
# the oldest), a poison event dead-lettered, a named consumer that does not acknowledge, a
# logical slot that retains WAL, a listener that holds the NOTIFY queue, a database left without
# a drain worker because max_worker_processes is exhausted. Thresholds are set per session
# (pg_outbox.health_*), as a monitoring role would. Every wait polls with a deadline.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OutboxFault qw(poll_until);

my $node = PostgreSQL::Test::Cluster->new('health');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '200ms'
pg_outbox.max_attempts = 2
pg_outbox.retry_delay = '100ms'
max_logical_replication_workers = 0
max_worker_processes = 8
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('app', 'CREATE ROLE monitor LOGIN IN ROLE outbox_reader');

# status of one check, as the monitoring role sees it (with the session's SET statements)
sub status_of {
	my ($check, $set, $db) = @_;
	return $node->safe_psql($db // 'app', ($set // '') . qq{ SELECT status FROM outbox.health() WHERE "check" = '$check'},
		extra_params => ['-U', 'monitor']);
}
sub poll_status {
	my ($check, $want, $set, $timeout, $db) = @_;
	my $deadline = time + ($timeout // 60);
	my $got;
	while (time < $deadline) {
		$got = status_of($check, $set, $db);
		return 1 if $got eq $want;
		usleep(100_000);
	}
	diag("$check: still $got, wanted $want");
	return 0;
}
sub row_of {
	my ($check, $set) = @_;
	return $node->safe_psql('app', ($set // '') . qq{ SELECT status || '|' || coalesce(threshold::text, '') || '|' || hint
		FROM outbox.health() WHERE "check" = '$check'}, extra_params => ['-U', 'monitor']);
}
my $not_ok = q{SELECT coalesce(string_agg("check" || '=' || status, ',' ORDER BY "check"), '') FROM outbox.health() WHERE status <> 'ok'};

# ---- a healthy database: every check ok ----
ok(poll_until($node, 'app', "SELECT count(*) = 0 FROM outbox.health() WHERE status <> 'ok'", 60), 'every check is ok')
	or diag($node->safe_psql('app', $not_ok));
is($node->safe_psql('app', 'SELECT count(*) FROM outbox.health()', extra_params => ['-U', 'monitor']), '9',
	'nine checks, one query, for a member of outbox_reader');

# ---- the drain paused: worker warning; pending events and their age rise ----
$node->safe_psql('app', 'SELECT outbox.pause()');
ok(poll_status('worker', 'warning'), 'paused: the worker check warns');
like(row_of('worker'), qr/outbox\.resume\(\)/, 'and says how to resume');
$node->safe_psql('app', "SELECT outbox.publish('paused', jsonb_build_object('n', g)) FROM generate_series(1, 4) g");
my $pend = q{SET pg_outbox.health_pending = '3,5';};
is(status_of('pending_events', $pend), 'warning', '4 pending events: warning at 3');
$node->safe_psql('app', "SELECT outbox.publish('paused', '{}')");
is(row_of('pending_events', $pend) =~ s/\|.*//sr, 'critical', '5 pending events: critical at 5');
like(row_of('pending_events', $pend), qr/^critical\|5\|/, 'the threshold shown is the one crossed');
ok(poll_status('pending_age', 'warning', q{SET pg_outbox.health_pending_age = '1s,1h';}), 'the oldest pending event is older than 1 s: warning');
ok(poll_status('pending_age', 'critical', q{SET pg_outbox.health_pending_age = '1s,2s';}), '... older than 2 s: critical');
is($node->safe_psql('app', q{SELECT pending FROM outbox.channel_stats WHERE channel = 'paused'}), '5', 'channel_stats: 5 pending on the channel');
$node->safe_psql('app', 'SELECT outbox.resume()');
ok(poll_status('pending_events', 'ok', $pend), 'resumed: the backlog is published, pending events ok');
is(status_of('pending_age', q{SET pg_outbox.health_pending_age = '1s,2s';}), 'ok', 'pending age ok');
ok(poll_status('worker', 'ok'), 'the worker check is ok again');
is($node->safe_psql('app', q{SELECT published || '|' || pending || '|' || last_seq FROM outbox.channel_stats WHERE channel = 'paused'}),
	'5|0|5', 'channel_stats: 5 published, none pending, last seq 5');

# ---- a poison event is dead-lettered ----
$node->safe_psql('app', q{
CREATE FUNCTION public.dba_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ? 'poison' THEN
        RAISE EXCEPTION 'no such thing' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_0 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_1 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_2 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
});
is(status_of('dead_letters'), 'ok', 'no dead letter yet');
$node->safe_psql('app', q{SELECT outbox.publish('poisoned', '{"poison": true}'), outbox.publish('poisoned', '{"n": 1}')});
ok(poll_status('dead_letters', 'warning'), 'a dead letter: warning (default pg_outbox.health_dead_letters = 1,100)');
like(row_of('dead_letters'), qr/outbox\.dead_letters/, 'the hint points at outbox.dead_letters');
is(status_of('dead_letters', q{SET pg_outbox.health_dead_letters = '1,1';}), 'critical', 'critical at its second value');
is($node->safe_psql('app', q{SELECT dead_letters || '|' || published FROM outbox.channel_stats WHERE channel = 'poisoned'}),
	'1|1', 'channel_stats: one dead letter, the event behind it published');
# recent only: outside pg_outbox.health_dead_letter_window it is no longer counted
$node->safe_psql('app', q{UPDATE outbox.dead_letter SET failed_at = now() - interval '2 hours'});
is(status_of('dead_letters'), 'ok', 'a dead letter older than the window (1 h) is not counted');
is(status_of('dead_letters', q{SET pg_outbox.health_dead_letter_window = '1d';}), 'warning', 'with a window of a day it is');
$node->safe_psql('app', 'DROP FUNCTION public.dba_history() CASCADE');

# ---- a named consumer that does not acknowledge ----
$node->safe_psql('app', q{SELECT outbox.create_consumer('lagger')});
$node->safe_psql('app', q{SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 3) g});
ok(poll_until($node, 'app', q{SELECT pending = 0 FROM outbox.status}, 60), 'published');
ok(poll_status('consumer_lag', 'warning', q{SET pg_outbox.health_consumer_lag = '1s,1h';}), 'its oldest unacknowledged event is older than 1 s: warning');
ok(poll_status('consumer_lag', 'critical', q{SET pg_outbox.health_consumer_lag = '1s,2s';}), '... older than 2 s: critical');
like(row_of('consumer_lag', q{SET pg_outbox.health_consumer_lag = '1s,2s';}), qr/consumer lagger is behind/, 'the hint names the consumer');
$node->safe_psql('app', q{SELECT outbox.ack('lagger', max(pos)) FROM outbox.next('lagger', 100, '0')});
is(status_of('consumer_lag', q{SET pg_outbox.health_consumer_lag = '1s,2s';}), 'ok', 'acknowledged: ok');
is(status_of('lost_consumers'), 'ok', 'no lost consumer');
$node->safe_psql('app', q{UPDATE outbox.consumer SET state = 'lost', lost_at = now(), lost_reason = 'test' WHERE name = 'lagger'});
is(status_of('lost_consumers'), 'critical', 'a lost consumer is critical');
$node->safe_psql('app', q{SELECT outbox.drop_consumer('lagger')});
is(status_of('lost_consumers'), 'ok', 'dropped: ok');

# ---- a logical slot (the 'wal' target's consumer) that retains WAL ----
$node->safe_psql('app', q{SELECT outbox.set_target('cdc', 'wal')});
$node->safe_psql('app', q{SELECT 'init' FROM pg_create_logical_replication_slot('obs_slot', 'test_decoding')});
$node->safe_psql('app', q{CREATE TABLE filler AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 4000) g});
$node->safe_psql('app', q{SELECT outbox.publish('cdc', '{}')});
my $wal = q{SET pg_outbox.health_wal_retained = '1MB,1TB';};
ok(poll_status('wal_retained', 'warning', $wal), 'the slot retains more than 1 MB: warning');
like(row_of('wal_retained', $wal), qr/slot obs_slot retains WAL/, 'the hint names the slot');
is(status_of('wal_retained', q{SET pg_outbox.health_wal_retained = '1MB,2MB';}), 'critical', '... more than 2 MB: critical');
$node->safe_psql('app', q{SELECT pg_drop_replication_slot('obs_slot')});
is(status_of('wal_retained', $wal), 'ok', 'slot dropped: ok');

# ---- a listener that holds the NOTIFY queue ----
my $listener = $node->background_psql('app');
$listener->query_safe('LISTEN obs_queue');
$listener->query_safe('BEGIN');
$listener->query_safe('SELECT 1');
$node->safe_psql('app', q{SELECT outbox.publish('obs_queue', jsonb_build_object('n', g, 'pad', repeat('p', 1000))) FROM generate_series(1, 40) g});
my $queue = q{SET pg_outbox.health_queue_usage = '0.0000001,1';};
ok(poll_status('notify_queue', 'warning', $queue), 'the NOTIFY queue holds pages a listener has not read: warning');
like(row_of('notify_queue', $queue), qr/does not read its notifications/, 'the hint says why');
$listener->query_safe('COMMIT');
$listener->query_safe('SELECT 1');
ok(poll_status('notify_queue', 'ok', $queue), 'the listener read them: ok');
$listener->quit;

# ---- max_worker_processes exhausted: a database without a drain worker ----
# the launcher and one drain worker fit; a second database with the extension waits for its turn
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION pg_outbox');
$node->append_conf('postgresql.conf', "max_worker_processes = 2\n");
$node->restart;
ok(poll_status('worker_processes', 'critical', '', 90), 'a database waits for a worker process: critical');
like(row_of('worker_processes'), qr/raise max_worker_processes/, 'the hint says what to raise');
# whichever database waits (they are served in turn), its worker check is critical too
my $seen = 0;
my $deadline = time + 90;
while (!$seen && time < $deadline) {
	for my $db ('app', 'other') {
		my $r = $node->safe_psql($db, q{SELECT status || '|' || hint FROM outbox.health() WHERE "check" = 'worker'});
		$seen = 1 if $r =~ /^critical\|no background worker process is free/;
	}
	usleep(100_000) unless $seen;
}
ok($seen, 'the waiting database\'s worker check is critical and says why');
$node->append_conf('postgresql.conf', "max_worker_processes = 8\n");
$node->restart;
ok(poll_status('worker_processes', 'ok', '', 90), 'enough worker processes again: ok');
ok(poll_until($node, 'app', "SELECT count(*) = 0 FROM outbox.health() WHERE status <> 'ok'", 60), 'every check is ok again')
	or diag($node->safe_psql('app', $not_ok));

unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/, 'no backend crashed');
$node->stop;
done_testing();
