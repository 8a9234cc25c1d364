# Issue #11: the access matrix. Every function, view, table and sequence in schema outbox (read
# from the catalog: an object without an entry below fails the test, and so does an entry
# without an object), for every kind of role, is tried for real (in a subtransaction that is
# rolled back) and must be allowed exactly where the matrix says, and refused (42501) everywhere
# else. The README's access-control table is generated from the same matrix: the test fails when
# README.md disagrees, and prints the table to paste.
#
# To extend: add a role to @roles (name, README column, setup SQL, granted role), and its column
# letter to the entries of %functions / %relations it may use.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('sec_matrix');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = ''
});
$node->start;

# ---- the roles: key letter, role name, README column, setup (run as superuser in database app) ----
my @roles = (
    ['n', 'm_none',       'no grants',            q{CREATE ROLE m_none LOGIN}],
    ['p', 'm_publisher',  'outbox_publisher',     q{CREATE ROLE m_publisher LOGIN IN ROLE outbox_publisher}],
    ['r', 'm_reader',     'outbox_reader',        q{CREATE ROLE m_reader LOGIN IN ROLE outbox_reader}],
    ['a', 'm_admin',      'outbox_admin',         q{CREATE ROLE m_admin LOGIN IN ROLE outbox_admin}],
    ['o', 'm_dbowner',    'database owner',       q{CREATE ROLE m_dbowner LOGIN; ALTER DATABASE app OWNER TO m_dbowner}],
    ['t', 'm_tableowner', 'owner of a table',     q{CREATE ROLE m_tableowner LOGIN; CREATE TABLE public.m_table (id int PRIMARY KEY); ALTER TABLE public.m_table OWNER TO m_tableowner}],
);

