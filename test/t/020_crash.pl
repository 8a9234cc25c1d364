# Crash safety of the drain (DESIGN.md decisions 2 and 3) under load:
#   phase 1: concurrent producers commit events while the drain worker is SIGKILLed over
#            and over (each SIGKILL makes the postmaster reset the whole cluster: every
#            backend dies and crash recovery runs, so producers reconnect and retry);
#   phase 2: more events while the server is shut down with "immediate" and restarted,
#            twice.
# Afterwards: every acknowledged event (its commit returned to the producer) is in
# outbox.history exactly once, nothing is left pending, pos is exactly 1..N (no gap, no
# repeat) and seq is 1..n per channel. A listener cannot stay connected across a cluster
# reset, so delivery is checked through the history the NOTIFYs committed with.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use POSIX ();
use IPC::Run ();

# 4 producers x 12,500 transactions x 1 event = 50,000 events (40,000 in phase 1).
my $producers = 4;
my $per_tx = 1;
my $tx_phase1 = 10000;
my $tx_phase2 = 2500;
my $channels = 3;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
restart_after_crash = on
max_connections = 20
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'"),
	'drain worker running');

my $dir = PostgreSQL::Test::Utils::tempdir;
my $connstr = $node->connstr('postgres');
my $psql = $node->installed_command('psql');

# A producer (a child process): commits transactions first_tx..last_tx, each publishing
# $per_tx events, through psql. psql prints "ack <tx> <ids>" only once the transaction has
# committed; the ids are appended to acks_<p>. When the server goes away psql exits: the
# producer reconnects (retrying until the server accepts connections again) and goes on
# with the first transaction that was not acknowledged.
sub producer {
	my ($p, $first_tx, $last_tx, $deadline) = @_;
	open my $acks, '>>', "$dir/acks_$p" or die;
	$acks->autoflush(1);
	my $next = $first_tx;
	while ($next <= $last_tx && time < $deadline) {
		open my $fh, '>', "$dir/script_$p.sql" or die;
		for my $k ($next .. $last_tx) {
			print $fh "SELECT 'ack $k ' || string_agg(outbox.publish('ch' || ((g + $k + $p) % $channels), "
			  . "jsonb_build_object('p', $p, 'k', $k, 'g', g))::text, ',') FROM generate_series(1, $per_tx) g;\n";
			# a little throttle, so that the run lasts long enough for many SIGKILLs
			print $fh "SELECT pg_sleep(0.01) \\g /dev/null\n" if $k % 20 == 0;
		}
		close $fh;
		my ($out, $err) = ('', '');
		IPC::Run::run([ $psql, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $connstr, '-f', "$dir/script_$p.sql" ],
			'>', \$out, '2>', \$err);
		for my $line (split /\n/, $out) {
			next unless $line =~ /^ack (\d+) ([\d,]+)$/;
			die "producer $p: ack for $1, expected $next" unless $1 == $next;
			print $acks "$2\n";
			$next = $1 + 1;
		}
		usleep(50_000) if $next <= $last_tx;
	}
	close $acks;
	POSIX::_exit($next > $last_tx ? 0 : 1);
}

sub start_producers {
	my ($first_tx, $last_tx) = @_;
	my %kids;
	for my $p (1 .. $producers) {
		my $pid = fork();
		die "fork: $!" unless defined $pid;
		if ($pid == 0) {
			producer($p, $first_tx, $last_tx, time + 150);
		}
		$kids{$pid} = $p;
	}
	return \%kids;
}

# Reap finished producers; returns how many are still running. Records failures.
my $producer_failures = 0;
sub reap {
	my ($kids) = @_;
	for my $pid (keys %$kids) {
		my $r = waitpid($pid, POSIX::WNOHANG());
		next if $r == 0;
		$producer_failures++ if $? != 0;
		delete $kids->{$pid};
	}
	return scalar keys %$kids;
}

# The drain workers among the postmaster's children (found through /proc: other clusters
# on the machine run processes of the same name).
sub drain_worker_pids {
	open my $fh, '<', $node->data_dir . '/postmaster.pid' or return ();
	my $pm = <$fh>;
	close $fh;
	chomp $pm;
	my @pids;
	opendir my $proc, '/proc' or die;
	for my $pid (grep { /^\d+$/ } readdir $proc) {
		open my $st, '<', "/proc/$pid/stat" or next;
		my $stat = <$st> // '';
		close $st;
		next unless $stat =~ /^\d+ \(.*\) \S (\d+) /s && $1 == $pm;
		open my $cl, '<', "/proc/$pid/cmdline" or next;
		my $cmd = <$cl> // '';
		close $cl;
		push @pids, $pid if $cmd =~ /pg_outbox drain worker/;
	}
	closedir $proc;
	return @pids;
}

