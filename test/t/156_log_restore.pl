# pg_dump / pg_restore of a database in log mode (issue #15; doc/storage.md, "Epochs, dump and
# restore"). The source has 1.2 history, then the switch, events over several passes, a rotation
# (cur_seg 1), a cut latest batch, pending events, a named consumer. Restored into new databases of
# the same cluster with pg_restore, pg_restore -j 2 and psql < plain dump: the dumped
# outbox.log_state row is merged into the pristine one CREATE EXTENSION made (it was refused, in
# (a) a cut latest batch with another cur_seg, (b) channels_flushed_pos above a head whose
# batches were not restored yet: the database stayed in 1.2 mode and handed positions out again).
# Asserted: log mode, the same replay (positions, seqs), the restored backlog published with the
# positions the source gives it, new events continuing positions and seqs, LISTEN gets them from
# the worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use IPC::Run;
use OutboxNode qw(outbox_node poll_is);

# the restored databases get a worker once restored (the documented procedure: restore into a
# database pg_outbox.databases does not list, then add it)
my $node = outbox_node('log_restore', 'pg_outbox.databases' => q{'app'}, 'pg_outbox.retention' => '3600s');

# runs a client program; returns what it printed on stderr
sub stderr_of {
	my ($out, $err) = ('', '');
	IPC::Run::run(\@_, '>', \$out, '2>', \$err);
	return $err;
}

# a pg_restore -L list file of these lines
my $listfile = $node->basedir . '/order.list';
sub write_list {
	open(my $fh, '>', $listfile) or die "cannot write $listfile: $!";
	print $fh join("\n", @_), "\n";
	close $fh;
	return $listfile;
}

sub wait_for { # ($db, $sql, $want, $what) on $node, or on the node given first
	my $n = ref $_[0] ? shift : $node;
	poll_is($n, @_);
}

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_outbox');
# 1.2: 4 events (a: 2, b: 2), published
$node->safe_psql('app', q{SELECT outbox.publish(CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, jsonb_build_object('old', g)) FROM generate_series(1, 4) g});
wait_for('app', q{SELECT count(*) FROM outbox.pending}, '0', '1.2 events published');
$node->safe_psql('app', q{SELECT * FROM outbox.use_log_storage()});
# log mode: 10 transactions of 2 events, published by the worker over several passes
for my $t (1 .. 10) {
	$node->safe_psql('app', qq{SELECT outbox.publish('a', jsonb_build_object('t', $t)), outbox.publish('b', jsonb_build_object('t', $t))});
}
wait_for('app', q{SELECT outbox.head()}, '24', 'log mode: head 24');
$node->safe_psql('app', q{SELECT outbox.create_consumer('billing', NULL, 'earliest'); SELECT outbox.ack('billing', 10)});
# a rotation (cur_seg 0 -> 1), with the worker paused so that it does not rotate or pass meanwhile
$node->safe_psql('app', q{SELECT outbox.pause()});
wait_for('app', q{SELECT state FROM outbox.status}, 'paused', 'paused');
is($node->safe_psql('app', q{SELECT outbox._log_rotate('3600 s')}), 'rotated', 'the log rotates');
my $seg = $node->safe_psql('app', q{SELECT cur_seg FROM outbox.log_state});
isnt($seg, '0', "cur_seg $seg");
# 6 events in the new segment; a pass of 2 leaves the latest batch cut; 4 stay pending
$node->safe_psql('app', q{SELECT outbox.publish(CASE WHEN g % 3 = 0 THEN 'b' ELSE 'c' END, jsonb_build_object('new', g)) FROM generate_series(1, 6) g});
is($node->safe_psql('app', q{SELECT outbox.drain(2)}), '2', 'a pass of 2 events');
is($node->safe_psql('app', q{SELECT first_pos || ':' || n || ':' || seg || ':' || cut FROM outbox._log_latest()}), "25:2:$seg:true",
	"the latest batch is cut, in segment $seg");
