# Issue #11 part 2: NOTIFY needs no privilege, so pg_outbox_listen trusts an envelope only from a
# drain worker (be_pid in outbox.worker_pids()); anything else is a doorbell. While real events
# flow, an unprivileged role NOTIFYs forged envelopes (the pos of the next real event, a future
# pos, a seq gap, an old pos with a new seq, garbage, a huge pos) and a session runs
# outbox.drain() by hand. The listener's output equals outbox.history exactly, it never
# reconnects, never exits, and SIGTERM ends it with 0.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $listen = $ENV{PG_OUTBOX_LISTEN};
plan skip_all => 'PG_OUTBOX_LISTEN is not set (run through test/run_tests.sh)' unless $listen && -x $listen;

my $node = PostgreSQL::Test::Cluster->new('forged');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'\n");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_outbox;
CREATE ROLE mallory LOGIN;              -- no grant at all: may connect, so may NOTIFY
CREATE ROLE consumer LOGIN IN ROLE outbox_reader;
});
my $tmp = PostgreSQL::Test::Utils::tempdir;

# ---- outbox.worker_pids() ----
ok($node->poll_query_until('postgres', "SELECT cardinality(outbox.worker_pids()) = 1"), 'worker_pids() lists the drain worker');
is($node->safe_psql('postgres', q{
	SELECT outbox.worker_pids() = ARRAY(SELECT pid FROM pg_stat_activity
	                                     WHERE backend_type = 'pg_outbox drain' AND datname = current_database())}),
	't', '... and it is the drain worker of this database as pg_stat_activity shows it')
  or diag($node->safe_psql('postgres', 'SELECT pid, backend_type, datname FROM pg_stat_activity'));
is($node->safe_psql('postgres', 'SELECT pg_backend_pid() = ANY (outbox.worker_pids())'), 'f', '... not this session');
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION pg_outbox');
ok($node->poll_query_until('other', "SELECT cardinality(outbox.worker_pids()) = 1"), 'database other has its worker');
is($node->safe_psql('other', "SELECT outbox.worker_pids() && (SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = 'postgres' AND backend_type = 'pg_outbox drain')"),
	'f', "... whose list does not hold the other database's worker");
is($node->safe_psql('postgres', 'SET ROLE consumer; SELECT cardinality(outbox.worker_pids())'), '1', 'a reader may call it');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'SET ROLE mallory; SELECT outbox.worker_pids()');
like($stderr, qr/permission denied/, 'a role without grants may not');
# a worker that stops is no longer listed (its PID may be reused by any backend)
$node->safe_psql('other', "ALTER SYSTEM SET pg_outbox.databases = 'postgres'; SELECT pg_reload_conf()");
ok($node->poll_query_until('other', "SELECT cardinality(outbox.worker_pids()) = 0"), 'a stopped worker is not listed');
$node->safe_psql('other', "ALTER SYSTEM RESET pg_outbox.databases; SELECT pg_reload_conf()");

# ---- the listener under forged notifications ----
my $state = "$tmp/l.state";
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[ $listen, $node->connstr('postgres') . ' user=consumer', '-c', 'orders', '-c', 'users',
	  '--from-pos', '0', '--state', $state, '-v' ],
	'<', \undef, '>', \$out, '2>', \$err);
my $deadline = time + 60;
while ($err !~ /state=live/ && time < $deadline) { eval { $h->pump_nb }; usleep(20_000); }
like($err, qr/state=live/, 'the listener is live');

sub mallory {
	my ($channel, $payload) = @_;
	$payload =~ s/'/''/g;
	$node->safe_psql('postgres', "SET ROLE mallory; SELECT pg_notify('$channel', '$payload')");
}
sub head_of { # pos head, seq head of channel
	my ($ch) = @_;
	return split /\|/, $node->safe_psql('postgres', "SELECT outbox.head(), outbox.head('$ch')");
}
sub wait_published {
	my ($n) = @_;
	$node->poll_query_until('postgres', "SELECT outbox.head() >= $n AND NOT EXISTS (SELECT FROM outbox.pending)")
	  or die "events not published";
}

