# The drain worker over the log (pg_outbox.drain_log) when a window spans two segments (issue #15,
# red team): a producer still inside its transaction on segment s when the log rotates to s + 1,
# a second producer's event in s + 1, both committed before the worker's pass. The pass reads one
# segment per batch: it publishes s's event in a batch cut short (cut = true, n = 1, far below
# pg_outbox.batch_size). The worker slept after it until pg_outbox.idle_interval (every wake-up
# of the commits already spent), so the rest of the window, committed, waited for the tick (an
# hour here); it now goes on at once after a cut batch, as after a full one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use OutboxNode qw(outbox_node poll_is);

my $node = outbox_node('log_worker_segments', 'pg_outbox.idle_interval' => '3600s', 'pg_outbox.drain_log' => 'on',
	'pg_outbox.retention' => '3600s');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');

sub wait_for { poll_is($node, 'postgres', @_) } # ($sql, $want, $what[, $tries])

# the worker publishes nothing while paused (no log pass, no rotation of its own)
$node->safe_psql('postgres', q{SELECT outbox.pause()});
wait_for(q{SELECT state FROM outbox.status}, 'paused', 'the worker is paused');

my $p1 = $node->background_psql('postgres');
$p1->query_safe(q{BEGIN; SELECT outbox._log_publish('a', '{"p": 1}')});
my $s = $node->safe_psql('postgres', q{SELECT cur_seg FROM outbox.log_state});
is($node->safe_psql('postgres', q{SELECT outbox._log_rotate('3600 s')}), 'rotated', 'the log rotates past the open producer');
$node->safe_psql('postgres', q{SELECT outbox._log_publish('b', '{"p": 2}')});
$p1->query_safe('COMMIT');
$p1->quit;
is($node->safe_psql('postgres', q{SELECT count(DISTINCT tableoid) FROM outbox.log}), '2', 'the two events are in two segments');

$node->safe_psql('postgres', q{SELECT outbox.resume()});
wait_for(q{SELECT coalesce(sum(n), 0) FROM outbox.batches}, '2',
	'both committed events are published without waiting for the idle tick', 100);
is($node->safe_psql('postgres', q{SELECT string_agg(format('%s:%s:%s', first_pos, n, cut), ' ' ORDER BY first_pos) FROM outbox.batches}),
	'1:1:t 2:1:f', "segment ${s}'s event in a cut batch, then the next segment's");

$node->stop;
done_testing();