# the write-behind of log_channels (channels_flushed_pos) is at the head of a pass
cmp_ok($node->safe_psql('app', q{SELECT channels_flushed_pos FROM outbox.log_state}), '>', 4, 'channels_flushed_pos above base_pos');

my $replay_sql = q{SELECT string_agg(format('%s/%s/%s/%s/%s', pos, seq, id, channel, payload), ' ' ORDER BY pos) FROM outbox.replay(0, NULL, 1000)};
my $chan_sql = q{SELECT string_agg(format('%s/%s/%s', pos, seq, id), ' ' ORDER BY seq) FROM outbox.replay_channel('b', 0, 1000)};
my $replay0 = $node->safe_psql('app', $replay_sql);
my $chan0 = $node->safe_psql('app', $chan_sql);
like($replay0, qr/^1\/1\/\d+\/b\/.* 26\/\d+\/\d+\/c\/\{"new": 2\}$/, 'source replay: 1..26');
my $consumer_sql = q{SELECT name || ':' || acked_pos || ':' || state FROM outbox.consumers};
my $consumer0 = $node->safe_psql('app', $consumer_sql);

my $dump = $node->basedir . '/app.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('app') ], 'pg_dump -Fc');
my $plain = $node->basedir . '/app.sql';
$node->command_ok([ 'pg_dump', '-Fp', '-f', $plain, '-d', $node->connstr('app') ], 'pg_dump -Fp');

# the source publishes the rest: what every restored copy must give the same events
$node->safe_psql('app', q{SELECT outbox.resume()});
wait_for('app', q{SELECT outbox.head()}, '30', 'source: the backlog published (head 30)');
my $rest0 = $node->safe_psql('app', q{SELECT string_agg(format('%s/%s/%s/%s', pos, seq, id, channel), ' ' ORDER BY pos) FROM outbox.replay(26, NULL, 1000)});

my @dbs = ('r_serial', 'r_jobs', 'r_psql', 'r_order');
for my $db (@dbs) {
	$node->safe_psql('postgres', "CREATE DATABASE $db");
}
is(stderr_of('pg_restore', '-d', $node->connstr('r_serial'), $dump), '', 'pg_restore: no error');
is(stderr_of('pg_restore', '-j', '2', '-d', $node->connstr('r_jobs'), $dump), '', 'pg_restore -j 2: no error');
is(stderr_of('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=0', '-d', $node->connstr('r_psql'), '-f', $plain), '', 'psql < plain dump: no error');
# outbox.log_state's data first, before the batches and the log (an order pg_restore -j can take)
my @list = split /\n/, `pg_restore -l $dump`;
my @state = grep { /TABLE DATA outbox log_state / } @list;
is(scalar(@state), 1, "the dump has the data of outbox.log_state");
ok(grep({ / EXTENSION - pg_outbox\s*$/ } @list), "... and the extension");
my @order;
for my $l (@list) {
	next if $l =~ /TABLE DATA outbox log_state /;
	push @order, $l;
	push @order, @state if $l =~ / EXTENSION - pg_outbox\s*$/;
}
is(stderr_of('pg_restore', '-L', write_list(@order), '-d', $node->connstr('r_order'), $dump), '',
	'pg_restore with outbox.log_state restored before the batches: no error');

# a pass while the batches are not restored yet (pg_restore -j with the worker on) would hand their
# positions out again: outbox.log_state alone first, the pass refuses; then the rest of the data
$node->safe_psql('postgres', 'CREATE DATABASE r_guard');
my @first = grep { !/ TABLE DATA / || / TABLE DATA outbox log_state / } @order;
my @rest = grep { / TABLE DATA / && !/ TABLE DATA outbox log_state / } @order;
is(stderr_of('pg_restore', '-L', write_list(@first), '-d', $node->connstr('r_guard'), $dump), '', 'r_guard: outbox.log_state restored alone');
my ($grc, $gout, $gerr) = $node->psql('r_guard', q{SELECT outbox.drain(10)});
like($gerr, qr/ERROR:  pg_outbox: the log's batches end at position 4, below its channels_flushed_pos 26/,
	'r_guard: a pass before the batches are restored refuses (it would hand positions 5.. out again)');
