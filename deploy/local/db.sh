#!/usr/bin/env bash
# Starts or stops the local PostgreSQL cluster and makes sure the service's role and database exist.
#   db.sh start | stop | status | url
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

cluster() {  # prints "VERSION NAME" of the first cluster, creating one if the package made none
  local line
  line="$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}')"
  if [ -z "$line" ]; then
    local v; v="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
    pg_createcluster "$v" main >/dev/null
    line="$v main"
  fi
  echo "$line"
}
wait_ready() {
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.2; done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { echo "PostgreSQL did not come up on port $PG_PORT" >&2; exit 1; }
}
as_postgres() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sudo -u postgres sh -c "$*"; fi; }

case "${1:-start}" in
  start)
    read -r ver name < <(cluster)
    if ! pg_lsclusters -h | awk -v v="$ver" -v n="$name" '$1==v && $2==n {print $4}' | grep -q online; then
      pg_ctlcluster "$ver" "$name" start
    fi
    wait_ready
    # The test tiers run in parallel, each test with pools of its own: one tier alone
    # (`test.sh --filter PostgresTests`) opens more than the default 100 connections.
    if [ "$(as_postgres "psql -qtA -p $PG_PORT -c 'SHOW max_connections'")" -lt 300 ]; then
      as_postgres "psql -q -p $PG_PORT -c 'ALTER SYSTEM SET max_connections = 300'"
      pg_ctlcluster "$ver" "$name" restart
      wait_ready
    fi
    as_postgres "psql -qtA -p $PG_PORT -c \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 \
      || as_postgres "psql -q -p $PG_PORT -c \"CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD' CREATEDB\""
    as_postgres "psql -qtA -p $PG_PORT -c \"SELECT 1 FROM pg_database WHERE datname='$PG_DB'\"" | grep -q 1 \
      || as_postgres "createdb -p $PG_PORT -O $PG_USER $PG_DB"
    echo "PostgreSQL ready: $(echo "$DATABASE_URL" | sed -E 's#://([^:]+):[^@]*@#://\1:***@#')"
    ;;
  stop)
    read -r ver name < <(cluster)
    pg_ctlcluster "$ver" "$name" stop || true
    ;;
  status) pg_lsclusters ;;
  url) echo "$DATABASE_URL" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
