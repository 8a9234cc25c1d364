# The 'wal' target with the real drain worker: events of a 'wal' channel reach a logical
# decoding consumer over the streaming replication protocol (pg_recvlogical, test_decoding)
# and through the SQL interface, each once, in pos order, nothing of rolled-back producers
# and nothing of 'notify' channels.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('wal_target');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = 200
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_outbox;
	SELECT outbox.set_target('orders', 'wal');
	SELECT outbox.set_target('audit', 'both');
});
$node->safe_psql('postgres', q{SELECT pg_create_logical_replication_slot('sql_slot', 'test_decoding')});
$node->safe_psql('postgres', q{SELECT pg_create_logical_replication_slot('stream_slot', 'test_decoding')});

# 40 producer transactions of 5 'orders' events, one 'audit' (both) and one 'plain' (notify)
# event each; every 7th rolls back.
my $script = '';
my $committed = 0;
for my $t (1 .. 40)
{
	my $end = ($t % 7 == 0) ? 'ROLLBACK' : 'COMMIT';
	$committed++ if $end eq 'COMMIT';
	$script .= "BEGIN;\n"
	  . "SELECT count(outbox.publish('orders', jsonb_build_object('t', $t, 'i', i), key => 'k' || i)) FROM generate_series(1, 5) i;\n"
	  . "SELECT outbox.publish('plain', jsonb_build_object('t', $t));\n"
	  . "SELECT outbox.publish('audit', jsonb_build_object('t', $t, 'rolled_back', '$end' = 'ROLLBACK'));\n"
	  . "$end;\n";
}
$node->safe_psql('postgres', $script);

ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM outbox.pending}),
	'the drain worker published every pending event');
my $published = $node->safe_psql('postgres',
	q{SELECT count(*) FROM outbox.history WHERE channel IN ('orders', 'audit')});
is($published, $committed * 6, 'history holds the committed wal/both events');

# The positions the history says were sent to the WAL, in order.
my $expected = $node->safe_psql('postgres',
	q{SELECT string_agg(pos::text, ',' ORDER BY pos) FROM outbox.history WHERE channel IN ('orders', 'audit')});

# 1. SQL interface
my $sql_seen = $node->safe_psql('postgres', q{
	SELECT string_agg((substr(data, position(' content:' IN data) + 9)::jsonb->>'pos'), ',' ORDER BY n)
	  FROM pg_logical_slot_get_changes('sql_slot', NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1')
	       WITH ORDINALITY AS c(lsn, xid, data, n)
	 WHERE data LIKE 'message: transactional: 1 prefix: pg_outbox, %'});
is($sql_seen, $expected, 'SQL slot: every wal/both event once, in pos order');

my $rolled = $node->safe_psql('postgres',
	q{SELECT count(*) FROM outbox.history WHERE payload @> '{"rolled_back": true}'});
is($rolled, '0', 'no rolled-back event was published');

# 2. streaming replication protocol: pg_recvlogical up to the current end of WAL
my $endpos = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $outfile = $node->basedir . '/recvlogical.out';
$node->command_ok(
	[
		'pg_recvlogical', '-d', $node->connstr('postgres'), '-S', 'stream_slot', '--start',
		'--endpos', $endpos, '--no-loop', '-f', $outfile,
		'-o', 'include-xids=0', '-o', 'skip-empty-xacts=1'
	],
	'pg_recvlogical streams the slot');
my @positions;
my %channels;
open(my $fh, '<', $outfile) or die "cannot open $outfile: $!";
while (my $line = <$fh>)
{
	next unless $line =~ /^message: transactional: 1 prefix: pg_outbox, sz: (\d+) content:(.*)$/;
	my ($size, $content) = ($1, $2);
	is(length($content), $size, 'message size matches its content') if !@positions;
	push @positions, $1 if $content =~ /"pos":(\d+)/;
	$channels{$1}++ if $content =~ /"channel":"([^"]+)"/;
}
close($fh);
is(join(',', @positions), $expected, 'pg_recvlogical: every wal/both event once, in pos order');
is_deeply(\%channels, { orders => $committed * 5, audit => $committed },
	'only the wal and both channels are in the WAL');

$node->stop;
done_testing();
