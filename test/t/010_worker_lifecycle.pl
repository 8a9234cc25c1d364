# The launcher and the per-database drain workers, on a real server:
#   - both show up in pg_stat_activity with their backend_type and report what they do;
#   - CREATE EXTENSION (or CREATE DATABASE from a template that has it) gets a worker at
#     once, without restart; DROP EXTENSION stops it; no worker runs in a template database;
#   - producers' commits wake the worker (latch), not the safety tick: the tick is set to
#     60 s here and events still arrive at once;
#   - a listener gets one envelope per event, every pos once, also across a worker that is
#     terminated and restarted by the launcher;
#   - pg_outbox.batch_size and pg_outbox.databases reload with SIGHUP;
#   - CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... IS_TEMPLATE and plain DROP DATABASE
#     work while a worker is attached to the database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use JSON::PP;

my $node = PostgreSQL::Test::Cluster->new('lifecycle');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '60s'
max_worker_processes = 16
max_prepared_transactions = 2
});
$node->start;

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
sub sql { return $node->safe_psql('postgres', $_[0]); }

sub worker_pid {
	my ($db) = @_;
	return sql("SELECT coalesce(max(pid), 0) FROM pg_stat_activity "
		  . "WHERE backend_type = 'pg_outbox drain' AND datname = '$db'");
}

# Poll a boolean query (in database postgres) until true; returns the seconds it took, or
# undef after $timeout seconds.
sub wait_until {
	my ($sql, $timeout, $db) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $t0 = time;
	while (time - $t0 < $timeout) {
		return time - $t0 if $node->safe_psql($db // 'postgres', $sql) eq 't';
		usleep(20_000);
	}
	return undef;
}

sub wait_worker {
	my ($db, $timeout) = @_;
	return wait_until("SELECT count(*) = 1 FROM pg_stat_activity "
		  . "WHERE backend_type = 'pg_outbox drain' AND datname = '$db'", $timeout);
}

sub wait_no_worker {
	my ($db, $timeout) = @_;
	return wait_until("SELECT count(*) = 0 FROM pg_stat_activity "
		  . "WHERE backend_type = 'pg_outbox drain' AND datname = '$db'", $timeout);
}

# Collect the notifications a background psql session has received, until $want of them
# arrived or $timeout seconds passed. psql prints them after each command.
sub collect {
	my ($session, $want, $timeout) = @_;
	$timeout //= 30;
	my @got;
	my $t0 = time;
	while (1) {
		my $out = $session->query_safe('SELECT 1');
		for my $line (split /\n/, $out) {
			next
			  unless $line =~
			  /^Asynchronous notification "([^"]+)" with payload "(.*)" received from server process with PID (\d+)\.$/;
			push @got, { channel => $1, env => decode_json($2), pid => $3 };
		}
		last if @got >= $want || time - $t0 > $timeout;
		usleep(50_000);
	}
	return @got;
}

# ---------------------------------------------------------------------------------------
# the launcher
# ---------------------------------------------------------------------------------------
ok(defined wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher'"),
	'the launcher shows up as backend_type "pg_outbox launcher"');
is(sql("SELECT datname IS NULL, application_name FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher'"),
	't|pg_outbox launcher', 'the launcher is connected to no database');

# ---------------------------------------------------------------------------------------
# CREATE EXTENSION in a new database gets a worker at once, without restart
# ---------------------------------------------------------------------------------------
sql('CREATE DATABASE plain');
sleep 1;    # let the launcher probe the new database and find no extension
is(worker_pid('plain'), '0', 'no worker in a database without the extension');
my $t0 = time;
$node->safe_psql('plain', 'CREATE EXTENSION pg_outbox');
my $waited = wait_worker('plain', 30);
ok(defined $waited, 'CREATE EXTENSION starts a drain worker without restart');
my $create_ext_latency = time - $t0;
note sprintf('worker after CREATE EXTENSION: %.3f s', $create_ext_latency);
cmp_ok($create_ext_latency, '<', 2, 'the worker came within 2 s of CREATE EXTENSION');
is(sql("SELECT application_name FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = 'plain'"),
	'pg_outbox drain', 'the worker shows up as backend_type "pg_outbox drain"');

# A template database with the extension: no worker runs there, and it does not get in the
# way of CREATE DATABASE; the new database gets its worker at once.
$node->safe_psql('template1', 'CREATE EXTENSION pg_outbox');
$t0 = time;
sql('CREATE DATABASE app');
ok(defined wait_worker('app', 30), 'a database created from a template with the extension gets a worker');
my $create_db_latency = time - $t0;
note sprintf('worker after CREATE DATABASE: %.3f s', $create_db_latency);
cmp_ok($create_db_latency, '<', 2, 'the worker came within 2 s of CREATE DATABASE');