is($node->safe_psql('r_guard', q{SELECT count(*) FROM outbox.batches}), '0', 'r_guard: no batch written');
is(stderr_of('pg_restore', '--data-only', '-L', write_list(@rest), '-d', $node->connstr('r_guard'), $dump), '', 'r_guard: the rest of the data restored');
is($node->safe_psql('r_guard', $replay_sql), $replay0, 'r_guard: replay(0) as the source');
is($node->safe_psql('r_guard', q{SELECT outbox.drain(1000) + outbox.drain(1000)}), '4', 'r_guard: the backlog published by drain()');
is($node->safe_psql('r_guard', q{SELECT string_agg(format('%s/%s/%s/%s', pos, seq, id, channel), ' ' ORDER BY pos) FROM outbox.replay(26, NULL, 1000)}),
	$rest0, 'r_guard: ... with the positions, seqs and ids the source gave it');

# the merge lets the dump's row replace the pristine one; a DBA's UPDATE of that pristine row is
# still checked: everything but outbox.log_state first (the latest batch restored, cut), then
$node->safe_psql('postgres', 'CREATE DATABASE r_plain');
is(stderr_of('pg_restore', '-L', write_list(grep { !/ TABLE DATA outbox log_state / } @order), '-d', $node->connstr('r_plain'), $dump),
	'', 'r_plain: everything but outbox.log_state restored');
($grc, $gout, $gerr) = $node->psql('r_plain', qq{UPDATE outbox.log_state SET cur_seg = $seg});
like($gerr, qr/the log's current segment cannot change while the latest batch is cut/, 'r_plain: a DBA\'s UPDATE of cur_seg is still refused (a)');
($grc, $gout, $gerr) = $node->psql('r_plain', q{UPDATE outbox.log_state SET channels_flushed_pos = 27});
like($gerr, qr/the log's channels_flushed_pos cannot be 27, above the log's head 26/, 'r_plain: ... and channels_flushed_pos above the head (b)');
($grc, $gout, $gerr) = $node->psql('r_plain', q{INSERT INTO outbox.log_state (cur_seg) VALUES (3)});
like($gerr, qr/the dumped row of outbox.log_state names segment 3, not 0 to 2/, 'r_plain: a row naming a segment that does not exist is refused');
is(stderr_of('pg_restore', '--data-only', '-L', write_list((grep { !/ TABLE DATA / } @order), @state), '-d', $node->connstr('r_plain'), $dump),
	'', 'r_plain: then the dumped row is merged');
is($node->safe_psql('r_plain', q{SELECT count(*) || ':' || bool_and(active) || ':' || min(cur_seg) FROM outbox.log_state}), "1:true:$seg", 'r_plain: one row, log mode');
is($node->safe_psql('r_plain', $replay_sql), $replay0, 'r_plain: replay(0) as the source');

for my $db (@dbs) {
	is($node->safe_psql($db, q{SELECT active || ':' || cur_seg || ':' || base_pos FROM outbox.log_state}), "true:$seg:4",
		"$db: log mode, cur_seg $seg, base_pos 4");
	is($node->safe_psql($db, $replay_sql), $replay0, "$db: replay(0) gives the same events, positions and seqs");
	is($node->safe_psql($db, $chan_sql), $chan0, "$db: replay_channel('b') the same");
	is($node->safe_psql($db, $consumer_sql), $consumer0, "$db: the named consumer");
}

