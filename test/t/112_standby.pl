# Faults (issue 12): a hot standby and its promotion.
#   - on the standby no drain worker runs; readers work (replay, head, event, status);
#     every writing function fails with 25006 and says to run it on the primary;
#   - events committed on the primary but not yet published when it goes away are published
#     by the promoted standby, and pos continues with no gap and no repeat.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OutboxFault qw(start_producers wait_producers acked_ids verdict poll_until);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
$primary->safe_psql('postgres', 'CREATE TABLE items (id int PRIMARY KEY)');
ok(poll_until($primary, 'postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 60),
	'primary: drain worker running');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

# events published on the primary (with rollbacks in between), then more events that stay
# pending: the primary stops publishing (pg_outbox.databases = '' in its own
# postgresql.auto.conf, which the standby does not share)
my $dir = PostgreSQL::Test::Utils::tempdir;
my $failures = 0;
my $kids = start_producers(node => $primary, db => 'postgres', dir => $dir, producers => 2, first => 1, last => 300);
wait_producers($kids, \$failures);
ok(poll_until($primary, 'postgres', 'SELECT count(*) = 0 FROM outbox.pending', 60), 'primary published the first 600 events');
$primary->safe_psql('postgres', "ALTER SYSTEM SET pg_outbox.databases = ''");
$primary->reload;
ok(poll_until($primary, 'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 60),
	'primary: worker stopped');
$kids = start_producers(node => $primary, db => 'postgres', dir => $dir, producers => 2, first => 301, last => 400);
wait_producers($kids, \$failures);
is($failures, 0, 'every producer transaction was acknowledged');
my $head = $primary->safe_psql('postgres', 'SELECT outbox.head()');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM outbox.pending'), '200', '200 events pending on the primary');
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

# ---- the standby ----
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby in recovery');
is($standby->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_outbox%'"), '0',
	'no launcher and no drain worker on a standby');
is($standby->safe_psql('postgres', 'SELECT outbox.head()'), $head, 'standby: outbox.head() works');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM outbox.replay(0, NULL, 100000)'), '600',
	'standby: outbox.replay() returns the published events');
is($standby->safe_psql('postgres', 'SELECT (outbox.event(1)).id'), '1', 'standby: outbox.event() works');
is($standby->safe_psql('postgres', 'SELECT pending, state FROM outbox.status'), '200|standby',
	'standby: outbox.status works');
for my $call ("outbox.publish('x', '{}')", 'outbox.drain()', "outbox.purge('1 day')", 'outbox.pause()',
	'outbox.resume()', "outbox.attach('items')", "outbox.detach('items')", "outbox.set_target('x', 'wal')",
	"outbox.reset_target('x')", 'outbox.retry(1)', "outbox.notify('x', 'y')")
{
	my ($rc, $out, $err) = $standby->psql('postgres', "\\set VERBOSITY verbose\nSELECT $call");
	(my $name = $call) =~ s/\(.*//;
	like($err, qr/ERROR:  25006: cannot execute/, "standby: $name fails with 25006");
	unlike($err, qr/lock mode|TransactionId/, "standby: $name does not fail with a lock-mode or xid error");
	like($err, qr/HINT:  Run \Q$name\E\(\) on the primary server/, "standby: $name says to run it on the primary")
	  unless $name eq 'outbox.retry';
}

# ---- promotion: the pending events are published, pos goes on ----
$primary->stop('immediate');
$standby->promote;
ok(poll_until($standby, 'postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain'", 60),
	'promoted: a drain worker starts');
verdict($standby, 'postgres', acked_ids($dir, 2), 800, 'after promotion');
is($standby->safe_psql('postgres', "SELECT min(pos) FROM outbox.history WHERE (payload->>'k')::int > 300"), $head + 1,
	'the first event published after promotion has the position after the primary\'s last');
my ($rc, $out, $err) = $standby->psql('postgres', "SELECT outbox.publish('x', '{}') > 0");
is($out, 't', 'promoted: outbox.publish() works');
$standby->stop;
done_testing();
