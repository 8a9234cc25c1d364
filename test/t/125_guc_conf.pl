# Every pg_outbox.* setting can be set in postgresql.conf. A GUC defined after _PG_init() reserves
# the "pg_outbox" prefix is removed at startup with a WARNING and its default applies silently
# (pg_outbox.consumer_max_retention was, until 1.3): this writes every setting the server lists
# into postgresql.conf, restarts, and checks that none was dropped and that a non-default value
# of each kind took effect.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('guc_conf');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'\npg_outbox.databases = ''\n");
$node->start;
# every setting with its default, as postgresql.conf lines (test-only ones included)
my $lines = $node->safe_psql('postgres', q{
    SELECT string_agg(format('%s = %L', name, CASE WHEN unit IS NULL THEN reset_val ELSE reset_val || unit END), E'\n' ORDER BY name)
      FROM pg_settings WHERE name LIKE 'pg\_outbox.%' AND context <> 'internal'});
my $n = () = $lines =~ /^pg_outbox\./mg;
cmp_ok($n, '>=', 10, "the server lists the pg_outbox settings ($n)");
$node->append_conf('postgresql.conf', "$lines\npg_outbox.consumer_max_retention = 0\npg_outbox.max_attempts = 7\n");
my $log_offset = -s $node->logfile;
$node->restart;
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/invalid configuration parameter name "pg_outbox\./, 'no pg_outbox setting in postgresql.conf is dropped at startup');
unlike($log, qr/WARNING:.*pg_outbox\./, 'no warning names a pg_outbox setting');
is($node->safe_psql('postgres', q{SELECT setting FROM pg_settings WHERE name = 'pg_outbox.consumer_max_retention'}), '0',
	'pg_outbox.consumer_max_retention = 0 in postgresql.conf takes effect (was: the 7-day default)');
is($node->safe_psql('postgres', q{SELECT setting FROM pg_settings WHERE name = 'pg_outbox.max_attempts'}), '7',
	'pg_outbox.max_attempts = 7 in postgresql.conf takes effect');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_settings WHERE name LIKE 'pg\_outbox.%' AND source = 'configuration file'}),
	$n + 0, 'every setting written to postgresql.conf is read from it') ;
$node->stop;
done_testing();
