# The launcher (issue 12): CREATE EXTENSION x CASCADE (x requires pg_outbox) starts a worker
# like CREATE EXTENSION pg_outbox; a dropped database never gets a worker started for it; a
# bad pg_outbox.databases in postgresql.conf is refused at reload and the old value kept.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OutboxFault qw(poll_until);

my $node = PostgreSQL::Test::Cluster->new('launcher');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
});
$node->start;
sub worker_in {
	my ($db) = @_;
	return "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = '$db'";
}

# ---- CREATE EXTENSION x CASCADE ----
# a tiny extension that requires pg_outbox, in the installation this test runs against
my $extdir = $node->config_data('--sharedir') . '/extension';
open my $fh, '>', "$extdir/pg_outbox_cascade_test.control" or die "$extdir: $!";
print $fh "comment = 'test: requires pg_outbox'\ndefault_version = '1.0'\nrequires = 'pg_outbox'\nrelocatable = true\n";
close $fh;
open $fh, '>', "$extdir/pg_outbox_cascade_test--1.0.sql" or die;
print $fh "CREATE FUNCTION cascade_test_publish() RETURNS bigint LANGUAGE sql AS \$\$ SELECT outbox.publish('cascade', '{}') \$\$;\n";
close $fh;
$node->safe_psql('postgres', 'CREATE DATABASE casc');
usleep(1_500_000); # the launcher probed casc (no extension) and keeps it as such
my $t0 = time;
$node->safe_psql('casc', 'CREATE EXTENSION pg_outbox_cascade_test CASCADE');
ok(poll_until($node, 'postgres', worker_in('casc'), 30), 'CREATE EXTENSION x CASCADE starts a drain worker');
cmp_ok(time - $t0, '<', 5, 'at once (the commit asks the launcher to look again)');
$node->safe_psql('casc', 'SELECT cascade_test_publish()');
ok(poll_until($node, 'casc', 'SELECT count(*) = 1 FROM outbox.history', 30), 'and it publishes');
# the same in a DO block (CREATE EXTENSION run from SQL, not as a top-level statement)
$node->safe_psql('postgres', 'CREATE DATABASE casc2');
usleep(1_000_000);
$node->safe_psql('casc2', q{DO $$ BEGIN EXECUTE 'CREATE EXTENSION pg_outbox_cascade_test CASCADE'; END $$});
ok(poll_until($node, 'postgres', worker_in('casc2'), 30), 'CREATE EXTENSION ... CASCADE in a DO block: worker too');
# DROP EXTENSION pg_outbox CASCADE (drops x too): the worker goes
$node->safe_psql('casc2', 'DROP EXTENSION pg_outbox CASCADE');
ok(poll_until($node, 'postgres', "SELECT NOT (" . worker_in('casc2') . ")", 30), 'DROP EXTENSION pg_outbox CASCADE: the worker goes');

# ---- a dropped database never gets a worker ----
$node->safe_psql('postgres', 'DROP DATABASE casc2');
for my $round (1 .. 15) {
	$node->safe_psql('postgres', "CREATE DATABASE gone$round TEMPLATE casc");
	$node->safe_psql('postgres', "DROP DATABASE gone$round");
}
# the launcher gets every chance to start a worker for them now
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
usleep(2_500_000);
my $log = slurp_file($node->logfile);
unlike($log, qr/FATAL:  database \d+ does not exist/, 'no worker was ever started for a dropped database');
ok(poll_until($node, 'postgres', worker_in('casc'), 30), 'the template database keeps its worker');

# ---- a bad pg_outbox.databases at reload: refused, the old value is kept ----
$node->append_conf('postgresql.conf', "pg_outbox.databases = 'casc'\n");
$node->reload;
ok(poll_until($node, 'postgres', "SELECT current_setting('pg_outbox.databases') = 'casc'", 30), 'a good value is taken');
for my $bad (q{'"unterminated'}, q{'a,,b'}) {
	my $offset = -s $node->logfile;
	$node->append_conf('postgresql.conf', "pg_outbox.databases = $bad\n");
	$node->reload;
	my $deadline = time + 30;
	my $said = 0;
	while (!$said && time < $deadline) {
		$said = slurp_file($node->logfile, $offset) =~ /invalid value for parameter "pg_outbox.databases"/;
		usleep(100_000) unless $said;
	}
	ok($said, "reload with pg_outbox.databases = $bad: the server says the value is invalid");
	like(slurp_file($node->logfile, $offset), qr/WARNING:  pg_outbox.databases = ".*" in the configuration file is invalid: the value "casc" stays in effect/,
		'with a WARNING naming the value that stays');
	like(slurp_file($node->logfile, $offset), qr/configuration file .* contains errors; unaffected changes were applied/,
		'and that the rest of the file was applied');
	is($node->safe_psql('postgres', "SELECT current_setting('pg_outbox.databases')"), 'casc', 'the old value is kept');
	ok(poll_until($node, 'postgres', worker_in('casc'), 10), 'and the worker keeps running');
}
$log = slurp_file($node->logfile);
unlike($log, qr/invalid list syntax|terminated by signal/, 'no list syntax error at run time, no crash');
unlink "$extdir/pg_outbox_cascade_test.control", "$extdir/pg_outbox_cascade_test--1.0.sql";
$node->stop;
done_testing();
