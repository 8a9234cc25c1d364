-- Channel rights (issue #11 part 5): grant_channel/revoke_channel, patterns, membership, every
-- function allowed and refused with its SQLSTATE, the change trigger as the table's owner,
-- SECURITY DEFINER paths, and the fallback when no right exists.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
DROP ROLE IF EXISTS regress_t42, regress_t43, regress_tall, regress_grp, regress_member, regress_noinherit,
                    regress_pub, regress_adm, regress_nobody;
RESET client_min_messages;

\set err_style message_ok
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

-- tenants publish as outbox_publisher and read as outbox_consumer (no right on the tables)
CREATE ROLE regress_t42 IN ROLE outbox_publisher, outbox_consumer;
CREATE ROLE regress_t43 IN ROLE outbox_publisher, outbox_consumer;
CREATE ROLE regress_tall IN ROLE outbox_consumer;
CREATE ROLE regress_grp IN ROLE outbox_publisher, outbox_consumer;
CREATE ROLE regress_member IN ROLE outbox_publisher, outbox_consumer, regress_grp;
CREATE ROLE regress_noinherit NOINHERIT IN ROLE regress_grp;
-- (NOINHERIT: it holds no right of its groups, EXECUTE included, until SET ROLE)
GRANT USAGE ON SCHEMA outbox TO regress_noinherit;
GRANT EXECUTE ON FUNCTION outbox.publish(text, jsonb, text, text), outbox.replay(bigint, text[], integer, bigint)
    TO regress_noinherit;
CREATE ROLE regress_pub IN ROLE outbox_publisher, outbox_reader; -- the company's own services
CREATE ROLE regress_adm IN ROLE outbox_admin;
CREATE ROLE regress_nobody;

-- ---- no right at all: 1.1's behaviour ----
SELECT count(*) AS rights FROM outbox.channel_privileges;
SET ROLE regress_t42;
SELECT outbox.publish('tenant_43', '{"n": 1}') IS NOT NULL AS t42_publishes_anywhere;
RESET ROLE;
SELECT outbox.publish(c, jsonb_build_object('c', c)) IS NOT NULL FROM unnest(ARRAY['tenant_42', 'tenant_43', 'tenantX42', 'Tenant_42', 'grp_a', '100%', '1000', 'a\b']) c;
SELECT outbox.drain();
SET ROLE regress_t42;
SELECT count(*) AS t42_reads_everything FROM outbox.replay(0);
SELECT pg_temp.err($$SELECT outbox.head('tenant_43')$$) AS head_43;
RESET ROLE;

-- ---- granting: only outbox_admin (and superusers) may ----
SET ROLE regress_t42;
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_%', 'regress_t42', '{read}')$$) AS t42_grants;
SELECT pg_temp.err($$INSERT INTO outbox.channel_rights VALUES ('%', 'regress_t42', 'read')$$) AS t42_inserts;
RESET ROLE;
SET ROLE regress_pub;
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_%', 'regress_pub', '{read}')$$) AS publisher_grants;
RESET ROLE;
-- bad arguments
SELECT pg_temp.err($$SELECT outbox.grant_channel(NULL, 'regress_t42')$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel('', 'regress_t42')$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant\', 'regress_t42')$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel(repeat('x', 127), 'regress_t42')$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_42', NULL)$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_42', '-')$$);  -- regrole '-' is OID 0
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_42', 'regress_no_such_role')$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_42', 'regress_t42', '{}')$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_42', 'regress_t42', NULL)$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_42', 'regress_t42', '{write}')$$);
SELECT pg_temp.err($$SELECT outbox.grant_channel('tenant_42', 'regress_t42', '{read,NULL}')$$);
SELECT count(*) AS still_no_rights FROM outbox.channel_rights;

