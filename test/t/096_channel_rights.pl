# Channel rights (issue #11 part 5) where only a whole server shows it: the README's example runs
# as written; a session's cached rules follow grants and revokes committed by other sessions
# (and not rolled-back ones); pg_outbox_listen as a tenant reads its channel only; a dump restored
# into another cluster, whose roles have other OIDs, keeps the rights of the right roles.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $node = PostgreSQL::Test::Cluster->new('rights');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_outbox');

# ---- the README's example, as written ----
my $readme = slurp_file("$ENV{TESTDIR}/../README.md");
my ($example) = $readme =~ /<!-- channel-rights-example[^\n]*-->\n```sql\n(.*?)```\n<!-- end of channel-rights-example -->/s;
ok(defined $example && length $example > 100, 'the README has the channel rights example');
my ($ret, $stdout, $stderr) = $node->psql('postgres', $example, on_error_stop => 0);
my @errors = $stderr =~ /^.*ERROR:.*$/mg;
is(scalar(@errors), 2, 'the example fails exactly where it says') or diag($stderr);
like($errors[0] // '', qr/permission denied to publish on channel "tenant_43"/, '... publish on the other tenant\'s channel');
like($errors[1] // '', qr/permission denied to read channel "tenant_43"/, '... replay of the other tenant\'s channel');
like($stdout, qr/tenant_%\|billing\|f\|t/, 'channel_privileges lists billing\'s read right on tenant_%');
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM outbox.history WHERE channel = 'tenant_42'"),
	'the allowed event was published');
is($node->safe_psql('postgres', "SELECT string_agg(pattern || ':' || role || ':' || publish || ':' || read, ',' ORDER BY pattern) FROM outbox.channel_privileges"),
	'tenant_%:billing:false:true,tenant_42:tenant_42_app:true:true,tenant_43:tenant_43_app:false:true',
	'after the revoke: tenant_43_app may only read');

# ---- a long-lived session's cache follows other sessions' commits ----
my ($in, $out, $err) = ('', '', '');
my $psql = IPC::Run::start([ 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=0', '-d', $node->connstr('postgres') . ' user=tenant_42_app', '-f', '-' ],
	'<', \$in, '>', \$out, '2>', \$err);
my $mark = 0;
sub in_session {
	my ($sql) = @_;
	$mark++;
	($out, $err) = ('', '');
	$in .= "$sql\n\\echo MARK$mark\n";
	my $deadline = time + 30;
	while ($out !~ /MARK$mark/ && time < $deadline) { $psql->pump_nb; usleep(10_000); }
	my $o = $out;
	$o =~ s/MARK$mark\n//;
	return $err ne '' ? "ERR: $err" : $o;
}
sub publish_in_session { in_session(q{SELECT outbox.publish('tenant_42_extra') IS NOT NULL;}) }
like(publish_in_session(), qr/permission denied to publish on channel "tenant_42_extra"/, 'session: no right on tenant_42_extra');
$node->safe_psql('postgres', q{SELECT outbox.grant_channel('tenant_42_%', 'tenant_42_app', '{publish}')});
is(publish_in_session(), "t\n", 'session: a grant committed by another session applies at once');
$node->safe_psql('postgres', q{BEGIN; SELECT outbox.revoke_channel('tenant_42_%', 'tenant_42_app'); ROLLBACK;});
is(publish_in_session(), "t\n", 'session: a rolled-back revoke changes nothing');
$node->safe_psql('postgres', q{DELETE FROM outbox.channel_rights WHERE pattern = 'tenant_42_%'});
like(publish_in_session(), qr/permission denied/, 'session: a DELETE by hand applies at once');
# membership granted and revoked by another session
$node->safe_psql('postgres', q{CREATE ROLE extra_group; SELECT outbox.grant_channel('tenant_42_extra', 'extra_group', '{publish}'); GRANT extra_group TO tenant_42_app;});
is(publish_in_session(), "t\n", 'session: a membership granted by another session applies at once');
$node->safe_psql('postgres', q{REVOKE extra_group FROM tenant_42_app});
like(publish_in_session(), qr/permission denied/, 'session: a membership revoked by another session applies at once');
# a whole transaction in the session: the cache inside it follows the session's own statements
is(in_session(q{BEGIN; SELECT outbox.head('tenant_42') >= 1; SELECT count(*) FROM outbox.replay(0, '{tenant_42}'); COMMIT;}),
	"t\n1\n", 'session: reads its own channel');
$in .= "\\q\n";
$psql->finish;

# ---- while read rights exist, a NOTIFY carries nothing they guard (any role may LISTEN) ----
$node->safe_psql('postgres', 'CREATE ROLE eve LOGIN');
{
	my ($ein, $eout, $eerr) = ("LISTEN tenant_42;\n\\echo LISTENING\n", '', '');
	my $eve = IPC::Run::start([ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('postgres') . ' user=eve', '-f', '-' ],
		'<', \$ein, '>', \$eout, '2>', \$eerr);
	my $deadline = time + 30;
	while ($eout !~ /LISTENING/ && time < $deadline) { $eve->pump_nb; usleep(10_000); }
	$node->safe_psql('postgres', q{SELECT outbox.publish('tenant_42', '{"secret": "of tenant 42"}', 'k42', 't42')});
	ok($node->poll_query_until('postgres', 'SELECT NOT EXISTS (SELECT FROM outbox.pending)'), 'published');
	$deadline = time + 30;
	while ($eout !~ /Asynchronous notification "tenant_42"/ && time < $deadline) {
		$ein .= "SELECT 1;\n";
		$eve->pump_nb;
		usleep(100_000);
	}
	$ein .= "\\q\n";
	$eve->finish;
	my ($note) = $eout =~ /(Asynchronous notification "tenant_42" with payload "[^\n]*")/;
	like($note // '', qr/with payload "\{"id":\d+,"pos":\d+,(?:"epoch":\d+,)?"seq":\d+,"truncated":true\}"/,
		'an eavesdropper LISTENing on a tenant channel gets only id, pos and seq') or diag($eout . $eerr);
	unlike($eout, qr/secret|k42|t42/, '... never the payload, key or type');
}

# ---- the drain worker's cache follows the rights both ways ----
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION pg_outbox');
ok($node->poll_query_until('fresh', 'SELECT cardinality(outbox.worker_pids()) = 1'), 'database fresh has its worker');
{
	my ($ein, $eout, $eerr) = ("LISTEN c;\n\\echo LISTENING\n", '', '');
	my $eve = IPC::Run::start([ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('fresh') . ' user=eve', '-f', '-' ],
		'<', \$ein, '>', \$eout, '2>', \$eerr);
	my $deadline = time + 30;
	while ($eout !~ /LISTENING/ && time < $deadline) { $eve->pump_nb; usleep(10_000); }
	my $n = 0;
	my $seen = sub { # publish one event, return the notification eve gets
		my ($setup) = @_;
		$n++;
		$node->safe_psql('fresh', $setup) if $setup;
		$node->safe_psql('fresh', qq{SELECT outbox.publish('c', '{"n": $n}')});
		my $deadline = time + 30;
		while ($eout !~ /Asynchronous notification "c" with payload "\{"id":$n,/ && time < $deadline) {
			$ein .= "SELECT 1;\n";
			$eve->pump_nb;
			usleep(50_000);
		}
		my ($p) = $eout =~ /Asynchronous notification "c" with payload "(\{"id":$n,[^\n]*\})"/;
		return $p // 'nothing';
	};
	like($seen->(''), qr/"payload":\{"n":1\}/, 'no read right: the envelope is complete');
	like($seen->(q{CREATE ROLE some_tenant; SELECT outbox.grant_channel('t_%', 'some_tenant', '{read}')}),
		qr/^\{"id":2,"pos":2,(?:"epoch":\d+,)?"seq":2,"truncated":true\}$/, 'after the first read right: id, pos and seq only');
	like($seen->(q{SELECT outbox.grant_channel('t_%', 'some_tenant', '{publish}')}), qr/truncated/, 'a publish right changes nothing');
	like($seen->(q{SELECT outbox.revoke_channel('t_%', 'some_tenant', '{read}')}), qr/"payload":\{"n":4\}/,
		'after the last read right is revoked: complete again');
	$ein .= "\\q\n";
	$eve->finish;
}

# ---- pg_outbox_listen as a tenant ----
my $listen = $ENV{PG_OUTBOX_LISTEN};
SKIP: {
	skip 'PG_OUTBOX_LISTEN is not set', 4 unless $listen && -x $listen;
	$node->safe_psql('postgres', q{SELECT outbox.publish('tenant_43', '{"other": "tenant"}')});
	$node->safe_psql('postgres', q{SET ROLE tenant_42_app; SELECT outbox.publish('tenant_42', '{"order": 2}')});
	ok($node->poll_query_until('postgres', 'SELECT NOT EXISTS (SELECT FROM outbox.pending)'), 'published');
	my ($lo, $le) = ('', '');
	my $h = IPC::Run::start([ $listen, $node->connstr('postgres') . ' user=tenant_42_app', '-c', 'tenant_42', '--from-pos', '0' ],
		'<', \undef, '>', \$lo, '2>', \$le);
	my $deadline = time + 30;
	while ((() = $lo =~ /\n/g) < 3 && time < $deadline) { eval { $h->pump_nb }; usleep(20_000); }
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, 'listener as tenant_42_app: exit 0');
	is(join(',', $lo =~ /"payload":(\{[^}]*\})/g), '{"order":1},{"secret":"of tenant 42"},{"order":2}', '... it printed its three events (from replay: the envelopes carry no payload)') or diag($le);
	my ($rc, $o2, $e2) = (0, '', '');
	IPC::Run::run([ $listen, $node->connstr('postgres') . ' user=tenant_42_app', '-c', 'tenant_43', '--from-pos', '0' ],
		'<', \undef, '>', \$o2, '2>', \$e2, IPC::Run::timeout(30));
	$rc = $? >> 8;
	is($rc, 4, 'listener as tenant_42_app on tenant_43: exit 4');
	like($e2, qr/permission denied to read channel "tenant_43"/, '... saying why');
}

