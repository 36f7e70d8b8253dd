#!/usr/bin/env bash
# Makes sure PostgreSQL 15+ and RabbitMQ 3.10+ are installed and running on this
# machine (Debian). As root it installs what is missing with apt-get. Idempotent.
# Sourced by test.sh and run.sh; prints what it does.
set -euo pipefail

log() { echo "services: $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "$1 is missing and this is not root: install it (apt-get install $2) and run again"
    exit 1
  fi
}

apt_install() {
  need_root "$1" "$1"
  log "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

# ─── PostgreSQL ───────────────────────────────────────────────────────────────────────
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  apt_install postgresql
  fresh_pg=1
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
fi
if [ "${fresh_pg:-0}" = 1 ]; then
  # A fresh Debian cluster wants a password over TCP: give the tests one.
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
fi

# ─── RabbitMQ ─────────────────────────────────────────────────────────────────────────
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  apt_install rabbitmq-server
fi
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 90); do rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break; sleep 1; done
  rabbitmq-diagnostics -q ping >/dev/null 2>&1 || { log "RabbitMQ did not come up"; exit 1; }
fi
rabbitmqctl -q await_startup >/dev/null 2>&1 || true
log "PostgreSQL and RabbitMQ are running"