# the workers of the restored databases: the restored backlog (the rest of the cut window, then the
# next) gets the positions the source gave it
$node->safe_psql('postgres', q{ALTER SYSTEM SET pg_outbox.databases = 'app, r_serial, r_jobs, r_psql, r_order, r_live'});
$node->reload;
my %listener;
for my $db (@dbs) {
	$listener{$db} = $node->background_psql($db);
	$listener{$db}->query_safe('LISTEN a; LISTEN c');
	is($node->safe_psql($db, q{SELECT paused FROM outbox.state}), 't', "$db: paused, as dumped");
	$node->safe_psql($db, q{SELECT outbox.resume()});
	wait_for($db, q{SELECT outbox.head()}, '30', "$db: the restored backlog is published (head 30)");
	is($node->safe_psql($db, q{SELECT string_agg(format('%s/%s/%s/%s', pos, seq, id, channel), ' ' ORDER BY pos) FROM outbox.replay(26, NULL, 1000)}),
		$rest0, "$db: ... with the positions, seqs and ids the source gave it");
	like($node->safe_psql($db, q{SELECT first_pos || ' ' || reason FROM outbox.epochs ORDER BY epoch DESC LIMIT 1}),
		qr/^27 database OID changed from \d+ to \d+/, "$db: the first pass after the restore began an epoch at 27 (another database)");
}
for my $db (@dbs) {
	$node->safe_psql($db, q{SELECT outbox.publish('a', jsonb_build_object('after', g)), outbox.publish('c', jsonb_build_object('after', g)) FROM generate_series(1, 3) g});
	wait_for($db, q{SELECT outbox.head()}, '36', "$db: 6 new events published (head 36)");
	is($node->safe_psql($db, q{SELECT count(*) || ' ' || count(DISTINCT pos) || ' ' || min(pos) || ' ' || max(pos) || ' ' || count(DISTINCT id) FROM outbox.replay(0, NULL, 1000)}),
		'36 36 1 36 36', "$db: positions 1..36, each once, ids distinct");
	is($node->safe_psql($db, q{SELECT bool_and(ok) FROM (SELECT seq = row_number() OVER (PARTITION BY channel ORDER BY pos) AS ok FROM outbox.replay(0, NULL, 1000)) s}),
		't', "$db: seqs per channel 1..n, no repeat, no gap");
	my $got = '';
	for (1 .. 100) {
		$got .= $listener{$db}->query_safe('SELECT 1');
		last if $got =~ /"pos":36\b/;
		usleep(100_000);
	}
	my @pos = $got =~ /"pos":(\d+)/g;
	# LISTEN a, c: of the backlog 27..30 those on a or c, then 31..36
	my $want = $node->safe_psql($db, q{SELECT string_agg(pos::text, ',' ORDER BY pos) FROM outbox.replay(26, NULL, 1000) WHERE channel IN ('a', 'c')});
	is(join(',', @pos), $want, "$db: the listener got them from the worker, in order, each once");
	my $pid = $node->safe_psql($db, q{SELECT pid FROM outbox.status});
	my @from = $got =~ /received from server process with PID (\d+)/g;
	ok(@from && !grep({ $_ != $pid } @from), "$db: sent by its drain worker");
	$listener{$db}->quit;
}


# attack: a log used before the switch (passes by hand, as pg_outbox.drain_log does), emptied as
# the switch's hint says: the switch sets channels_flushed_pos to base_pos (it kept the passes'
# higher value: the pass then refused the log, its batches below it)
$node->safe_psql('postgres', 'CREATE DATABASE r_dev');
$node->safe_psql('r_dev', q{CREATE EXTENSION pg_outbox; SELECT outbox._log_publish('x') FROM generate_series(1, 3); SELECT outbox._log_pass(10)});
is($node->safe_psql('r_dev', q{SELECT channels_flushed_pos FROM outbox.log_state}), '3', 'r_dev: passes before the switch flushed up to 3');
$node->safe_psql('r_dev', q{TRUNCATE outbox.log_0, outbox.log_1, outbox.log_2, outbox.batches_0, outbox.batches_1, outbox.batches_2});
is($node->safe_psql('r_dev', q{SELECT base_pos FROM outbox.use_log_storage()}), '0', 'r_dev: the switch');
is($node->safe_psql('r_dev', q{SELECT channels_flushed_pos FROM outbox.log_state}), '0', 'r_dev: channels_flushed_pos is base_pos');
$node->safe_psql('r_dev', q{SELECT outbox.publish('x')});
is($node->safe_psql('r_dev', q{SELECT outbox.drain(10)}), '1', 'r_dev: the pass publishes');

