# Consumers behind PgBouncer in transaction pooling mode (where LISTEN cannot work): Debian's
# pgbouncer, started by the test on a private port and socket directory, in front of the
# cluster. Producers publish through it while the drain worker is killed with SIGKILL three
# times (each kill makes the postmaster restart every backend: the pooler's server connections
# die under the consumers). Three consumers read through the pooler: two with outbox.wait()
# (every channel; channel 'orders' only), one named consumer with outbox.next() + outbox.ack().
# Each runs one statement per call, reconnecting after any error, and keeps the last position
# it processed. Afterwards each consumer holds every event of its channels exactly once, in
# position order, and every event a producer saw committed is among them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $pgbouncer = (grep { -x $_ } ('/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'))[0];
plan skip_all => 'pgbouncer is not installed (test/setup.sh installs Debian\'s package)' unless $pgbouncer;

my $node = PostgreSQL::Test::Cluster->new('bouncer');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
max_connections = 60
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');

# ---- pgbouncer, pool_mode = transaction, on a private port and socket directory ----
my $dir = PostgreSQL::Test::Utils::tempdir;
my $bport = PostgreSQL::Test::Cluster::get_free_port();
my $user = $node->safe_psql('postgres', 'SELECT current_user');
my $host = $node->host;
my $nport = $node->port;
open my $fh, '>', "$dir/userlist.txt" or die;
print $fh qq{"$user" ""\n};
close $fh;
open $fh, '>', "$dir/pgbouncer.ini" or die;
print $fh <<"EOF";
[databases]
postgres = host=$host port=$nport dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 6
max_client_conn = 200
server_login_retry = 1
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
close $fh;
my $bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ], '<', \undef, '>', "$dir/pgbouncer.out", '2>&1');
END { $bouncer->kill_kill if $bouncer && $bouncer->pumpable } # never leave pgbouncer behind, even when the test dies
my $bconn = "host=127.0.0.1 port=$bport dbname=postgres user=$user connect_timeout=5";
my $psql = $node->installed_command('psql');

sub via_bouncer {
	my ($sql) = @_;
	my $out = `$psql -XAtq -d '$bconn' -c "$sql" 2>&1`;
	return ($? >> 8, $out);
}
my $up = 0;
for (1 .. 100) {
	my ($rc, $out) = via_bouncer('SELECT 1');
	if ($rc == 0) { $up = 1; last; }
	usleep(100_000);
}
ok($up, 'pgbouncer accepts connections') or diag(slurp_file("$dir/pgbouncer.out"));

# ---- the consumers: one statement per call, reconnect after any error ----
my $consumer = "$dir/consumer.pl";
open $fh, '>', $consumer or die;
print $fh <<'EOF';
use strict; use warnings; use Time::HiRes qw(time usleep);
my ($mode, $channels, $name, $conn, $outfile, $stopfile, $psql) = @ARGV;
open my $out, '>>', $outfile or die; $out->autoflush(1);
my ($last, $errors, $dups) = (0, 0, 0);
sub run { my $r = `$psql -XAtq -F ' ' -d '$conn' -c "$_[0]" 2>/dev/null`; return ($? == 0, $r); }
if ($mode eq 'next') {
	for (1 .. 600) { my ($ok) = run("SELECT outbox.create_consumer('$name', $channels, 'earliest')"); last if $ok; usleep(200_000); }
}
my $t0 = time;
while (time - $t0 < 300) {
	my $stop_before = -e $stopfile;   # written only after everything is published
	my $sql = $mode eq 'wait' ? "SELECT pos, channel FROM outbox.wait($last, $channels, '2s', 200)"
	                          : "SELECT pos, channel FROM outbox.next('$name', 200, '2s')";
	my ($ok, $res) = run($sql);
	if (!$ok) { $errors++; usleep(200_000); next; }
	my @rows = grep { length } split /\n/, $res;
	for my $row (@rows) {
		my ($pos, $ch) = split / /, $row;
		if ($pos <= $last) { $dups++; next; }   # next() again after a lost ack: dedupe by pos
		print $out "$pos $ch\n";
		$last = $pos;
	}
	run("SELECT outbox.ack('$name', $last)") if $mode eq 'next' && @rows;   # a failed ack: they come again
	last if !@rows && $stop_before;
}
print $out "done errors=$errors dups=$dups\n";
EOF
close $fh;
my %consumers = (
	all    => [ 'wait', 'NULL',            'w_all' ],
	orders => [ 'wait', "ARRAY['orders']", 'w_orders' ],
	named  => [ 'next', "ARRAY['orders']", 'billing' ],);
my %handles;
for my $c (sort keys %consumers) {
	my ($mode, $ch, $name) = @{ $consumers{$c} };
	$handles{$c} = IPC::Run::start([ 'perl', $consumer, $mode, $ch, $name, $bconn, "$dir/out_$c", "$dir/stop", $psql ],
		'<', \undef, '>', "$dir/consumer_$c.log", '2>&1');
}

