# The write-once log (issue #15, part 1): a pass that dies between writing its batch row and its
# commit loses nothing and publishes nothing twice. The reference pass (outbox._log_pass_sql())
# runs in a backend that is SIGKILLed while a DBA's trigger on the batch table holds it after the
# batch row's insert (the postmaster resets the cluster and crash recovery runs), and once more
# while the server is stopped with "immediate". No drain worker publishes anything here (the 1.2
# storage is untouched and empty). Afterwards the passes run to the end: every committed event is
# in exactly one batch, positions are 1..N, each channel's seqs 1..n, the rolled-back events are
# nowhere, and replay agrees with the batches.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();

my $node = PostgreSQL::Test::Cluster->new('log_crash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.databases = ''
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');

# 30 transactions of 10 events on 3 channels, and 5 rolled back
my $sql = '';
for my $t (1 .. 30) {
	$sql .= "BEGIN; SELECT count(outbox._log_insert('ch' || (g % 3), jsonb_build_object('t', $t, 'g', g))) FROM generate_series(1, 10) g; COMMIT;\n";
	$sql .= "BEGIN; SELECT outbox._log_insert('ch0', '{\"rolled_back\": true}'); ROLLBACK;\n" if $t % 6 == 0;
}
$node->safe_psql('postgres', $sql);
is($node->safe_psql('postgres', 'SELECT count(*) FROM outbox.log'), '300', '300 committed events in the log');

# a DBA's trigger that makes the pass wait after its batch row is written, before its commit
$node->safe_psql('postgres', q{
CREATE TABLE public.hold (on_ boolean);
INSERT INTO public.hold VALUES (true);
CREATE FUNCTION public.hold_pass() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT on_ FROM public.hold) THEN PERFORM pg_sleep(60); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold AFTER INSERT ON outbox.batches_0 FOR EACH ROW EXECUTE FUNCTION public.hold_pass();
});

# kill_in_pass(how): start a pass of 7 events in the background, wait until it sleeps in the
# trigger (its batch row written), then SIGKILL it or stop the server with "immediate"
sub kill_in_pass {
	my ($how) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', 'SELECT outbox._log_pass_sql(7)' ],
		'>', \$out, '2>', \$err);
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%_log_pass_sql%'"),
		"$how: the pass is inside its transaction, after its batch row");
	if ($how eq 'sigkill') {
		my $pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%_log_pass_sql%'");
		kill 'KILL', $pid;
		# the postmaster resets the cluster: wait until it accepts connections again
		ok($node->poll_query_until('postgres', 'SELECT true'), 'sigkill: the server is back after the crash');
	} else {
		$node->stop('immediate');
		$node->start;
		pass('immediate: the server is back');
	}
	eval { $h->finish; };
	isnt($out, '7', "$how: the killed pass did not return");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM outbox.batches'), '0', "$how: the batch of the killed pass is not there");
}

kill_in_pass('sigkill');
kill_in_pass('immediate');

$node->safe_psql('postgres', 'UPDATE public.hold SET on_ = false');
# drain in passes of 7, each its own transaction
my $passes = 0;
while ($node->safe_psql('postgres', 'SELECT outbox._log_pass_sql(7)') ne '0') { $passes++; last if $passes > 200; }
is($passes, 43, 'the 300 events took 43 passes of at most 7');
is($node->safe_psql('postgres', 'SELECT sum(n), count(*) FROM outbox.batches'), '300|43', 'batches hold 300 events');
is($node->safe_psql('postgres', q{
    SELECT count(*), count(DISTINCT id), min(pos), max(pos), count(DISTINCT pos)
      FROM outbox._log_replay(0, 100000)}), '300|300|1|300|300', 'every event once, positions 1..300');
is($node->safe_psql('postgres', q{
    SELECT string_agg(channel || ':' || ok::text, ',' ORDER BY channel) FROM (
        SELECT channel, array_agg(seq ORDER BY pos) = array_agg(rn ORDER BY pos) AS ok
          FROM (SELECT channel, seq, pos, row_number() OVER (PARTITION BY channel ORDER BY pos) AS rn
                  FROM outbox._log_replay(0, 100000)) x GROUP BY channel) y}),
	'ch0:true,ch1:true,ch2:true', 'each channel\'s seqs are 1..n in position order');
is($node->safe_psql('postgres', q{SELECT count(*) FROM outbox._log_replay(0, 100000) WHERE payload ? 'rolled_back'}),
	'0', 'rolled-back events are never published');
# a transaction's events stay together and in insert order
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM (SELECT payload->>'t' AS t, max(pos) - min(pos) AS span,
                                 array_agg(id ORDER BY pos) = array_agg(id ORDER BY id) AS ordered
                            FROM outbox._log_replay(0, 100000) GROUP BY 1) x WHERE span <> 9 OR NOT ordered}),
	'0', 'each transaction\'s 10 events are contiguous and in id order');
is($node->safe_psql('postgres', 'SELECT outbox._log_head()'), '300', 'head is 300');

done_testing();
