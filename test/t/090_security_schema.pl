# Issue #11, part 1: the extension's own schema. A non-superuser who owns a database (and so
# may create schemas in it) tries to make the drain worker or a SECURITY DEFINER function run
# their code as a superuser:
#   - by creating schema "outbox" before a superuser runs CREATE EXTENSION (refused);
#   - by the attack of the issue on an install whose schema was renamed away: a look-alike
#     schema "outbox" with a view outbox.state that calls their function, which runs
#     ALTER ROLE ... SUPERUSER (nothing in it is ever run; the worker logs an error; once the
#     schema is put back, publishing continues and nothing was lost);
#   - on an old (1.1) install that went into a schema they owned: ALTER EXTENSION UPDATE refuses
#     with a clear error, and the 1.2 library does not run anything in it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('sec_schema');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '100ms'
});
$node->start;

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;        -- owns database app, no other right
CREATE DATABASE app OWNER mallory;
CREATE DATABASE old OWNER mallory;
});
# mallory's function: what the attacker wants a superuser to run
my $evil = q{
CREATE FUNCTION %s.evil() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    ALTER ROLE mallory SUPERUSER;
    RETURN false;
END $$;
};
sub mallory_is_superuser {
    return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'");
}
sub psql_as {
    my ($db, $role, $sql) = @_;
    my ($rc, $out, $err) = $node->psql($db, $sql, extra_params => ['-U', $role]);
    return ($rc, $out, $err);
}

# ---- 1. a schema "outbox" created before CREATE EXTENSION is refused ----
$node->safe_psql('app', 'CREATE SCHEMA outbox', extra_params => ['-U', 'mallory']);
$node->safe_psql('app', sprintf($evil, 'outbox'), extra_params => ['-U', 'mallory']);
for my $version ('', " VERSION '1.1'") {
    my ($rc, $out, $err) = $node->psql('app', "CREATE EXTENSION pg_outbox$version",
                                       extra_params => ['-v', 'VERBOSITY=verbose']);
    isnt($rc, 0, "CREATE EXTENSION pg_outbox$version into mallory's schema fails");
    like($err, qr/ERROR:  42P06: schema "outbox" already exists and is owned by role "mallory", which is not a superuser/,
         "$version: error names the schema and its owner (42P06)");
    like($err, qr/HINT:  pg_outbox installs into a schema "outbox" that it creates itself: drop or rename the existing schema/,
         "$version: hint says what to do");
}
is($node->safe_psql('app', "SELECT count(*) FROM pg_extension WHERE extname = 'pg_outbox'"), '0', 'nothing installed');

# a superuser-owned schema that someone else may create objects in, or that is not empty: refused
$node->safe_psql('app', 'ALTER SCHEMA outbox OWNER TO CURRENT_USER; GRANT CREATE ON SCHEMA outbox TO mallory');
my ($rc, $out, $err) = $node->psql('app', 'CREATE EXTENSION pg_outbox');
like($err, qr/schema "outbox" already exists and role "mallory" may create objects in it/, 'CREATE granted to a non-superuser: refused');
$node->safe_psql('app', 'REVOKE CREATE ON SCHEMA outbox FROM mallory');
($rc, $out, $err) = $node->psql('app', 'CREATE EXTENSION pg_outbox');
like($err, qr/schema "outbox" already exists and is not empty\nDETAIL:  It contains function outbox\.evil\(\)/,
     'a schema with an object in it: refused, naming the object');
# what the hint says: drop it, then CREATE EXTENSION creates its own
$node->safe_psql('app', 'DROP SCHEMA outbox CASCADE');
$node->safe_psql('app', 'CREATE EXTENSION pg_outbox');
is($node->safe_psql('app', "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'outbox'"),
   $node->safe_psql('app', 'SELECT current_user'), 'the schema CREATE EXTENSION made belongs to the superuser');
# DROP EXTENSION leaves the (empty, superuser-owned) schema behind: installing again is fine
$node->safe_psql('app', 'DROP EXTENSION pg_outbox; CREATE EXTENSION pg_outbox');
pass('DROP EXTENSION + CREATE EXTENSION into the schema left behind');

# the install script checks too: CREATE EXTENSION ... CASCADE of an extension that requires
# pg_outbox installs pg_outbox without a CREATE EXTENSION pg_outbox statement the hook could see
my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
open(my $fh, '>', "$sharedir/extension/pg_outbox_needing.control") or die "cannot write control file: $!";
print $fh "default_version = '1.0'\nrequires = 'pg_outbox'\nsuperuser = true\nrelocatable = true\n";
close $fh;
open($fh, '>', "$sharedir/extension/pg_outbox_needing--1.0.sql") or die;
print $fh "-- requires pg_outbox\n";
close $fh;
$node->safe_psql('postgres', 'CREATE DATABASE cascade OWNER mallory');
$node->safe_psql('cascade', 'CREATE SCHEMA outbox', extra_params => ['-U', 'mallory']);
($rc, $out, $err) = $node->psql('cascade', 'CREATE EXTENSION pg_outbox_needing CASCADE');
like($err, qr/ERROR:  schema "outbox" already exists and is owned by role "mallory", which is not a superuser/,
     'CREATE EXTENSION ... CASCADE: the install script refuses the schema');