# attack: a serial pg_restore while the database's worker already runs (pg_outbox.databases lists
# it): the log's tables are loaded before outbox.log_state, so a pass sees all of them or none
# (the pause flag comes after: the backlog may be published during the restore, never twice)
$node->safe_psql('postgres', 'CREATE DATABASE r_live');
$node->safe_psql('r_live', 'CREATE EXTENSION pg_outbox');
ok($node->poll_query_until('r_live', q{SELECT pid IS NOT NULL FROM outbox.status}), 'r_live: its worker runs before the restore');
is(stderr_of('pg_restore', '--data-only', '-d', $node->connstr('r_live'), $dump), '', 'r_live: pg_restore --data-only with the worker on: no error');
$node->safe_psql('r_live', q{SELECT outbox.resume()});
wait_for('r_live', q{SELECT outbox.head()}, '30', 'r_live: the backlog published (head 30)');
is($node->safe_psql('r_live', q{SELECT string_agg(format('%s/%s/%s/%s', pos, seq, id, channel), ' ' ORDER BY pos) FROM outbox.replay(26, NULL, 1000)}),
	$rest0, 'r_live: ... with the positions, seqs and ids the source gave it');
is($node->safe_psql('r_live', $replay_sql =~ s/1000/26/r), $replay0, 'r_live: positions 1..26 as the source');

# ---- a restore into another cluster whose transaction counter is behind the dump's ----
# The source cluster is moved ahead first (pg_resetwal -x 10,000,000, with the commit log segment
# the counter points into); a fresh initdb is then far behind it.
sub clog_segment { # the commit log segment a next xid points into, 256 kB of zeros
	my ($datadir, $seg) = @_;
	my $f = "$datadir/pg_xact/$seg";
	return if -e $f;
	open(my $fh, '>', $f) or die "cannot create $f: $!";
	binmode $fh;
	print $fh "\0" x (8192 * 32);
	close $fh;
}
$node->stop;
clog_segment($node->data_dir, '0009');
command_ok([ 'pg_resetwal', '-x', '10000000', '-D', $node->data_dir ], 'the source cluster moved ahead (pg_resetwal -x 10000000)');
$node->start;
cmp_ok($node->safe_psql('app', q{SELECT pg_current_xact_id()::text::bigint}), '>=', 10000000, 'the source cluster is at xid 10,000,000');
$node->safe_psql('app', q{SELECT outbox.pause()});
wait_for('app', q{SELECT state FROM outbox.status}, 'paused', 'source paused');
my $head1 = $node->safe_psql('app', q{SELECT outbox.head()});
$node->safe_psql('app', q{SELECT outbox.publish('d', jsonb_build_object('far', g)) FROM generate_series(1, 5) g});
is($node->safe_psql('app', q{SELECT outbox.drain(2)}), '2', 'a pass of 2 of 5 events, at xids above 10,000,000');
$node->safe_psql('app', q{SELECT outbox.publish('d', '{"far": 6}')});
my $dump2 = $node->basedir . '/app2.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump2, '-d', $node->connstr('app') ], 'pg_dump -Fc of the cluster ahead');
$node->safe_psql('app', q{SELECT outbox.resume()});
wait_for('app', q{SELECT outbox.head()}, $head1 + 6, 'source: the 4 pending events published');
my $all_sql = q{SELECT string_agg(format('%s/%s/%s/%s', pos, seq, id, channel), ' ' ORDER BY pos) FROM outbox.replay(0, NULL, 1000)};
my $src_all = $node->safe_psql('app', $all_sql);
$node->stop;

