#!/usr/bin/env bash
# kafka_bench.sh — events/s from outbox.publish() to a Kafka consumer, beside the NOTIFY path
# (a benchmark, not a test: it prints figures, it asserts nothing timed).
#
#   bash test/bench/kafka_bench.sh                  # 100000 events per path
#   BENCH_EVENTS=20000 bash test/bench/kafka_bench.sh
#
# On one throwaway setup (test/kafka/run.sh with KAFKA_MODE=bench: PostgreSQL with pg_outbox,
# a Kafka 4.4.0 broker, Kafka Connect 4.3.0 + Debezium 3.6.1 with README's two connectors):
#   path 1   channel with target wal; the history connector paused; the clock runs from the
#            first publish() until a Kafka consumer of outbox.event.<channel> has every event
#   path 2   channel with target notify (no listener); the messages connector paused; until a
#            consumer of outbox.history.<channel> has every event
#   NOTIFY   channel with target notify; until pg_outbox_listen (LISTEN + replay) printed every event
# Each: BENCH_EVENTS events published by one psql session in transactions of 1000 (~100-byte
# payloads, 100 keys), while the consumer is already subscribed.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash test/setup.sh >/dev/null
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
W=$(mktemp -d "${TMPDIR:-/tmp}/pg_outbox_kafka_bench.XXXXXX")
chmod 755 "$W"
trap 'rm -rf "$W"' EXIT
PREFIX=$W/install
mkdir -p "$PREFIX/usr/lib/postgresql" "$PREFIX/usr/share/postgresql"
cp -a "$("$PG_CONFIG" --pkglibdir)/.." "$PREFIX/usr/lib/postgresql/15"
cp -a "$("$PG_CONFIG" --sharedir)" "$PREFIX/usr/share/postgresql/15"
make -s install PG_CONFIG="$PG_CONFIG" DESTDIR="$PREFIX" >/dev/null
[ "$(id -u)" = 0 ] && chown -R postgres: "$W"
KAFKA_MODE=bench KAFKA_WORK="$W/kafka" PG_BINDIR="$PREFIX/usr/lib/postgresql/15/bin" bash test/kafka/run.sh
