#!/usr/bin/env bash
# The project's benchmark command: makes sure PostgreSQL and RabbitMQ are running
# (installing them as root on a fresh Debian machine), builds the hub and the benchmark
# in release mode, and runs the benchmark on them: the raw broker baseline, then the
# real `renkei` binary end to end. Arguments go to the benchmark, e.g.
#   bash deploy/dev/bench.sh                          # throughput, 30,000 events
#   bash deploy/dev/bench.sh --rate 500 --seconds 60  # latency at a fixed rate
#   bash deploy/dev/bench.sh --json                   # one JSON document
#   bash deploy/dev/bench.sh --history 1000000        # after a long history
#   bash deploy/dev/bench.sh --skip-broker --large-messages 250   # peak RSS, 1 MB messages
#   bash deploy/dev/bench.sh --embedded --rate 200     # on the embedded default (no servers)
# It creates its own database and bus prefix (or, with --embedded, a SQLite file in a
# temporary folder) and removes them afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."

case " $* " in
  *" --embedded "*) ;;                # SQLite + the in-process bus: no servers needed
  *) bash deploy/dev/services.sh ;;
esac

export RENKEI_TEST_DATABASE_URL="${RENKEI_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export RENKEI_TEST_AMQP_URL="${RENKEI_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

cargo build --release --locked -p renkei-hub --bin renkei
cargo build --release --locked -p renkei-bench
exec target/release/renkei-bench --hub-bin target/release/renkei "$@"
