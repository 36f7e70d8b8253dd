#!/usr/bin/env bash
# The project's test command (README "Test"): starts PostgreSQL and RabbitMQ when they
# are down (installing them as root on a fresh Debian machine), then checks formatting
# and lints and runs every test — unit, integration (real PostgreSQL and RabbitMQ),
# end-to-end (the real `renkei` binary) and schemathesis over the admin API
# (deploy/dev/api-fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/dev/services.sh

export RENKEI_TEST_DATABASE_URL="${RENKEI_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export RENKEI_TEST_AMQP_URL="${RENKEI_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests start the real binary.
cargo build --locked -p renkei-hub --bin renkei
cargo nextest run --workspace --locked --no-fail-fast "$@"
# nextest does not run documentation examples; they are tests of the docs too.
cargo test --workspace --locked --doc
# The admin API against its own OpenAPI document: schemathesis, every check.
bash deploy/dev/api-fuzz.sh
