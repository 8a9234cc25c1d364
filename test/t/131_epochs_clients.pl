# [epochs2] Positions that survive failover, the client side (issue #13): pg_outbox_listen and the
# Python client (subscribe_sync) restarted on their saved state files after
#   (a) an unplanned failover to an asynchronous standby with events in flight: a consumer beyond
#       the preserved point exits with code 8 (Python: ResyncRequired naming the first reissued
#       position), one at or before it continues with no loss and no duplicate;
#   (b) a failover to a synchronous standby and (c) a planned switchover: no divergence;
#   (d) a pg_dump restored into a new database and (e) DROP + CREATE EXTENSION (also while the
#       listener is connected): detected from the saved state;
#   (f) --resync: continues after the head, says so, rewrites the state file.
# The setups are those of t/130_epochs_failover.pl. Every wait polls with a deadline.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $listen = $ENV{PG_OUTBOX_LISTEN} or plan skip_all => 'PG_OUTBOX_LISTEN is not set (run through test/run_tests.sh)';
my $conf = "shared_preload_libraries = 'pg_outbox'\npg_outbox.idle_interval = '200ms'\n";

# The Python client, if its packages are there (test/setup.sh installs python3-psycopg)
my $pydir = "$ENV{TESTDIR}/../clients/python";
my $python = -d $pydir && system('/usr/bin/python3', '-c', 'import psycopg') == 0;
diag('the Python client is not testable here (no clients/python or no psycopg): its cases are skipped') unless $python;
my $pyscript = PostgreSQL::Test::Utils::tempdir() . '/consume.py';
open(my $fh, '>', $pyscript) or die;
print $fh <<'EOF';
# consume.py DSN STATE WANT TIMEOUT [after]: print up to WANT events of "orders" (from the state
# file), then stop; ResyncRequired -> its fields on stderr, exit 8
import json, sys, threading
import pg_outbox
dsn, state, want, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sub = pg_outbox.subscribe_sync(dsn, ["orders"], after=0, state_file=state, max_backoff=1)
threading.Timer(timeout, sub.stop).start()
n = 0
try:
    with sub:
        if want > 0:
            for ev in sub:
                print(json.dumps({"pos": ev.pos, "epoch": ev.epoch, "tag": ev.payload.get("tag")}), flush=True)
                n += 1
                if n >= want:
                    sub.ack()
                    break
        else:  # connect, replay what there is, and stop
            sub.stop()
            for ev in sub:
                pass
except pg_outbox.ResyncRequired as e:
    print("ResyncRequired sqlstate=%s position=%s epoch=%s first_reissued=%s diverged=%s: %s"
          % (e.sqlstate, e.position, e.epoch, e.first_reissued, e.diverged, e), file=sys.stderr, flush=True)
    sys.exit(8)
finally:
    for t in threading.enumerate():
        if isinstance(t, threading.Timer):
            t.cancel()
EOF
close($fh);

sub drained { # wait until the drain worker has published everything
	my ($node, $db) = @_;
	$db //= 'postgres';
	my $t0 = time;
	until ($node->safe_psql($db, 'SELECT count(*) FROM outbox.pending') == 0) {
		die "the drain worker did not publish within 60 s" if time - $t0 > 60;
		usleep(50_000);
	}
	return $node->safe_psql($db, 'SELECT outbox.head()');
}

sub publish {
	my ($node, $n, $tag, $db) = @_;
	$node->safe_psql($db // 'postgres',
		"SELECT outbox.publish('orders', jsonb_build_object('tag', '$tag', 'n', g)) FROM generate_series(1, $n) g");
	return drained($node, $db);
}

sub pair { # a primary with a streaming standby
	my ($name, %opt) = @_;
	my $p = PostgreSQL::Test::Cluster->new("${name}_p");
	$p->init(allows_streaming => 1);
	$p->append_conf('postgresql.conf', $conf);
	$p->start;
	$p->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
	publish($p, 10, 'first');
	$p->backup('b');
	my $s = PostgreSQL::Test::Cluster->new("${name}_s");
	$s->init_from_backup($p, 'b', has_streaming => 1);
	$s->append_conf('postgresql.conf', "cluster_name = '${name}_s'\n");
	$s->start;
	$p->wait_for_catchup($s);
	return ($p, $s);
}