# ---- dump and restore into another cluster: the rights stay with the right roles ----
my $dump = PostgreSQL::Test::Utils::tempdir . '/rights.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump');
my $other = PostgreSQL::Test::Cluster->new('restored');
$other->init;
$other->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_outbox'\n");
$other->start;
# the same roles, created in another order (and after others): other OIDs
$other->safe_psql('postgres', q{
CREATE ROLE filler_1; CREATE ROLE filler_2; CREATE ROLE filler_3;
CREATE ROLE billing LOGIN; CREATE ROLE tenant_43_app LOGIN; CREATE ROLE tenant_42_app LOGIN; CREATE ROLE extra_group;
CREATE DATABASE app;
});
isnt($other->safe_psql('postgres', "SELECT 'tenant_42_app'::regrole::oid"), $node->safe_psql('postgres', "SELECT 'tenant_42_app'::regrole::oid"),
	'tenant_42_app has another OID in the other cluster');
$other->command_ok([ 'pg_restore', '-d', $other->connstr('app'), $dump ], 'pg_restore into the other cluster');
$other->safe_psql('app', 'GRANT outbox_publisher, outbox_consumer TO tenant_42_app, tenant_43_app; GRANT outbox_consumer TO billing');
is($other->safe_psql('app', "SELECT string_agg(pattern || ':' || role || ':' || publish || ':' || read, ',' ORDER BY pattern, role::text) FROM outbox.channel_privileges"),
	$node->safe_psql('postgres', "SELECT string_agg(pattern || ':' || role || ':' || publish || ':' || read, ',' ORDER BY pattern, role::text) FROM outbox.channel_privileges"),
	'the restored rights name the same roles');
($ret, $stdout, $stderr) = $other->psql('app', q{SET ROLE tenant_43_app; SELECT outbox.publish('tenant_43')});
like($stderr, qr/permission denied to publish on channel "tenant_43"/, 'restored: tenant_43_app still may not publish');
is($other->safe_psql('app', q{SET ROLE tenant_42_app; SELECT outbox.publish('tenant_42') IS NOT NULL}), 't', 'restored: tenant_42_app may');

unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no backend crashed');
$other->stop;
$node->stop;
done_testing();