-- the first right of a kind switches that kind on (a warning says so)
SET ROLE regress_adm;
SELECT outbox.grant_channel('tenant_42', 'regress_t42');
RESET ROLE;
SELECT outbox.grant_channel('tenant_43', 'regress_t43', '{publish}');
SELECT outbox.grant_channel('tenant_43', 'regress_t43', '{READ, read}');   -- case and duplicates
SELECT outbox.grant_channel('tenant_42', 'regress_t42', '{publish}');       -- again: nothing changes
SELECT outbox.grant_channel('tenant_%', 'regress_tall', '{read}');
SELECT outbox.grant_channel('grp_%', 'regress_grp');
SELECT outbox.grant_channel('100\%', 'regress_t42', '{read}');
SELECT outbox.grant_channel('a\\b', 'regress_t42', '{read}');
SELECT pattern, role, publish, read FROM outbox.channel_privileges ORDER BY pattern, role::text;
-- each role sees the rights it holds; outbox_admin sees all
SET ROLE regress_t42;
SELECT pattern, role, publish, read FROM outbox.channel_privileges ORDER BY pattern, role::text;
SET ROLE regress_member;
SELECT pattern, role, publish, read FROM outbox.channel_privileges ORDER BY pattern, role::text;
SET ROLE regress_adm;
SELECT count(*) AS admin_sees FROM outbox.channel_privileges;
SET ROLE regress_nobody;
SELECT pg_temp.err($$SELECT * FROM outbox.channel_privileges$$) AS nobody_sees;
RESET ROLE;

-- ---- publish ----
CREATE FUNCTION pg_temp.pub(ch text) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.err(format('SELECT outbox.publish(%L, %L)', ch, jsonb_build_object('by', current_user)))
$$;
GRANT EXECUTE ON FUNCTION pg_temp.pub(text) TO PUBLIC;
SET ROLE regress_t42;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['tenant_42', 'tenant_43', 'tenantX42', 'Tenant_42', 'tenant_420', 'tenant_4']) c;
SET ROLE regress_t43;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['tenant_43', 'tenant_42']) c;
SET ROLE regress_tall; -- read on tenant_%, no publish right (and no EXECUTE on publish)
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['tenant_42']) c;
SET ROLE regress_pub;  -- a publisher without a channel right: refused everywhere once publish rights exist
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['tenant_42', 'orders']) c;
SET ROLE regress_member; -- through membership of regress_grp
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['grp_a', 'grp_', 'grpa', 'tenant_42']) c;
SET ROLE regress_noinherit; -- a NOINHERIT member holds the group's rights only after SET ROLE
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['grp_a']) c;
SET ROLE regress_grp;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['grp_a']) c;
SET ROLE regress_adm;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['tenant_42', 'anything']) c;
RESET ROLE;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['superuser_channel']) c;
-- the message names the channel and the role
SET ROLE regress_t42;
\set VERBOSITY default
SELECT outbox.publish('tenant_43');
\set VERBOSITY terse
RESET ROLE;
SELECT outbox.drain() > 0 AS drained;