my $behind = outbox_node('behind', 'pg_outbox.databases' => q{'other'});
$behind->safe_psql('postgres', 'CREATE DATABASE r_behind');
is(stderr_of('pg_restore', '-d', $behind->connstr('r_behind'), $dump2), '', 'pg_restore into the cluster behind: no error');
cmp_ok($behind->safe_psql('r_behind', q{SELECT pg_current_xact_id()::text::bigint}), '<', 10000000, 'this cluster\'s counter is behind the dump\'s');
is($behind->safe_psql('r_behind', q{SELECT active || ':' || outbox.head() FROM outbox.log_state}), 'true:' . ($head1 + 2), 'log mode, the head restored');
my $log_rows = $behind->safe_psql('r_behind', q{SELECT count(*) FROM outbox.log});
is($behind->safe_psql('r_behind', q{SELECT paused FROM outbox.state}), 't', 'paused, as dumped');
$behind->safe_psql('r_behind', q{SELECT outbox.resume()});

my ($rc, $dout, $derr) = $behind->psql('r_behind', q{SELECT outbox.drain(10)});
like($derr, qr/ERROR:  pg_outbox: the log of database "r_behind" was restored from a cluster ahead of this one: it names transaction 1000\d{4}, this cluster's next is \d+/,
	'outbox.drain() refuses the log: a clear error');
like($derr, qr/DETAIL:  Events written here would look published already and never be sent/, '... saying why');
like($derr, qr/HINT:  Stop the server cleanly, .*pg_resetwal -x \d+ -D <data directory>/, '... and what to do');
my ($xact_seg) = $derr =~ m{pg_xact/([0-9A-F]{4})};
my ($x) = $derr =~ /pg_resetwal -x (\d+)/;
ok($xact_seg && $x, "the hint names the segment ($xact_seg) and the xid ($x)");
($rc, $dout, $derr) = $behind->psql('r_behind', q{SELECT outbox.publish('d', '{"refused": 1}')});
like($derr, qr/ERROR:  pg_outbox: the log of database "r_behind" was restored from a cluster ahead of this one.*\nDETAIL:  An event written now would look published already and never be sent/,
	'a producer is refused too: its event would be lost');
($rc, $dout, $derr) = $behind->psql('r_behind', q{INSERT INTO outbox.pending (channel, payload) VALUES ('d', '{"refused": 2}')});
like($derr, qr/ERROR:  pg_outbox: the log of database "r_behind" was restored from a cluster ahead of this one/,
	'so is a row inserted into outbox.pending (it would go into the log)');
$behind->safe_psql('r_behind', q{CREATE TABLE orders (id int PRIMARY KEY); SELECT outbox.attach('orders', 'orders')});
($rc, $dout, $derr) = $behind->psql('r_behind', q{INSERT INTO orders VALUES (1)});
like($derr, qr/ERROR:  pg_outbox: the log of database "r_behind" was restored from a cluster ahead of this one/,
	'and the change trigger (its events are written at commit): the INSERT fails');
is($behind->safe_psql('r_behind', q{SELECT count(*) FROM orders}), '0', '... and is rolled back');
is($behind->safe_psql('r_behind', q{SELECT count(*) FROM outbox.log}), $log_rows, 'nothing was written into the log');

# the worker refuses it, in the server log and in outbox.status / outbox.health()
my $log_offset = -s $behind->logfile;
$behind->safe_psql('postgres', q{ALTER SYSTEM SET pg_outbox.databases = 'other, r_behind'});
$behind->reload;
wait_for($behind, 'r_behind', q{SELECT last_error LIKE '%restored from a cluster ahead of this one%' FROM outbox.status}, 't', 'outbox.status: last_error says so');
like(slurp_file($behind->logfile, $log_offset), qr/ERROR:  pg_outbox: the log of database "r_behind" was restored from a cluster ahead of this one/,
	'the server log says so');
like($behind->safe_psql('r_behind', q{SELECT status || ' ' || hint FROM outbox.health() WHERE "check" = 'worker'}),
	qr/^critical .*restored from a cluster ahead of this one/, 'outbox.health(): the worker check is critical and says why');
