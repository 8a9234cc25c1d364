# The drain worker over the write-once log (issue #15, until the switch: pg_outbox.drain_log).
# Off by default: events in the log stay unpublished. On (a reload), the worker publishes them with
# the C pass next to the 1.2 storage it keeps draining: a listener gets every log event once, in
# position order, positions 1..N, seqs 1..n per channel; 1.2 events still flow with their own
# positions. With a retention of one second the worker rotates the log (a segment truncated) and
# keeps publishing into the next one. A pass that fails (a DBA's trigger that raises on the
# batch table) is logged and retried, and publishes nothing twice once the trigger is gone.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OutboxNode qw(outbox_node poll_is);

my $node = outbox_node('log_worker');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');

sub wait_for { poll_is($node, 'postgres', @_) }

$node->safe_psql('postgres', q{SELECT count(outbox._log_insert('ch' || (g % 3), jsonb_build_object('g', g))) FROM generate_series(1, 30) g});
$node->safe_psql('postgres', q{SELECT outbox.publish('old', '{"v": 1}')});
wait_for(q{SELECT count(*) FROM outbox.history}, '1', '1.2 events are published as before');
sleep 1;
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.batches}), '0',
	'pg_outbox.drain_log off (the default): the worker leaves the log alone');

# a listener on the log's channels, in a session of its own
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN ch0; LISTEN ch1; LISTEN ch2');

$node->append_conf('postgresql.conf', "pg_outbox.drain_log = on\n");
$node->reload;
wait_for(q{SELECT outbox._log_head()}, '30', 'pg_outbox.drain_log on: the worker publishes the log (head 30)');
is($node->safe_psql('postgres', q{
	SELECT count(*) = 30 AND count(DISTINCT pos) = 30 AND min(pos) = 1 AND max(pos) = 30
	  FROM outbox._log_replay(0, 1000)}), 't', 'positions 1..30, each once');
is($node->safe_psql('postgres', q{
	SELECT bool_and(ok) FROM (SELECT channel, array_agg(seq ORDER BY pos) = array_agg(rn ORDER BY pos) AS ok
	  FROM (SELECT channel, seq, pos, row_number() OVER (PARTITION BY channel ORDER BY pos) AS rn
	          FROM outbox._log_replay(0, 1000)) r GROUP BY channel) c}), 't', 'seqs 1..n per channel, in position order');

# what the listener received: every event once, in position order
my $got = '';
for (1 .. 100) {
	$got .= $listener->query_safe('SELECT 1');
	last if (() = $got =~ /Asynchronous notification/g) >= 30;
	select(undef, undef, undef, 0.1);
}
my @pos = $got =~ /"pos":(\d+)/g;
is(scalar(@pos), 30, 'the listener got 30 notifications');
is(join(',', @pos), join(',', 1 .. 30), 'in position order, each once');

# 1.2 keeps its own positions meanwhile
$node->safe_psql('postgres', q{SELECT outbox.publish('old', '{"v": 2}')});
wait_for(q{SELECT max(pos) FROM outbox.history}, '2', 'the 1.2 storage goes on with its own positions');

# rotation by the worker: retention 1 s
$node->append_conf('postgresql.conf', "pg_outbox.retention = 1s\n");
$node->reload;
my $seg0 = $node->safe_psql('postgres', q{SELECT cur_seg FROM outbox.log_state});
for my $round (1 .. 3) {
	$node->safe_psql('postgres', qq{SELECT count(outbox._log_insert('ch0', jsonb_build_object('round', $round))) FROM generate_series(1, 5) g});
	wait_for(q{SELECT count(*) FROM outbox.log l WHERE NOT EXISTS (SELECT FROM outbox._log_replay(greatest(0, (SELECT purged_pos FROM outbox.log_state)), 100000) r WHERE r.id = l.id)},
		'0', "round $round: every log event is published");
	sleep 2;
}
isnt($node->safe_psql('postgres', q{SELECT cur_seg FROM outbox.log_state}), undef, 'the log has a current segment');
cmp_ok($node->safe_psql('postgres', q{SELECT purged_pos FROM outbox.log_state}), '>', 0,
	'the worker rotated the log (purged_pos > 0): retention truncates published segments');
is($node->safe_psql('postgres', q{SELECT outbox._log_head()}), '45', 'head 45: 15 more events published across the rotations');

# the C producer's commit wakes the worker (the tick is 60 s here)
$node->append_conf('postgresql.conf', "pg_outbox.idle_interval = 60s\n");
$node->reload;
sleep 1;
my $t0 = time;
$node->safe_psql('postgres', q{SELECT outbox._log_publish('ch2', '{"woken": true}')});
wait_for(q{SELECT outbox._log_head()}, '46', 'an event of outbox._log_publish() is published without the tick');
cmp_ok(time - $t0, '<', 30, 'well before the 60 s tick: its commit woke the worker');
$node->append_conf('postgresql.conf', "pg_outbox.idle_interval = 100ms\n");
$node->reload;

# a failing pass is retried and publishes nothing twice
$node->safe_psql('postgres', q{
CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the DBA'; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON outbox.batches_0 FOR EACH ROW EXECUTE FUNCTION public.refuse();
CREATE TRIGGER refuse BEFORE INSERT ON outbox.batches_1 FOR EACH ROW EXECUTE FUNCTION public.refuse();
CREATE TRIGGER refuse BEFORE INSERT ON outbox.batches_2 FOR EACH ROW EXECUTE FUNCTION public.refuse();
});
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT count(outbox._log_insert('ch1', jsonb_build_object('late', g))) FROM generate_series(1, 4) g});
my $log = '';
for (1 .. 100) {
	$log = slurp_file($node->logfile, $log_offset);
	last if $log =~ /refused by the DBA/;
	select(undef, undef, undef, 0.1);
}
like($log, qr/ERROR:  refused by the DBA/, 'the failed pass is in the server log');
is($node->safe_psql('postgres', q{SELECT outbox._log_head()}), '46', 'nothing published while the pass fails');
$node->safe_psql('postgres', q{
DROP TRIGGER refuse ON outbox.batches_0; DROP TRIGGER refuse ON outbox.batches_1; DROP TRIGGER refuse ON outbox.batches_2;});
wait_for(q{SELECT outbox._log_head()}, '50', 'retried once the trigger is gone: head 50');
is($node->safe_psql('postgres', q{
	SELECT count(*) = 4 AND count(DISTINCT id) = 4 FROM outbox._log_replay(46, 1000) WHERE channel = 'ch1'}), 't',
	'the four events once each');

$listener->quit;
$node->stop;
done_testing();