-- ---- read: replay, replay_channel, event, head ----
CREATE FUNCTION pg_temp.ids(ch text) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT array_agg(id ORDER BY id) FROM outbox.history WHERE channel = ch
$$;
GRANT EXECUTE ON FUNCTION pg_temp.ids(text) TO PUBLIC;
SELECT pg_temp.ids('tenant_43') AS t43_ids \gset
SELECT (pg_temp.ids('tenant_42'))[1] AS t42_id, (pg_temp.ids('tenant_43'))[1] AS t43_id \gset
SET ROLE regress_t42;
SELECT channel, count(*) FROM outbox.replay(0, '{tenant_42}') GROUP BY 1;
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, '{tenant_42,tenant_43}')$$) AS replay_43;
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, '{tenantX42}')$$) AS replay_underscore;
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, '{Tenant_42}')$$) AS replay_case;
-- no filter: only its own channels, the others' positions skipped (no "missing position" error)
SELECT channel, count(*) FROM outbox.replay(0) GROUP BY 1 ORDER BY 1;
SELECT count(*) AS batch_of_2 FROM outbox.replay(0, NULL, 2);
SELECT channel, count(*) FROM outbox.replay_channel('tenant_42', 0) GROUP BY 1;
SELECT pg_temp.err($$SELECT * FROM outbox.replay_channel('tenant_43', 0)$$) AS replay_channel_43;
SELECT channel FROM outbox.event(:t42_id);
SELECT pg_temp.err(format('SELECT * FROM outbox.event(%s)', :t43_id)) AS event_43;
SELECT pg_temp.err('SELECT * FROM outbox.event(-5)') AS event_missing;
SELECT outbox.head('tenant_42') > 0 AS head_42, outbox.head() > 0 AS head;
SELECT pg_temp.err($$SELECT outbox.head('tenant_43')$$) AS head_43;
SELECT pg_temp.err($$SELECT outbox.head('never_published')$$) AS head_unknown;
-- the tables are not its own (outbox_consumer has only the functions)
SELECT pg_temp.err('SELECT count(*) FROM outbox.history') AS history_table;
-- escaped metacharacters: '100\%' covers '100%' only, 'a\\b' covers 'a\b'
SELECT channel FROM outbox.replay(0, ARRAY['100%', 'a\b']) ORDER BY pos;
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, '{1000}')$$) AS pattern_escaped;
SET ROLE regress_tall; -- tenant_% covers tenant_42 and tenant_43, not tenantX42 nor Tenant_42
SELECT channel, count(*) FROM outbox.replay(0) GROUP BY 1 ORDER BY 1;
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, '{tenantX42}')$$) AS tall_underscore;
SET ROLE regress_member;
SELECT channel, count(*) FROM outbox.replay(0) GROUP BY 1 ORDER BY 1;
SET ROLE regress_noinherit;
SELECT count(*) AS noinherit_reads FROM outbox.replay(0);
SET ROLE regress_pub; -- outbox_reader reads every channel (it may SELECT the history anyway)
SELECT count(*) = (SELECT count(*) FROM outbox.history) AS reader_reads_all FROM outbox.replay(0);
SET ROLE regress_adm;
SELECT count(*) > 0 AS admin_reads_all FROM outbox.replay(0, '{tenant_43}');
RESET ROLE;
-- a pending (not yet published) event is checked too
SELECT outbox.publish('tenant_43', '{"pending": true}') AS pending_id \gset
SET ROLE regress_t42;
SELECT pg_temp.err(format('SELECT * FROM outbox.event(%s)', :pending_id)) AS pending_event_43;
RESET ROLE;
SELECT outbox.drain() AS drained;

-- ---- wait() and named consumers are built on replay(): its checks apply ----
SET ROLE regress_t42;
SELECT pg_temp.err($$SELECT * FROM outbox.wait(0, '{tenant_43}', '0s')$$) AS wait_43;
SELECT channel, count(*) FROM outbox.wait(0, '{tenant_42}', '0s') GROUP BY 1;
SELECT channel, count(*) FROM outbox.wait(0, NULL, '0s') GROUP BY 1 ORDER BY 1;
SELECT outbox.create_consumer('regress_t42_c43', '{tenant_43}', 'earliest') >= 0 AS created;
SELECT pg_temp.err($$SELECT * FROM outbox.next('regress_t42_c43', 10, '0s')$$) AS next_43;
SELECT outbox.drop_consumer('regress_t42_c43');
RESET ROLE;

-- ---- membership changes take effect at once ----
REVOKE regress_grp FROM regress_member;
SET ROLE regress_member;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['grp_a']) c;
SELECT count(*) AS member_reads_after_revoke FROM outbox.replay(0);
RESET ROLE;
GRANT regress_grp TO regress_member;
SET ROLE regress_member;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['grp_a']) c;
RESET ROLE;

