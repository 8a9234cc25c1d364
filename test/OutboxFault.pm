# OutboxFault — what the fault TAP tests (t/110-119) share: producers that record which events
# were acknowledged (their COMMIT returned), and the verdict every fault test asserts:
#   every acknowledged event is published exactly once, positions are 1..N with no gap and no
#   repeat, nothing rolled back is published, nothing is left pending (recovery needed no
#   manual step).
package OutboxFault;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use POSIX ();
use IPC::Run ();

our @EXPORT_OK = qw(start_producers reap_producers wait_producers acked_ids verdict poll_until drop_rolled_back);

# poll_until($node, $db, $sql, $timeout): polls until $sql returns 't'; undef on timeout.
# Connection failures (a server restarting) count as "not yet".
sub poll_until {
	my ($node, $db, $sql, $timeout) = @_;
	my $deadline = time + ($timeout // 60);
	while (time < $deadline) {
		# psql may exit before it has read its input (a server in crash recovery refuses the
		# connection): IPC::Run then dies with "Broken pipe"; that is one more failed try.
		my ($rc, $out) = eval { $node->psql($db, $sql) };
		return 1 if defined $rc && $rc == 0 && defined $out && $out eq 't';
		usleep(100_000);
	}
	return undef;
}

# A producer process: transactions first..last, each publishing $per_tx events on a few
# channels and then, every 5th transaction, one more event in a savepoint that rolls back and
# one transaction that rolls back entirely (payload "rb": true: must never be published).
# psql prints "ack <tx> <ids>" once the COMMIT returned; ids go to $dir/acks_<p>. On a lost
# connection the producer reconnects until $deadline and goes on with the first transaction
# that was not acknowledged.
sub _producer {
	my (%o) = @_;
	my ($p, $dir) = ($o{id}, $o{dir});
	open my $acks, '>>', "$dir/acks_$p" or die;
	$acks->autoflush(1);
	my $next = $o{first};
	my $psql = $o{node}->installed_command('psql');
	my $connstr = $o{node}->connstr($o{db}) . " application_name=producer_$p";
	while ($next <= $o{last} && time < $o{deadline}) {
		open my $fh, '>', "$dir/script_$p.sql" or die;
		for my $k ($next .. $o{last}) {
			print $fh "BEGIN;\n";
			print $fh "SELECT 'ack_ids $k ' || string_agg(outbox.publish('ch' || ((g + $k + $p) % 3), "
			  . "jsonb_build_object('p', $p, 'k', $k, 'g', g))::text, ',') FROM generate_series(1, $o{per_tx}) g;\n";
			if ($k % 5 == 0) {
				print $fh "SAVEPOINT s;\nSELECT outbox.publish('ch0', '{\"rb\": true}') \\g /dev/null\nROLLBACK TO s;\n";
			}
			print $fh "COMMIT;\nSELECT 'ack $k';\n";
			print $fh "BEGIN;\nSELECT outbox.publish('ch1', '{\"rb\": true}') \\g /dev/null\nROLLBACK;\n" if $k % 5 == 1;
			print $fh "SELECT pg_sleep($o{sleep}) \\g /dev/null\n" if $o{sleep} && $k % 10 == 0;
		}
		close $fh;
		my ($out, $err) = ('', '');
		IPC::Run::run([ $psql, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $connstr, '-f', "$dir/script_$p.sql" ],
			'>', \$out, '2>', \$err);
		my $ids;
		for my $line (split /\n/, $out) {
			if ($line =~ /^ack_ids (\d+) ([\d,]+)$/) {
				$ids = [ $1, $2 ];
				next;
			}
			next unless $line =~ /^ack (\d+)$/;
			die "producer $p: ack for $1, expected $next" unless $1 == $next && $ids && $ids->[0] == $1;
			print $acks "$ids->[1]\n";
			$next = $1 + 1;
		}
		usleep(100_000) if $next <= $o{last};
	}
	close $acks;
	POSIX::_exit($next > $o{last} ? 0 : 1);
}

# start_producers(node => , db => , dir => , producers => 4, first => 1, last => 1000,
#                 per_tx => 1, sleep => 0.01, deadline => time + 150): { pid => p }
sub start_producers {
	my (%o) = @_;
	my %kids;
	for my $p (1 .. ($o{producers} // 4)) {
		my $pid = fork();
		die "fork: $!" unless defined $pid;
		if ($pid == 0) {
			_producer(%o, id => $p, per_tx => $o{per_tx} // 1, deadline => $o{deadline} // time + 150);
		}
		$kids{$pid} = $p;
	}
	return \%kids;
}

# Reap finished producers; returns how many still run. $$failures counts those that gave up.
sub reap_producers {
	my ($kids, $failures) = @_;
	for my $pid (keys %$kids) {
		my $r = waitpid($pid, POSIX::WNOHANG());
		next if $r == 0;
		$$failures++ if $? != 0;
		delete $kids->{$pid};
	}
	return scalar keys %$kids;
}

sub wait_producers {
	my ($kids, $failures) = @_;
	usleep(50_000) while reap_producers($kids, $failures) > 0;
}

# The acknowledged event ids of every producer: { id => times acknowledged }.
sub acked_ids {
	my ($dir, $producers) = @_;
	my %acked;
	for my $p (1 .. $producers) {
		next unless -e "$dir/acks_$p";
		for my $line (split /\n/, slurp_file("$dir/acks_$p")) {
			$acked{$_}++ for split /,/, $line;
		}
	}
	return \%acked;
}

# verdict($node, $db, $acked, $expected_count, $label): the assertions every fault test makes.
# Waits (with a deadline) for the worker to publish everything first.
sub verdict {
	my ($node, $db, $acked, $expected, $label) = @_;
	ok(poll_until($node, $db, 'SELECT count(*) = 0 FROM outbox.pending', 180),
		"$label: nothing left pending (recovered without a manual step)");
	is(scalar keys %$acked, $expected, "$label: all $expected events were acknowledged") if defined $expected;
	my %in_history;
	$in_history{$_}++ for split /\n/, $node->safe_psql($db, 'SELECT id FROM outbox.history');
	my @missing = grep { !$in_history{$_} } keys %$acked;
	my @twice = grep { $in_history{$_} > 1 } keys %in_history;
	is(scalar @missing, 0, "$label: every acknowledged event is published") or diag "missing: @missing[0 .. 9]";
	is(scalar @twice, 0, "$label: no event is published twice") or diag "twice: @twice[0 .. 9]";
	is($node->safe_psql($db, q{SELECT count(*) FROM outbox.history WHERE payload @> '{"rb": true}'}), '0',
		"$label: nothing rolled back is published");
	my ($n, $npos, $minpos, $maxpos, $last_pos) = split /\|/,
	  $node->safe_psql($db,
		'SELECT count(*), count(DISTINCT pos), coalesce(min(pos), 0), coalesce(max(pos), 0), '
		  . '(SELECT last_pos FROM outbox.state) FROM outbox.history');
	is($npos, $n, "$label: no pos repeats");
	is("$minpos..$maxpos", ($n ? 1 : 0) . "..$n", "$label: pos is exactly 1..N, no gap");
	is($last_pos, $n, "$label: outbox.state.last_pos = N");
	is($node->safe_psql($db,
			'SELECT count(*) FROM (SELECT seq - lag(seq) OVER (PARTITION BY channel ORDER BY pos) AS step, '
			  . 'min(seq) OVER (PARTITION BY channel) AS first FROM outbox.history) s WHERE step <> 1 OR first <> 1'),
		'0', "$label: seq is 1..n on every channel, in pos order");
	return $n;
}

# drop_rolled_back($node, $db, $round): BEGIN; DROP EXTENSION pg_outbox CASCADE; ROLLBACK in one
# psql, noted with its time and messages; returns (whether psql succeeded, its stderr).
sub drop_rolled_back {
	my ($node, $db, $round) = @_;
	my ($out, $err) = ('', '');
	my $t0 = time;
	my $ok = IPC::Run::run([ $node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr($db),
			'-c', 'BEGIN', '-c', 'DROP EXTENSION pg_outbox CASCADE', '-c', 'ROLLBACK' ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	note sprintf('round %d: %.2f s; %s', $round, time - $t0, $err =~ s/\n/ /gr);
	return ($ok, $err);
}

1;
