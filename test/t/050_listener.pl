# The reference consumer pg_outbox_listen against the real drain worker: several producers
# publish 20000 events while the listener's backend is killed again and again, the listener
# process itself is stopped and restarted from its state file, and the whole server restarts
# once. Afterwards its output holds every position of its channels exactly once, in order,
# with the stored event behind each line, and nothing else. Also: its exit codes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $listen = $ENV{PG_OUTBOX_LISTEN};
plan skip_all => 'PG_OUTBOX_LISTEN is not set (run through test/run_tests.sh)' unless $listen && -x $listen;

my $node = PostgreSQL::Test::Cluster->new('listener');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
max_connections = 40
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $conn = $node->connstr('postgres');

# Runs the listener to its end; returns (exit code, stdout, stderr).
sub run_listen {
	my ($out, $err) = ('', '');
	IPC::Run::run([ $listen, @_ ], '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(60));
	return ($? >> 8, $out, $err);
}

# ---- exit codes ----
my ($rc, $out, $err) = run_listen();
is($rc, 2, 'no arguments: exit 2');
like($err, qr/no connection string/, '... says why');
($rc, $out, $err) = run_listen($conn, '--channel', '');
is($rc, 2, 'empty channel: exit 2');
($rc, $out, $err) = run_listen($conn, '--channel', 'x' x 64);
is($rc, 2, 'over-long channel: exit 2');
like($err, qr/too long: 64 bytes/, '... says why');
($rc, $out, $err) = run_listen("dbname='unterminated", '-c', 'orders');
is($rc, 3, 'bad connection string: exit 3');
like($err, qr/invalid connection string/, '... says why');
($rc, $out, $err) = run_listen("host=$tmp port=1 dbname=postgres", '-c', 'orders');
is($rc, 3, 'first connection fails: exit 3');
like($err, qr/cannot connect/, '... says why');

$node->safe_psql('postgres', 'CREATE DATABASE no_extension');
($rc, $out, $err) = run_listen($node->connstr('no_extension'), '-c', 'orders');
is($rc, 4, 'database without pg_outbox: exit 4');
like($err, qr/CREATE EXTENSION pg_outbox/, '... says what to do');

($rc, $out, $err) = run_listen($conn, '-c', 'never_used', '--strict-channels');
is($rc, 5, 'unknown channel with --strict-channels: exit 5');
like($err, qr/unknown channel "never_used"/, '... names it');

# a replay point older than retention: OB001, exit 6, never a silent gap
$node->safe_psql('postgres', 'CREATE DATABASE retention');
$node->safe_psql('retention', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('retention', "SELECT outbox.publish('r', jsonb_build_object('n', g)) FROM generate_series(1, 5) g");
ok($node->poll_query_until('retention', 'SELECT outbox.head() = 5'), 'worker published 5 events in database retention');
$node->safe_psql('retention', 'UPDATE outbox.state SET purged_pos = 3; DELETE FROM outbox.history_frozen WHERE pos <= 3');
($rc, $out, $err) = run_listen($node->connstr('retention'), '-c', 'r', '--from-pos', '1');
is($rc, 6, 'replay point older than retention: exit 6');
like($err, qr/events up to position 3 have been removed/, '... says why');
is($out, '', '... and prints nothing');
($rc, $out, $err) = run_listen($node->connstr('retention'), '-c', 'r', '--from-pos', '99');
is($rc, 6, 'replay point ahead of the outbox: exit 6');

my $corrupt = "$tmp/corrupt.state";
PostgreSQL::Test::Utils::append_to_file($corrupt, "garbage\n");
($rc, $out, $err) = run_listen($conn, '-c', 'orders', '--state', $corrupt);
is($rc, 7, 'corrupt state file: exit 7');

# --from-now after history: starts after the head, prints only what comes later
{
	my $state = "$tmp/now.state";
	my ($o, $e) = ('', '');
	my $h = IPC::Run::start([ $listen, $node->connstr('retention'), '-c', 'r', '--from-now', '--state', $state ],
		'<', \undef, '>', \$o, '2>', \$e);
	my $deadline = time + 30;
	while ($e !~ /state=live/ && time < $deadline) { $h->pump_nb; usleep(20_000); }
	$node->safe_psql('retention', "SELECT outbox.publish('r', '{\"after\": \"now\"}')");
	while ($o !~ /\n/ && time < $deadline) { $h->pump_nb; usleep(20_000); }
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, '--from-now: SIGTERM ends it with exit 0');
	is($o, qq({"pos":6,"channel":"r","seq":6,"id":6,"key":null,"type":null,"payload":{"after":"now"}}\n),
		'--from-now prints only the event published after it started');
	like(slurp_file($state), qr/\Apg_outbox_listen state 2\npos 6\nepoch \d+\nidentity [0-9a-f-]{36}\n\z/,
	     'state file holds the last position (with its epoch and the outbox identity)');
}

# ---- 20000 events, a listener that keeps losing its connection ----
my @channels = ('orders', 'users', 'tenant_42');    # producers also publish on 'other'
my $state = "$tmp/listener.state";
my $outfile = "$tmp/listener.out";
my $errfile = "$tmp/listener.err";
my @listen_cmd = ($listen, $conn, (map { ('--channel', $_) } @channels),
	'--from-pos', '0', '--state', $state, '--max-backoff', '1');
my $listener = IPC::Run::start(\@listen_cmd, '<', \undef, '>>', $outfile, '2>>', $errfile);
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'pg_outbox_listen'"),
	"the listener shows up as application_name pg_outbox_listen (PGAPPNAME is $ENV{PGAPPNAME})");