# ---- functions: regprocedure => [who may execute (role letters), a call that has no lasting effect] ----
# A call is allowed when it fails with anything but 42501 (or succeeds); 'trigger' means the
# function is tried by CREATE TRIGGER on a temporary table of the role's own.
my %functions = (
    'outbox.notify(text,text)'                    => ['pa',   q{SELECT outbox.notify('m_chan', 'x')}],
    'outbox.max_payload_bytes()'                  => ['pra',  q{SELECT outbox.max_payload_bytes()}],
    'outbox.max_channel_bytes()'                  => ['pra',  q{SELECT outbox.max_channel_bytes()}],
    'outbox._require_channel(text,text)'          => ['',     q{SELECT outbox._require_channel('m_chan', 'x')}],
    'outbox._payload_text(jsonb)'                 => ['',     q{SELECT outbox._payload_text('[1]')}],
    'outbox._state_merge()'                       => ['',     'trigger'],
    'outbox._wake()'                              => ['',     'trigger'],
    'outbox.publish(text,jsonb,text,text)'        => ['pa',   q{SELECT outbox.publish('m_chan')}],
    'outbox.drain(integer)'                       => ['a',    q{SELECT outbox.drain(1)}],
    'outbox.notify_queue_usage()'                 => ['ra',   q{SELECT outbox.notify_queue_usage()}],
    'outbox.event(bigint)'                        => ['ra',   q{SELECT * FROM outbox.event(-1)}],
    'outbox._change()'                            => ['pa',   'trigger'],
    'outbox._attach_triggers(regclass,text,text,text[],text[],text,text[],text,text[])'
                                                  => ['',     q{SELECT outbox._attach_triggers(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)}],
    'outbox.attach(regclass,text,text,text[],text[],text[])' => ['pa', q{SELECT outbox.attach(NULL)}],
    'outbox.detach(regclass)'                     => ['pa',   q{SELECT outbox.detach(NULL)}],
    'outbox._check_max_events(integer)'           => ['',     q{SELECT outbox._check_max_events(1)}],
    'outbox.head()'                               => ['ra',   q{SELECT outbox.head()}],
    'outbox.head(text)'                           => ['ra',   q{SELECT outbox.head('m_chan')}],
    'outbox.replay(bigint,text[],integer,bigint)' => ['ra',   q{SELECT * FROM outbox.replay(0)}],
    'outbox._replay_channel(text,bigint,integer,bigint)' => ['', q{SELECT * FROM outbox._replay_channel('m_chan', 0, 1, NULL)}],
    'outbox.replay_channel(text,bigint,integer,bigint)' => ['ra',   q{SELECT * FROM outbox.replay_channel('m_chan', 0)}],
    'outbox._wake_at_commit()'                    => ['',     q{SELECT outbox._wake_at_commit()}],
    'outbox.retry(bigint)'                        => ['a',    q{SELECT outbox.retry(-1)}],
    'outbox.purge(interval)'                      => ['a',    q{SELECT outbox.purge('100 years')}],
    'outbox.pause()'                              => ['a',    q{SELECT outbox.pause()}],
    'outbox.use_log_storage()'                    => ['a',    q{SELECT * FROM outbox.use_log_storage()}],
    'outbox.resume()'                             => ['a',    q{SELECT outbox.resume()}],
    'outbox._worker_status()'                     => ['ra',   q{SELECT * FROM outbox._worker_status()}],
    'outbox.set_target(text,text)'                => ['a',    q{SELECT outbox.set_target('m_chan', 'notify')}],
    'outbox.reset_target(text)'                   => ['a',    q{SELECT outbox.reset_target('m_chan')}],
    # consumers (45_consumers.sql); next/ack/drop_consumer then check that the caller owns the consumer
    'outbox._envelope(bigint,bigint,bigint,text,text,jsonb,bigint)' => ['', q{SELECT outbox._envelope(1, 1, 1, NULL, NULL, NULL, 1)}],
    'outbox._purged_pos()'                        => ['',     q{SELECT outbox._purged_pos()}],
    'outbox.wait(bigint,text[],interval,integer)' => ['ra',   q{SELECT * FROM outbox.wait(0, NULL, '0', 1)}],
    'outbox.create_consumer(text,text[],text)'    => ['ra',   q{SELECT outbox.create_consumer('m_consumer')}],
    'outbox.next(text,integer,interval)'          => ['ra',   q{SELECT * FROM outbox.next('m_no_such_consumer', 1, '0')}],
    'outbox.ack(text,bigint)'                     => ['ra',   q{SELECT outbox.ack('m_no_such_consumer', 0)}],
    'outbox.drop_consumer(text)'                  => ['ra',   q{SELECT outbox.drop_consumer('m_no_such_consumer')}],
    'outbox._check_writable(text)'                => ['pra',  q{SELECT outbox._check_writable('x')}],
    'outbox.discard(bigint,text)'                 => ['a',    q{SELECT outbox.discard(-1)}],
    # identity and epochs (issue #13)
    'outbox.identity()'                           => ['ra',   q{SELECT outbox.identity()}],
    'outbox.epoch()'                              => ['ra',   q{SELECT outbox.epoch()}],
    'outbox._check_epoch(bigint,bigint)'          => ['',     q{SELECT outbox._check_epoch(0, NULL)}],
    'outbox._epoch_begin(bigint,bigint,text,oid)' => ['',     q{SELECT outbox._epoch_begin(NULL, NULL, NULL, NULL)}],
    'outbox._epoch_of(bigint)'                    => ['',     q{SELECT outbox._epoch_of(1)}],
    # channel rights (issue #11 part 5) and the drain workers' PIDs (part 2)
    'outbox.worker_pids()'                        => ['ra',   q{SELECT outbox.worker_pids()}],
    'outbox.grant_channel(text,regrole,text[])'   => ['a',    q{SELECT outbox.grant_channel(NULL, NULL)}],
    'outbox.revoke_channel(text,regrole,text[])'  => ['a',    q{SELECT outbox.revoke_channel(NULL, NULL)}],
    'outbox._rights_changed()'                    => ['',     'trigger'],
    'outbox._check_read(text[])'                  => ['',     q{SELECT outbox._check_read(NULL)}],
    'outbox._may_read(text)'                      => ['ra',   q{SELECT outbox._may_read('m_chan')}],
    'outbox._check_channel_pattern(text)'         => ['',     q{SELECT outbox._check_channel_pattern('m_chan')}],
    'outbox._channel_privileges(text[])'          => ['',     q{SELECT outbox._channel_privileges(ARRAY['read'])}],
    # observability (issue #19): health() for monitoring roles; _may_read filters outbox.channel_stats
    'outbox.health()'                             => ['ra',   q{SELECT * FROM outbox.health()}],
    'outbox._health_threshold(text)'              => ['',     q{SELECT * FROM outbox._health_threshold('pending')}],
    'outbox._health_level(double precision,text)' => ['',     q{SELECT * FROM outbox._health_level(1, 'pending')}],
    'outbox._waiting_databases()'                 => ['',     q{SELECT * FROM outbox._waiting_databases()}],
    # the write-once log (issue #15, part 1: internal, granted to nobody)
    'outbox._log_segments()'                      => ['',     q{SELECT outbox._log_segments()}],
    'outbox._log_active()'                        => ['',     q{SELECT outbox._log_active()}],
    'outbox._log_latest()'                        => ['',     q{SELECT outbox._log_latest()}],
    'outbox._log_window(integer,pg_snapshot,pg_snapshot,xid8,bigint,integer)'
                                                  => ['',     q{SELECT * FROM outbox._log_window(0, '1:1:', '1:1:', '0', 0, 1)}],
    'outbox._log_batch_events(outbox.batches)'    => ['',     q{SELECT * FROM outbox._log_batch_events(NULL)}],
    'outbox._log_next_seg(pg_snapshot,pg_snapshot,integer,xid8,bigint)'
                                                  => ['',     q{SELECT outbox._log_next_seg('1:1:', '1:1:', 0, '0', 0)}],
    'outbox._log_pass_snapshot()'                 => ['',     q{SELECT outbox._log_pass_snapshot()}],
    'outbox._log_pass(integer)'                   => ['',     q{SELECT outbox._log_pass(1)}],
    'outbox._log_channels_changed()'              => ['',     'trigger'],
    'outbox._log_pass_sql(integer)'               => ['',     q{SELECT outbox._log_pass_sql(1)}],
    'outbox._log_last_seq(text)'                  => ['',     q{SELECT outbox._log_last_seq('m_chan')}],
    'outbox._log_purged_pos()'                    => ['',     q{SELECT outbox._log_purged_pos()}],
    'outbox._log_replay(bigint,integer)'          => ['',     q{SELECT * FROM outbox._log_replay(0, 1)}],
    'outbox._log_head()'                          => ['',     q{SELECT outbox._log_head()}],
    'outbox._log_insert(text,jsonb,text,text)'    => ['',     q{SELECT outbox._log_insert('m_chan')}],
    'outbox._log_publish(text,jsonb,text,text)'   => ['',     q{SELECT outbox._log_publish('m_chan')}],
    'outbox._log_state_merge()'                   => ['',     'trigger'],
    'outbox._log_rotate(interval)'                => ['',     q{SELECT outbox._log_rotate('1 day')}],
    'outbox._log_retry_due()'                     => ['',     q{SELECT outbox._log_retry_due()}],
    'outbox._log_row_pending(integer,xid8,bigint)' => ['',    q{SELECT outbox._log_row_pending(0, '1', 1)}],
    'outbox._log_envelope(bigint,bigint,bigint,text,text,jsonb,bigint,boolean)'
                                                  => ['',     q{SELECT outbox._log_envelope(1, 1, 1, NULL, NULL, NULL, 0, false)}],
    'outbox._log_state_check()'                   => ['',     'trigger'],
    'outbox._log_state_keep()'                    => ['',     'trigger'],
    'outbox._frozen_head()'                       => ['',     q{SELECT outbox._frozen_head()}],
    'outbox._log_refuse_base(bigint)'             => ['',     q{SELECT outbox._log_refuse_base(0)}],
    'outbox._log_state_moved()'                   => ['',     'trigger'],
    # the switch (issue #15: internal, granted to nobody)
    'outbox._log_put(bigint,text,text,text,jsonb,timestamp with time zone)'
                                                  => ['',     q{SELECT outbox._log_put(1, 'm_chan', NULL, NULL, NULL, now())}],
    'outbox._pending_to_log()'                    => ['',     'trigger'],
    'outbox._log_mode_changed()'                  => ['',     q{SELECT outbox._log_mode_changed()}],
    'outbox._event_log(bigint)'                   => ['',     q{SELECT * FROM outbox._event_log(1)}],
    'outbox._check_replay_range(bigint,bigint,bigint)' => ['', q{SELECT outbox._check_replay_range(0, 0, 0)}],
    'outbox._check_channel_ahead(text,bigint,bigint)' => ['', q{SELECT outbox._check_channel_ahead('m_chan', 0, 0)}],
    'outbox._raise_channel_removed(text,bigint,bigint)' => ['', q{SELECT outbox._raise_channel_removed('m_chan', 0, 1)}],
    'outbox._raise_no_event(bigint)'              => ['',     q{SELECT outbox._raise_no_event(-1)}],
    'outbox._replay_channel_log(text,bigint,integer,bigint)'
                                                  => ['',     q{SELECT * FROM outbox._replay_channel_log('m_chan', 0, 1, 0)}],
    'outbox._replay_log(bigint,text[],integer,bigint,boolean)'
                                                  => ['',     q{SELECT * FROM outbox._replay_log(0, NULL, 1, 0, false)}],
    # the log's readers (issue #15, part 3: internal, granted to nobody)
    'outbox._log_check_rotation(text)'            => ['',     q{SELECT outbox._log_check_rotation('x')}],
    'outbox._log_replay_channel_rows(text,bigint,integer)' => ['', q{SELECT * FROM outbox._log_replay_channel_rows('m_chan', 0, 1)}],
    'outbox._log_replay_channel(text,bigint,integer)' => ['', q{SELECT * FROM outbox._log_replay_channel('m_chan', 0)}],
    'outbox._log_event(bigint)'                   => ['',     q{SELECT * FROM outbox._log_event(-1)}],
    'outbox._log_head(text)'                      => ['',     q{SELECT outbox._log_head('m_chan')}],
    'outbox._log_pending()'                       => ['',     q{SELECT * FROM outbox._log_pending()}],
    # observability in both storages (98_observe_log.sql): the views' functions, for the views' readers
    'outbox._pending_rows()'                      => ['',     q{SELECT * FROM outbox._pending_rows()}],
    'outbox._pending_summary()'                   => ['ra',   q{SELECT * FROM outbox._pending_summary()}],
    'outbox._pending_channels()'                  => ['ra',   q{SELECT * FROM outbox._pending_channels()}],
    'outbox._log_channel_figures()'               => ['ra',   q{SELECT * FROM outbox._log_channel_figures()}],
    'outbox._consumer_lag(bigint,text[])'         => ['ra',   q{SELECT * FROM outbox._consumer_lag(0, NULL)}],
    'outbox._history_log()'                       => ['ra',   q{SELECT * FROM outbox._history_log()}],
    'outbox._log_purge(interval)'                 => ['',     q{SELECT outbox._log_purge('1 day')}],
    'outbox._log_consumers_release(integer,timestamp with time zone,bigint)'
                                                  => ['',     q{SELECT outbox._log_consumers_release(0, now(), 0)}],
);
my %trigger_args = ('outbox._change()' => q{'outbox', '', '', ''});

