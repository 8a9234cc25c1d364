# The drain worker against what DBAs and data do (issue 12): a DBA's trigger on outbox.channels
# that returns NULL (was: signal 11 in the worker, a crash loop of the whole cluster), a poison
# event that fails alone (retried pg_outbox.max_attempts times, dead-lettered, the events behind
# it published meanwhile), and a huge payload (its NOTIFY envelope carries only the id; the
# worker's memory stays bounded). The worker survives each, the server never restarts.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('robust_events');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '200ms'
pg_outbox.max_attempts = 3
pg_outbox.retry_delay = '100ms'
shared_buffers = '16MB'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
ok($node->poll_query_until('postgres', "SELECT state = 'idle' FROM outbox.status"), 'worker is idle');
my $postmaster_pid = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $worker_pid = $node->safe_psql('postgres', 'SELECT pid FROM outbox.status');

# ---- a BEFORE INSERT trigger on outbox.channels that returns NULL ----
$node->safe_psql('postgres', q{
CREATE FUNCTION public.skip_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER dba_skip BEFORE INSERT ON outbox.channels FOR EACH ROW EXECUTE FUNCTION public.skip_row();
SELECT outbox.publish('a', '{"n":1}'), outbox.publish('a', '{"n":2}'), outbox.publish('b', '{"n":3}');
});
ok($node->poll_query_until('postgres',
    "SELECT last_error LIKE '%stored no row in outbox.channels%' AND last_error_at IS NOT NULL FROM outbox.status"),
   'status says why nothing is published, and since when');
is($node->safe_psql('postgres', 'SELECT pid FROM outbox.status'), $worker_pid, 'the same worker is still running');
is($node->safe_psql('postgres', 'SELECT count(*) FROM outbox.failures'), '0',
   'a fault of every event is the system\'s: nothing is counted against the events');
$node->safe_psql('postgres', 'DROP TRIGGER dba_skip ON outbox.channels');
ok($node->poll_query_until('postgres', 'SELECT pending = 0 AND last_pos = 3 FROM outbox.status'),
   'after the fix the events are published');
ok($node->poll_query_until('postgres', 'SELECT last_error IS NULL AND last_error_at IS NULL FROM outbox.status'),
   'last_error is cleared once publishing works again');

# ---- a poison event: retried, dead-lettered, the events behind it published meanwhile ----
$node->safe_psql('postgres', q{
CREATE FUNCTION public.dba_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ? 'poison' THEN
        RAISE EXCEPTION 'out of memory' USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_0 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_1 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
CREATE TRIGGER dba_history BEFORE INSERT ON outbox.history_2 FOR EACH ROW EXECUTE FUNCTION public.dba_history();
});
my $poison = $node->safe_psql('postgres', q{SELECT outbox.publish('p', '{"poison": true}')});
$node->safe_psql('postgres', "SELECT outbox.publish('p', jsonb_build_object('n', g)) FROM generate_series(1, 50) g");
ok($node->poll_query_until('postgres', "SELECT count(*) = 50 FROM outbox.history WHERE channel = 'p'"),
   'the 50 events behind the poison event are published');
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM outbox.dead_letter WHERE id = $poison AND sqlstate = '54000'"),
   'the poison event is dead-lettered with its error');
like(slurp_file($node->logfile), qr/event $poison could not be published and was moved to outbox.dead_letters after 3 attempts/,
     'after 3 attempts (pg_outbox.max_attempts)');
is($node->safe_psql('postgres', 'SELECT pending, retrying FROM outbox.status'), '0|0', 'nothing stuck');
$node->safe_psql('postgres', q{
DROP TRIGGER dba_history ON outbox.history_0; DROP TRIGGER dba_history ON outbox.history_1;
DROP TRIGGER dba_history ON outbox.history_2;});
$node->safe_psql('postgres', "SELECT outbox.retry($poison)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM outbox.history WHERE id = $poison"),
   'retried after the fix, it is published');
is($node->safe_psql('postgres', 'SELECT max(pos) - min(pos) + 1 = count(*) FROM outbox.history'), 't',
   'positions are gap-free');

# ---- a huge payload: the NOTIFY needs only its id, the worker's memory stays bounded ----
my $mb = 180;
$node->safe_psql('postgres', qq{
SELECT outbox.publish('huge', jsonb_build_object('blob', (SELECT string_agg(md5(g::text), '')
                                                            FROM generate_series(1, $mb * 1024 * 1024 / 32) g)))});
my $huge = $node->safe_psql('postgres', "SELECT max(id) FROM outbox.pending WHERE channel = 'huge'");
ok($huge, 'a huge event is pending');
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM outbox.history WHERE id = $huge", 't'),
   'the worker published it');
is($node->safe_psql('postgres', 'SELECT pid FROM outbox.status'), $worker_pid, 'the same worker published it');
my $status = slurp_file("/proc/$worker_pid/status");
my ($hwm) = $status =~ /VmHWM:\s+(\d+) kB/;
my ($anon) = $status =~ /RssAnon:\s+(\d+) kB/;
diag(sprintf('worker after a %d MB payload: peak RSS (VmHWM) %.0f MB, anonymous RSS now %.0f MB',
             $mb, $hwm / 1024, $anon / 1024));
# its envelope is never rendered; what remains is PostgreSQL's own work to store the value in
# the history: the pending row's value read whole from its TOAST table, and one compression
# attempt (pglz) into a buffer as large (it was 780 MB and "out of memory" before)
cmp_ok($hwm / 1024, '<', 2 * $mb + 64, 'peak worker memory stays below twice the payload (plus 64 MB)');
cmp_ok($anon / 1024, '<', 64, 'the worker gives the memory back after the event');
# more events after it are published by the same worker
$node->safe_psql('postgres', "SELECT outbox.publish('after', NULL) FROM generate_series(1, 10)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 10 FROM outbox.history WHERE channel = 'after'"),
   'events after the huge one are published');

is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $postmaster_pid, 'the server never restarted');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/, 'no process crashed');
$node->stop;
done_testing();
