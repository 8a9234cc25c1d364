# outbox.wait() on a hot standby: no drain runs there to wake it, so it re-checks every
# pg_outbox.idle_interval and returns the events once they have been replayed; named consumers
# write, so they are for the primary (a clear read-only error on the standby).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'\npg_outbox.idle_interval = '500ms'\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
$primary->safe_psql('postgres', q{SELECT outbox.create_consumer('billing')});
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

my $head = $standby->safe_psql('postgres', 'SELECT outbox.head()');
my ($out, $err) = ('', '');
my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $standby->connstr('postgres'), '-c',
	"SELECT pos, payload->>'n' FROM outbox.wait($head, timeout => '30s')" ], '<', \undef, '>', \$out, '2>', \$err);
my $t0 = time;
until ($standby->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'Extension'") > 0
	  || time - $t0 > 30) { usleep(50_000) }
$primary->safe_psql('postgres', q{SELECT outbox.publish('orders', '{"n": 1}')});
$t0 = time;
$h->finish;
my $dt = time - $t0;
is($out, ($head + 1) . "|1\n", 'wait() on the standby returns the event published on the primary') or diag($err);
cmp_ok($dt, '<', 10, sprintf('... soon after it is replayed (%.1f s; re-checks every idle_interval)', $dt));

my ($rc, $o, $e) = $standby->psql('postgres', q{SELECT outbox.ack('billing', 1)});
like($e, qr/cannot execute .* in a read-only transaction|read-only/, 'ack() on the standby: a read-only error');
is($standby->safe_psql('postgres', q{SELECT name FROM outbox.consumers}), 'billing', 'the standby shows the consumers');

$standby->stop;
$primary->stop;
done_testing();
