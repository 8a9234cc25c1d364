# Upgrades: install each earlier version (0.9 .. 1.2), publish with it, ALTER EXTENSION pg_outbox
# UPDATE, and check that the result equals a fresh install of the new version, object by
# object (definitions, columns, constraints, indexes, triggers, privileges, dump settings), and
# that the data published before the upgrade is still there and positions go on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = ''
wal_level = logical
});
$node->start;

is($node->safe_psql('postgres',
    "SELECT string_agg(version, ',' ORDER BY version) FROM pg_available_extension_versions WHERE name = 'pg_outbox'"),
   '0.9,1.0,1.1,1.2,1.3', 'versions 0.9 .. 1.3 are installable');
is($node->safe_psql('postgres',
    "SELECT string_agg(source || '->' || target || ' via ' || path, ',' ORDER BY source, target)"
    . " FROM pg_extension_update_paths('pg_outbox') WHERE path IS NOT NULL"),
   '0.9->1.0 via 0.9--1.0,0.9->1.1 via 0.9--1.0--1.1,0.9->1.2 via 0.9--1.0--1.1--1.2,0.9->1.3 via 0.9--1.0--1.1--1.2--1.3,'
   . '1.0->1.1 via 1.0--1.1,1.0->1.2 via 1.0--1.1--1.2,1.0->1.3 via 1.0--1.1--1.2--1.3,'
   . '1.1->1.2 via 1.1--1.2,1.1->1.3 via 1.1--1.2--1.3,1.2->1.3 via 1.2--1.3',
   'update paths: 0.9 -> 1.0 -> 1.1 -> 1.2 -> 1.3');

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION pg_outbox');
my $cur = '1.3';
my @from = ('0.9', '1.0', '1.1', '1.2');
for my $v (@from) {
    (my $db = "from_$v") =~ s/\./_/;
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    $node->safe_psql($db, "CREATE EXTENSION pg_outbox VERSION '$v'");
    $node->safe_psql($db, q{
        SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 6) g;
    });
    # the new library does not publish with the old SQL objects: it says what to do
    my ($rc, $out, $err) = $node->psql($db, 'SELECT outbox.drain()');
    like($err, qr/pg_outbox \Q$cur\E cannot publish with version \Q$v\E of its SQL objects.*\n.*HINT:  Run ALTER EXTENSION pg_outbox UPDATE/s,
         "drain with $v SQL objects: clear error and hint");
    $node->safe_psql($db, 'ALTER EXTENSION pg_outbox UPDATE');
    is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'pg_outbox'"), $cur, "$v updated to $cur");
}

# Everything about the extension's objects that matters, one line each, no OIDs.
my $fingerprint = q{
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pg_outbox'),
lines(line) AS (
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid)
      FROM pg_depend, ext WHERE refclassid = 'pg_extension'::regclass AND refobjid = ext.oid AND deptype = 'e'
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure || ' secdef=' || p.prosecdef || ' acl=' || coalesce(p.proacl::text, '-')
           || E'\n' || pg_get_functiondef(p.oid)
      FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text || ' options=' || coalesce(c.reloptions::text, '-')
           || ' acl=' || coalesce(c.relacl::text, '-')
      FROM pg_class c WHERE c.relnamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' #' || a.attnum || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
           || ' identity=' || a.attidentity::text
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'outbox'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid)
      FROM pg_class c WHERE c.relnamespace = 'outbox'::regnamespace AND c.relkind = 'v'
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'outbox'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'inherits ' || i.inhrelid::regclass || ' ' || i.inhparent::regclass FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relnamespace = 'outbox'::regnamespace
    UNION ALL
    SELECT 'dumped ' || cfg::regclass || ' where=' || coalesce(cond, '-')
      FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(cfg, cond) WHERE e.extname = 'pg_outbox'
    UNION ALL
    SELECT 'schema acl=' || coalesce(nspacl::text, '-') FROM pg_namespace WHERE nspname = 'outbox'
)
SELECT string_agg(line, E'\n' ORDER BY line) FROM lines};