my $forged = 0;
my $real = 0;
for my $round (1 .. 20) {
	my $ch = $round % 2 ? 'orders' : 'users';
	my ($pos, $seq) = head_of($ch);
	my $next = $pos + 1;
	# the next real event's pos and seq, forged before it is published
	mallory($ch, qq({"id":999,"pos":$next,"seq":@{[$seq + 1]},"key":"forged","type":"forged","payload":{"forged":1}}));
	# a future pos with a plausible seq
	mallory($ch, qq({"id":998,"pos":@{[$pos + 1000]},"seq":@{[$seq + 1]},"payload":{"forged":2}}));
	# a seq gap (this made 1.1's listener reconnect in a loop)
	mallory($ch, qq({"id":997,"pos":$next,"seq":@{[$seq + 50]},"payload":{"forged":3}}));
	# an old position with a newer seq (this made 1.1's listener exit 6)
	mallory($ch, qq({"id":996,"pos":1,"seq":@{[$seq + 2]}})) if $pos > 0;
	# garbage, and a huge position
	mallory($ch, 'not json {{{');
	mallory($ch, qq({"id":995,"pos":9223372036854775807,"seq":1}));
	$forged += $pos > 0 ? 6 : 5;
	# the real events
	$node->safe_psql('postgres', "SELECT outbox.publish('$ch', jsonb_build_object('round', $round, 'n', g), 'k' || g)"
		  . " FROM generate_series(1, 3) g");
	$real += 3;
	if ($round % 5 == 0) {
		# a session publishing by hand: its notifications are doorbells too (not from the worker)
		$node->safe_psql('postgres', "BEGIN; SELECT outbox.publish('$ch', jsonb_build_object('by_hand', $round));"
			  . " SELECT outbox.drain(); COMMIT;");
		$real += 1;
	}
	wait_published($real) if $round % 4 == 0;
}
wait_published($real);
my $last = $node->safe_psql('postgres', 'SELECT max(pos) FROM outbox.history');
$deadline = time + 60;
while (time < $deadline) {
	eval { $h->pump_nb };
	last if $out =~ /\{"pos":$last,[^\n]*\}\n\z/;
	usleep(50_000);
}
# forged notifications sent after the last real event ring the bell too, and change nothing
mallory('orders', qq({"id":999,"pos":@{[$last + 1]},"seq":1000,"payload":{"forged":"late"}}));
$deadline = time + 30;
my $bells_wanted = $forged + 1;
while (time < $deadline) {
	eval { $h->pump_nb };
	my $bells = () = $err =~ /not a drain worker: treated as a doorbell/g;
	last if $bells >= $bells_wanted;
	usleep(50_000);
}
$h->signal('TERM');
$h->finish;
is($h->result(0), 0, 'SIGTERM ends the listener with exit 0');

my $bells = () = $err =~ /from backend (\d+), not a drain worker: treated as a doorbell/g;
cmp_ok($bells, '>=', $bells_wanted, "every forged notification ($bells_wanted) was a doorbell ($bells, with the manual drains')");
unlike($err, qr/state=disconnected|reconnecting|contradicts|must resynchronise|ignoring a notification/,
	'the listener never reconnected, never asked for a resync, decoded no forged payload');
my $connects = () = $err =~ /state=connected/g;
is($connects, 1, 'it connected exactly once');
like($err, qr/state=stopped pos=$last doorbells=\d+/, 'it stopped at the last real position, counting its doorbells');
unlike($out, qr/forged/, 'no forged payload was printed');

my @want = split /\n/, $node->safe_psql('postgres',
	"SELECT format('{\"pos\":%s,\"channel\":\"%s\",\"seq\":%s,\"id\":%s,\"key\":%s,\"type\":null,\"payload\":%s}',"
	  . " pos, channel, seq, id, coalesce(to_json(key)::text, 'null'), outbox._payload_text(payload))"
	  . " FROM outbox.history ORDER BY pos");
is(scalar(@want), $real, "$real real events in the history");
is($out, join('', map { "$_\n" } @want), 'the output is outbox.history, exactly: every real event once, in order, nothing else');
like(slurp_file($state), qr/\Apg_outbox_listen state 2\npos $last\nepoch \d+\nidentity [0-9a-f-]{36}\n\z/,
     'the state file holds the last real position');

# a role that may replay but not call worker_pids(): every notification is a doorbell, and it
# still prints every event (from replay), forged ones never
$node->safe_psql('postgres', q{
CREATE ROLE replay_only LOGIN;
GRANT USAGE ON SCHEMA outbox TO replay_only;
GRANT EXECUTE ON FUNCTION outbox.replay(bigint, text[], integer, bigint), outbox.head(), outbox.head(text) TO replay_only;
});
{
	my ($o, $e) = ('', '');
	my $h2 = IPC::Run::start([ $listen, $node->connstr('postgres') . ' user=replay_only', '-c', 'orders', '--from-now' ],
		'<', \undef, '>', \$o, '2>', \$e);
	my $deadline = time + 30;
	while ($e !~ /state=live/ && time < $deadline) { eval { $h2->pump_nb }; usleep(20_000); }
	mallory('orders', qq({"id":999,"pos":@{[$last + 1]},"seq":1,"payload":{"forged":"again"}}));
	$node->safe_psql('postgres', q{SELECT outbox.publish('orders', '{"after": "replay_only"}')});
	$deadline = time + 30;
	while ($o !~ /replay_only/ && time < $deadline) { eval { $h2->pump_nb }; usleep(20_000); }
	$h2->signal('TERM');
	$h2->finish;
	is($h2->result(0), 0, 'listener without EXECUTE on worker_pids(): exit 0');
	like($e, qr/may not execute outbox.worker_pids\(\).*doorbell/, '... it says every notification is a doorbell');
	like($o, qr/^\{"pos":\d+,"channel":"orders","seq":\d+,"id":\d+,"key":null,"type":null,"payload":\{"after":"replay_only"\}\}\n\z/,
		'... and printed the real event only');
}

# no backend crashed
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/, 'no backend crashed');
$node->stop;
done_testing();
