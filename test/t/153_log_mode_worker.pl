# The drain worker and outbox.drain() in log mode (issue #15): a database switched to the write-once
# log (outbox.log_state.active) is published by the C pass alone, one pass per wake-up. Asserted:
# positions continue from 1.2's head (base_pos) and seqs from 1.2's last seq per channel; a
# listener gets every event once, in order; nothing of 1.2 (pending, history) is written; pause and
# resume; the status slot; outbox.drain() runs the log pass; SIGKILL of the worker during a stream
# of passes and an immediate shutdown lose nothing and publish nothing twice (positions gap-free);
# the log pass begins an epoch when the recorded cluster identity differs, in the pass's
# transaction (a failing pass begins none), and only once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use OutboxNode qw(outbox_node poll_is);

# The switch, by hand, until outbox.use_log_storage() (helper sw-mode) lands: one statement.
my $switch_sql = q{WITH s AS (UPDATE outbox.log_state SET active = true, base_pos = (SELECT last_pos FROM outbox.state) RETURNING base_pos) INSERT INTO outbox.log_channels (channel, last_seq, last_pos) SELECT c.channel, c.last_seq, s.base_pos FROM outbox.channels c, s};

my $node = outbox_node('log_mode', 'restart_after_crash' => 'on');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');

sub wait_for { poll_is($node, 'postgres', @_) }

# 1.2 first: 5 events, a (3) and b (2), published by the 1.2 pass
$node->safe_psql('postgres', q{SELECT outbox.publish(CASE WHEN g % 5 < 3 THEN 'a' ELSE 'b' END, jsonb_build_object('old', g)) FROM generate_series(0, 4) g});
wait_for(q{SELECT count(*) FROM outbox.pending}, '0', '1.2: the 5 events are published');
is($node->safe_psql('postgres', q{SELECT outbox.head()}), '5', '1.2 head 5');
my $epochs_before = $node->safe_psql('postgres', q{SELECT count(*) FROM outbox.epochs});

$node->safe_psql('postgres', $switch_sql);
is($node->safe_psql('postgres', q{SELECT outbox._log_active()}), 't', 'switched to log mode');

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN a; LISTEN b');

# 20 events in 10 transactions through the C producer
for my $t (1 .. 10) {
	$node->safe_psql('postgres', qq{SELECT outbox._log_publish('a', jsonb_build_object('t', $t)), outbox._log_publish('b', jsonb_build_object('t', $t))});
}
wait_for(q{SELECT outbox._log_head()}, '25', 'log mode: the worker publishes the log, positions after 1.2 head (head 25)');
is($node->safe_psql('postgres', q{SELECT string_agg(pos::text, ',' ORDER BY pos) FROM outbox._log_replay(5, 1000)}),
	join(',', 6 .. 25), 'positions 6..25, each once');
is($node->safe_psql('postgres', q{SELECT channel || ':' || string_agg(seq::text, ',' ORDER BY pos) FROM outbox._log_replay(5, 1000) GROUP BY channel ORDER BY channel}),
	"a:" . join(',', 4 .. 13) . "\nb:" . join(',', 3 .. 12), 'seqs continue from 1.2 (a from 4, b from 3)');
is($node->safe_psql('postgres', q{SELECT (SELECT count(*) FROM outbox.history_frozen) || ' ' || (SELECT count(*) FROM outbox.pending) || ' ' || (SELECT last_pos FROM outbox.state)}),
	'5 0 5', 'nothing of 1.2 is written in log mode (history_frozen 5 rows, pending empty, last_pos 5)');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || max(pos) || ' ' || count(DISTINCT pos) FROM outbox.history}), '25 25 25',
	'the view outbox.history: the 5 frozen rows and the log\'s 20');

my $got = '';
for (1 .. 100) {
	$got .= $listener->query_safe('SELECT 1');
	last if (() = $got =~ /Asynchronous notification/g) >= 20;
	usleep(100_000);
}
my @pos = $got =~ /"pos":(\d+)/g;
is(join(',', @pos), join(',', 6 .. 25), 'the listener got 6..25 in order, each once');
my @from = $got =~ /received from server process with PID (\d+)/g;
my $worker_pid = $node->safe_psql('postgres', q{SELECT pid FROM outbox.status});
ok(@from == 20 && !grep({ $_ != $worker_pid } @from), 'sent by the drain worker');
is($node->safe_psql('postgres', q{SELECT worker_published >= 20 AND last_batch_at IS NOT NULL FROM outbox._worker_status()}), 't',
	'the status slot counts the log pass\'s events');

