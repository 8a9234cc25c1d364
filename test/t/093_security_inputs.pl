# Issue #11, part 3: everything a publisher can call, and what pg_outbox stores.
#   - the internal helpers of 1.1 are gone or granted to nobody; attach() checks ownership before
#     it locks anything;
#   - text that is not valid in the database encoding is refused (22021) wherever pg_outbox would
#     store it: publish()'s channel, key, type and payload, the change trigger's key and data;
#   - a database full of hostile (but valid) inputs dumps and restores completely with
#     pg_dump | psql;
#   - row-level security on outbox.pending is refused with a clear error (pg_outbox writes the
#     table on its callers' behalf and would bypass a policy).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('sec_inputs');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = ''
});
$node->start;
$node->safe_psql('postgres', q{
CREATE ROLE pub LOGIN;
CREATE ROLE other LOGIN;
CREATE DATABASE app;
});
$node->safe_psql('app', q{
CREATE EXTENSION pg_outbox;
GRANT outbox_publisher TO pub;
CREATE TABLE public.victim (id int PRIMARY KEY);
ALTER TABLE public.victim OWNER TO other;
GRANT CREATE ON SCHEMA public TO pub;
});
sub as_pub {
    my ($sql) = @_;
    my ($rc, $out, $err) = $node->psql('app', $sql, extra_params => ['-U', 'pub', '-v', 'VERBOSITY=verbose']);
    return $err;
}

# ---- the helpers ----
for my $gone ('outbox._split_tgargs(bytea)', 'outbox._resolved_key(regclass, text[])',
              'outbox._check_attachment(regclass, text, text, text[], text[], text[])') {
    is($node->safe_psql('app', "SELECT to_regprocedure('$gone') IS NULL"), 't', "$gone is gone");
}
like(as_pub(q{SELECT outbox._attach_triggers('victim', 'outbox', NULL, NULL, NULL, 'victim', '{id}', 'victim', '{INSERT}')}),
     qr/42501: permission denied for function _attach_triggers/, 'a publisher cannot call the trigger DDL helper');
is($node->safe_psql('app', q{
    SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p
     WHERE p.pronamespace = 'outbox'::regnamespace AND p.proname LIKE '\_%'
       AND (has_function_privilege('outbox_publisher', p.oid, 'EXECUTE')
            OR has_function_privilege('outbox_reader', p.oid, 'EXECUTE'))}),
   '_change,_check_writable,_consumer_lag,_history_log,_log_channel_figures,_may_read,_pending_channels,_pending_summary,_worker_status',
   'internal functions anyone holds: only _change (CREATE TRIGGER), _check_writable (raises 25006 in a read-only transaction, nothing else; detach() runs it as its caller), _may_read (the channel_stats view asks it as its caller: it only tells whether the caller may read a channel), _worker_status (the status view) and the figures the monitoring views read in both storages as their caller (98_observe_log.sql: _pending_summary, the backlog count status shows; _pending_channels, _log_channel_figures and _consumer_lag, filtered by the caller\'s channel rights; _history_log, the log\'s rows of the outbox.history view, to the readers of that view)');
like(as_pub(q{SELECT outbox._change()}), qr/39P01: outbox._change\(\) must be called as a trigger/,
     '_change() cannot be called directly');

# attach() on someone else's table: refused before any lock is taken
my $locker = $node->background_psql('app');
$locker->query_safe('BEGIN; LOCK TABLE public.victim IN ACCESS EXCLUSIVE MODE;');
like(as_pub(q{SET lock_timeout = '2s'; SELECT outbox.attach('public.victim')}),
     qr/42501: must be owner of table victim/, 'attach() of a table the caller does not own: 42501, without waiting for its lock');
$locker->query_safe('ROLLBACK');
$locker->quit;
# ... and it still works on the caller's own table
$node->safe_psql('app', q{CREATE TABLE public.mine (id int PRIMARY KEY, note text)}, extra_params => ['-U', 'pub']);
like($node->safe_psql('app', q{SELECT outbox.attach('public.mine', include_columns => '{note}')}, extra_params => ['-U', 'pub']),
     qr/^attached public\.mine: mode outbox, channel 'public\.mine', key \(id\), data \(note\)/, 'attach() of an own table');
is($node->safe_psql('app', q{SELECT "table", channel, mode, key_columns, include_columns, operations FROM outbox.attachments},
                    extra_params => ['-U', 'pub']),
   'mine|public.mine|outbox|{id}|{note}|{INSERT,UPDATE,DELETE}', 'outbox.attachments for a publisher');

# ---- text that is not valid UTF-8 ----
# A binary-coercible cast (superuser only) is the SQL stand-in for any C function that hands
# pg_outbox bytes that are not text of the database encoding.
$node->safe_psql('app', 'CREATE CAST (bytea AS text) WITHOUT FUNCTION');
for my $call (q{outbox.publish('\xc328'::bytea::text)},
              q{outbox.publish('c', NULL, '\xc328'::bytea::text)},
              q{outbox.publish('c', NULL, NULL, '\xff'::bytea::text)},
              q{outbox.publish('c', jsonb_build_object('k', '\xc328'::bytea::text))},
              q{outbox.publish('c', jsonb_build_object('\xe282'::bytea::text, 1))}) {
    my ($rc, $out, $err) = $node->psql('app', "SELECT $call", extra_params => ['-v', 'VERBOSITY=verbose']);
    like($err, qr/22021: invalid byte sequence for encoding "UTF8"/, "$call: 22021");
}
# the change trigger: a row whose text is not valid (stored through the cast) cannot become an event
$node->safe_psql('app', q{CREATE TABLE public.t (id text PRIMARY KEY, note text); SELECT outbox.attach('t', include_columns => '{note}')});
my ($rc, $out, $err) = $node->psql('app', q{INSERT INTO public.t VALUES ('1', '\xc328'::bytea::text)},
                                   extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/22021: invalid byte sequence/, 'trigger: invalid text in a data column: 22021');