is($behind->safe_psql('r_behind', q{SELECT outbox.head()}), $head1 + 2, 'nothing published');
# Retention removes nothing of it: the worker rotates after failing passes too (t/157), and
# purge() rotates; this cluster's snapshots cannot tell what is published (the rows pending at dump
# time, with xids above its counter, looked published and were truncated). This dump's latest
# window is cut, and the named consumer billing holds its segment, either of which defers a rotation
# anyway; as a dump taken after a whole pass and without the consumer (rolled back):
my $uncut = q{BEGIN; UPDATE outbox.batches SET cut = false WHERE cut; SELECT count(*) FROM (SELECT outbox.drop_consumer('billing')) d;};
is($behind->safe_psql('r_behind', $uncut . q{SELECT outbox._log_rotate('0 s'); ROLLBACK}),
	"1\ndeferred: the log names transactions this cluster has not reached (restored from a cluster ahead)",
	'a rotation defers while the log names transactions this cluster has not reached');
is($behind->safe_psql('r_behind', $uncut . q{SET client_min_messages = error; SELECT outbox.purge('0 s') >= 0;
                                             SELECT count(*) FROM outbox.log; ROLLBACK}),
	"1\nt\n$log_rows", 'purge(\'0 s\') removes nothing of the restored log');
is($behind->safe_psql('r_behind', q{BEGIN; SET client_min_messages = error; SELECT outbox.purge('0 s') >= 0; SELECT count(*) FROM outbox.log; ROLLBACK}),
	"t\n$log_rows", '... nor with the dump\'s cut window (rolled back: the purge of the frozen 1.2 history with it)');

# another database of this cluster switches and publishes as usual
$behind->safe_psql('postgres', 'CREATE DATABASE other');
$behind->safe_psql('other', 'CREATE EXTENSION pg_outbox');
$behind->safe_psql('other', q{SELECT * FROM outbox.use_log_storage()});
$behind->safe_psql('other', q{SELECT outbox.publish('o', '{"n": 1}')});
ok($behind->poll_query_until('other', q{SELECT outbox.head() = 1}), 'another database: use_log_storage(), publish() and its worker unaffected');

# the recovery the hint gives: the counter past the dump's
$behind->stop;
clog_segment($behind->data_dir, $xact_seg);
command_ok([ 'pg_resetwal', '-x', $x, '-D', $behind->data_dir ], "pg_resetwal -x $x, as the hint says");
$behind->start;
ok($behind->poll_query_until('r_behind', q{SELECT outbox.head() = } . ($head1 + 6)), 'after the recovery the worker publishes the restored backlog');
is($behind->safe_psql('r_behind', $all_sql), $src_all, '... with the positions, seqs and ids the source gave it: nothing lost, nothing twice');
is($behind->safe_psql('r_behind', q{SELECT last_error FROM outbox.status}), '', 'the error is gone');
like($behind->safe_psql('r_behind', q{SELECT first_pos || ' ' || reason FROM outbox.epochs ORDER BY epoch DESC LIMIT 1}),
	qr/^@{[$head1 + 3]} system identifier changed from \d+ to \d+ \(restored into another cluster\)/, 'an epoch begun at the first position published here (another cluster)');
$behind->safe_psql('r_behind', q{SELECT outbox.publish('d', jsonb_build_object('after', g)) FROM generate_series(1, 3) g});
$behind->safe_psql('r_behind', q{INSERT INTO orders VALUES (1)});
ok($behind->poll_query_until('r_behind', q{SELECT outbox.head() = } . ($head1 + 10)), 'new events (publish(), the change trigger) are published');
is($behind->safe_psql('r_behind', q{SELECT count(*) || ' ' || count(DISTINCT pos) || ' ' || min(pos) || ' ' || max(pos) || ' ' || count(DISTINCT id) FROM outbox.replay(0, NULL, 1000)}),
	join(' ', $head1 + 10, $head1 + 10, 1, $head1 + 10, $head1 + 10), 'positions 1..head, each once');
is($behind->safe_psql('r_behind', q{SELECT bool_and(ok) FROM (SELECT seq = row_number() OVER (PARTITION BY channel ORDER BY pos) AS ok FROM outbox.replay(0, NULL, 1000)) s}),
	't', 'seqs per channel 1..n');
$behind->stop;

done_testing();
