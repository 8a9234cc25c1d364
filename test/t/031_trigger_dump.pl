# The change trigger on a real server (drain worker running): an attached table's events
# reach the history without any outbox.drain() by hand, and pg_dump + restore keep the
# attachments (they are the triggers themselves, dumped with their tables).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('trigger');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '200ms'
});
$node->start;

$node->safe_psql('postgres', q{
CREATE DATABASE src;
});
$node->safe_psql('src', q{
CREATE EXTENSION pg_outbox;
CREATE TABLE users (id int PRIMARY KEY, name text, tenant text NOT NULL);
SELECT outbox.attach('users', include_columns => '{name}', operations => '{INSERT,UPDATE,DELETE,TRUNCATE}');
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Order Lines" ("Line No" int PRIMARY KEY, tenant text NOT NULL);
SELECT outbox.attach('"My Schema"."Order Lines"', channel => 'tenant_{tenant}', mode => 'notify',
                     operations => '{INSERT,DELETE}');
});

# the drain worker publishes what the trigger wrote
$node->safe_psql('src', q{INSERT INTO users VALUES (1, 'ann', 't1')});
ok($node->poll_query_until('src', q{SELECT count(*) = 1 FROM outbox.history WHERE channel = 'public.users'}),
	'the worker published the trigger event');
is($node->safe_psql('src', q{SELECT key || ' ' || type || ' ' || (payload->'data'->>'name') FROM outbox.history}),
	'1 INSERT ann', 'event key, type and data');

my $attachments = q{SELECT "table", channel, mode, key_columns, include_columns, operations
                      FROM outbox.attachments ORDER BY "table"::text};
my $before = $node->safe_psql('src', $attachments);

# pg_dump, restore into a fresh database
my $dump = $node->basedir . '/src.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('src'), '-f', $dump ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored'), '-f', $dump ],
	'restore');
is($node->safe_psql('restored', $attachments), $before, 'attachments survive pg_dump and restore');

# and they work there: outbox mode through the restored database's own worker
$node->safe_psql('restored', q{INSERT INTO users VALUES (2, 'bob', 't2')});
ok($node->poll_query_until('restored', q{SELECT count(*) = 1 FROM outbox.history WHERE key = '2'}),
	'the restored attachment writes events the worker publishes');
is($node->safe_psql('restored', q{SELECT payload->>'table' FROM outbox.history WHERE key = '2'}),
	'public.users', 'event of the restored table');

# pg_dump -t of one table keeps its attachment as well
my $dump_t = $node->basedir . '/one_table.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('src'), '-t', '"My Schema"."Order Lines"', '-f', $dump_t ],
	'pg_dump -t');
my $text = slurp_file($dump_t);
like($text, qr/CREATE TRIGGER outbox_change AFTER INSERT OR DELETE ON "My Schema"\."Order Lines" FOR EACH ROW EXECUTE FUNCTION outbox\._change\('notify', 'tenant_\{tenant\}', '', ''\)/,
	'the trigger, with its configuration, is in a one-table dump');

$node->stop;
done_testing();