is($node->safe_psql('cascade', "SELECT count(*) FROM pg_extension WHERE extname LIKE 'pg_outbox%'"), '0', 'nothing installed');
$node->safe_psql('cascade', 'DROP SCHEMA outbox');
$node->safe_psql('cascade', 'CREATE EXTENSION pg_outbox_needing CASCADE');
pass('CREATE EXTENSION ... CASCADE without a planted schema works');
unlink "$sharedir/extension/pg_outbox_needing.control", "$sharedir/extension/pg_outbox_needing--1.0.sql";

# ---- 2. the attack of the issue, on an install whose schema was renamed away ----
# mallory cannot rename the extension's schema (not the owner; and the library refuses it to every
# non-superuser)
($rc, $out, $err) = psql_as('app', 'mallory', 'ALTER SCHEMA outbox RENAME TO outbox_old');
like($err, qr/schema "outbox" belongs to extension pg_outbox and cannot be renamed/, 'mallory cannot rename the schema');
$node->safe_psql('app', 'GRANT outbox_reader, outbox_publisher TO mallory');
$node->safe_psql('app', "SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 5) g");
ok($node->poll_query_until('app', "SELECT count(*) = 5 FROM outbox.history"), 'worker publishes');

# a superuser renames it (say, under 1.1, where the schema's owner could): the name "outbox" is free
$node->safe_psql('app', 'ALTER SCHEMA outbox RENAME TO outbox_real');
my $log_offset = -s $node->logfile;
$node->safe_psql('app', sprintf(q{
CREATE SCHEMA outbox;
%s
CREATE VIEW outbox.state AS
    SELECT true AS singleton, (CASE WHEN outbox.evil() THEN 1 ELSE 0 END)::bigint AS last_pos, 0 AS cur_seg,
           now() AS seg_started_at, outbox.evil() AS paused, 0::bigint AS purged_pos;
CREATE VIEW outbox.history AS
    SELECT 1::bigint AS pos, 1::bigint AS seq, 1::bigint AS id, 'x'::text AS channel, NULL::text AS key,
           NULL::text AS type, NULL::jsonb AS payload, now() AS created_at, now() AS published_at
     WHERE outbox.evil();
CREATE TABLE outbox.pending (id bigint, channel text, key text, type text, payload jsonb, created_at timestamptz);
CREATE VIEW outbox.channels AS SELECT 'x'::text AS channel, 1::bigint AS last_seq WHERE outbox.evil();
}, $evil =~ s/%s/outbox/r), extra_params => ['-U', 'mallory']);
# nothing is pending: a pass that read the look-alike outbox.state would commit (and with it
# mallory's ALTER ROLE). The worker passes every 100 ms meanwhile.
$node->safe_psql('app', 'SELECT pg_sleep(1)');
is(mallory_is_superuser(), 'f', 'idle worker passes did not run the look-alike');
ok($node->wait_for_log(qr/ERROR:  the schema of extension pg_outbox is called "outbox_real", not "outbox"/, $log_offset),
   'the worker logs an error instead of draining');
# producers keep writing into the real outbox (through its real name)
$node->safe_psql('app', "SELECT outbox_real.publish('orders', jsonb_build_object('n', g)) FROM generate_series(6, 8) g");
like(slurp_file($node->logfile, $log_offset), qr/DETAIL:  Schema "outbox" \(owned by role "mallory"\) is not the extension's/,
     'the error says whose schema "outbox" is');
# every SECURITY DEFINER function refuses, whoever calls it
for my $call ('SELECT * FROM outbox_real.event(1)', 'SELECT outbox_real.head()', "SELECT outbox_real.head('orders')",
              'SELECT * FROM outbox_real.replay(0)', "SELECT * FROM outbox_real.replay_channel('orders', 0)") {
    ($rc, $out, $err) = psql_as('app', 'mallory', $call);
    like($err, qr/the schema of extension pg_outbox is called "outbox_real"/, "mallory: $call refused");
}
for my $call ('SELECT outbox_real.drain()', 'SELECT outbox_real.pause()', "SELECT outbox_real.purge('0')",
              "SELECT outbox_real.set_target('x', 'notify')", 'SELECT * FROM outbox_real.event(1)') {
    ($rc, $out, $err) = $node->psql('app', $call);
    like($err, qr/the schema of extension pg_outbox is called "outbox_real"/, "superuser: $call refused");
}
$node->safe_psql('app', 'SELECT pg_sleep(0.5)');
is(mallory_is_superuser(), 'f', 'mallory never became superuser');
is($node->safe_psql('app', 'SELECT count(*) FROM outbox_real.pending'), '3', 'the new events wait in the real outbox');