# ---- producers through pgbouncer: 3 x 150 transactions of two events ----
my $producer = "$dir/producer.pl";
open $fh, '>', $producer or die;
print $fh <<'EOF';
use strict; use warnings; use Time::HiRes qw(usleep);
my ($p, $n, $conn, $outfile, $psql) = @ARGV;
open my $out, '>>', $outfile or die; $out->autoflush(1);
for my $i (1 .. $n) {
	for (1 .. 100) {
		my $r = `$psql -XAtq -d '$conn' -c "SELECT outbox.publish('orders', '{\\"p\\": $p, \\"i\\": $i}'), outbox.publish('audit', '{\\"p\\": $p, \\"i\\": $i}')" 2>/dev/null`;
		if ($? == 0) { print $out "$p $i\n"; last; }   # committed, as far as the producer knows
		usleep(200_000);   # not known: try again (a retried event may then be stored twice)
	}
}
EOF
close $fh;
my @producers = map {
	IPC::Run::start([ 'perl', $producer, $_, 150, $bconn, "$dir/acked_$_", $psql ], '<', \undef, '>', \my $o, '2>&1')
} 1 .. 3;

# ---- SIGKILL the drain worker three times meanwhile ----
sub worker_pid {
	# eval: after a SIGKILL the server restarts all its processes and refuses connections for a
	# moment; psql then exits before reading its input and IPC::Run dies with "Broken pipe"
	my ($rc, $pid) = eval { $node->psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'") };
	return defined $rc && $rc == 0 && defined $pid && $pid =~ /^\d+$/ ? $pid : undef;
}
my $kills = 0;
for my $k (1 .. 3) {
	my $t0 = time;
	my $pid;
	until (($pid = worker_pid()) || time - $t0 > 60) { usleep(100_000) }
	last unless $pid;
	usleep(1_500_000);
	$kills++ if kill 'KILL', $pid;
}
is($kills, 3, 'the drain worker was SIGKILLed three times while producers published');
$_->finish for @producers;
my $acked = 0;
$acked += () = slurp_file("$dir/acked_$_") =~ /\n/g for 1 .. 3;
is($acked, 450, 'every producer transaction was eventually acknowledged');

# everything published (the worker is back and has drained the outbox), then the consumers stop
my $t0 = time;
my $drained = 0;
while (time - $t0 < 120) {
	my ($rc, $o) = eval { $node->psql('postgres', 'SELECT count(*) = 0 FROM outbox.pending') };
	if (defined $rc && $rc == 0 && $o eq 't') { $drained = 1; last; }
	usleep(200_000);
}
ok($drained, 'the outbox is drained after the kills');
open $fh, '>', "$dir/stop" or die;
close $fh;
$_->finish for values %handles;

# ---- what each consumer got ----
my %want = (
	all    => $node->safe_psql('postgres', "SELECT string_agg(pos || ' ' || channel, E'\\n' ORDER BY pos) FROM outbox.history"),
	orders => $node->safe_psql('postgres',
		"SELECT string_agg(pos || ' ' || channel, E'\\n' ORDER BY pos) FROM outbox.history WHERE channel = 'orders'"),);
$want{named} = $want{orders};
for my $c (sort keys %consumers) {
	my $got = slurp_file("$dir/out_$c");
	my ($stats) = $got =~ /^(done .*)$/m;
	ok(defined $stats, "consumer $c finished") or diag(slurp_file("$dir/consumer_$c.log"));
	$got =~ s/^done .*\n//m;
	chomp $got;
	my @pos = map { (split / /)[0] } split /\n/, $got;
	my %seen;
	my $dup = grep { $seen{$_}++ } @pos;
	is($dup, 0, "consumer $c: no event delivered twice");
	is(join(',', @pos), join(',', sort { $a <=> $b } @pos), "consumer $c: in position order");
	is($got, $want{$c}, "consumer $c: every event of its channels, nothing else");
	diag("consumer $c: " . scalar(@pos) . ' events, ' . ($stats // 'unfinished') . ' (errors: failed calls, retried)');
}
# every acknowledged producer transaction is in the history (a retried one possibly twice)
my $stored = $node->safe_psql('postgres',
	"SELECT count(DISTINCT (payload->>'p', payload->>'i')) FROM outbox.history WHERE channel = 'orders'");
is($stored, 450, 'every acknowledged transaction of the producers was published');
like(slurp_file($node->logfile), qr/background worker "pg_outbox drain" \(PID \d+\) was terminated by signal 9/,
	'the server log shows the worker killed');

$bouncer->kill_kill;
$node->stop;
done_testing();
