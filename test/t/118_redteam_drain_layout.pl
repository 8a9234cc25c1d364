# Red team of the drain-domain split (issue #17): the launcher's and the drain worker's mains
# and their exit callbacks now run inside boundary(), and the direct inserts' table layouts are
# forgotten through invalidation.cpp. On a real server with a drain worker:
#   - an ERROR inside a pass (a DBA's trigger on the history segments) is retried by the same
#     worker, shown in outbox.status.last_error, and publishes nothing twice once it is gone;
#   - a worker terminated while it waits for a lock (a session holding a history segment) exits
#     at once, its slot is released, the launcher starts another one, nothing is lost or repeated;
#   - twelve terminations in a row leak no slot (a worker always comes back);
#   - SIGKILL of the worker (postmaster crash restart) and a terminated launcher: the same;
#   - the worker's cached history layout follows DDL committed by others: columns that swap
#     names, a DBA's column with a default, a NOT NULL column it cannot fill (an error,
#     not a wrong attribute) and dropped, DROP/CREATE EXTENSION under a running worker.
# Every case ends with the same verdict: positions 1..N without gap or repeat, each event once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('redteam_drain_layout');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '1s'
restart_after_crash = on
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub wait_until {
	my ($q, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < $timeout) {
		my ($rc, $out) = eval { $node->psql('postgres', $q) };
		return 1 if defined $rc && $rc == 0 && defined $out && $out eq 't';
		usleep(50_000);
	}
	return 0;
}

my $worker_pid_sql =
  "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = 'postgres'";
sub worker_pid { return sql($worker_pid_sql); }

sub worker_runs {
	return wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'"
		  . " AND datname = 'postgres'", 60);
}

# Every event published exactly once, positions 1..N, nothing pending (within 30 s).
sub verdict {
	my ($name, $expect) = @_;
	ok(wait_until('SELECT count(*) = 0 FROM outbox.pending', 30), "$name: nothing left pending");
	is( sql(q{SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || coalesce(min(pos), 0) || ' '
		  || coalesce(max(pos), 0) FROM outbox.history}),
		"$expect $expect " . ($expect ? 1 : 0) . " $expect",
		"$name: $expect events, each once, positions 1..$expect");
}

sql('CREATE EXTENSION pg_outbox');
ok(worker_runs(), 'the drain worker runs');
sql(q{SELECT outbox.publish('rt', jsonb_build_object('n', g)) FROM generate_series(1, 5) g});
verdict('start', 5);

# 1. An ERROR in every pass: a DBA's trigger on the history segments. The same worker retries.
my $pid = worker_pid();
sql(q{
CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the dba' USING ERRCODE = 'P0001'; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON outbox.history_0 FOR EACH ROW EXECUTE FUNCTION public.refuse();
CREATE TRIGGER refuse BEFORE INSERT ON outbox.history_1 FOR EACH ROW EXECUTE FUNCTION public.refuse();
CREATE TRIGGER refuse BEFORE INSERT ON outbox.history_2 FOR EACH ROW EXECUTE FUNCTION public.refuse();
});
sql(q{SELECT outbox.publish('rt', jsonb_build_object('n', g)) FROM generate_series(6, 10) g});
ok(wait_until(q{SELECT last_error LIKE '%refused by the dba%' FROM outbox.status}, 30),
	'an ERROR in the pass is shown in outbox.status.last_error');
my $first_at = sql('SELECT last_error_at FROM outbox.status');
ok(wait_until("SELECT last_error_at > '$first_at' FROM outbox.status", 30), 'the pass is retried');
is(worker_pid(), $pid, 'the same worker retries after an ERROR in its pass (no exit, no restart)');
is(sql('SELECT count(*) FROM outbox.pending'), '5', 'the refused events stay pending');
sql(q{DROP TRIGGER refuse ON outbox.history_0; DROP TRIGGER refuse ON outbox.history_1;
      DROP TRIGGER refuse ON outbox.history_2;});
verdict('trigger error', 10);
ok(wait_until(q{SELECT last_error IS NULL FROM outbox.status}, 30), 'last_error is cleared once publishing works');

# 2. SIGTERM while the worker waits for a lock: it ends at once (no hang), the slot is released,
#    the launcher starts another worker, which publishes once the lock is gone.
my $locker = $node->background_psql('postgres');
$locker->query_safe(q{BEGIN; LOCK TABLE outbox.history_0, outbox.history_1, outbox.history_2 IN ACCESS EXCLUSIVE MODE});
sql(q{SELECT outbox.publish('rt', jsonb_build_object('n', g)) FROM generate_series(11, 15) g});
ok(wait_until(q{SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'
	AND datname = 'postgres'}, 30), 'the worker waits for the history lock');
$pid = worker_pid();
sql("SELECT pg_terminate_backend($pid)");
ok(wait_until("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid", 10),
	'a worker terminated while waiting for a lock exits at once');
$locker->query_safe('COMMIT');
$locker->quit;
ok(worker_runs(), 'the launcher starts another worker');
isnt(worker_pid(), $pid, 'a new process');
verdict('sigterm in a lock wait', 15);

