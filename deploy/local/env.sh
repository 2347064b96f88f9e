# Shared settings for the deploy/local scripts; sourced, not run.
# Everything a script leaves behind (venv, pids, logs, broker data) lives under .local/ (git-ignored).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="${ORDER_SERVICE_STATE_DIR:-$REPO_ROOT/.local}"
VENV_DIR="$STATE_DIR/venv"
TANSU_BIN="$STATE_DIR/bin/tansu"
LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"
KAFKA_PORT="${KAFKA_PORT:-9092}"
PG_DB="${PG_DB:-orders}"
PG_USER="${PG_USER:-orders}"
PG_PASSWORD="${PG_PASSWORD:-orders}"
PG_PORT="${PG_PORT:-5432}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT}"
# Group timing for the local broker (Tansu accepts session timeouts below Apache Kafka's default
# minimum of 6 s): partitions of a stopped or killed instance move sooner (docs/reliability.md).
# The programs' own default stays 6 s, which any Kafka accepts.
export KAFKA_SESSION_TIMEOUT_MS="${KAFKA_SESSION_TIMEOUT_MS:-3000}"
export KAFKA_HEARTBEAT_INTERVAL_MS="${KAFKA_HEARTBEAT_INTERVAL_MS:-500}"
export DATABASE_URL="${DATABASE_URL:-postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB}"
# librdkafka >= 2.1 built by setup.sh lives in /usr/local.
export PKG_CONFIG_PATH="/usr/local/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="/usr/local/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$STATE_DIR/bin" "$LOG_DIR" "$RUN_DIR"