# one pass per wake-up: a backlog larger than batch_size goes out in full batches, back to back
$node->append_conf('postgresql.conf', "pg_outbox.batch_size = 7\n");
$node->reload;
usleep(300_000);
$node->safe_psql('postgres', q{SELECT count(outbox._log_publish('a', jsonb_build_object('bulk', g))) FROM generate_series(1, 30) g});
wait_for(q{SELECT outbox._log_head()}, '55', 'a 30-event transaction is published in passes of at most 7 (head 55)');
is($node->safe_psql('postgres', q{SELECT string_agg(n::text, ',' ORDER BY first_pos) FROM outbox.batches WHERE first_pos > 25}),
	'7,7,7,7,2', '... batches 7,7,7,7,2');
$node->append_conf('postgresql.conf', "pg_outbox.batch_size = 1000\n");
$node->reload;

# pause and resume
$node->safe_psql('postgres', q{SELECT outbox.pause()});
usleep(300_000);
$node->safe_psql('postgres', q{SELECT outbox._log_publish('b', '{"paused": 1}'), outbox._log_publish('b', '{"paused": 2}')});
wait_for(q{SELECT state FROM outbox.status}, 'paused', 'paused: the status says so');
sleep 1;
is($node->safe_psql('postgres', q{SELECT outbox._log_head()}), '55', 'paused: nothing published');

# outbox.drain() in log mode, while the worker is paused
is($node->safe_psql('postgres', q{SELECT outbox.drain(1)}), '1', 'outbox.drain(1) in log mode publishes 1');
is($node->safe_psql('postgres', q{SELECT outbox.drain(1000)}), '1', 'outbox.drain(1000) the other one');
is($node->safe_psql('postgres', q{SELECT outbox.drain(1000)}), '0', 'then none');
is($node->safe_psql('postgres', q{SELECT outbox._log_head() || ' ' || (SELECT count(*) FROM outbox.history_frozen)}), '57 5',
	'drain() published through the log (head 57), not 1.2 (history_frozen)');
my ($rc, $out, $err) = $node->psql('postgres', q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT outbox.drain(10); COMMIT});
like($err, qr/outbox.drain\(\) cannot run in a REPEATABLE READ or SERIALIZABLE transaction/, 'drain() in REPEATABLE READ: a clear error');
($rc, $out, $err) = $node->psql('postgres', q{SELECT outbox.drain(0)});
like($err, qr/max_events must be at least 1/, 'drain(0): as in 1.2');

$node->safe_psql('postgres', q{SELECT outbox._log_publish('b', '{"paused": 3}')});
like($node->safe_psql('postgres', q{SELECT outbox.resume()}), qr/^resumed/, 'resume');
wait_for(q{SELECT outbox._log_head()}, '58', 'resumed: the event written while paused is published');

# ---- SIGKILL of the worker, and an immediate shutdown, during a stream of passes ----
sub stream { # a producer committing one event per transaction, in the background
	my ($tag, $n) = @_;
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	$bg->query_until(qr/started/, qq{\\echo started
DO \$\$ BEGIN FOR i IN 1..$n LOOP PERFORM outbox._log_publish(CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, jsonb_build_object('$tag', i)); COMMIT; END LOOP; END \$\$;
});
	return $bg;
}
sub check_exactly_once {
	my ($what) = @_;
	# everything committed ends up published once: wait for the last log row to have a position
	wait_for(q{SELECT count(*) FROM outbox.log l WHERE NOT EXISTS (SELECT FROM outbox._log_replay(5, 1000000) r WHERE r.id = l.id)},
		'0', "$what: every committed event is published");
	is($node->safe_psql('postgres', q{SELECT count(*) = (SELECT count(*) FROM outbox.log) AND count(DISTINCT id) = count(*) AND min(pos) = 6 AND max(pos) = 5 + count(*) FROM outbox._log_replay(5, 1000000)}),
		't', "$what: each once, positions 6..head without a gap");
	is($node->safe_psql('postgres', q{SELECT bool_and(ok) FROM (SELECT array_agg(seq ORDER BY pos) = array_agg(s ORDER BY pos) AS ok FROM (SELECT channel, seq, pos, (CASE channel WHEN 'a' THEN 3 ELSE 2 END) + row_number() OVER (PARTITION BY channel ORDER BY pos) AS s FROM outbox._log_replay(5, 1000000)) r GROUP BY channel) c}),
		't', "$what: seqs gap-free per channel");
}

my $bg = stream('kill', 100000);
usleep(200_000) until $node->safe_psql('postgres', q{SELECT outbox._log_head()}) > 200;
my $pid = $node->safe_psql('postgres', q{SELECT pid FROM outbox.status});
ok(kill('KILL', $pid), "SIGKILL to the drain worker ($pid) during the stream");
$bg->{run}->kill_kill;
my $t0 = time;
until ($node->psql('postgres', 'SELECT 1') == 0) { die 'no restart' if time - $t0 > 60; usleep(200_000); }
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM outbox.log}), '>', 200, 'the stream committed events before the crash');
check_exactly_once('after SIGKILL of the worker');

