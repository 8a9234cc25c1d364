# PostgreSQL 17's failover slots and the 'wal' target: a logical slot created with
# failover => true is synchronized to a physical standby (sync_replication_slots); after the
# standby is promoted, the consumer resumes on it where it stopped on the old primary: it gets
# the events published after its last acknowledgement, each once, and none it had already read.
# On PostgreSQL 15 and 16 logical slots do not survive a failover: skipped there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('failover_primary');
plan skip_all => 'failover slots need PostgreSQL 17 or later' if $primary->pg_version < 17;

$primary->init(allows_streaming => 'logical');
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = 200
synchronized_standby_slots = 'standby_slot'
});
$primary->start;
$primary->safe_psql('postgres', q{
	SELECT pg_create_physical_replication_slot('standby_slot');
	CREATE EXTENSION pg_outbox;
	SELECT outbox.set_target('orders', 'wal');
	-- (slot_name, plugin, temporary, twophase, failover)
	SELECT pg_create_logical_replication_slot('cdc', 'test_decoding', false, false, true);
});
is($primary->safe_psql('postgres', q{SELECT failover FROM pg_replication_slots WHERE slot_name = 'cdc'}),
	't', 'the consumer slot is a failover slot');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('failover_standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
# slot synchronization needs a dbname in primary_conninfo
my ($host, $port) = ($primary->host, $primary->port);
$standby->append_conf('postgresql.conf', qq{
primary_slot_name = 'standby_slot'
primary_conninfo = 'host=$host port=$port dbname=postgres'
hot_standby_feedback = on
sync_replication_slots = on
# copied from the primary's configuration with the backup: the promoted standby has no standby
# of its own to wait for (else its consumers wait for ever)
synchronized_standby_slots = ''
});
$standby->start;

# the pg_outbox messages a slot returns, as "pos:payload.n" (SQL interface, consuming)
sub read_slot
{
	my ($node) = @_;
	return $node->safe_psql('postgres', q{
		SELECT coalesce(string_agg(m->>'pos' || ':' || (m->'payload'->>'n'), ',' ORDER BY n), '')
		  FROM (SELECT substr(data, position(' content:' IN data) + 9)::jsonb AS m, n
		          FROM pg_logical_slot_get_changes('cdc', NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1')
		               WITH ORDINALITY AS c(lsn, xid, data, n)
		         WHERE data LIKE 'message: transactional: 1 prefix: pg_outbox, %') s});
}
sub publish_and_drain
{
	my ($node, @n) = @_;
	$node->safe_psql('postgres',
		join('', map { "SELECT outbox.publish('orders', '{\"n\": $_}');\n" } @n));
	ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM outbox.pending}),
		"events @n drained");
}

# read before the failover: events 1-3, consumed (acknowledged) on the primary
publish_and_drain($primary, 1, 2, 3);
is(read_slot($primary), '1:1,2:2,3:3', 'the consumer reads events 1-3 on the primary');
my $acked = $primary->safe_psql('postgres',
	q{SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'cdc'});

# not yet read: events 4-5
publish_and_drain($primary, 4, 5);
$primary->wait_for_replay_catchup($standby);
ok( $standby->poll_query_until('postgres', qq{
		SELECT synced AND NOT temporary AND confirmed_flush_lsn >= '$acked'
		  FROM pg_replication_slots WHERE slot_name = 'cdc'}),
	'the standby holds a synchronized copy of the slot, at the acknowledged position');

$primary->stop('immediate');
$standby->promote;
is(read_slot($standby), '4:4,5:5',
	'after the failover the consumer gets exactly the events it had not acknowledged');

# publishing goes on on the new primary, on the same slot
publish_and_drain($standby, 6);
is(read_slot($standby), '6:6', 'events published after the failover reach the same slot');

$standby->stop;
done_testing();
