# Red team of issue #13 (client side): pg_outbox_listen against state files an attacker or a
# crash could leave (a position or an epoch beyond the outbox), and a server whose
# outbox.identity() is not an identity (a crafted dump, a hand-edited outbox.state). In each case
# the listener prints no event and leaves the state file as it was. Every wait polls with a
# deadline (IPC::Run timeout).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $listen = $ENV{PG_OUTBOX_LISTEN} or plan skip_all => 'PG_OUTBOX_LISTEN is not set (run through test/run_tests.sh)';
my $node = PostgreSQL::Test::Cluster->new('redteam_epochs');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'\npg_outbox.idle_interval = '200ms'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
$node->safe_psql('postgres', q{SELECT outbox.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 3) g});
my $t0 = time;
until ($node->safe_psql('postgres', 'SELECT count(*) FROM outbox.pending') == 0) {
	die 'not published within 60 s' if time - $t0 > 60;
	usleep(50_000);
}
my $identity = $node->safe_psql('postgres', 'SELECT outbox.identity()');
my $epoch = $node->safe_psql('postgres', 'SELECT outbox.epoch()');
my $dir = PostgreSQL::Test::Utils::tempdir();

# run the listener until it exits (or 20 s, then SIGTERM): (exit code, stdout, stderr)
sub listener {
	my ($state, @opt) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ $listen, $node->connstr('postgres'), '-c', 'orders', '--state', $state, '--max-backoff', '1', @opt ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(60));
	my $deadline = time + 20;
	while (time < $deadline) {
		eval { $h->pump_nb };
		last unless $h->pumpable;
		usleep(50_000);
	}
	$h->signal('TERM') if $h->pumpable;
	eval { $h->finish };
	return ($h->result(0), $out, $err);
}
sub state_file {
	my ($name, $content) = @_;
	my $f = "$dir/$name.state";
	open(my $fh, '>', $f) or die;
	print $fh $content;
	close($fh);
	return $f;
}
sub slurp { open(my $fh, '<', $_[0]) or return undef; local $/; return <$fh>; }

# a position beyond the outbox (OB002): exit 6, nothing printed, the file untouched
my $c = "pg_outbox_listen state 2\npos 9223372036854775807\nepoch $epoch\nidentity $identity\n";
my $f = state_file('ahead', $c);
my ($rc, $out, $err) = listener($f);
is($rc, 6, 'a position beyond the outbox: exit 6') or diag($err);
is($out, '', 'nothing printed');
is(slurp($f), $c, 'the state file is untouched');

# an epoch beyond this outbox's latest one: the history the file claims is not this one: exit 8
$c = "pg_outbox_listen state 2\npos 1\nepoch 9223372036854775807\nidentity $identity\n";
$f = state_file('epoch_ahead', $c);
($rc, $out, $err) = listener($f);
is($rc, 8, 'an epoch beyond the outbox: exit 8 (diverged)') or diag($err);
is($out, '', 'nothing printed');
is(slurp($f), $c, 'the state file is untouched');

# an identity of another outbox: exit 8 unless --resync
$c = "pg_outbox_listen state 2\npos 1\nepoch $epoch\nidentity another-outbox\n";
$f = state_file('other', $c);
($rc, $out, $err) = listener($f);
is($rc, 8, 'another identity: exit 8') or diag($err);
is($out, '', 'nothing printed');
like($err, qr/identity changed from another-outbox to \Q$identity\E/, 'and why');

# the server's identity is not an identity: refused before anything is printed or saved
$node->safe_psql('postgres', q{UPDATE outbox.state SET identity = 'two words'});
$f = "$dir/fresh.state";
($rc, $out, $err) = listener($f, '--from-pos', '0');
is($rc, 1, 'an invalid server identity: exit 1') or diag($err);
is($out, '', 'nothing printed');
like($err, qr/not an identity/, 'and why');
my $saved = slurp($f) // '';
unlike($saved, qr/two words/, 'the invalid identity is not written to the state file');
$node->safe_psql('postgres', qq{UPDATE outbox.state SET identity = '$identity'});

$node->stop;
done_testing();
