# OutboxNode — what the TAP tests of the write-once log (t/151-t/156) share: the server each
# starts (pg_outbox preloaded, a drain worker per database that wakes every 100 ms at the latest)
# and the poll they assert with.
package OutboxNode;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT_OK = qw(outbox_node poll_is);

# outbox_node($name, setting => value, ...): a new node, initialised with pg_outbox in
# shared_preload_libraries, pg_outbox.databases = '*' and pg_outbox.idle_interval = 100ms, then the
# settings given, in their order (values as postgresql.conf takes them: q{'app'}; a setting of those
# two replaces it), and started.
sub outbox_node {
	my ($name, @settings) = @_;
	my @conf = ('pg_outbox.databases' => q{'*'}, 'pg_outbox.idle_interval' => '100ms');
	while (my ($k, $v) = splice(@settings, 0, 2)) {
		my ($i) = grep { $conf[$_] eq $k } map { 2 * $_ } 0 .. $#conf / 2;
		if (defined $i) {
			$conf[$i + 1] = $v;
		} else {
			push @conf, $k, $v;
		}
	}
	my $text = "shared_preload_libraries = 'pg_outbox'\n";
	for (my $i = 0; $i < @conf; $i += 2) {
		$text .= "$conf[$i] = $conf[$i + 1]\n";
	}
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', $text);
	$node->start;
	return $node;
}

# poll_is($node, $db, $sql, $want, $what[, $tries]): runs $sql every 100 ms until it returns $want,
# at most $tries times (300: 30 s), then asserts what it returned last. An error (a server that
# restarts after a crash refuses the connection) counts as "not yet", as '' if it is the last.
sub poll_is {
	my ($node, $db, $sql, $want, $what, $tries) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 2; # the caller's wait_for(), and its caller
	my $got;
	for (1 .. ($tries // 300)) {
		$got = eval { $node->safe_psql($db, $sql) } // '';
		last if $got eq $want;
		usleep(100_000);
	}
	is($got, $want, $what);
}

1;
