# Red team of the layout change (one transaction/subtransaction callback pair): the change
# trigger in outbox mode, on a real server with a drain worker whose safety tick is 60 s, so
# that an event is only published in time if the commit woke the worker:
#   - every shape of commit that writes change-trigger events wakes the worker (a savepoint
#     released after a rolled-back sibling, a PL/pgSQL EXCEPTION block, PREPARE TRANSACTION
#     with events from a released savepoint committed from another session, a DBA's trigger
#     on outbox.pending writing attached tables), and exactly the committed rows are published;
#   - ROLLBACK PREPARED and a rolled-back savepoint publish nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('redteam_layout');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_outbox'
pg_outbox.idle_interval = '60s'
max_prepared_transactions = 4
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub wait_until {
	my ($q, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < $timeout) {
		return 1 if sql($q) eq 't';
		usleep(20_000);
	}
	return 0;
}

sql('CREATE EXTENSION pg_outbox');
ok(wait_until("SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = 'postgres'", 60),
	'the drain worker runs');
ok(wait_until("SELECT query = 'pg_outbox: idle, waiting for commits' FROM pg_stat_activity "
		  . "WHERE backend_type = 'pg_outbox drain' AND datname = 'postgres'", 60),
	'the worker is idle');
sql(q{
CREATE TABLE rt1 (id int PRIMARY KEY);
CREATE TABLE rt2 (id int PRIMARY KEY);
CREATE TABLE rt3 (id int PRIMARY KEY);
CREATE TABLE rt4 (id int PRIMARY KEY);
SELECT outbox.attach('rt1', channel => 'rt1');
SELECT outbox.attach('rt2', channel => 'rt2');
SELECT outbox.attach('rt3', channel => 'rt3');
SELECT outbox.attach('rt4', channel => 'rt4');
});
my $last = sql('SELECT coalesce(max(pos), 0) FROM outbox.history');

my $producer = $node->background_psql('postgres');
my $other = $node->background_psql('postgres');

# Run the steps, then wait (10 s, the tick is 60 s) for outbox.pending to be empty and
# compare what was published since the previous case.
sub check_case {
	my ($case, $expected, @steps) = @_;
	while (my ($session, $q) = splice(@steps, 0, 2)) {
		$session->query_safe($q);
	}
	ok(wait_until('SELECT count(*) = 0 FROM outbox.pending', 10), "the worker is woken at the commit of $case");
	my $got = sql("SELECT coalesce(string_agg(channel || ':' || key, ',' ORDER BY pos), '') FROM outbox.history WHERE pos > $last");
	is($got, $expected, "... and exactly the committed rows are published ($case)");
	$last = sql('SELECT coalesce(max(pos), 0) FROM outbox.history');
}

check_case('a savepoint released after a rolled-back sibling', 'rt1:2',
	$producer, 'BEGIN; SAVEPOINT a; INSERT INTO rt1 VALUES (1); ROLLBACK TO a; SAVEPOINT b; INSERT INTO rt1 VALUES (2); RELEASE b; COMMIT;');
check_case('a PL/pgSQL EXCEPTION block that failed after its statement was flushed', 'rt1:4',
	$producer,
	'DO $$ BEGIN BEGIN INSERT INTO rt1 VALUES (3); PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN INSERT INTO rt1 VALUES (4); END; END $$;');
check_case('PREPARE TRANSACTION (events of a released savepoint), COMMIT PREPARED from another session', 'rt1:5,rt1:6',
	$producer, "BEGIN; INSERT INTO rt1 VALUES (5); SAVEPOINT a; INSERT INTO rt1 VALUES (6); SAVEPOINT b; INSERT INTO rt1 VALUES (7); ROLLBACK TO b; RELEASE a; PREPARE TRANSACTION 'p1';",
	$other, "COMMIT PREPARED 'p1';");

# ROLLBACK PREPARED: nothing, and the next commit is published alone
$producer->query_safe("BEGIN; INSERT INTO rt1 VALUES (8); PREPARE TRANSACTION 'p2';");
$other->query_safe("ROLLBACK PREPARED 'p2';");
is(sql('SELECT count(*) FROM outbox.pending'), '0', 'ROLLBACK PREPARED leaves no pending event');
check_case('a plain INSERT after ROLLBACK PREPARED', 'rt1:9', $producer, 'INSERT INTO rt1 VALUES (9);');

# a DBA's trigger on outbox.pending that writes attached tables: the whole chain is written
# and published (the last round used to stay buffered and be dropped at commit)
sql(q{
CREATE FUNCTION rt_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.channel = 'rt1' THEN INSERT INTO public.rt2 VALUES (NEW.key::int); END IF;
    IF NEW.channel = 'rt2' THEN INSERT INTO public.rt3 VALUES (NEW.key::int); END IF;
    IF NEW.channel = 'rt3' THEN INSERT INTO public.rt4 VALUES (NEW.key::int); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER rt_chain AFTER INSERT ON outbox.pending FOR EACH ROW EXECUTE FUNCTION rt_chain();
});
check_case('a trigger chain in autocommit', 'rt1:10,rt2:10,rt3:10,rt4:10', $producer, 'INSERT INTO rt1 VALUES (10);');
check_case('a trigger chain prepared and committed from another session', 'rt1:11,rt2:11,rt3:11,rt4:11',
	$producer, "BEGIN; SAVEPOINT a; INSERT INTO rt1 VALUES (11); RELEASE a; PREPARE TRANSACTION 'p3';",
	$other, "COMMIT PREPARED 'p3';");
sql('DROP TRIGGER rt_chain ON outbox.pending');

$producer->quit;
$other->quit;
$node->stop;
done_testing();
