# [epochs] Positions that survive failover (issue #13): after an asynchronous failover the
# promoted standby begins a new epoch at its head + 1; a consumer beyond that point is told
# (OB003), one at or before it continues without loss. A synchronous standby and a planned
# switchover lose nothing and diverge nobody. A point-in-time recovery, a pg_dump restored into
# another database and DROP + CREATE EXTENSION are seen too; a hot standby shows the primary's
# epochs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $conf = "shared_preload_libraries = 'pg_outbox'\npg_outbox.idle_interval = '200ms'\n";

sub drained { # wait until the drain worker has published everything
	my ($node, $db) = @_;
	$db //= 'postgres';
	my $t0 = time;
	until ($node->safe_psql($db, 'SELECT count(*) FROM outbox.pending') == 0) {
		die "the drain worker did not publish within 60 s" if time - $t0 > 60;
		usleep(50_000);
	}
	return $node->safe_psql($db, 'SELECT outbox.head()');
}

sub publish {
	my ($node, $n, $tag, $db) = @_;
	$node->safe_psql($db // 'postgres',
		"SELECT outbox.publish('orders', jsonb_build_object('tag', '$tag', 'n', g)) FROM generate_series(1, $n) g");
	return drained($node, $db);
}

sub replay { # (rc, stdout, stderr) of a replay with after_epoch
	my ($node, $pos, $epoch, $db) = @_;
	return $node->psql($db // 'postgres',
		"SELECT string_agg(pos || ':' || epoch || ':' || (payload->>'tag'), ',' ORDER BY pos)"
		. " FROM outbox.replay($pos, NULL, 100000, after_epoch => $epoch)",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
}

sub pair { # a primary with a streaming standby
	my ($name, %opt) = @_;
	my $p = PostgreSQL::Test::Cluster->new("${name}_p");
	$p->init(allows_streaming => 1, has_archiving => $opt{archiving} // 0);
	$p->append_conf('postgresql.conf', $conf);
	$p->start;
	$p->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
	publish($p, 10, 'first');
	$p->backup('b');
	my $s = PostgreSQL::Test::Cluster->new("${name}_s");
	$s->init_from_backup($p, 'b', has_streaming => 1);
	$s->append_conf('postgresql.conf', "cluster_name = '${name}_s'\n");
	$s->start;
	$p->wait_for_catchup($s);
	return ($p, $s);
}

# ---- unplanned failover to an asynchronous standby ----
{
	my ($p, $s) = pair('async');
	my $h1 = publish($p, 40, 'kept');
	$p->wait_for_catchup($s);
	is($s->safe_psql('postgres', 'SELECT epoch, first_pos, reason FROM outbox.epochs ORDER BY epoch'),
	   $p->safe_psql('postgres', 'SELECT epoch, first_pos, reason FROM outbox.epochs ORDER BY epoch'),
	   'hot standby: the same epochs as the primary');
	my ($rc, $out, $err) = replay($s, 0, 1);
	my ($rcp, $outp) = replay($p, 0, 1);
	is($out, $outp, 'hot standby: replay() returns the same positions and epochs as the primary');
	is($s->safe_psql('postgres', 'SELECT outbox.identity()'), $p->safe_psql('postgres', 'SELECT outbox.identity()'),
	   'hot standby: the same identity');

	# the standby falls behind (its WAL receiver is gone), the primary publishes on
	$s->stop('fast');
	my $h2 = publish($p, 30, 'lost');
	cmp_ok($h2, '>', $h1, "the primary published up to $h2, the standby has $h1");
	$p->stop('immediate');
	$s->start;
	$s->promote;
	$s->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die;
	my $h3 = publish($s, 50, 'new');
	is($s->safe_psql('postgres', "SELECT first_pos || ' ' || (reason ~ '^timeline changed from 1 to 2') FROM outbox.epochs"
	                             . ' WHERE epoch = (SELECT max(epoch) FROM outbox.epochs)'),
	   ($h1 + 1) . ' true', 'the promoted standby began a new epoch at its head + 1, reason: the timeline');
	my $e2 = $s->safe_psql('postgres', 'SELECT outbox.epoch()');
	is($e2, 2, 'epoch 2 (timeline 2)');
	cmp_ok($h3, '>', $h2, "positions up to $h2 were handed out again");

	($rc, $out, $err) = replay($s, $h2, 1);
	isnt($rc, 0, 'a consumer beyond the preserved point is refused');
	like($err, qr/OB003/, '... with SQLSTATE OB003');
	like($err, qr/positions from @{[$h1 + 1]} on were handed out again in epoch 2/, '... naming the first reissued position');
	like($err, qr/HINT:.*resynchronise/, '... and how to resynchronise');
	($rc, $out, $err) = replay($s, $h1 + 1, 1);
	like($err, qr/OB003/, 'a consumer exactly at the first reissued position is refused too');

	($rc, $out, $err) = replay($s, $h1, 1);
	is($rc, 0, 'a consumer at the preserved point continues') or diag($err);
	my @got = split /,/, $out;
	is(scalar(@got), $h3 - $h1, '... and gets every event after it');
	is($got[0], ($h1 + 1) . ':2:new', '... from the first event of epoch 2');
	($rc, $out, $err) = replay($s, 5, 1);
	is($rc, 0, 'a consumer before the preserved point continues');
	is(scalar(split /,/, $out), $h3 - 5, '... with no loss (epoch 1 events, then epoch 2)');
	like($out, qr/^6:1:first,.*:1:kept,@{[$h1 + 1]}:2:new/, '... in order, each with its epoch');
	($rc, $out, $err) = replay($s, $h3, 2);
	is($rc, 0, 'a consumer of the new epoch replays as usual');
	$s->stop;
}

# ---- synchronous standby: no loss, no divergence ----
{
	my ($p, $s) = pair('sync');
	$p->append_conf('postgresql.conf', "synchronous_standby_names = 'sync_s'\n");
	$p->reload;
	$p->poll_query_until('postgres', "SELECT sync_state = 'sync' FROM pg_stat_replication") or die;
	my $h1 = publish($p, 40, 'acked');
	$p->stop('immediate');
	$s->promote;
	$s->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die;
	is($s->safe_psql('postgres', 'SELECT outbox.head()'), $h1, 'synchronous standby: every published event is there');
	publish($s, 5, 'after');
	my ($rc, $out, $err) = replay($s, $h1, 1);
	is($rc, 0, 'synchronous standby: the consumer at the old head continues, no divergence') or diag($err);
	is(scalar(split /,/, $out), 5, '... and gets the new events');
	is($s->safe_psql('postgres', 'SELECT first_pos FROM outbox.epochs WHERE epoch = 2'), $h1 + 1,
	   '... the new epoch began at head + 1');
	$s->stop;
}

# ---- planned switchover: clean shutdown of the primary, promote ----
{
	my ($p, $s) = pair('switch');
	my $h1 = publish($p, 25, 'before');
	$p->stop('fast'); # a clean shutdown sends the standby all WAL first
	$s->promote;
	$s->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die;
	is($s->safe_psql('postgres', 'SELECT outbox.head()'), $h1, 'switchover: nothing lost');
	publish($s, 5, 'after');
	my ($rc, $out, $err) = replay($s, $h1, 1);
	is($rc, 0, 'switchover: the consumer at the head continues, no divergence') or diag($err);
	is(scalar(split /,/, $out), 5, '... with the new events');
	$s->stop;
}

# ---- restore of a base backup to an earlier point (point-in-time recovery) ----
{
	my $p = PostgreSQL::Test::Cluster->new('pitr_p');
	$p->init(allows_streaming => 1, has_archiving => 1);
	$p->append_conf('postgresql.conf', $conf);
	$p->start;
	$p->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
	my $h1 = publish($p, 10, 'base');
	$p->backup('old');
	my $h2 = publish($p, 20, 'later');
	$p->safe_psql('postgres', 'SELECT pg_switch_wal()');
	$p->stop;
	my $r = PostgreSQL::Test::Cluster->new('pitr_r');
	$r->init_from_backup($p, 'old', has_restoring => 1);
	$r->append_conf('postgresql.conf', "recovery_target = 'immediate'\nrecovery_target_action = 'promote'\n");
	$r->start;
	$r->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()') or die;
	is($r->safe_psql('postgres', 'SELECT outbox.head()'), $h1, 'PITR: back at the backup\'s head');
	publish($r, 30, 'fork');
	my ($rc, $out, $err) = replay($r, $h2, 1);
	like($err, qr/OB003.*positions from @{[$h1 + 1]} on were handed out again/s,
	     'PITR: a consumer that saw the lost events is told');
	($rc, $out, $err) = replay($r, $h1, 1);
	is($rc, 0, 'PITR: a consumer at the restored head continues');
	$r->stop;
}

# ---- pg_dump restored into a new database; DROP + CREATE EXTENSION ----
{
	my $n = PostgreSQL::Test::Cluster->new('dump');
	$n->init;
	$n->append_conf('postgresql.conf', $conf);
	$n->start;
	$n->safe_psql('postgres', 'CREATE DATABASE src');
	$n->safe_psql('src', 'CREATE EXTENSION pg_outbox');
	my $h1 = publish($n, 12, 'src', 'src');
	my $id = $n->safe_psql('src', 'SELECT outbox.identity()');
	my $dump = $n->basedir . '/src.dump';
	$n->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $n->connstr('src') ], 'pg_dump of the database');
	$n->safe_psql('src', "SELECT outbox.publish('orders', '{\"tag\": \"lost\"}')");
	my $h2 = drained($n, 'src');
	$n->safe_psql('postgres', 'CREATE DATABASE copy');
	$n->command_ok([ 'pg_restore', '-d', $n->connstr('copy'), $dump ], 'pg_restore into a new database');
	is($n->safe_psql('copy', 'SELECT outbox.identity()'), $id, 'the restored copy is the same outbox (identity)');
	publish($n, 3, 'copy', 'copy');
	like($n->safe_psql('copy', 'SELECT first_pos || \' \' || reason FROM outbox.epochs ORDER BY epoch DESC LIMIT 1'),
	     qr/^@{[$h1 + 1]} database OID changed/, 'the restored copy began a new epoch at the restored head + 1');
	my ($rc, $out, $err) = replay($n, $h2, 1, 'copy');
	like($err, qr/OB003/, 'a consumer that saw an event published after the dump is told');
	($rc, $out, $err) = replay($n, $h1, 1, 'copy');
	is($rc, 0, 'a consumer at the dumped head continues') or diag($err);

	$n->safe_psql('src', 'DROP EXTENSION pg_outbox');
	$n->safe_psql('src', 'CREATE EXTENSION pg_outbox');
	isnt($n->safe_psql('src', 'SELECT outbox.identity()'), $id, 'DROP + CREATE EXTENSION: a new identity');
	($rc, $out, $err) = replay($n, $h2, 1, 'src');
	like($err, qr/OB00[23]/, '... a consumer with saved state is refused (ahead of the new outbox)');
	$n->stop;
}

done_testing();