# the superuser puts things back: publishing continues, nothing lost
$node->safe_psql('app', 'DROP SCHEMA outbox CASCADE; ALTER SCHEMA outbox_real RENAME TO outbox');
ok($node->poll_query_until('app', "SELECT count(*) = 8 FROM outbox.history"), 'publishing continues after the repair');
is($node->safe_psql('app', "SELECT string_agg(pos::text, ',' ORDER BY pos) FROM outbox.history"), '1,2,3,4,5,6,7,8',
   'positions without gap or repeat');

# a member relation replaced by a look-alike inside the real schema (a superuser's mistake, or a
# compromised one): the relation is not an extension member, pg_outbox refuses it
$node->safe_psql('app', q{
ALTER EXTENSION pg_outbox DROP TABLE outbox.channels;
});
$log_offset = -s $node->logfile;
$node->safe_psql('app', "SELECT outbox.publish('orders', '{}')");
ok($node->wait_for_log(qr/ERROR:  relation outbox\.channels is not part of extension pg_outbox/, $log_offset),
   'a relation that is not a member: the worker refuses');
($rc, $out, $err) = $node->psql('app', "SELECT outbox.head('orders')");
like($err, qr/relation outbox\.channels is not part of extension pg_outbox/, 'SECURITY DEFINER functions refuse it too');
$node->safe_psql('app', 'ALTER EXTENSION pg_outbox ADD TABLE outbox.channels');
ok($node->poll_query_until('app', "SELECT count(*) = 9 FROM outbox.history"), 'member again: published');

# ---- 3. an old install in a schema mallory owns: the upgrade refuses, nothing runs ----
# 1.1 installed into an existing schema as it was. The library now refuses that at CREATE
# EXTENSION time, so the state is made by hand: install 1.1, hand the schema to mallory (what
# installing into her schema gave her), let her plant her function and a look-alike.
$node->safe_psql('old', "CREATE EXTENSION pg_outbox VERSION '1.1'");
$node->safe_psql('old', "SELECT outbox.publish('orders', '{\"n\": 1}')");
$node->safe_psql('old', 'ALTER SCHEMA outbox OWNER TO mallory; GRANT outbox_reader TO mallory');
$node->safe_psql('old', sprintf($evil, 'outbox'), extra_params => ['-U', 'mallory']);
($rc, $out, $err) = psql_as('old', 'mallory', 'ALTER SCHEMA outbox RENAME TO outbox_old');
like($err, qr/schema "outbox" belongs to extension pg_outbox and cannot be renamed/,
     'the 1.2 library keeps even the owner from renaming the schema');
$log_offset = -s $node->logfile;
$node->restart; # the worker of database old starts with the 1.2 library
ok($node->wait_for_log(qr/ERROR:  schema "outbox" is owned by role "mallory", which is not a superuser/, $log_offset),
   'the worker refuses a schema a non-superuser owns');
($rc, $out, $err) = $node->psql('old', 'ALTER EXTENSION pg_outbox UPDATE');
like($err, qr/ERROR:  cannot update pg_outbox: schema "outbox" is owned by role "mallory", which is not a superuser/,
     'ALTER EXTENSION UPDATE refuses');
like($err, qr/HINT:  As a superuser: drop the objects in schema "outbox" that are not part of the extension/, 'with a hint');
($rc, $out, $err) = psql_as('old', 'mallory', 'SELECT * FROM outbox.event(1)');
like($err, qr/schema "outbox" is owned by role "mallory"/, 'the 1.1 SECURITY DEFINER functions refuse to run');
# the owner handed back, her function still there: refused, naming it
$node->safe_psql('old', 'ALTER SCHEMA outbox OWNER TO CURRENT_USER');
($rc, $out, $err) = $node->psql('old', 'ALTER EXTENSION pg_outbox UPDATE');
like($err, qr/cannot update pg_outbox: schema "outbox" holds function outbox\.evil\(\) \(owned by role mallory\) that is not part of the extension/,
     'an object a non-superuser owns in the schema: refused, naming it');
$node->safe_psql('old', 'DROP FUNCTION outbox.evil()');
$node->safe_psql('old', 'ALTER EXTENSION pg_outbox UPDATE');
is($node->safe_psql('old', "SELECT extversion FROM pg_extension WHERE extname = 'pg_outbox'"), '1.3', 'repaired: updated');
ok($node->poll_query_until('old', "SELECT count(*) = 1 FROM outbox.history"), 'and the event written under 1.1 is published');

is(mallory_is_superuser(), 'f', 'mallory is still no superuser');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/, 'no backend crashed');
$node->stop;
done_testing();
