# pg_dump / pg_restore keeps the outbox: pending events, history, counters, pause flag; the
# restored database's worker resumes publishing where the old one stopped, never repeating a
# pos or a seq.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
# the source database gets no worker (its events are drained by hand, the rest stays pending);
# the restored one does
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = 'restored'
pg_outbox.idle_interval = '200ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('app', q{
    SELECT outbox.publish(CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END, jsonb_build_object('n', g))
      FROM generate_series(1, 50) g;
    SELECT outbox.drain(1000);
    SELECT outbox.publish(CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END, jsonb_build_object('n', g))
      FROM generate_series(51, 70) g;
});
is($node->safe_psql('app', 'SELECT count(*) FROM outbox.history'), '50', 'source: 50 published');
is($node->safe_psql('app', 'SELECT count(*) FROM outbox.pending'), '20', 'source: 20 pending');

my $dump = $node->basedir . '/app.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('app') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], 'pg_restore');

ok($node->poll_query_until('restored', 'SELECT count(*) = 0 FROM outbox.pending'),
   'the restored database\'s worker publishes the restored backlog');
is($node->safe_psql('restored', 'SELECT count(*), count(DISTINCT pos), min(pos), max(pos), count(DISTINCT id) FROM outbox.history'),
   '70|70|1|70|70', 'history restored and continued: pos 1..70, no repeat, no gap');
is($node->safe_psql('restored', q{
    SELECT bool_and(ok) FROM (
        SELECT seq = row_number() OVER (PARTITION BY channel ORDER BY pos) AS ok FROM outbox.history) s}),
   't', 'per-channel seq continues without a repeat or a gap');
is($node->safe_psql('restored', q{SELECT min(pos) FROM outbox.history WHERE (payload->>'n')::int > 50}),
   '51', 'the restored backlog was published after the restored history');
is($node->safe_psql('restored', 'SELECT last_pos, count(*) FROM outbox.state GROUP BY 1'), '70|1',
   'one state row, counter at 70');

# the pause flag travels with the dump too. pg_restore loads outbox.pending before
# outbox.state, so a worker running during the restore could publish restored events before the
# flag arrives: the documented procedure restores into a database outside pg_outbox.databases,
# then adds it.
$node->safe_psql('app', 'SELECT outbox.pause()');
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('app') ], 'pg_dump of a paused outbox');
$node->safe_psql('postgres', 'CREATE DATABASE restored2');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored2'), $dump ], 'pg_restore');
$node->safe_psql('postgres', "ALTER SYSTEM SET pg_outbox.databases = 'restored, restored2'");
$node->reload;
ok($node->poll_query_until('restored2', "SELECT state = 'paused' FROM outbox.status"), 'restored worker is paused');
is($node->safe_psql('restored2', 'SELECT count(*) FROM outbox.pending'), '20', 'nothing published while paused');
$node->safe_psql('restored2', 'SELECT outbox.resume()');
ok($node->poll_query_until('restored2', 'SELECT count(*) = 0 FROM outbox.pending'), 'resumed');
is($node->safe_psql('restored2', 'SELECT count(DISTINCT pos), min(pos), max(pos) FROM outbox.history'), '70|1|70',
   'pos 51..70 after resume');
# DROP DATABASE works while its worker is attached
$node->safe_psql('postgres', 'DROP DATABASE restored2');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname = 'restored2'"), '0', 'dropped');

$node->stop;
done_testing();
