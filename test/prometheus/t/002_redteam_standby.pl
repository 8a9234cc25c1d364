# Red team of issue #19: the exporter scraping a hot standby (a common setup: every node of a
# pair is scraped). A standby has no drain worker until it is promoted (outbox.health() says
# 'ok', "hot standby"); the alert PgOutboxWorkerDown must not fire there, so the queries file
# exports pg_outbox_standby and the rule excludes it. The queries run on the standby without an
# error. Every wait polls with a deadline.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run ();

my $exporter_bin = $ENV{PG_OUTBOX_EXPORTER} // '/usr/bin/prometheus-postgres-exporter';
BAIL_OUT("$exporter_bin not installed (test/setup.sh installs prometheus-postgres-exporter)") unless -x $exporter_bin;
my $queries = $ENV{PG_OUTBOX_QUERIES} // "$ENV{TESTDIR}/../contrib/prometheus/pg_outbox_queries.yaml";
my $rules = slurp_file("$ENV{TESTDIR}/../contrib/prometheus/pg_outbox_alerts.yml");
my $curl = '/usr/bin/curl';

my $p = PostgreSQL::Test::Cluster->new('prom_primary');
$p->init(allows_streaming => 1);
$p->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'\npg_outbox.idle_interval = '200ms'\n");
$p->start;
$p->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');
$p->safe_psql('postgres', 'CREATE ROLE monitor LOGIN IN ROLE outbox_reader');
$p->safe_psql('postgres', q{SELECT outbox.publish('orders', '{"n": 1}')});
$p->backup('b');
my $s = PostgreSQL::Test::Cluster->new('prom_standby');
$s->init_from_backup($p, 'b', has_streaming => 1);
$s->start;
$p->wait_for_catchup($s);

my @exporters;
END { $_->kill_kill for @exporters; }
sub exporter { # an exporter on loopback for $node: (port, log file)
	my ($node, $name) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $log = "${PostgreSQL::Test::Utils::tmp_check}/exporter_$name.log";
	my $dsn = sprintf('host=%s port=%d user=monitor dbname=postgres sslmode=disable', $node->host, $node->port);
	my $in = '';
	push @exporters, IPC::Run::start(
		[ 'env', "DATA_SOURCE_NAME=$dsn", $exporter_bin, "--web.listen-address=127.0.0.1:$port",
		  "--extend.query-path=$queries", '--disable-default-metrics', '--disable-settings-metrics' ],
		'<', \$in, '>&', $log);
	return ($port, $log);
}
sub metric { # the value of metric $name in a scrape of $port (polled until present, 60 s)
	my ($port, $name) = @_;
	my $deadline = time + 60;
	while (time < $deadline) {
		my $text = `$curl -s --max-time 5 http://127.0.0.1:$port/metrics`;
		for my $line (split /\n/, $text) {
			return $1 if $line =~ /^\Q$name\E(?:\{[^}]*\})? (\S+)$/;
		}
		usleep(200_000);
	}
	return undef;
}
my ($pport, $plog) = exporter($p, 'primary');
my ($sport, $slog) = exporter($s, 'standby');

is(metric($pport, 'pg_outbox_standby'), '0', 'primary: pg_outbox_standby 0');
is(metric($sport, 'pg_outbox_standby'), '1', 'standby: pg_outbox_standby 1');
is(metric($sport, 'pg_outbox_worker_up'), '0', 'standby: no drain worker (worker_up 0)');
is(metric($sport, 'pg_outbox_paused'), '0', 'standby: not paused');
my ($down) = $rules =~ /alert: PgOutboxWorkerDown\s+expr:\s*(.*)$/m;
like($down, qr/pg_outbox_standby == 0/, 'PgOutboxWorkerDown excludes standbys (it fired on every hot standby)');
my ($crit) = $rules =~ /alert: PgOutboxHealthCritical\s+expr:\s*(.*)$/m;
ok(defined $crit, 'PgOutboxHealthCritical is there');
is($s->safe_psql('postgres', q{SELECT status FROM outbox.health() WHERE "check" = 'worker'}, extra_params => ['-U', 'monitor']),
	'ok', 'health(): the worker check is ok on a standby');
is($s->safe_psql('postgres', q{SELECT count(*) FROM outbox.health() WHERE status = 'critical'}, extra_params => ['-U', 'monitor']),
	'0', 'health(): nothing critical on a healthy standby (PgOutboxHealthCritical stays quiet)');
unlike(slurp_file($slog), qr/level=error/, 'the standby exporter logged no error') or diag(slurp_file($slog));
unlike(slurp_file($plog), qr/level=error/, 'the primary exporter logged no error') or diag(slurp_file($plog));
$_->kill_kill for @exporters;
@exporters = ();
$s->stop;
$p->stop;
done_testing();