my $fresh = $node->safe_psql('fresh', $fingerprint);
cmp_ok(length($fresh), '>', 1000, 'the fingerprint covers the extension');
for my $v (@from) {
    (my $db = "from_$v") =~ s/\./_/;
    my $upgraded = $node->safe_psql($db, $fingerprint);
    if ($fresh eq $upgraded) {
        pass("an upgraded $v equals a fresh $cur");
    } else {
        my $kinds = qr/(?:member|function|relation|column|constraint|index|view|trigger|inherits|dumped|schema) /;
        my %f = map { $_ => 1 } split /\n(?=$kinds)/, $fresh;
        my %u = map { $_ => 1 } split /\n(?=$kinds)/, $upgraded;
        diag("only in fresh:    $_") for grep { !$u{$_} } sort keys %f;
        diag("only in upgraded from $v: $_") for grep { !$f{$_} } sort keys %u;
        fail("an upgraded $v equals a fresh $cur");
    }

    # the data written before the upgrade is published after it
    is($node->safe_psql($db, 'SELECT outbox.drain()'), '6', "$v: the events pending at upgrade time are published");
    is($node->safe_psql($db, "SELECT string_agg(pos || ':' || seq || ':' || (payload->>'n'), ',' ORDER BY pos) FROM outbox.history"),
       '1:1:1,2:2:2,3:3:3,4:4:4,5:5:5,6:6:6', "$v: in order, positions from 1");
    is($node->safe_psql($db, "SELECT (outbox.event(id)).pos FROM outbox.history WHERE pos = 4"), '4',
       "$v: outbox.event() finds a published event by id");
    is($node->safe_psql($db, 'SELECT purged_pos FROM outbox.state'), '0', "$v: state column purged_pos filled");
}

# Issue #15's promise for old databases: after the upgrade, with events both published (the 1.2
# history) and pending, outbox.use_log_storage() moves them into the log without loss. The
# positions, seqs and ids go on; the view, replay(), replay_channel() and event() read both parts.
my $rows = q{SELECT string_agg(pos || ':' || channel || ':' || seq || ':' || id || ':' || (payload->>'n'), ',' ORDER BY pos) FROM };
for my $v (@from) {
    (my $db = "switch_$v") =~ s/\./_/;
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    $node->safe_psql($db, "CREATE EXTENSION pg_outbox VERSION '$v'");
    $node->safe_psql($db, q{
        SELECT outbox.publish(CASE WHEN g % 3 = 0 THEN 'audit' ELSE 'orders' END, jsonb_build_object('n', g))
          FROM generate_series(1, 9) g;
    });
    my $ids = $node->safe_psql($db, q{SELECT string_agg(id::text, ',' ORDER BY id) FROM outbox.pending});
    $node->safe_psql($db, 'ALTER EXTENSION pg_outbox UPDATE');
    is($node->safe_psql($db, 'SELECT outbox.drain(5)'), '5', "$v, switch: five of nine published by the 1.2 drain");
    is($node->safe_psql($db, 'SELECT count(*) FROM outbox.pending'), '4', "$v, switch: four still pending");
    is($node->safe_psql($db, 'SELECT events_moved || \':\' || base_pos FROM outbox.use_log_storage()'), '4:5',
       "$v, switch: use_log_storage() moves the four pending events, positions go on after 5");
    is($node->safe_psql($db, 'SELECT active FROM outbox.log_state'), 't', "$v, switch: log mode");
    is($node->safe_psql($db, 'SELECT outbox.drain()'), '4', "$v, switch: the log pass publishes the moved events");
    is($node->safe_psql($db, 'SELECT outbox.publish(\'orders\', \'{"n": 10}\') > 0'), 't', "$v, switch: a new event into the log");
    is($node->safe_psql($db, 'SELECT outbox.drain()'), '1', "$v, switch: ... published");
    my $view = $node->safe_psql($db, $rows . 'outbox.history');
    my @ev = split /,/, $view;
    is(join(',', map { (split /:/)[0] } @ev), '1,2,3,4,5,6,7,8,9,10', "$v, switch: positions 1..10, no gap, none twice");
    is(join(',', map { my @f = split /:/; "$f[1]:$f[2]:$f[4]" } @ev),
       'orders:1:1,orders:2:2,audit:1:3,orders:3:4,orders:4:5,audit:2:6,orders:5:7,orders:6:8,audit:3:9,orders:7:10',
       "$v, switch: per-channel seqs go on across the switch, payloads in order");
    is(join(',', map { (split /:/)[3] } @ev[0 .. 8]), $ids, "$v, switch: the moved events keep their ids");
    is($node->safe_psql($db, $rows . 'outbox.replay(0)'), $view, "$v, switch: replay(0) returns what the view shows");
    is($node->safe_psql($db, q{SELECT string_agg(seq || ':' || (payload->>'n'), ',' ORDER BY seq) FROM outbox.replay_channel('audit', 1)}),
       '2:6,3:9', "$v, switch: replay_channel() reads across the frozen history and the log");
    my ($frozen_id, $log_id) = ((split /:/, $ev[2])[3], (split /:/, $ev[7])[3]);
    is($node->safe_psql($db, "SELECT (outbox.event($frozen_id)).pos || ',' || (outbox.event($log_id)).pos"), '3,8',
       "$v, switch: event() finds an event of the frozen history and one of the log");
    is($node->safe_psql($db, q{SELECT outbox.head() || ':' || outbox.head('audit')}), '10:3', "$v, switch: head() and head(channel)");
}

$node->stop;
done_testing();
