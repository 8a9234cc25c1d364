# pg_outbox refuses to load outside shared_preload_libraries (its launcher, shared memory
# and commit-time wake-ups are set up by the postmaster), with a clear message and hint;
# with the library preloaded, CREATE EXTENSION works and the launcher runs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('preload');
$node->init;
$node->start;

# --- without shared_preload_libraries ---
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE EXTENSION pg_outbox');
isnt($ret, 0, 'CREATE EXTENSION fails when the library is not preloaded');
like($stderr, qr/ERROR:  pg_outbox must be loaded via shared_preload_libraries/,
	'error names shared_preload_libraries');
like($stderr, qr/DETAIL:  Its drain workers and commit-time wake-ups are set up when the server starts\./,
	'detail says why');
like($stderr,
	qr/HINT:  Add pg_outbox to shared_preload_libraries in postgresql\.conf and restart the server\./,
	'hint says what to do');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'pg_outbox'")
	  . $node->safe_psql('postgres', "SELECT count(*) FROM pg_namespace WHERE nspname = 'outbox'"),
	'00', 'the failed CREATE EXTENSION left nothing behind');

# LOAD fails the same way, and again on a second try in the same session: a failed
# _PG_init leaves nothing half set up
($ret, $stdout, $stderr) = $node->psql('postgres', "LOAD 'pg_outbox';\nLOAD 'pg_outbox';", on_error_stop => 0);
my @errors = ($stderr =~ /ERROR:  pg_outbox must be loaded via shared_preload_libraries/g);
is(scalar @errors, 2, 'LOAD fails with the same error, every time');

# the SQL state is object_not_in_prerequisite_state (55000)
($ret, $stdout, $stderr) = $node->psql('postgres', "\\set VERBOSITY verbose\nLOAD 'pg_outbox'");
like($stderr, qr/ERROR:  55000: pg_outbox must be loaded/, 'SQLSTATE 55000');

is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_outbox%'"),
	'0', 'no pg_outbox process without preload');

# --- with shared_preload_libraries ---
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'");
$node->restart;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'pg_outbox'"),
	'1.3', 'CREATE EXTENSION works with the library preloaded');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher'"),
	'the launcher runs');
is($node->safe_psql('postgres', 'SHOW pg_outbox.batch_size'), '1000', 'GUCs are defined');

# the pg_outbox.* prefix is reserved: a typo is an error, not a silent placeholder
($ret, $stdout, $stderr) = $node->psql('postgres', 'SET pg_outbox.batch_sise = 10');
like($stderr, qr/invalid configuration parameter name "pg_outbox\.batch_sise"/,
	'a misspelt pg_outbox.* setting is rejected');

# and the whole path works: publish, the worker drains it
my $id = $node->safe_psql('postgres', "SELECT outbox.publish('smoke', '{\"ok\": true}')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM outbox.history WHERE id = $id"),
	'a published event is drained by the worker');

$node->stop;
done_testing();