# ---- relations: name => {kind, and per privilege the role letters that hold it} ----
# S select, I insert, U update, D delete, T truncate (tables); S (views); S, U usage (sequences)
my %relations = (
    'outbox.pending'         => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.pending_id_seq'  => { kind => 'sequence', S => '',    U => '' },
    'outbox.history_frozen'  => { kind => 'table',    S => 'ra',  I => '', U => '', D => '', T => '' },
    'outbox.history_0'       => { kind => 'table',    S => 'ra',  I => '', U => '', D => '', T => '' },
    'outbox.history_1'       => { kind => 'table',    S => 'ra',  I => '', U => '', D => '', T => '' },
    'outbox.history_2'       => { kind => 'table',    S => 'ra',  I => '', U => '', D => '', T => '' },
    'outbox.state'           => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.channels'        => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.dead_letter'     => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.channel_targets' => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.dead_letters'    => { kind => 'view',     S => 'a' },
    'outbox.status'          => { kind => 'view',     S => 'ra' },
    'outbox.attachments'     => { kind => 'view',     S => 'pra' },
    'outbox.targets'         => { kind => 'view',     S => 'ra' },
    'outbox.debezium_events' => { kind => 'view',     S => 'ra' },
    'outbox.history'         => { kind => 'view',     S => 'ra' },
    'outbox.consumer'        => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.log'             => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.log_0'           => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.log_1'           => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.log_2'           => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.batches'         => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.batches_0'       => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.batches_1'       => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.batches_2'       => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.log_state'       => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.log_channels'    => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.withheld'        => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.consumers'       => { kind => 'view',     S => 'ra' },
    'outbox.failures'        => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.discarded'       => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.epochs'          => { kind => 'table',    S => 'ra',  I => '', U => '', D => '', T => '' },
    'outbox.channel_rights'  => { kind => 'table',    S => 'a',   I => '', U => '', D => '', T => '' },
    'outbox.channel_privileges' => { kind => 'view',  S => 'pra' },
    'outbox.channel_stats'   => { kind => 'view',     S => 'ra' },
);

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('app', $_->[3]) for @roles;

