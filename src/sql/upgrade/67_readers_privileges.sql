
-- 1.3, issue #15: 66_readers.sql replaced the public readers (CREATE OR REPLACE resets SECURITY
-- DEFINER): set again as 90_privileges.sql sets it; their grants are kept
ALTER FUNCTION outbox.event(bigint) SECURITY DEFINER;
ALTER FUNCTION outbox.replay(bigint, text[], integer, bigint) SECURITY DEFINER;
ALTER FUNCTION outbox.replay_channel(text, bigint, integer, bigint) SECURITY DEFINER;
ALTER FUNCTION outbox.head() SECURITY DEFINER;
ALTER FUNCTION outbox.head(text) SECURITY DEFINER;
