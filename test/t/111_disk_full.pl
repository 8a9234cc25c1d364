# Faults (issue 12): the disk fills up. A database lives in a tablespace on a small tmpfs
# (prepared by test/run_tests.sh as root, passed in PG_OUTBOX_SMALL_FS; mounting needs root and
# the TAP test runs as postgres, so without it this test is skipped, and says why).
#   - while the disk is full, the drain fails with 53100 and is retried: nothing is
#     dead-lettered, nothing is lost, producers' new transactions fail (not acknowledged);
#   - once space is freed, everything acknowledged is published exactly once, pos 1..N,
#     with no manual step.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OutboxFault qw(start_producers wait_producers acked_ids verdict poll_until);

my $fs = $ENV{PG_OUTBOX_SMALL_FS};
plan skip_all => 'no small file system: PG_OUTBOX_SMALL_FS is set by test/run_tests.sh when it can mount a tmpfs (as root)'
  unless $fs && -d $fs && -w $fs;

my $node = PostgreSQL::Test::Cluster->new('disk_full');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
autovacuum = off
});
$node->start;
mkdir "$fs/ts" or die "$fs/ts: $!";
$node->safe_psql('postgres', "CREATE TABLESPACE small LOCATION '$fs/ts'");
$node->safe_psql('postgres', 'CREATE DATABASE diskfull TABLESPACE small');
$node->safe_psql('diskfull', 'CREATE EXTENSION pg_outbox');
ok(poll_until($node, 'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = 'diskfull'", 60),
	'drain worker running');

my $dir = PostgreSQL::Test::Utils::tempdir;
my $failures = 0;
# 1. a backlog: the worker is paused while 2 x 1000 events are acknowledged
$node->safe_psql('diskfull', 'SELECT outbox.pause()');
my $kids = start_producers(node => $node, db => 'diskfull', dir => $dir, producers => 2, first => 1, last => 1000);
wait_producers($kids, \$failures);
is($failures, 0, 'the backlog was acknowledged');

# 2. fill the disk (the file extensions stay even though the block rolls back)
$node->safe_psql('diskfull', q{
	CREATE TABLE filler (b text);
	ALTER TABLE filler ALTER b SET STORAGE EXTERNAL;
	DO $$ BEGIN
		LOOP
			INSERT INTO filler SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 2000);
		END LOOP;
	EXCEPTION WHEN disk_full THEN NULL;
	END $$;
});
my ($rc, $out, $err) = $node->psql('diskfull',
	q{SELECT count(outbox.publish('x', jsonb_build_object('pad', repeat('y', 2000)))) FROM generate_series(1, 500)});
like($err, qr/No space left on device/, 'the disk is full: a producer\'s transaction fails (and is not acknowledged)');

# 3. publishing while the disk is full: the drain fails with disk_full and is retried
my $offset = -s $node->logfile;
$node->safe_psql('diskfull', 'SELECT outbox.resume()');
my $deadline = time + 30;
my $said = 0;
while (!$said && time < $deadline) {
	$said = slurp_file($node->logfile, $offset) =~ /No space left on device/;
	usleep(200_000) unless $said;
}
ok($said, 'the drain fails with "No space left on device" (server log)');
usleep(2_500_000); # a few retries
is($node->safe_psql('diskfull', 'SELECT count(*) FROM outbox.dead_letter'), '0', 'nothing is dead-lettered for a full disk');
is($node->safe_psql('diskfull', 'SELECT count(*) FROM outbox.pending') + $node->safe_psql('diskfull', 'SELECT count(*) FROM outbox.history'),
	2000, 'nothing is lost: every event is pending or published');
ok(poll_until($node, 'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = 'diskfull'", 10),
	'the worker keeps running');

# 4. space again: everything is published without a manual step
$node->safe_psql('diskfull', 'DROP TABLE filler');
$kids = start_producers(node => $node, db => 'diskfull', dir => $dir, producers => 2, first => 1001, last => 1200);
wait_producers($kids, \$failures);
is($failures, 0, 'producers commit again once there is space');
verdict($node, 'diskfull', acked_ids($dir, 2), 2400, 'after the disk was full');
$node->stop;
done_testing();