($rc, $out, $err) = $node->psql('app', q{INSERT INTO public.t VALUES ('\xc328'::bytea::text, 'x')},
                                extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/22021: invalid byte sequence/, 'trigger: invalid text in the key: 22021');
$node->safe_psql('app', 'DROP CAST (bytea AS text)');
is($node->safe_psql('app', 'SELECT count(*) FROM outbox.pending'), '0', 'nothing invalid was stored');

# ---- hostile but valid inputs: everything dumps and restores ----
$node->safe_psql('app', <<'SQL');
CREATE SCHEMA "My ""Sch'ema";
CREATE TABLE "My ""Sch'ema"."Ta'ble ""x""" (k text PRIMARY KEY, "Tenant" text NOT NULL, data text);
SELECT outbox.attach('"My ""Sch''ema"."Ta''ble ""x"""', channel => 'tenant_{Tenant}', include_columns => '{data}',
                     operations => '{INSERT,UPDATE,DELETE}');
INSERT INTO "My ""Sch'ema"."Ta'ble ""x""" VALUES
    (E'\\', E'o''reilly', E'line1\nline2\ttab'), ('"; DROP TABLE t; --', E'\u00e9\u4e2d\U0001F600', repeat('z', 9000)),
    ('{}', '{{x}}', NULL);
SELECT outbox.publish(E'ch\\an''"el', jsonb_build_object('a', E'\u2028\u0001', 'b', repeat('y', 20000)), E'k\\ey', E'ty''pe');
SELECT outbox.publish(E'\u00e9v\u00e9nement', '[1, "deux", {"trois": null}]', '', '');
SELECT outbox.set_target(E'ch\\an''"el', 'both');
SQL
$node->safe_psql('app', 'SELECT outbox.drain()');
$node->safe_psql('app', q{SELECT outbox.publish('tenant_o''reilly', '{"pending": true}', chr(10))});
my $snapshot = q{
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
    SELECT format('history %s %s %L %L %L %L %s', pos, seq, channel, key, type, md5(payload::text), id) AS line FROM outbox.history
    UNION ALL SELECT format('pending %L %L %L %s', channel, key, type, payload) FROM outbox.pending
    UNION ALL SELECT format('channel %L %s', channel, last_seq) FROM outbox.channels
    UNION ALL SELECT format('target %L %s', channel, target) FROM outbox.channel_targets
    UNION ALL SELECT format('attached %s %L %s %s %s', "table", channel, mode, key_columns, include_columns) FROM outbox.attachments
    UNION ALL SELECT format('state %s', last_pos) FROM outbox.state) l};
my $before = $node->safe_psql('app', $snapshot);
cmp_ok(scalar(() = $before =~ /^history/mg), '==', 5, 'five events published');
my $dump = $node->basedir . '/app.sql';
$node->command_ok([ 'pg_dump', '-f', $dump, '-d', $node->connstr('app') ], 'pg_dump (plain SQL)');
$node->safe_psql('postgres', 'CREATE DATABASE copy');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('copy'), '-f', $dump ],
                  'pg_dump | psql restores without an error');
is($node->safe_psql('copy', $snapshot), $before, 'the restored outbox equals the original, row for row');
$node->safe_psql('copy', q{INSERT INTO "My ""Sch'ema"."Ta'ble ""x""" VALUES ('new', 'o''reilly', 'after restore')});
$node->safe_psql('copy', 'SELECT outbox.drain()');
is($node->safe_psql('copy', q{SELECT pos || ' ' || seq FROM outbox.history WHERE key = 'new'}), '7 3',
   'after the restore, positions and per-channel seqs go on');

# ---- row-level security on outbox.pending: refused, with a clear error ----
$node->safe_psql('app', q{
ALTER TABLE outbox.pending ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_mine ON outbox.pending USING (channel LIKE 'mine_%');
});
($rc, $out, $err) = $node->psql('app', q{SELECT outbox.publish('c')}, extra_params => ['-v', 'VERBOSITY=verbose', '-U', 'pub']);
like($err, qr/0A000: table outbox\.pending has row-level security enabled, which pg_outbox does not apply/,
     'publish() with RLS on outbox.pending: 0A000');
like($err, qr/HINT:  ALTER TABLE outbox\.pending DISABLE ROW LEVEL SECURITY/, 'with a hint');
($rc, $out, $err) = $node->psql('app', q{INSERT INTO public.mine VALUES (1, 'x')}, extra_params => ['-U', 'pub']);
like($err, qr/table outbox\.pending has row-level security enabled/, 'the change trigger refuses too');
$node->safe_psql('app', 'DROP POLICY only_mine ON outbox.pending; ALTER TABLE outbox.pending DISABLE ROW LEVEL SECURITY');
$node->safe_psql('app', q{SELECT outbox.publish('c')}, extra_params => ['-U', 'pub']);
pass('without RLS, publish() works again');

unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/, 'no backend crashed');
$node->stop;
done_testing();
