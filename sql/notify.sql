-- outbox.notify(): size-checked NOTIFY. Every bad input gets invalid_parameter_value with a
-- message naming the limit and the actual size, before NOTIFY is called.
-- every test file starts from a fresh extension: its output does not depend on the others
SET client_min_messages = error;
DROP EXTENSION IF EXISTS pg_outbox CASCADE;
CREATE EXTENSION pg_outbox;
RESET client_min_messages;

\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/err.sql

SELECT outbox.max_payload_bytes(), outbox.max_channel_bytes();

-- good calls
SELECT outbox.notify('chan', 'hello');
SELECT outbox.notify('chan', '');
SELECT outbox.notify('chan', repeat('x', 7999));                -- exactly at the limit
SELECT outbox.notify('chan', repeat('é', 3999) || 'x');         -- 7999 bytes in 4000 characters
SELECT outbox.notify(repeat('c', 63), 'x');                    -- longest channel
SELECT outbox.notify(repeat('é', 31) || 'x', 'x');             -- 63 bytes in 32 characters
SELECT outbox.notify('Mixed Case:with spaces/and:colons', '{"id":1}');
-- inside a transaction that commits, and one that rolls back
BEGIN; SELECT outbox.notify('chan', 'in a transaction'); COMMIT;
BEGIN; SELECT outbox.notify('chan', 'rolled back'); ROLLBACK;

-- bad inputs, as the client sees them
SELECT outbox.notify('chan', repeat('x', 8000));
SELECT outbox.notify('chan', repeat('é', 4000));
SELECT outbox.notify('', 'x');
SELECT outbox.notify(repeat('c', 64), 'x');
SELECT outbox.notify(repeat('é', 32), 'x');
SELECT outbox.notify(repeat('€', 22), 'x');                    -- the detail is clipped between characters
SELECT outbox.notify(NULL, 'x');
SELECT outbox.notify('chan', NULL);

-- ... and with their SQLSTATE
SELECT pg_temp.err($$SELECT outbox.notify('chan', repeat('x', 8000))$$);
SELECT pg_temp.err($$SELECT outbox.notify('chan', repeat('x', 100000))$$);
SELECT pg_temp.err($$SELECT outbox.notify('', 'x')$$);
SELECT pg_temp.err($$SELECT outbox.notify(repeat('c', 64), 'x')$$);
SELECT pg_temp.err($$SELECT outbox.notify(NULL, 'x')$$);
SELECT pg_temp.err($$SELECT outbox.notify('chan', NULL)$$);

-- a failed check loses nothing else of the transaction when caught by a savepoint
BEGIN;
SELECT outbox.notify('chan', 'kept');
SAVEPOINT s;
SELECT outbox.notify('chan', repeat('x', 8000));
ROLLBACK TO SAVEPOINT s;
SELECT outbox.notify('chan', 'also kept');
COMMIT;
