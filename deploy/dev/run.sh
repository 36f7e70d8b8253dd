#!/usr/bin/env bash
# The project's run command (README "Run"): makes sure PostgreSQL and RabbitMQ are
# running (installing them as root on a fresh Debian machine), creates the `renkei`
# database if it is missing, builds the hub and runs every role in this process:
# MLLP on 127.0.0.1:2575, admin API on 127.0.0.1:8180. Arguments go to `renkei up`
# (e.g. --roles ingest,router). Settings: config/default.toml, overridden by
# RENKEI__SECTION__KEY environment variables.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/dev/services.sh

export RENKEI__DATABASE__URL="${RENKEI__DATABASE__URL:-postgres://postgres:postgres@127.0.0.1:5432/renkei}"
export RENKEI__BUS__URL="${RENKEI__BUS__URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
database="${RENKEI__DATABASE__URL##*/}"
database="${database%%\?*}"
server="${RENKEI__DATABASE__URL%/*}/postgres"
if ! psql -qtA "$server" -c "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  echo "run: creating database $database" >&2
  psql -q "$server" -c "CREATE DATABASE \"$database\""
fi

cargo build --release --locked -p renkei-hub --bin renkei
exec target/release/renkei up "$@"