# pg_outbox_listen on channel orders with a state file: until it has printed $want lines and is
# live, or it exits; then SIGTERM. (exit code, stdout, stderr)
sub listener {
	my ($node, $db, $state, $want, @opt) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ $listen, $node->connstr($db), '-c', 'orders', '--state', $state, '--max-backoff', '1', @opt ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
	my $deadline = time + 60;
	while (time < $deadline) {
		eval { $h->pump_nb };
		last unless $h->pumpable;
		my $n = () = $out =~ /\n/g;
		last if $n >= $want && $err =~ /state=live/;
		usleep(50_000);
	}
	$h->signal('TERM') if $h->pumpable;
	eval { $h->finish };
	return ($h->result(0), $out, $err);
}

# The Python client (consume.py): (exit code, stdout, stderr)
sub pyconsumer {
	my ($node, $db, $state, $want) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PYTHONPATH} = $pydir;
	IPC::Run::run([ '/usr/bin/python3', $pyscript, $node->connstr($db), $state, $want, 30 ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(90));
	return ($? >> 8, $out, $err);
}

sub positions { # the positions of the lines (listener or consume.py), in order
	my ($out) = @_;
	return map { /"pos":\s*(\d+)/ ? $1 : () } split /\n/, $out;
}

sub range_ok { # lines are exactly positions $from .. $to, each once, in order
	my ($out, $from, $to, $what) = @_;
	my @got = positions($out);
	my @want = $from <= $to ? ($from .. $to) : ();
	is_deeply(\@got, \@want, "$what: positions $from to $to, each once, in order")
		or diag('got ' . scalar(@got) . ' lines: ' . join(',', @got[0 .. ($#got < 9 ? $#got : 9)]) . '...');
}

sub state_of { # (pos, epoch, identity) of a state file
	my ($file) = @_;
	my $s = slurp_file($file);
	my ($pos) = $s =~ /^pos (\d+)$/m;
	my ($epoch) = $s =~ /^epoch (\d+)$/m;
	my ($id) = $s =~ /^identity (\S+)$/m;
	return ($pos, $epoch, $id);
}

my $dir = PostgreSQL::Test::Utils::tempdir();

# ---- (a) unplanned failover to an asynchronous standby, events in flight; (f) --resync ----
{
	my ($p, $s) = pair('async');
	my $h1 = publish($p, 40, 'kept');
	$p->wait_for_catchup($s);
	my $id = $p->safe_psql('postgres', 'SELECT outbox.identity()');
	# consumers at the point the standby will keep
	my ($rc, $out, $err) = listener($p, 'postgres', "$dir/at.state", $h1, '--from-pos', '0');
	range_ok($out, 1, $h1, 'listener "at" before the failover');
	is_deeply([ state_of("$dir/at.state") ], [ $h1, 1, $id ], 'its state file: position, epoch 1, identity');
	append_to_file("$dir/old.state", "pg_outbox_listen state 1\npos $h1\n"); # an older listener's file
	if ($python) {
		($rc, $out, $err) = pyconsumer($p, 'postgres', "$dir/py_at.state", $h1);
		range_ok($out, 1, $h1, 'Python "at" before the failover');
		is_deeply([ state_of("$dir/py_at.state") ], [ $h1, 1, $id ], 'its state file: the same format');
	}

	# the standby falls behind, the primary publishes on; consumers beyond the preserved point
	$s->stop('fast');
	my $h2 = publish($p, 30, 'lost');
	copy_state("$dir/at.state", "$dir/beyond.state");
	($rc, $out, $err) = listener($p, 'postgres', "$dir/beyond.state", $h2 - $h1);
	range_ok($out, $h1 + 1, $h2, 'listener "beyond" before the failover');
	copy_state("$dir/beyond.state", "$dir/resync.state");
	if ($python) {
		($rc, $out, $err) = pyconsumer($p, 'postgres', "$dir/py_beyond.state", $h2);
		range_ok($out, 1, $h2, 'Python "beyond" before the failover');
	}

	$p->stop('immediate');
	$s->start;
	$s->promote;
	$s->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die;
	my $h3 = publish($s, 50, 'new');
	cmp_ok($h3, '>', $h2, "the promoted standby handed out positions up to $h3 again (it had $h1, the old primary $h2)");

	($rc, $out, $err) = listener($s, 'postgres', "$dir/beyond.state", 1);
	is($rc, 8, 'listener beyond the preserved point: exit code 8') or diag($err);
	is($out, '', '... having printed nothing');
	like($err, qr/position $h2 of epoch 1 was not preserved: positions from @{[$h1 + 1]} on were handed out again in epoch 2 \(timeline changed from 1 to 2/,
	     '... the message names the first reissued position and why');
	like($err, qr/the events printed at positions @{[$h1 + 1]} to $h2 were lost/, '... and what was lost');
	like($err, qr/resynchronise.*--resync/, '... and what to do');
	like($err, qr/server: .*OB003|cannot replay after position $h2 of epoch 1/, '... with the server\'s message');
	is_deeply([ state_of("$dir/beyond.state") ], [ $h2, 1, $id ], '... its state file is unchanged (a restart says the same)');
	($rc) = listener($s, 'postgres', "$dir/beyond.state", 1);
	is($rc, 8, '... and says it again when restarted');

	($rc, $out, $err) = listener($s, 'postgres', "$dir/at.state", $h3 - $h1);
	is($rc, 0, 'listener at the preserved point continues (stopped by SIGTERM)') or diag($err);
	range_ok($out, $h1 + 1, $h3, '... no loss, no duplicate');
	unlike($out, qr/"tag":"lost"/, '... only events of the new history');
	unlike($err, qr/not preserved|state=resync/, '... and no divergence reported');
	is_deeply([ state_of("$dir/at.state") ], [ $h3, 2, $id ], '... its state file adopted epoch 2');

	($rc, $out, $err) = listener($s, 'postgres', "$dir/old.state", $h3 - $h1);
	is($rc, 0, 'listener with a version 1 state file at the preserved point continues') or diag($err);
	range_ok($out, $h1 + 1, $h3, '... no loss, no duplicate');
	like($err, qr/version 1/, '... saying the first replay cannot be checked');
	is_deeply([ state_of("$dir/old.state") ], [ $h3, 2, $id ], '... and rewrote the file in version 2');

	if ($python) {
		($rc, $out, $err) = pyconsumer($s, 'postgres', "$dir/py_beyond.state", 1);
		is($rc, 8, 'Python beyond the preserved point: ResyncRequired') or diag($err);
		is($out, '', '... delivering nothing');
		like($err, qr/sqlstate=OB003 position=$h2 epoch=1 first_reissued=@{[$h1 + 1]} diverged=True/,
		     '... with the first reissued position');
		like($err, qr/positions from @{[$h1 + 1]} on were handed out again in epoch 2/, '... in the message too');
		($rc, $out, $err) = pyconsumer($s, 'postgres', "$dir/py_at.state", $h3 - $h1);
		is($rc, 0, 'Python at the preserved point continues (an epoch change with the position kept is no error)')
			or diag($err);
		range_ok($out, $h1 + 1, $h3, '... no loss, no duplicate');
		like((split /\n/, $out)[0] // '', qr/"epoch": 2/, '... the events carry epoch 2');
		is_deeply([ state_of("$dir/py_at.state") ], [ $h3, 2, $id ], '... its state file adopted epoch 2');
	}

	# (f) --resync: continue after the head, say so, rewrite the state file
	my $h4;
	{
		my ($out2, $err2) = ('', '');
		my $h = IPC::Run::start([ $listen, $s->connstr('postgres'), '-c', 'orders', '--state', "$dir/resync.state",
			'--resync', '--max-backoff', '1' ], '<', \undef, '>', \$out2, '2>', \$err2, IPC::Run::timeout(120));
		my $deadline = time + 60;
		until ($err2 =~ /state=live/ || time > $deadline || !$h->pumpable) { eval { $h->pump_nb }; usleep(50_000) }
		like($err2, qr/state=resync from_pos=$h2: position $h2 of epoch 1 was not preserved.*continuing after the current head/,
		     '--resync: says it resynchronises, and why');
		like($err2, qr/starting from now: after position $h3/, '... from the current head');
		like($err2, qr/state=live pos=$h3 epoch=2 resyncs=1/, '... and its status line says so');
		is_deeply([ state_of("$dir/resync.state") ], [ $h3, 2, $id ], '... the state file was rewritten');
		$h4 = publish($s, 3, 'after-resync');
		$deadline = time + 60;
		until ((() = $out2 =~ /\n/g) >= 3 || time > $deadline) { eval { $h->pump_nb }; usleep(50_000) }
		$h->signal('TERM');
		eval { $h->finish };
		is($h->result(0), 0, '... it continued and stopped cleanly on SIGTERM');
		range_ok($out2, $h3 + 1, $h4, '... printing the new events');
		like($err2, qr/state=stopped pos=$h4 doorbells=\d+ resyncs=1/, '... counting the resync');
		is_deeply([ state_of("$dir/resync.state") ], [ $h4, 2, $id ], '... and saving them');
	}
	$s->stop;
}

# ---- (b) synchronous standby and (c) planned switchover: no divergence, the consumers continue ----
for my $case ('sync', 'switch') {
	my ($p, $s) = pair($case);
	if ($case eq 'sync') {
		$p->append_conf('postgresql.conf', "synchronous_standby_names = 'sync_s'\n");
		$p->reload;
		$p->poll_query_until('postgres', "SELECT sync_state = 'sync' FROM pg_stat_replication") or die;
	}
	my $h1 = publish($p, 40, 'acked');
	my ($rc, $out, $err) = listener($p, 'postgres', "$dir/$case.state", $h1, '--from-pos', '0');
	range_ok($out, 1, $h1, "$case: listener before");
	if ($python) {
		($rc, $out, $err) = pyconsumer($p, 'postgres', "$dir/py_$case.state", $h1);
		range_ok($out, 1, $h1, "$case: Python before");
	}
	$p->stop($case eq 'sync' ? 'immediate' : 'fast'); # a clean shutdown sends the standby all WAL first
	$s->promote;
	$s->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die;
	is($s->safe_psql('postgres', 'SELECT outbox.head()'), $h1, "$case: every published event is on the new primary");
	my $h2 = publish($s, 5, 'after');
	($rc, $out, $err) = listener($s, 'postgres', "$dir/$case.state", $h2 - $h1);
	is($rc, 0, "$case: the listener continues") or diag($err);
	range_ok($out, $h1 + 1, $h2, "$case: listener after");
	unlike($err, qr/not preserved|state=resync|must resynchronise/, "$case: no divergence reported");
	is((state_of("$dir/$case.state"))[1], 2, "$case: the listener adopted epoch 2");
	if ($python) {
		($rc, $out, $err) = pyconsumer($s, 'postgres', "$dir/py_$case.state", $h2 - $h1);
		is($rc, 0, "$case: the Python client continues") or diag($err);
		range_ok($out, $h1 + 1, $h2, "$case: Python after");
		is((state_of("$dir/py_$case.state"))[1], 2, "$case: the Python client adopted epoch 2");
	}
	$s->stop;
}

# ---- (d) pg_dump restored into a new database; (e) DROP + CREATE EXTENSION ----
{
	my $n = PostgreSQL::Test::Cluster->new('dump');
	$n->init;
	$n->append_conf('postgresql.conf', $conf);
	$n->start;
	$n->safe_psql('postgres', 'CREATE DATABASE src');
	$n->safe_psql('src', 'CREATE EXTENSION pg_outbox');
	my $h1 = publish($n, 12, 'src', 'src');
	my $id = $n->safe_psql('src', 'SELECT outbox.identity()');
	my ($rc, $out, $err) = listener($n, 'src', "$dir/d_at.state", $h1, '--from-pos', '0');
	range_ok($out, 1, $h1, 'dump: listener "at" on the source');
	pyconsumer($n, 'src', "$dir/py_d_at.state", $h1) if $python;
	my $dump = $n->basedir . '/src.dump';
	$n->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $n->connstr('src') ], 'pg_dump of the database');
	my $h2 = publish($n, 1, 'lost', 'src');
	($rc, $out, $err) = listener($n, 'src', "$dir/d_beyond.state", $h2, '--from-pos', '0');
	range_ok($out, 1, $h2, 'dump: listener "beyond" on the source (saw the event published after the dump)');
	pyconsumer($n, 'src', "$dir/py_d_beyond.state", $h2) if $python;
	$n->safe_psql('postgres', 'CREATE DATABASE copy');
	$n->command_ok([ 'pg_restore', '-d', $n->connstr('copy'), $dump ], 'pg_restore into a new database');
	my $h3 = publish($n, 3, 'copy', 'copy');

	($rc, $out, $err) = listener($n, 'copy', "$dir/d_beyond.state", 1);
	is($rc, 8, 'restored copy: the listener that saw a lost event exits 8') or diag($err);
	like($err, qr/positions from @{[$h1 + 1]} on were handed out again in epoch \d+ \(database OID changed/,
	     '... naming the first reissued position and the restore');
	($rc, $out, $err) = listener($n, 'copy', "$dir/d_at.state", $h3 - $h1);
	is($rc, 0, 'restored copy: the listener at the dumped head continues (the same identity)') or diag($err);
	range_ok($out, $h1 + 1, $h3, 'restored copy: listener');
	if ($python) {
		($rc, $out, $err) = pyconsumer($n, 'copy', "$dir/py_d_beyond.state", 1);
		is($rc, 8, 'restored copy: Python beyond: ResyncRequired') or diag($err);
		like($err, qr/sqlstate=OB003 .*first_reissued=@{[$h1 + 1]} diverged=True/, '... with the first reissued position');
		($rc, $out, $err) = pyconsumer($n, 'copy', "$dir/py_d_at.state", $h3 - $h1);
		is($rc, 0, 'restored copy: Python at the dumped head continues') or diag($err);
		range_ok($out, $h1 + 1, $h3, 'restored copy: Python');
	}

	# a server without epochs (as 1.1: no outbox.identity()): positions only, as before 1.3
	$n->safe_psql('copy', 'ALTER EXTENSION pg_outbox DROP FUNCTION outbox.identity(); DROP FUNCTION outbox.identity()');
	my $h4 = publish($n, 2, 'no-epochs', 'copy');
	($rc, $out, $err) = listener($n, 'copy', "$dir/d_at.state", $h4 - $h3);
	is($rc, 0, 'a server without outbox.identity(): the listener continues') or diag($err);
	range_ok($out, $h3 + 1, $h4, 'without epochs: listener');
	unlike($err, qr/not preserved|identity changed|warning/, '... without a divergence or a warning');
	my ($spos, $sepoch) = state_of("$dir/d_at.state");
	is("$spos " . ($sepoch // 'none'), "$h4 none", '... and saves positions only (no epoch)');

	# (e) DROP + CREATE EXTENSION, with more events than the consumers saw (so OB002 cannot tell)
	copy_state("$dir/d_beyond.state", "$dir/e.state");
	$n->safe_psql('src', 'DROP EXTENSION pg_outbox');
	$n->safe_psql('src', 'CREATE EXTENSION pg_outbox');
	my $id2 = $n->safe_psql('src', 'SELECT outbox.identity()');
	isnt($id2, $id, 'DROP + CREATE EXTENSION: a new identity');
	my $h5 = publish($n, $h2 + 5, 're-created', 'src');
	cmp_ok($h5, '>', $h2, 'the new outbox is ahead of the saved positions');
	($rc, $out, $err) = listener($n, 'src', "$dir/e.state", 1);
	is($rc, 8, 're-created extension: the listener exits 8') or diag($err);
	is($out, '', '... printing nothing');
	like($err, qr/the outbox identity changed from \Q$id\E to \Q$id2\E \(after position $h2\)/, '... saying the identity changed');
	if ($python) {
		($rc, $out, $err) = pyconsumer($n, 'src', "$dir/py_d_beyond.state", 1);
		is($rc, 8, 're-created extension: Python: ResyncRequired') or diag($err);
		like($err, qr/diverged=True: the outbox identity changed from \Q$id\E to \Q$id2\E/, '... saying the identity changed');
	}

	# ... and while the listener is connected (live): the new drain worker's notifications tell
	{
		my ($out2, $err2) = ('', '');
		unlink("$dir/live.state");
		my $h = IPC::Run::start([ $listen, $n->connstr('src'), '-c', 'orders', '--state', "$dir/live.state",
			'--max-backoff', '1' ], '<', \undef, '>', \$out2, '2>', \$err2, IPC::Run::timeout(120));
		my $deadline = time + 60;
		until ($err2 =~ /state=live/ || time > $deadline) { eval { $h->pump_nb }; usleep(50_000) }
		like($err2, qr/starting from now: after position $h5/, 'live: the listener follows the re-created outbox');
		$n->safe_psql('src', 'DROP EXTENSION pg_outbox');
		$n->safe_psql('src', 'CREATE EXTENSION pg_outbox');
		publish($n, $h5 + 3, 'again', 'src');
		$deadline = time + 60;
		while ($h->pumpable && time < $deadline) { eval { $h->pump_nb }; usleep(50_000) }
		$h->signal('TERM') if $h->pumpable;
		eval { $h->finish };
		is($h->result(0), 8, 'live: DROP + CREATE EXTENSION while it is connected: exit code 8') or diag($err2);
		like($err2, qr/the outbox identity changed/, '... saying the identity changed');
		is($out2, '', '... and it printed no event of the other outbox');
	}
	$n->stop;
}

sub copy_state {
	my ($from, $to) = @_;
	unlink($to);
	append_to_file($to, slurp_file($from));
}

done_testing();