-- ---- SECURITY DEFINER paths ----
-- a tenant's own SECURITY DEFINER function runs with the tenant's rights, whoever calls it:
-- a superuser calling it does not lend it the superuser's
CREATE SCHEMA regress_cr;
GRANT USAGE, CREATE ON SCHEMA regress_cr TO PUBLIC;
SET ROLE regress_t42;
CREATE FUNCTION regress_cr.t42_replay(ch text) RETURNS bigint LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT count(*) FROM outbox.replay(0, ARRAY[ch]) $$;
CREATE FUNCTION regress_cr.t42_publish(ch text) RETURNS bigint LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT outbox.publish(ch) $$;
CREATE FUNCTION regress_cr.t42_plpgsql(ch text) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog AS $$ BEGIN RETURN outbox.head(ch); END $$;
RESET ROLE;
SELECT pg_temp.err($$SELECT regress_cr.t42_replay('tenant_43')$$) AS su_calls_t42_replay_43;
SELECT pg_temp.err($$SELECT regress_cr.t42_publish('tenant_43')$$) AS su_calls_t42_publish_43;
SELECT pg_temp.err($$SELECT regress_cr.t42_plpgsql('tenant_43')$$) AS su_calls_t42_head_43;
SELECT pg_temp.err($$SELECT regress_cr.t42_replay('tenant_42') > 0$$) AS su_calls_t42_replay_42;
-- and a role without rights calling it gets the tenant's rights, which the tenant chose to lend
SET ROLE regress_nobody;
SELECT pg_temp.err($$SELECT regress_cr.t42_replay('tenant_42') > 0$$) AS nobody_calls_t42_replay_42;
SELECT pg_temp.err($$SELECT regress_cr.t42_replay('tenant_43')$$) AS nobody_calls_t42_replay_43;
RESET ROLE;
-- a superuser's SECURITY DEFINER function lends the superuser's rights, on purpose
CREATE FUNCTION regress_cr.su_head(ch text) RETURNS bigint LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT outbox.head(ch) $$;
SET ROLE regress_t42;
SELECT pg_temp.err($$SELECT regress_cr.su_head('tenant_43') > 0$$) AS t42_calls_su_head_43;
RESET ROLE;
-- a security-restricted operation (a materialized view's query runs as its owner): refused
SET ROLE regress_t42;
SELECT pg_temp.err($$CREATE MATERIALIZED VIEW regress_cr.mv AS SELECT outbox.head('tenant_42') AS h$$) AS matview;
RESET ROLE;

-- ---- the change trigger publishes with the table owner's rights ----
CREATE TABLE regress_cr.t42_orders (id int PRIMARY KEY, tenant text);
CREATE TABLE regress_cr.t42_steal (id int PRIMARY KEY);
ALTER TABLE regress_cr.t42_orders OWNER TO regress_t42;
ALTER TABLE regress_cr.t42_steal OWNER TO regress_t42;
GRANT ALL ON regress_cr.t42_orders, regress_cr.t42_steal TO PUBLIC;
SET ROLE regress_t42;
SELECT outbox.attach('regress_cr.t42_orders', 'tenant_{tenant}');
-- a static channel the owner may not publish on is refused when attached
SELECT pg_temp.err($$SELECT outbox.attach('regress_cr.t42_steal', 'tenant_43', operations => '{INSERT,TRUNCATE}')$$) AS attach_other_tenant;
RESET ROLE;
SELECT pg_temp.err($$SELECT outbox.attach('regress_cr.t42_steal', 'tenant_43', operations => '{INSERT,TRUNCATE}')$$) AS su_attaches_for_t42;
-- attached while allowed, then the right is revoked: the trigger refuses from then on
SELECT outbox.grant_channel('tenant_43', 'regress_t42', '{publish}');
SET ROLE regress_t42;
SELECT outbox.attach('regress_cr.t42_steal', 'tenant_43', operations => '{INSERT,TRUNCATE}');
RESET ROLE;
SELECT outbox.revoke_channel('tenant_43', 'regress_t42', '{publish}');
SET ROLE regress_t42;
SET ROLE regress_nobody; -- a writer of the table needs no right of its own
INSERT INTO regress_cr.t42_orders VALUES (1, '42');
SELECT pg_temp.err($$INSERT INTO regress_cr.t42_orders VALUES (2, '43')$$) AS trigger_other_tenant;
SELECT pg_temp.err($$INSERT INTO regress_cr.t42_steal VALUES (1)$$) AS trigger_static_channel;
RESET ROLE;
-- a superuser writing the table does not lend it the superuser's rights either
SELECT pg_temp.err($$INSERT INTO regress_cr.t42_steal VALUES (2)$$) AS su_writes_t42_table;
SELECT pg_temp.err($$TRUNCATE regress_cr.t42_steal$$) AS su_truncates_t42_table;
\set VERBOSITY default
INSERT INTO regress_cr.t42_steal VALUES (3);
\set VERBOSITY terse
SELECT channel, type, key FROM outbox.pending WHERE channel LIKE 'tenant%' ORDER BY id;
SELECT outbox.drain() AS drained;

-- ---- revoking ----
SELECT outbox.revoke_channel('tenant_42', 'regress_t42', '{publish}');
SELECT outbox.revoke_channel('tenant_42', 'regress_t42', '{publish}');   -- nothing left to revoke
SELECT outbox.revoke_channel('tenant_%', 'regress_t42');                 -- never granted with this pattern
SET ROLE regress_t42;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['tenant_42']) c;
SELECT count(*) > 0 AS t42_still_reads FROM outbox.replay(0, '{tenant_42}');
SELECT pg_temp.err($$SELECT outbox.revoke_channel('tenant_43', 'regress_t43')$$) AS t42_revokes;
RESET ROLE;
-- a DBA's own DML reaches the cache too
DELETE FROM outbox.channel_rights WHERE role = 'regress_t43'::regrole AND privilege = 'publish';
SET ROLE regress_t43;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['tenant_43']) c;
RESET ROLE;
-- a dropped role's rights stay in the table (shown to admins by OID), and grant nothing; an
-- admin deletes them
CREATE ROLE regress_gone;
SELECT outbox.grant_channel('gone', 'regress_gone');
DROP ROLE regress_gone;
SELECT count(*) AS orphaned FROM outbox.channel_privileges WHERE role::text ~ '^[0-9]+$';
DELETE FROM outbox.channel_rights r WHERE NOT EXISTS (SELECT FROM pg_roles ro WHERE ro.oid = r.role);
-- the last publish right revoked: everyone with EXECUTE publishes anywhere again (a warning says so)
SELECT count(*) > 0 AS publish_rights_left FROM outbox.channel_rights WHERE privilege = 'publish';
SELECT outbox.revoke_channel(pattern, role, '{publish}') FROM outbox.channel_rights WHERE privilege = 'publish' ORDER BY 1;
SET ROLE regress_t42;
SELECT c, pg_temp.pub(c) FROM unnest(ARRAY['tenant_43']) c;
SELECT pg_temp.err($$SELECT * FROM outbox.replay(0, '{tenant_43}')$$) AS read_still_enforced;
RESET ROLE;
TRUNCATE outbox.channel_rights;  -- the statement trigger covers TRUNCATE too
SET ROLE regress_t42;
SELECT count(*) > 0 AS reads_43_again FROM outbox.replay(0, '{tenant_43}');
RESET ROLE;

-- clean up
DROP SCHEMA regress_cr CASCADE;
DROP OWNED BY regress_noinherit;
DROP EXTENSION pg_outbox;
DROP ROLE regress_t42, regress_t43, regress_tall, regress_grp, regress_member, regress_noinherit,
          regress_pub, regress_adm, regress_nobody;
