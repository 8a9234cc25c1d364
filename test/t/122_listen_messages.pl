# pg_outbox_listen's messages (issue 16): a state file in a directory that does not exist is an
# error that says so (exit 7), and with -v an envelope truncated because its payload did not fit
# in a notification is reported as such, not as a gap; its line still carries the whole payload.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $listen = $ENV{PG_OUTBOX_LISTEN};
plan skip_all => 'PG_OUTBOX_LISTEN is not set (run through test/run_tests.sh)' unless $listen && -x $listen;

my $node = PostgreSQL::Test::Cluster->new('listen_messages');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $conn = $node->connstr('postgres');

my ($out, $err) = ('', '');
IPC::Run::run([ $listen, $conn, '-c', 'orders', '--state', "$tmp/missing/dir/orders.state" ],
	'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(60));
is($? >> 8, 7, 'state file in a missing directory: exit 7');
like($err, qr{the directory "\Q$tmp\E/missing/dir" of state file "\Q$tmp\E/missing/dir/orders.state" does not exist: create it first},
	'... and it says so');

# -v: one small event, then one too big for NOTIFY, then one small again
($out, $err) = ('', '');
my $h = IPC::Run::start([ $listen, $conn, '-c', 'orders', '-v', '--from-now' ], '<', \undef, '>', \$out, '2>', \$err);
my $t0 = time;
until ($err =~ /state=live/ || time - $t0 > 60) { $h->pump_nb; usleep(50_000) }
$node->safe_psql('postgres', q{SELECT outbox.publish('orders', '{"n": 1}')});
$t0 = time;
until ($out =~ /"n": ?1/ || time - $t0 > 60) { $h->pump_nb; usleep(50_000) }
$node->safe_psql('postgres', q{SELECT outbox.publish('orders', jsonb_build_object('blob', repeat('x', 9000)))});
$node->safe_psql('postgres', q{SELECT outbox.publish('orders', '{"n": 3}')});
$t0 = time;
until ($out =~ /"n": ?3/ || time - $t0 > 60) { $h->pump_nb; usleep(50_000) }
$h->signal('TERM');
$h->finish;
my @lines = split /\n/, $out;
is(scalar @lines, 3, 'three lines');
like($lines[1] // '', qr/"blob":"x{9000}"/, 'the truncated event is printed with its whole payload');
like($err, qr/position 2 \(channel "orders" seq 2\) arrived truncated \(its payload does not fit in a notification\): reading it by replay/,
	'-v reports the truncated envelope as such');
unlike($err, qr/gap before position/, '... and reports no gap');

$node->stop;
done_testing();