# 3. Twelve terminations in a row: the exit callback frees the slot every time.
my $back = 0;
for my $i (1 .. 12) {
	my $p = worker_pid();
	last unless $p;
	sql("SELECT pg_terminate_backend($p)");
	last unless wait_until("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $p", 10);
	last unless wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'"
		  . " AND datname = 'postgres' AND pid <> $p", 30);
	$back++;
}
is($back, 12, 'after each of 12 terminations a new worker comes back');
is(sql(q{SELECT state <> 'waiting' AND pid IS NOT NULL FROM outbox.status}), 't', 'its slot is live, not waiting');
sql(q{SELECT outbox.publish('rt', jsonb_build_object('n', g)) FROM generate_series(16, 20) g});
verdict('12 terminations', 20);

# 4. SIGKILL of the worker: crash restart of the server; everything committed is published once.
$pid = worker_pid();
sql(q{SELECT outbox.publish('rt', jsonb_build_object('n', g)) FROM generate_series(21, 25) g});
kill 'KILL', $pid;
ok(wait_until("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid", 60), 'the killed worker is gone');
ok(worker_runs(), 'a worker runs after the crash restart');
verdict('sigkill', 25);

# 5. The launcher terminated: the postmaster restarts it, publishing goes on.
my $lpid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher'});
sql("SELECT pg_terminate_backend($lpid)");
ok(wait_until(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher'
	AND pid <> } . $lpid, 30), 'the launcher comes back');
sql(q{SELECT outbox.publish('rt', jsonb_build_object('n', g)) FROM generate_series(26, 30) g});
ok(worker_runs(), 'a worker runs');
verdict('launcher terminated', 30);

# 6. The worker's cached history layout, DDL committed by another session.
#    a. key and type swap names (same number of columns): only the invalidation tells.
sql(q{BEGIN;
ALTER TABLE outbox.history_frozen RENAME COLUMN key TO swap;
ALTER TABLE outbox.history_frozen RENAME COLUMN type TO key;
ALTER TABLE outbox.history_frozen RENAME COLUMN swap TO type;
COMMIT;});
sql(q{SELECT outbox.publish('rt', '{"n": 31}', 'K31', 'T31')});
verdict('columns swapped', 31);
is(sql(q{SELECT key || '/' || type FROM outbox.history_frozen WHERE pos = 31}), 'K31/T31',
	'the worker writes the key under the column now named key');
#    b. a DBA's column with a default
sql(q{ALTER TABLE outbox.history_frozen ADD COLUMN dba_note text DEFAULT 'from the default'});
sql(q{SELECT outbox.publish('rt', '{"n": 32}', 'K32', 'T32')});
verdict('a DBA column', 32);
is(sql(q{SELECT key || '/' || type || '/' || dba_note FROM outbox.history_frozen WHERE pos = 32}),
	'K32/T32/from the default', 'the DBA column gets its default, ours their values');
sql(q{ALTER TABLE outbox.history_frozen DROP COLUMN dba_note});
#    c. a DBA's NOT NULL column without a default: an error in the worker (never a wrong
#       attribute, never a row without it), then dropped (the view on the history keeps its
#       columns' types from changing)
$pid = worker_pid();
sql(q{ALTER TABLE outbox.history_frozen ADD COLUMN dba_required int NOT NULL DEFAULT 0;
      ALTER TABLE outbox.history_frozen ALTER COLUMN dba_required DROP DEFAULT});
# (three events: a whole batch that fails is the worker's error, retried; a lone event that
# fails would be retried on its own and dead-lettered after pg_outbox's attempts)
sql(q{SELECT outbox.publish('rt', jsonb_build_object('n', g), 'K' || g, 'T' || g) FROM generate_series(33, 35) g});
ok(wait_until(q{SELECT last_error LIKE '%dba_required%' FROM outbox.status}, 30),
	'a DBA column the worker cannot fill is an error in the worker');
is(worker_pid(), $pid, 'the worker stays and retries');
is(sql('SELECT count(*) FROM outbox.pending'), '3', 'the events stay pending');
sql(q{ALTER TABLE outbox.history_frozen DROP COLUMN dba_required});
verdict('a column it cannot fill, then dropped', 35);
is(sql(q{SELECT string_agg(key || '/' || type, ',' ORDER BY pos) FROM outbox.history_frozen WHERE pos > 32}),
	'K33/T33,K34/T34,K35/T35', 'events 33-35 in the right columns');
is(sql('SELECT count(*) FROM outbox.dead_letters'), '0', 'nothing dead-lettered');
#    d. DROP EXTENSION and CREATE EXTENSION under the running worker: new relations, new OIDs
sql(q{DROP EXTENSION pg_outbox});
sql(q{CREATE EXTENSION pg_outbox});
sql(q{SELECT outbox.publish('rt', jsonb_build_object('n', g), 'k' || g, 't' || g) FROM generate_series(1, 4) g});
ok(worker_runs(), 'a worker runs after DROP/CREATE EXTENSION');
verdict('re-created extension', 4);
is(sql(q{SELECT string_agg(key || '/' || type, ',' ORDER BY pos) FROM outbox.history}), 'k1/t1,k2/t2,k3/t3,k4/t4',
	'the worker writes the new history, by name');

ok(!$node->log_contains('TRAP:|terminated by signal 11|terminated by signal 6'), 'no assertion failure or crash');
$node->stop;
done_testing();
