-- pg_outbox 1.2 -> 1.3 upgrade, assembled from the pieces in src/sql/upgrade/ (sorted by name,
-- like the install pieces in src/sql/). Each change of 1.3 adds its own piece NN_topic.sql, in the
-- same order as the matching change in src/sql/NN_*.sql, so that the upgraded objects equal a
-- fresh install (test/t/080_upgrade.pl compares them object by object).
\echo Use "ALTER EXTENSION pg_outbox UPDATE TO '1.3'" to load this file. \quit