ok(defined wait_until("SELECT query = 'pg_outbox: idle, waiting for commits' FROM pg_stat_activity "
		  . "WHERE backend_type = 'pg_outbox drain' AND datname = 'app'", 30),
	'an idle worker says so in pg_stat_activity.query');

# ---------------------------------------------------------------------------------------
# delivery, and producers' commits wake the worker (the tick is 60 s)
# ---------------------------------------------------------------------------------------
my $listener = $node->background_psql('app');
$listener->query_safe('LISTEN orders');
my $producer = $node->background_psql('app');
my @latency;
for my $i (1 .. 5) {
	my $id = $producer->query_safe(
		"SELECT outbox.publish('orders', jsonb_build_object('n', $i), key => 'k$i', type => 'created')");
	my $t = time;
	my $done;
	while (time - $t < 30) {
		$done = $producer->query_safe("SELECT count(*) FROM outbox.history WHERE id = $id") eq '1';
		last if $done;
		usleep(2_000);
	}
	ok($done, "event $i published");
	push @latency, time - $t;
	usleep(100_000);
}
my @sorted = sort { $a <=> $b } @latency;
note sprintf('commit -> published (polled): median %.1f ms, max %.1f ms', 1000 * $sorted[2], 1000 * $sorted[-1]);
cmp_ok($sorted[-1], '<', 5, 'every event was published long before the 60 s safety tick: the commit woke the worker');

my @got = collect($listener, 5);
is(scalar @got, 5, 'the listener got 5 notifications');
is_deeply([ map { $_->{env}{pos} } @got ], [ 1 .. 5 ], 'pos 1..5 in order');
is_deeply([ map { $_->{env}{seq} } @got ], [ 1 .. 5 ], 'seq 1..5 on the channel');
is_deeply([ map { $_->{env}{payload}{n} } @got ], [ 1 .. 5 ], 'payloads in publish order');
is_deeply($got[0]{env}, { id => $got[0]{env}{id}, pos => 1, epoch => 1, seq => 1, key => 'k1', type => 'created', # [epochs]
	payload => { n => 1 } }, 'envelope: id, pos, epoch, seq, key, type, payload');
is($got[0]{pid}, worker_pid('app'), 'the notifications come from the drain worker');

# a rolled-back transaction wakes the worker for nothing and publishes nothing
$producer->query_safe("BEGIN; SELECT outbox.publish('orders', '{\"rolled\": \"back\"}'); ROLLBACK;");
usleep(300_000);
is(scalar(collect($listener, 1, 0.5)), 0, 'a rolled-back event is not delivered');