# ---------------------------------------------------------------------------------------
# phase 1: SIGKILL the drain worker 200 ms after each one shows up, while producers commit
# ---------------------------------------------------------------------------------------
my $t_start = time;
my $kids = start_producers(1, $tx_phase1);
my ($kills, %first_seen, %killed) = (0);
while (reap($kids) > 0) {
	for my $w (drain_worker_pids()) {
		next if $killed{$w};
		$first_seen{$w} //= time;
		if (time - $first_seen{$w} >= 0.2 && kill 'KILL', $w) {
			$killed{$w} = 1;
			$kills++;
		}
	}
	usleep(50_000);
}
my $t_phase1 = time - $t_start;
note sprintf('phase 1: %d events committed in %.1f s with %d SIGKILLs of the drain worker',
	$producers * $tx_phase1 * $per_tx, $t_phase1, $kills);
is($producer_failures, 0, 'phase 1: every producer got all its transactions acknowledged');
cmp_ok($kills, '>=', 8, 'the drain worker was SIGKILLed repeatedly during phase 1');

# ---------------------------------------------------------------------------------------
# phase 2: immediate shutdown + restart under load, twice
# ---------------------------------------------------------------------------------------
$t_start = time;
$kids = start_producers($tx_phase1 + 1, $tx_phase1 + $tx_phase2);
for my $round (1 .. 2) {
	usleep(700_000);
	$node->stop('immediate');
	$node->start;
}
usleep(50_000) while reap($kids) > 0;
note sprintf('phase 2: %d more events in %.1f s with 2 immediate shutdowns',
	$producers * $tx_phase2 * $per_tx, time - $t_start);
is($producer_failures, 0, 'phase 2: every producer got all its transactions acknowledged');

# ---------------------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------------------
$t_start = time;
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM outbox.pending'),
	'the worker catches up: nothing left pending');
note sprintf('caught up %.1f s after the last producer', time - $t_start);

my %acked;
for my $p (1 .. $producers) {
	for my $line (split /\n/, slurp_file("$dir/acks_$p")) {
		$acked{$_}++ for split /,/, $line;
	}
}
is(scalar keys %acked, $producers * ($tx_phase1 + $tx_phase2) * $per_tx, 'all 50,000 events were acknowledged');

my %in_history;
$in_history{$_}++ for split /\n/, $node->safe_psql('postgres', 'SELECT id FROM outbox.history');
my @missing = grep { !$in_history{$_} } keys %acked;
my @twice = grep { $in_history{$_} > 1 } keys %in_history;
is(scalar @missing, 0, 'every acknowledged event is in the history') or diag "missing ids: @missing[0 .. 9]";
is(scalar @twice, 0, 'no event is in the history twice') or diag "ids twice: @twice[0 .. 9]";
my $unacked = scalar(keys %in_history) - scalar(grep { $in_history{$_} } keys %acked);
note "$unacked published events had been committed but not acknowledged (their producer retried them)";

my ($n, $npos, $minpos, $maxpos, $last_pos) = split /\|/,
  $node->safe_psql('postgres',
	'SELECT count(*), count(DISTINCT pos), min(pos), max(pos), (SELECT last_pos FROM outbox.state) FROM outbox.history');
is($npos, $n, 'no pos repeats');
is("$minpos..$maxpos", "1..$n", 'pos is exactly 1..N: no gap');
is($last_pos, $n, 'outbox.state.last_pos = N');

is($node->safe_psql('postgres',
		"SELECT string_agg(channel || ':' || (n = nseq AND n = maxseq AND minseq = 1 AND n = last_seq), ' ' ORDER BY channel) FROM ("
		  . "SELECT h.channel, count(*) AS n, count(DISTINCT seq) AS nseq, min(seq) AS minseq, max(seq) AS maxseq, c.last_seq "
		  . "FROM outbox.history h JOIN outbox.channels c USING (channel) GROUP BY h.channel, c.last_seq) s"),
	'ch0:true ch1:true ch2:true', 'seq is exactly 1..n on every channel, and outbox.channels agrees');

# positions follow the drain's commit order: within a channel, seq grows with pos
is($node->safe_psql('postgres',
		'SELECT count(*) FROM (SELECT seq - lag(seq) OVER (PARTITION BY channel ORDER BY pos) AS step '
		  . 'FROM outbox.history) s WHERE step <> 1'),
	'0', 'within a channel, seq grows by one with every pos');

my $log = slurp_file($node->logfile);
my $killed = () = $log =~ /background worker "pg_outbox drain" \(PID \d+\) was terminated by signal 9/g;
cmp_ok($killed, '>=', 8, "the server log shows the worker SIGKILLed ($killed times)");
unlike($log, qr/ERROR: /, 'no ERROR in the server log (no duplicate key, no failed drain)');

$node->stop;
done_testing();