my $script = "$tmp/produce.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{
\set a random(1, 4)
\set b random(1, 4)
BEGIN;
SELECT outbox.publish((ARRAY['orders', 'users', 'tenant_42', 'other'])[:a], jsonb_build_object('client', :client_id, 'a', :a), key => 'k' || :client_id);
SELECT outbox.publish((ARRAY['orders', 'users', 'tenant_42', 'other'])[:b], jsonb_build_object('client', :client_id, 'b', :b, 'pi', 3.14159265358979323846264338327950288));
COMMIT;
});
my %killed;    # pids of the listener's backends terminated

# 4 producers x 1250 transactions x 2 events = 10000 events, killing the listener's backend
# every ~150 ms meanwhile
sub produce_and_kill {
	my $pgbench = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '4', '-j', '2', '-t', '1250', '-f', $script,
		  '-h', $node->host, '-p', $node->port, 'postgres' ],
		'<', \undef, '>', \my $pout, '2>', \my $perr);
	while ($pgbench->pumpable) {
		$pgbench->pump_nb;
		my $pids = $node->safe_psql('postgres',
			"SELECT string_agg(pid::text, ' ') FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
			  . " WHERE application_name = 'pg_outbox_listen' AND pid <> pg_backend_pid()");
		$killed{$_} = 1 for split / /, $pids;
		usleep(150_000);
	}
	$pgbench->finish;
	is($pgbench->result(0), 0, 'pgbench published its events') or diag($perr);
}

produce_and_kill();
# stop the listener process and start it again: it resumes from its state file
$listener->signal('TERM');
$listener->finish;
is($listener->result(0), 0, 'listener stopped by SIGTERM exits 0');
$listener = IPC::Run::start(\@listen_cmd, '<', \undef, '>>', $outfile, '2>>', $errfile);
# (its first connection must succeed: a failing first connection is exit 3, by design)
my $wait = time + 30;
usleep(50_000) while time < $wait && (() = slurp_file($errfile) =~ /resuming after position/g) < 1;
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'pg_outbox_listen'"),
	'the restarted listener is connected');
# restart the whole server while the worker and the listener may still be catching up
$node->restart;
produce_and_kill();

ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM outbox.pending'), 'all events published');
is($node->safe_psql('postgres', "SELECT count(*) FROM outbox.history WHERE channel IN ('orders', 'users', 'tenant_42', 'other')"),
	'20000', '20000 events in the history');
my $want_last = $node->safe_psql('postgres',
	"SELECT max(pos) FROM outbox.history WHERE channel IN ('orders', 'users', 'tenant_42')");
my $deadline = time + 60;
while (time < $deadline) {
	last if -e $outfile && slurp_file($outfile) =~ /\{"pos":$want_last,[^\n]*\}\n\z/;
	usleep(100_000);
}
$listener->signal('TERM');
$listener->finish;
is($listener->result(0), 0, 'listener exits 0 at the end');
my $kills = scalar(keys %killed);
cmp_ok($kills, '>=', 5, "the listener's backend was killed $kills times");
my $log = slurp_file($errfile);
my $connects = () = $log =~ /state=connected/g;
cmp_ok($connects, '>=', $kills + 3, "the listener connected $connects times (after every kill, the server restart and its own restart)");
my $fresh = () = $log =~ /warning: channel "\w+" has had no event yet/g;
is($fresh, 3, 'the listener warned once per channel that had no event yet when it first started');
unlike($log =~ s/warning: channel "\w+" has had no event yet//gr, qr/unexpected error|warning/,
	'no unexpected errors or other warnings from the listener');
like($log, qr/resuming after position \d+ from state file/, 'the restarted listener resumed from its state file');

# every position of the three channels, once, in order, with the stored event, nothing else
my @got = split /\n/, slurp_file($outfile);
my @want = split /\n/, $node->safe_psql('postgres',
	"SELECT format('{\"pos\":%s,\"channel\":\"%s\",\"seq\":%s,\"id\":%s,\"key\":%s,\"type\":null,\"payload\":%s}',"
	  . " pos, channel, seq, id, coalesce(to_json(key)::text, 'null'), outbox._payload_text(payload))"
	  . " FROM outbox.history WHERE channel IN ('orders', 'users', 'tenant_42') ORDER BY pos");
cmp_ok(scalar(@want), '>', 10000, scalar(@want) . ' events on the listened channels');
is(scalar(@got), scalar(@want), 'the listener printed as many lines as there are events');
my $first_bad;
for my $i (0 .. $#want) {
	if (!defined $got[$i] || $got[$i] ne $want[$i]) { $first_bad = $i; last; }
}
ok(!defined $first_bad, 'every line is the stored event, in position order')
  or diag("line $first_bad: got " . ($got[$first_bad] // 'nothing') . "\nwant $want[$first_bad]");
my %seen;
my @dups = grep { $seen{$_}++ } map { /^\{"pos":(\d+),/ ? $1 : 'garbage' } @got;
is(scalar(@dups), 0, 'no position printed twice');
like(slurp_file($state), qr/\Apg_outbox_listen state 2\npos $want_last\nepoch \d+\nidentity [0-9a-f-]{36}\n\z/,
     'the state file holds the last position');

$node->stop;
done_testing();