# Every way of committing an event wakes the worker (the tick is 60 s: 10 s is plenty).
# Each case also leaves out what must not be published.
my $other = $node->background_psql('app');
my @wake_cases = (
	[   'a released savepoint', 1,
		$producer, "BEGIN; SAVEPOINT a; SELECT outbox.publish('orders', '{\"case\": 1}'); RELEASE a; COMMIT;"
	],
	[   'nested savepoints, the inner one rolled back', 2,
		$producer,
		"BEGIN; SAVEPOINT a; SELECT outbox.publish('orders', '{\"case\": 2}'); SAVEPOINT b; "
		  . "SELECT outbox.publish('orders', '{\"not\": 2}'); ROLLBACK TO b; RELEASE a; COMMIT;"
	],
	[   'a PL/pgSQL exception block (a subtransaction) that succeeds', 3,
		$producer,
		"DO \$\$ BEGIN BEGIN PERFORM outbox.publish('orders', '{\"case\": 3}'); "
		  . "EXCEPTION WHEN others THEN NULL; END; END \$\$;"
	],
	[   'a plain INSERT INTO outbox.pending (statement trigger)', 4,
		$producer, "INSERT INTO outbox.pending (channel, payload) VALUES ('orders', '{\"case\": 4}');"
	],
	[   'COMMIT PREPARED from another session', 5,
		$producer, "BEGIN; SELECT outbox.publish('orders', '{\"case\": 5}'); PREPARE TRANSACTION 'p5';",
		$other,    "COMMIT PREPARED 'p5';"
	],
);
for my $c (@wake_cases) {
	my ($case, $expected, @steps) = @$c;
	while (my ($session, $sql) = splice(@steps, 0, 2)) {
		$session->query_safe($sql);
	}
	my $t = time;
	my $done;
	while (time - $t < 10) {
		$done = $producer->query_safe('SELECT count(*) FROM outbox.pending') eq '0';
		last if $done;
		usleep(5_000);
	}
	ok($done, "the worker is woken at the commit of $case");
	@got = collect($listener, 1, 5);
	is(join(',', map { $_->{env}{payload}{case} // 'other' } @got), $expected,
		"... and exactly its event is delivered ($case)");
}
$other->quit;

# ---------------------------------------------------------------------------------------
# pg_outbox.batch_size is reloaded with SIGHUP
# ---------------------------------------------------------------------------------------
sql('ALTER SYSTEM SET pg_outbox.batch_size = 7');
sql('SELECT pg_reload_conf()');
sleep 1;    # SIGHUP reaches the worker in microseconds; be generous
my $before = $node->safe_psql('app', 'SELECT last_pos FROM outbox.state');
$node->safe_psql('app', "SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 100) g");
ok(defined wait_until("SELECT count(*) = 0 FROM outbox.pending", 30, 'app'), '100 events drained');
# each drain batch is one transaction: count the events per inserting transaction (the 1.2 drain writes
# outbox.history_frozen; xmin is a column of that table, not of the view outbox.history)
is($node->safe_psql('app',
		"SELECT max(n) || ' ' || count(*) FROM (SELECT xmin, count(*) AS n FROM outbox.history_frozen "
		  . "WHERE pos > $before GROUP BY xmin) b"),
	'7 15', 'batches of at most 7 events after the reload (15 batches for 100 events)');
sql('ALTER SYSTEM RESET pg_outbox.batch_size');
sql('SELECT pg_reload_conf()');
@got = collect($listener, 100);
is(scalar @got, 100, 'the listener got the 100 events');

# ---------------------------------------------------------------------------------------
# a terminated worker is restarted by the launcher; a listener that stayed connected sees
# every pos exactly once
# ---------------------------------------------------------------------------------------
my $first = $node->safe_psql('app', 'SELECT last_pos FROM outbox.state') + 1;
sub publish_tx {
	my ($n) = @_;
	$producer->query_safe("SELECT outbox.publish('orders', jsonb_build_object('b', g)) FROM generate_series(1, 5) g")
	  for 1 .. $n;
}
publish_tx(10);
my $old_pid = worker_pid('app');
is(sql("SELECT pg_terminate_backend($old_pid)"), 't', 'pg_terminate_backend of the drain worker');
publish_tx(10);    # while it is gone or restarting
$t0 = time;
ok(defined wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' "
		  . "AND datname = 'app' AND pid <> $old_pid", 30),
	'the launcher restarted the worker');
note sprintf('worker restarted after %.3f s', time - $t0);
publish_tx(10);
ok(defined wait_until("SELECT count(*) = 0 FROM outbox.pending", 30, 'app'), 'the new worker drained everything');
@got = collect($listener, 150);
my %count;
$count{ $_->{env}{pos} }++ for @got;
is(scalar @got, 150, 'the listener got 150 notifications');
is_deeply([ sort { $a <=> $b } keys %count ], [ $first .. $first + 149 ], 'every pos once, no gap');
is(scalar(grep { $_ != 1 } values %count), 0, 'no pos twice');
is_deeply([ map { $_->{env}{pos} } @got ], [ $first .. $first + 149 ], 'and in pos order');

# ---------------------------------------------------------------------------------------
# a terminated launcher is restarted by the postmaster (bgw_restart_time); the drain
# workers keep running meanwhile, and the new launcher supervises them
# ---------------------------------------------------------------------------------------
my $launcher = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher'");
my $app_worker = worker_pid('app');
is(sql("SELECT pg_terminate_backend($launcher)"), 't', 'pg_terminate_backend of the launcher');
ok(defined wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher' "
		  . "AND pid <> $launcher", 60),
	'the postmaster restarts the launcher');
is(worker_pid('app'), $app_worker, 'the drain worker kept running meanwhile');
sql("SELECT pg_terminate_backend($app_worker)");
ok(defined wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' "
		  . "AND datname = 'app' AND pid <> $app_worker", 30),
	'the new launcher restarts a terminated drain worker');

