-- ---------------------------------------------------------------------------------------
-- [epochs2] Clients check identity and epoch (issue #13, the client side)
-- ---------------------------------------------------------------------------------------
-- pg_outbox_listen and the Python client compare the identity they saved with outbox.identity()
-- at every connect, and start from (outbox.head(), outbox.epoch()). A tenant connects with
-- outbox_consumer (95_channels.sql), which may replay but could not call these two: neither
-- tells anything about any channel.
GRANT EXECUTE ON FUNCTION outbox.identity(), outbox.epoch() TO outbox_consumer;