# ---- the catalog and the matrix list the same objects ----
my %in_catalog_f = map { $_ => 1 } split /\n/, $node->safe_psql('app',
    "SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'outbox'::regnamespace");
my %in_catalog_r = map { my ($n, $k) = split /\|/; ($n => $k) } split /\n/, $node->safe_psql('app',
    "SELECT c.oid::regclass, c.relkind FROM pg_class c WHERE c.relnamespace = 'outbox'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'm', 'f', 'p')");
my %kind_of = (r => 'table', p => 'table', v => 'view', m => 'view', S => 'sequence', f => 'table');
for my $f (sort keys %in_catalog_f) {
    ok(exists $functions{$f}, "function $f has an entry in the matrix");
}
for my $f (sort keys %functions) {
    ok($in_catalog_f{$f}, "matrix entry $f is a function of the extension");
}
for my $r (sort keys %in_catalog_r) {
    ok(exists $relations{$r} && $relations{$r}{kind} eq $kind_of{$in_catalog_r{$r}}, "relation $r has an entry in the matrix");
}
for my $r (sort keys %relations) {
    ok(exists $in_catalog_r{$r}, "matrix entry $r is a relation of the extension");
}

# ---- try everything as every role ----
# One session per role; each statement runs in a subtransaction that is always rolled back.
my @cases; # [object, privilege, statement]
for my $f (sort keys %functions) {
    my $call = $functions{$f}[1];
    if ($call eq 'trigger') {
        (my $name = $f) =~ s/\(\)$//;
        $call = sprintf('CREATE TRIGGER m_trg AFTER INSERT ON pg_temp.m_tt FOR EACH ROW EXECUTE FUNCTION %s(%s)',
                        $name, $trigger_args{$f} // '');
    }
    push @cases, [$f, 'X', $call];
}
for my $r (sort keys %relations) {
    my $k = $relations{$r}{kind};
    if ($k eq 'table') {
        my $col = $node->safe_psql('app', "SELECT attname FROM pg_attribute WHERE attrelid = '$r'::regclass AND attnum = 1");
        push @cases, [$r, 'S', "SELECT 1 FROM $r LIMIT 0"], [$r, 'I', "INSERT INTO $r DEFAULT VALUES"],
                     [$r, 'U', "UPDATE $r SET $col = NULL WHERE false"], [$r, 'D', "DELETE FROM $r WHERE false"],
                     [$r, 'T', "TRUNCATE $r"];
    } elsif ($k eq 'view') {
        push @cases, [$r, 'S', "SELECT 1 FROM $r LIMIT 0"];
    } else {
        push @cases, [$r, 'S', "SELECT last_value FROM $r"], [$r, 'U', "SELECT nextval('$r')"];
    }
}
my $try = q{
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        EXECUTE stmt;
        RAISE EXCEPTION 'rolled back' USING ERRCODE = 'ZZ999';
    EXCEPTION WHEN others THEN
        RETURN CASE WHEN SQLSTATE = 'ZZ999' THEN 'ok' ELSE SQLSTATE END;
    END;
END $$;
CREATE TEMP TABLE m_tt (id int);
};
sub quote_literal { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
my $values = join ",\n", map { sprintf("(%d, %s)", $_, quote_literal($cases[$_][2])) } 0 .. $#cases;
my %seen; # role letter => case index => sqlstate
for my $role (@roles) {
    my ($letter, $name) = @$role;
    my $out = $node->safe_psql('app', $try . "SELECT i, pg_temp.try(s) FROM (VALUES $values) AS c(i, s) ORDER BY i",
                               extra_params => ['-U', $name]);
    for my $line (split /\n/, $out) {
        my ($i, $state) = split /\|/, $line;
        $seen{$letter}{$i} = $state;
    }
}
for my $i (0 .. $#cases) {
    my ($obj, $priv, $stmt) = @{ $cases[$i] };
    my $allowed = $priv eq 'X' ? $functions{$obj}[0] : $relations{$obj}{$priv};
    for my $role (@roles) {
        my ($letter, $name) = @$role;
        my $state = $seen{$letter}{$i} // 'missing';
        my $what = $priv eq 'X' ? "EXECUTE $obj" : "$priv on $obj";
        if (index($allowed, $letter) >= 0) {
            isnt($state, '42501', "$name may $what ($state)");
        } else {
            is($state, '42501', "$name may not $what");
        }
    }
}

# ---- the README's table is this matrix ----
my %priv_name = (S => 'SELECT', I => 'INSERT', U => 'UPDATE', D => 'DELETE', T => 'TRUNCATE');
my $table = '| object | ' . join(' | ', map { $_->[2] } @roles) . " |\n";
$table .= '|---|' . join('', map { '---|' } @roles) . "\n";
# public functions first, then the internal ones (outbox._*)
for my $f (sort { (($a =~ /^outbox\._/) <=> ($b =~ /^outbox\._/)) || $a cmp $b } keys %functions) {
    (my $shown = $f) =~ s/,/, /g;
    $table .= "| `$shown` | " . join(' | ', map { index($functions{$f}[0], $_->[0]) >= 0 ? 'EXECUTE' : '–' } @roles) . " |\n";
}
for my $r (sort keys %relations) {
    my $e = $relations{$r};
    my @order = $e->{kind} eq 'sequence' ? qw(S U) : $e->{kind} eq 'view' ? qw(S) : qw(S I U D T);
    $table .= "| `$r` ($e->{kind}) | " . join(' | ', map {
        my $l = $_->[0];
        my @p = map { $e->{kind} eq 'sequence' && $_ eq 'U' ? 'USAGE' : $priv_name{$_} } grep { index($e->{$_}, $l) >= 0 } @order;
        @p ? join(', ', @p) : '–' } @roles) . " |\n";
}
my $readme_path = "$ENV{TESTDIR}/../README.md";
ok(-f $readme_path, 'README.md is next to the tests') or diag("looked for $readme_path");
my $readme = -f $readme_path ? slurp_file($readme_path) : '';
my ($in_readme) = $readme =~ /<!-- access-matrix:begin[^\n]*-->\n(.*?)<!-- access-matrix:end -->/s;
if (!is($in_readme // '', $table, "README.md's access-control table is the matrix")) {
    diag("the table to paste between the access-matrix markers of README.md:\n$table");
}

unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/, 'no backend crashed');
$node->stop;
done_testing();
