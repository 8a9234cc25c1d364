# Named consumers and the drain worker's rotation of the log (issue #15, log mode): the worker
# rotates the log about once a second by pg_outbox.retention (1 s here); a segment holding events
# an active consumer has not acknowledged is kept until pg_outbox.consumer_max_retention (4 s),
# then the consumer is marked lost in the rotation's transaction (outbox._log_consumers_release()).
# Asserted, sampled while events stream in: the log's horizon never passes the acknowledged
# position of an active consumer; the consumer that never acknowledges becomes lost, its next()
# and ack() raise OB001; one that acknowledges as it goes, and a filtered one whose channel gets
# nothing, stay active and read on; status and health() count the lost one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use OutboxNode qw(outbox_node);

my $node = outbox_node('log_consumers', 'pg_outbox.retention' => '1s', 'pg_outbox.consumer_max_retention' => '4s');
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql('CREATE EXTENSION pg_outbox');
sql('SELECT * FROM outbox.use_log_storage()');
is(sql('SELECT outbox._log_active()'), 't', 'log mode');

sql(q{SELECT outbox.create_consumer('slow', NULL, 'now')});
sql(q{SELECT outbox.create_consumer('fast', NULL, 'now')});
sql(q{SELECT outbox.create_consumer('quiet', ARRAY['x'], 'now')});

# events stream in for up to 30 s; fast acknowledges each round; every sample checks that no
# active consumer has lost an event it had not acknowledged
my ($violations, $samples, $lost_at) = (0, 0, undef);
my $t0 = time;
while (time - $t0 < 30) {
	sql(q{SELECT outbox.publish('a', jsonb_build_object('t', clock_timestamp()))});
	usleep(200_000);
	my $head = sql(q{SELECT outbox.head()});
	sql(qq{SELECT outbox.ack('fast', $head)});
	$samples++;
	$violations += sql(q{SELECT count(*) FROM outbox.consumer c, outbox.log_state l
	                      WHERE c.state = 'active' AND c.channels IS NULL AND l.purged_pos > c.acked_pos});
	if (sql(q{SELECT state FROM outbox.consumer WHERE name = 'slow'}) eq 'lost') {
		$lost_at = time - $t0;
		last;
	}
}
ok(defined $lost_at, 'the consumer that never acknowledges is marked lost')
	or diag(sql(q{SELECT * FROM outbox.consumers}) . "\n" . sql(q{SELECT * FROM outbox.log_state}));
ok($lost_at >= 3.5, "not before pg_outbox.consumer_max_retention (after $lost_at s)") if defined $lost_at;
is($violations, 0, "no sample of $samples saw the horizon past an active unfiltered consumer's position");
like(sql(q{SELECT lost_reason FROM outbox.consumer WHERE name = 'slow'}),
	qr/^Retention removed the events it had not acknowledged \(positions 1 to \d+\): they were older than pg_outbox.consumer_max_retention\.$/,
	'the reason names the positions, as 1.2 says it');
ok(sql(q{SELECT purged_pos > 0 FROM outbox.log_state}) eq 't', 'the log was rotated');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT count(*) FROM outbox.next('slow', timeout => '0')});
like($err, qr/consumer "slow" is lost: events it had not acknowledged have been removed/, 'next() of the lost consumer: OB001');
($rc, $out, $err) = $node->psql('postgres', q{SELECT outbox.ack('slow', 1)}, extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/OB001/, 'ack() of the lost consumer: OB001');
is(sql(q{SELECT string_agg(name || '=' || state, ',' ORDER BY name) FROM outbox.consumers}), 'fast=active,quiet=active,slow=lost',
	'the consumers that lost nothing stay active');
($rc, $out, $err) = $node->psql('postgres', q{SELECT count(*) FROM outbox.next('quiet', timeout => '0')});
is($rc, 0, 'the filtered consumer behind the horizon reads on (nothing of its channel was removed)') or diag($err);
is(sql(q{SELECT lost_consumers FROM outbox.status}), '1', 'status counts the lost consumer');
is(sql(q{SELECT status FROM outbox.health() WHERE "check" = 'lost_consumers'}), 'critical', 'health(): lost_consumers critical');
# the worker publishes on: fast reads the next event
sql(q{SELECT outbox.publish('a', '{"last": true}')});
my $got = '';
for (1 .. 100) {
	$got = sql(q{SELECT string_agg(payload::text, ',') FROM outbox.next('fast', timeout => '1s') WHERE payload ? 'last'});
	last if $got ne '';
}
is($got, '{"last": true}', 'fast reads on');

$node->stop;
done_testing();
