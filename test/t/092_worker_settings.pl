# Issue #11, part 4: the drain worker and the launcher are not steerable by database or role
# settings. ALTER DATABASE ... SET and ALTER ROLE ... SET apply to a background worker's
# connection too; each setting below, set on the database (by its non-superuser owner where
# PostgreSQL lets the owner set it) and on the bootstrap superuser, must neither stop nor slow
# nor subvert publishing: events are still published, by a worker that runs as the bootstrap
# superuser with the settings it depends on. A trigger a DBA put on the history segments records
# what the worker's transaction sees.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('worker_settings');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '100ms'
});
$node->start;
my $super = $node->safe_psql('postgres', 'SELECT current_user');
my $pg_version = $node->safe_psql('postgres', 'SHOW server_version_num');

$node->safe_psql('postgres', q{
CREATE ROLE owner LOGIN;
CREATE DATABASE app OWNER owner;
});
$node->safe_psql('app', q{
CREATE EXTENSION pg_outbox;
CREATE SCHEMA evil AUTHORIZATION owner;
CREATE TABLE public.seen (pos bigint, cur_user name, sess_user name, isolation text, read_only text,
                          is_deferrable text, statement_timeout text, lock_timeout text, search_path text,
                          synchronous_commit text, replication_role text);
GRANT ALL ON public.seen TO PUBLIC;
CREATE FUNCTION public.record_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.seen VALUES (NEW.pos, current_user, session_user, current_setting('transaction_isolation'),
        current_setting('transaction_read_only'), current_setting('transaction_deferrable'),
        current_setting('statement_timeout'), current_setting('lock_timeout'), current_setting('search_path'),
        current_setting('synchronous_commit'), current_setting('session_replication_role'));
    RETURN NEW;
END $$;
CREATE TRIGGER record_worker AFTER INSERT ON outbox.history_0 FOR EACH ROW EXECUTE FUNCTION public.record_worker();
CREATE TRIGGER record_worker AFTER INSERT ON outbox.history_1 FOR EACH ROW EXECUTE FUNCTION public.record_worker();
CREATE TRIGGER record_worker AFTER INSERT ON outbox.history_2 FOR EACH ROW EXECUTE FUNCTION public.record_worker();
});
ok($node->poll_query_until('app', "SELECT state = 'idle' FROM outbox.status"), 'worker is idle');

# the test's own sessions must not be steered by what is set on the bootstrap superuser
$ENV{PGOPTIONS} = join ' ', map { "-c $_" } ('role=none', 'default_transaction_read_only=off',
    'statement_timeout=0', 'lock_timeout=0', 'idle_in_transaction_session_timeout=0', 'idle_session_timeout=0',
    'search_path=public', 'default_transaction_isolation=read\\ committed', 'default_transaction_deferrable=off',
    ($pg_version >= 170000 ? ('transaction_timeout=0') : ()));

my @settings = (
    # name, value, may the database owner set it?
    ['role', 'owner', 1],
    ['session_authorization', 'owner', 0],
    ['default_transaction_read_only', 'on', 1],
    ['default_transaction_isolation', 'serializable', 1],
    ['default_transaction_deferrable', 'on', 1],
    ['statement_timeout', '1', 1],
    ['lock_timeout', '1', 1],
    ['idle_in_transaction_session_timeout', '1', 1],
    ['idle_session_timeout', '1', 1],
    ['search_path', 'evil, public', 1],
    ['synchronous_commit', 'off', 1],
    ['session_replication_role', 'replica', 0],
    ['jit_above_cost', '0', 1],
    ['vacuum_cost_delay', '100', 1],
    ['enable_indexscan', 'off', 1],
    ['plan_cache_mode', 'force_custom_plan', 1],
);
push @settings, ['transaction_timeout', '1', 1] if $pg_version >= 170000;

my $n = 0;
sub restart_worker_and_publish {
    my ($what) = @_;
    my $old = $node->safe_psql('app', "SELECT pid FROM outbox.status");
    $node->safe_psql('app', "SELECT pg_terminate_backend($old)") if $old;
    ok($node->poll_query_until('app', "SELECT pid IS NOT NULL AND pid <> " . ($old || 0) . " AND state = 'idle' FROM outbox.status"),
       "$what: a new worker starts and is idle");
    $node->safe_psql('app', "SELECT outbox.publish('s', jsonb_build_object('n', g)) FROM generate_series(1, 3) g");
    $n += 3;
    ok($node->poll_query_until('app', "SELECT count(*) = $n FROM outbox.history"), "$what: events are published");
    is($node->safe_psql('app', "SELECT cur_user || ',' || sess_user FROM public.seen ORDER BY pos DESC LIMIT 1"),
       "$super,$super", "$what: the worker runs as the bootstrap superuser");
    is($node->safe_psql('app', "SELECT concat_ws(',', isolation, read_only, is_deferrable, statement_timeout, lock_timeout,"
                             . " search_path, synchronous_commit, replication_role) FROM public.seen ORDER BY pos DESC LIMIT 1"),
       'read committed,off,off,0,0,pg_catalog, pg_temp,on,origin', "$what: with the settings it depends on");
    is($node->safe_psql('app', "SELECT last_error IS NULL OR last_error_at < now() - interval '0.5s' FROM outbox.status"), 't',
       "$what: no recent error");
}

for my $s (@settings) {
    my ($name, $value, $by_owner) = @$s;
    my @as = $by_owner ? (extra_params => ['-U', 'owner']) : ();
    $node->safe_psql('app', "ALTER DATABASE app SET $name = '$value'", @as);
    restart_worker_and_publish("ALTER DATABASE SET $name = $value" . ($by_owner ? ' (by the owner)' : ''));
    $node->safe_psql('app', "ALTER DATABASE app RESET $name");
    $node->safe_psql('app', "ALTER ROLE $super SET $name = '$value'");
    restart_worker_and_publish("ALTER ROLE $super SET $name = $value");
    $node->safe_psql('app', "ALTER ROLE $super RESET $name");
}

# everything at once, on the database, on the role and on the role in the database; the launcher
# (connected to no database) reads the role's settings too: restart it as well
for my $s (@settings) {
    my ($name, $value) = @$s;
    $node->safe_psql('app', "ALTER DATABASE app SET $name = '$value'");
    $node->safe_psql('app', "ALTER ROLE $super SET $name = '$value'");
    $node->safe_psql('app', "ALTER ROLE $super IN DATABASE app SET $name = '$value'");
}
my $launcher = $node->safe_psql('app', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher'");
$node->safe_psql('app', "SELECT pg_terminate_backend($launcher)");
ok($node->poll_query_until('app',
    "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox launcher' AND pid <> $launcher"),
   'the launcher comes back with every setting on its role');
restart_worker_and_publish('all settings at once');
# a new database with the extension: the restarted launcher still finds it and starts its worker
$node->safe_psql('postgres', 'CREATE DATABASE app2');
$node->safe_psql('app2', "CREATE EXTENSION pg_outbox; SELECT outbox.publish('s', '{}')");
ok($node->poll_query_until('app2', "SELECT count(*) = 1 FROM outbox.history"), 'the launcher supervises a new database');
is($node->safe_psql('app', "SELECT string_agg(pos::text, ',' ORDER BY pos) = string_agg(g::text, ',' ORDER BY g)"
                         . " FROM outbox.history, generate_series(1, $n) g WHERE pos = g"), 't',
   'positions 1..N without gap or repeat');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/, 'no backend crashed');
$node->stop;
done_testing();
