# Faults (issue 12): many databases, few worker processes.
#   part 1: 74 databases, only one with the extension, default max_worker_processes (8):
#           probing the 73 others never keeps a slot, the one gets its worker, no slot warnings;
#   part 2: 40 databases with the extension and max_worker_processes = 6 (4 processes for
#           drain workers): the databases left without a worker are logged once each and show
#           state 'waiting' in outbox.status; they are served in turn, so every database
#           publishes all its acknowledged events, exactly once, pos 1..N.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OutboxFault qw(poll_until);

my $node = PostgreSQL::Test::Cluster->new('many');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
max_worker_processes = 8
max_parallel_workers = 0
max_connections = 40
fsync = off
});
$node->start;

# ---- part 1: 74 databases, one with the extension ----
$node->safe_psql('postgres', join('', map { "CREATE DATABASE plain$_;\n" } 1 .. 73));
$node->safe_psql('plain73', 'CREATE EXTENSION pg_outbox');
my $t0 = time;
ok(poll_until($node, 'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = 'plain73'", 60),
	'the one database with the extension among 74 gets its worker');
note sprintf('worker for plain73 after %.1f s', time - $t0);
$node->safe_psql('plain73', "SELECT outbox.publish('c', '{}')");
ok(poll_until($node, 'plain73', 'SELECT count(*) = 1 FROM outbox.history', 30), 'and it publishes');
# the probes are over: only that worker (and the launcher) remain
ok(poll_until($node, 'postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 30),
	'no probe keeps running in a database without the extension');
$node->reload; # a reload makes the launcher probe again
usleep(500_000);
ok(poll_until($node, 'postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 30),
	'after a reload and a re-probe, again only the one worker');
my $log = slurp_file($node->logfile);
unlike($log, qr/no free worker slot|could not register|could not start a drain worker/, 'no worker slot warnings');
unlike($log, qr/no background worker process free/, 'no database had to wait: probing never exhausts the processes');
$node->safe_psql('postgres', join('', map { "DROP DATABASE plain$_;\n" } 1 .. 73));

# ---- part 2: 40 databases with the extension, 4 processes for drain workers ----
$node->append_conf('postgresql.conf', "max_worker_processes = 6\n");
$node->restart;
my $offset = -s $node->logfile;
my $ndb = 40;
$node->safe_psql('postgres', join('', map { "CREATE DATABASE app$_;\n" } 1 .. $ndb));
$node->safe_psql("app$_", 'CREATE EXTENSION pg_outbox') for 1 .. $ndb;
# every database: 25 acknowledged events, and one rolled back
for my $d (1 .. $ndb) {
	$node->safe_psql("app$d", q{
		SELECT outbox.publish('c' || (g % 2), jsonb_build_object('db', current_database(), 'g', g)) FROM generate_series(1, 25) g;
		BEGIN; SELECT outbox.publish('c0', '{"rb": true}'); ROLLBACK;
	});
}
my $seen_waiting = 0;
my $deadline = time + 400;
my %done;
while (time < $deadline && keys %done < $ndb) {
	for my $d (1 .. $ndb) {
		next if $done{$d};
		my ($rc, $out) = $node->psql("app$d", 'SELECT state, pending FROM outbox.status');
		next unless $rc == 0;
		my ($state, $pending) = split /\|/, $out;
		$seen_waiting++ if $state eq 'waiting';
		$done{$d} = 1 if $pending eq '0';
	}
	usleep(500_000);
}
is(scalar keys %done, $ndb, "all $ndb databases published their events (served in turn)");
cmp_ok($seen_waiting, '>', 0, "databases without a worker showed state 'waiting' in outbox.status ($seen_waiting times)");
my ($bad, $checked) = (0, 0);
for my $d (1 .. $ndb) {
	my $r = $node->safe_psql("app$d",
		q{SELECT count(*) = 25 AND count(DISTINCT id) = 25 AND min(pos) = 1 AND max(pos) = 25
		         AND count(*) FILTER (WHERE payload @> '{"rb": true}') = 0
		         AND (SELECT last_pos FROM outbox.state) = 25
		    FROM outbox.history});
	$checked++;
	$bad++ unless $r eq 't';
}
is($bad, 0, "in each of the $checked databases: 25 events exactly once, pos 1..25, nothing rolled back published");
$log = slurp_file($node->logfile);
my %reported;
$reported{$1}++ while $log =~ /no background worker process free for database "(app\d+)"/g;
cmp_ok(scalar keys %reported, '>', 0, 'the databases left without a worker are named in the log (' . scalar(keys %reported) . ')');
is(scalar(grep { $_ > 1 } values %reported), 0, 'each of them once, not every second');
my $part2 = slurp_file($node->logfile, $offset);
my $starts = () = $part2 =~ /LOG:  pg_outbox drain worker started/g;
my $yields = () = $part2 =~ /\(PID \d+\) exited with exit code 0/g;
cmp_ok($starts, '<=', $ndb + 5, "a worker's start is logged once per database, not at every turn ($starts lines)");
note "$yields worker exits (turns) in part 2";
unlike($log, qr/no free worker slot|terminated by signal/, 'no slot warnings, no crash');

# A commit in a waiting database moves it up the queue: its event is published within a turn,
# not after a whole round of the 36 others.
my @lat;
for my $try (1 .. 3) {
	my $waiting;
	my $until = time + 60;
	while (!$waiting && time < $until) {
		for my $d (1 .. $ndb) {
			my ($rc, $out) = $node->psql("app$d", 'SELECT state FROM outbox.status');
			if ($rc == 0 && $out eq 'waiting') { $waiting = $d; last; }
		}
	}
	next unless $waiting;
	my $t1 = time;
	$node->safe_psql("app$waiting", "SELECT outbox.publish('late', '{}')");
	push @lat, time - $t1 if poll_until($node, "app$waiting", 'SELECT count(*) = 0 FROM outbox.pending', 60);
}
is(scalar @lat, 3, 'three events published in databases that were waiting for a worker');
note sprintf('latency of an event in a waiting database: %s s', join(', ', map { sprintf '%.1f', $_ } @lat));
cmp_ok((sort { $b <=> $a } @lat)[0] // 99, '<', 15, 'each within a turn or two (a commit moves its database up the queue)');
$node->stop;
done_testing();