# ---------------------------------------------------------------------------------------
# pg_outbox.databases: ALTER SYSTEM + reload stops and starts workers
# ---------------------------------------------------------------------------------------
sql("ALTER SYSTEM SET pg_outbox.databases = 'plain'");
sql('SELECT pg_reload_conf()');
ok(defined wait_no_worker('app', 30), "pg_outbox.databases = 'plain': app's worker stops");
isnt(worker_pid('plain'), '0', "plain's worker keeps running");
$node->safe_psql('app', "SELECT outbox.publish('orders', '{\"while\": \"stopped\"}')");
sleep 1.5;
is($node->safe_psql('app', 'SELECT count(*) FROM outbox.pending'), '1', 'events wait in pending meanwhile');
is(worker_pid('app'), '0', 'and the launcher does not restart the deselected worker');

sql("ALTER SYSTEM SET pg_outbox.databases = ''");
sql('SELECT pg_reload_conf()');
ok(defined wait_no_worker('plain', 30), "pg_outbox.databases = '': no worker anywhere");

sql('ALTER SYSTEM RESET pg_outbox.databases');
sql('SELECT pg_reload_conf()');
ok(defined wait_worker('app', 30) && defined wait_worker('plain', 30), 'RESET: both workers are back');
ok(defined wait_until("SELECT count(*) = 0 FROM outbox.pending", 30, 'app'), 'the waiting event is published');
@got = collect($listener, 1);
is(scalar @got, 1, 'and delivered');
$listener->quit;
$producer->quit;

# ---------------------------------------------------------------------------------------
# DROP EXTENSION stops the worker; CREATE EXTENSION brings it back
# ---------------------------------------------------------------------------------------
$node->safe_psql('plain', 'DROP EXTENSION pg_outbox');
ok(defined wait_no_worker('plain', 30), 'DROP EXTENSION stops the worker');
sleep 1.5;
is(worker_pid('plain'), '0', 'and it is not restarted');
$t0 = time;
$node->safe_psql('plain', 'CREATE EXTENSION pg_outbox');
ok(defined wait_worker('plain', 30), 'CREATE EXTENSION again: worker back');
cmp_ok(time - $t0, '<', 2, 'within 2 s');

# ---------------------------------------------------------------------------------------
# CREATE DATABASE ... TEMPLATE of a database with a worker; IS_TEMPLATE; DROP DATABASE
# ---------------------------------------------------------------------------------------
isnt(worker_pid('app'), '0', 'app has a worker');
my ($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE copy TEMPLATE app', timeout => 60);
is($ret, 0, 'CREATE DATABASE ... TEMPLATE of a database with a worker succeeds') or diag $err;
ok(defined wait_worker('copy', 30), 'the copy gets its own worker');
$waited = wait_worker('app', 30);
ok(defined $waited, 'the template database gets its worker back');
note sprintf('app worker back %.1f s after CREATE DATABASE ... TEMPLATE app', $waited // -1);
is($node->safe_psql('copy', 'SELECT count(*) FROM outbox.pending'), '0', 'the copy has nothing pending');

sql('ALTER DATABASE copy IS_TEMPLATE true');
ok(defined wait_no_worker('copy', 30), 'ALTER DATABASE ... IS_TEMPLATE true stops the worker: none runs in a template');
sql('ALTER DATABASE copy IS_TEMPLATE false');
ok(defined wait_worker('copy', 30), 'IS_TEMPLATE false: the worker is back');

# ALTER DATABASE ... RENAME also needs the database to itself
($ret, $out, $err) = $node->psql('postgres', 'ALTER DATABASE copy RENAME TO copy2', timeout => 60);
is($ret, 0, 'ALTER DATABASE ... RENAME succeeds while a worker is attached') or diag $err;
ok(defined wait_worker('copy2', 30), 'the renamed database gets its worker back');

($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE copy2', timeout => 60);
is($ret, 0, 'plain DROP DATABASE succeeds while a worker is attached') or diag $err;

# DROP DATABASE right after the worker was started (it may still be starting up)
for my $round (1 .. 3) {
	sql("CREATE DATABASE quick$round");    # from template1, which has the extension
	usleep(($round - 1) * 30_000);
	($ret, $out, $err) = $node->psql('postgres', "DROP DATABASE quick$round", timeout => 60);
	is($ret, 0, "DROP DATABASE at once after CREATE DATABASE (round $round)") or diag $err;
}

is(sql("SELECT count(*) FROM pg_stat_activity a JOIN pg_database d ON d.datname = a.datname "
		  . "WHERE a.backend_type = 'pg_outbox drain' AND d.datistemplate"),
	'0', 'no worker runs in a template database');
ok(defined wait_until("SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 30),
	'exactly the two workers of app and plain are left');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|was terminated|server process .* exited with exit code [^0]/,
	'no crash in the server log');
done_testing();
