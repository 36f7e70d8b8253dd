#!/usr/bin/env bash
# Schemathesis over the whole admin API (README "Test"): starts the real `renkei` binary
# on a database and bus prefix of its own (removed afterwards), creates an API key and
# runs `schemathesis run …/openapi.json --checks all` with a bounded number of examples
# per operation (RENKEI_FUZZ_EXAMPLES, default 100: under 2 minutes on a debug build).
# Exits non-zero on any failure. Installs the pinned schemathesis into a venv under the target directory when
# it is missing. deploy/dev/test.sh runs it after the other tests.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5

bash deploy/dev/services.sh
export RENKEI_TEST_DATABASE_URL="${RENKEI_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export RENKEI_TEST_AMQP_URL="${RENKEI_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
venv="$(cd "$target" && pwd)/schemathesis-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  echo "api-fuzz: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
export RENKEI_SCHEMATHESIS="$venv/bin/schemathesis"

cargo build --locked -p renkei-hub --bin renkei
cargo nextest run --locked -p renkei-e2e --run-ignored only --no-capture \
  -E 'test(=api_fuzz::schemathesis_finds_no_failure_in_the_admin_api)'