$bg = stream('immediate', 100000);
my $h = $node->safe_psql('postgres', q{SELECT outbox._log_head()});
usleep(200_000) until $node->safe_psql('postgres', q{SELECT outbox._log_head()}) > $h + 200;
$node->stop('immediate');
$bg->{run}->kill_kill;
$node->start;
check_exactly_once('after an immediate shutdown');

# ---- an epoch begun by the log pass ----
# The state row records another timeline (as a promoted standby sees it; promotion-free): the next
# pass that publishes begins an epoch at its first position, and its envelopes carry it.
my $epoch0 = $node->safe_psql('postgres', q{SELECT outbox.epoch()});
my $tli = $node->safe_psql('postgres', q{SELECT timeline_id FROM pg_control_checkpoint()});
$node->safe_psql('postgres', q{UPDATE outbox.state SET timeline = timeline + 100});
# a failing pass begins no epoch: its transaction rolls back with the epoch
$node->safe_psql('postgres', q{
CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the DBA'; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON outbox.batches_0 FOR EACH ROW EXECUTE FUNCTION public.refuse();
CREATE TRIGGER refuse BEFORE INSERT ON outbox.batches_1 FOR EACH ROW EXECUTE FUNCTION public.refuse();
CREATE TRIGGER refuse BEFORE INSERT ON outbox.batches_2 FOR EACH ROW EXECUTE FUNCTION public.refuse();});
my $log_offset = -s $node->logfile;
my $head = $node->safe_psql('postgres', q{SELECT outbox._log_head()});
$listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN a');
$node->safe_psql('postgres', q{SELECT outbox._log_publish('a', '{"epoch": 1}')});
my $log = '';
for (1 .. 100) { $log = slurp_file($node->logfile, $log_offset); last if $log =~ /refused by the DBA/; usleep(100_000); }
like($log, qr/refused by the DBA/, 'a pass that fails ...');
# (the epoch may already have been begun by an empty pass that saw the UPDATE commit: at head + 1,
# where the next batch starts; the failing passes add none)
cmp_ok($node->safe_psql('postgres', q{SELECT outbox.epoch()}), '<=', $epoch0 + $tli + 100, '... publishes nothing, epochs begun at most once');
$node->safe_psql('postgres', q{DROP TRIGGER refuse ON outbox.batches_0; DROP TRIGGER refuse ON outbox.batches_1; DROP TRIGGER refuse ON outbox.batches_2});
wait_for(q{SELECT outbox._log_head()}, $head + 1, 'published once the trigger is gone');
my $e = $node->safe_psql('postgres', q{SELECT outbox.epoch()});
cmp_ok($e, '>', $epoch0, "the log pass began epoch $e");
like($node->safe_psql('postgres', qq{SELECT first_pos || ' ' || reason FROM outbox.epochs WHERE epoch = $e}),
	qr/^@{[$head + 1]} timeline changed from @{[$tli + 100]} to $tli/, '... at the batch\'s first position, reason: the timeline');
is($node->safe_psql('postgres', qq{SELECT epoch FROM outbox._log_replay($head, 10)}), $e, 'replay stamps the event with it');
$got = '';
for (1 .. 50) { $got .= $listener->query_safe('SELECT 1'); last if $got =~ /"epoch"/; usleep(100_000); }
like($got, qr/"pos":@{[$head + 1]},"epoch":$e/, 'the envelope carries it');
$node->safe_psql('postgres', q{SELECT outbox._log_publish('a', '{"epoch": 2}')});
wait_for(q{SELECT outbox._log_head()}, $head + 2, 'the next event is published');
is($node->safe_psql('postgres', q{SELECT outbox.epoch() || ' ' || count(*) FROM outbox.epochs}),
	"$e " . ($epochs_before + 1), 'in the same epoch: one epoch begun, not one per pass');
# another system identifier (a restore into another cluster), by outbox.drain()
$node->safe_psql('postgres', q{SELECT outbox.pause()});
$node->safe_psql('postgres', q{UPDATE outbox.state SET system_identifier = 'another'});
$node->safe_psql('postgres', q{SELECT outbox._log_publish('b', '{"epoch": 3}')});
is($node->safe_psql('postgres', q{SELECT outbox.drain(10)}), '1', 'outbox.drain() publishes it');
like($node->safe_psql('postgres', q{SELECT reason FROM outbox.epochs ORDER BY epoch DESC LIMIT 1}),
	qr/^system identifier changed from another to/, '... and begins an epoch too');
$node->safe_psql('postgres', q{SELECT outbox.resume()});

$listener->quit;
$node->stop;
done_testing();
