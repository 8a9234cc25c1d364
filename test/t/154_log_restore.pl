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

my $node = PostgreSQL::Test::Cluster->new('log_restore');
$node->init;
# the restored databases get a worker once restored (the documented procedure: restore into a
# database pg_outbox.databases does not list, then add it)
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = 'app'
pg_outbox.idle_interval = 100ms
pg_outbox.retention = 3600s
});
$node->start;

sub wait_for {
	my ($db, $sql, $want, $what) = @_;
	my $got;
	for (1 .. 300) {
		$got = $node->safe_psql($db, $sql);
		last if $got eq $want;
		usleep(100_000);
	}
	is($got, $want, $what);
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
my ($out, $err);
my @cmd = ('pg_restore', '-d', $node->connstr('r_serial'), $dump);
($out, $err) = ('', '');
IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
is($err, '', 'pg_restore: no error');
@cmd = ('pg_restore', '-j', '2', '-d', $node->connstr('r_jobs'), $dump);
($out, $err) = ('', '');
IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
is($err, '', 'pg_restore -j 2: no error');
@cmd = ('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=0', '-d', $node->connstr('r_psql'), '-f', $plain);
($out, $err) = ('', '');
IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
is($err, '', 'psql < plain dump: no error');
# outbox.log_state's data first, before the batches and the log (an order pg_restore -j can take)
@cmd = ('pg_restore', '-l', $dump);
($out, $err) = ('', '');
IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
my @list = split /\n/, $out;
my @state = grep { /TABLE DATA outbox log_state / } @list;
is(scalar(@state), 1, "the dump has the data of outbox.log_state");
ok(grep({ / EXTENSION - pg_outbox\s*$/ } @list), "... and the extension");
my @order;
for my $l (@list) {
	next if $l =~ /TABLE DATA outbox log_state /;
	push @order, $l;
	push @order, @state if $l =~ / EXTENSION - pg_outbox\s*$/;
}
my $listfile = $node->basedir . '/order.list';
open(my $fh, '>', $listfile) or die;
print $fh join("\n", @order), "\n";
close $fh;
@cmd = ('pg_restore', '-L', $listfile, '-d', $node->connstr('r_order'), $dump);
($out, $err) = ('', '');
IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
is($err, '', 'pg_restore with outbox.log_state restored before the batches: no error');

for my $db (@dbs) {
	is($node->safe_psql($db, q{SELECT active || ':' || cur_seg || ':' || base_pos FROM outbox.log_state}), "true:$seg:4",
		"$db: log mode, cur_seg $seg, base_pos 4");
	is($node->safe_psql($db, $replay_sql), $replay0, "$db: replay(0) gives the same events, positions and seqs");
	is($node->safe_psql($db, $chan_sql), $chan0, "$db: replay_channel('b') the same");
	is($node->safe_psql($db, $consumer_sql), $consumer0, "$db: the named consumer");
}

# the workers of the restored databases: the restored backlog (the rest of the cut window, then the
# next) gets the positions the source gave it
$node->safe_psql('postgres', q{ALTER SYSTEM SET pg_outbox.databases = 'app, r_serial, r_jobs, r_psql, r_order'});
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

$node->stop;
done_testing();
