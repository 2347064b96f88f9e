#!/usr/bin/env bash
# Benchmarks the order service on this machine: sets up and starts the local stack (broker,
# PostgreSQL, reference services) and N order-service instances (release builds), warms up, then
# runs order-bench. Results: a table on stdout and a JSON file under .local/bench/.
#   deploy/local/bench.sh [--instances N] [order-bench options, e.g. --mode paced --rate 1000 --duration 30]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
instances=1
if [ "${1:-}" = "--instances" ]; then instances="$2"; shift 2; fi
"$here/setup.sh" >/dev/null
"$here/broker.sh" start >/dev/null
"$here/db.sh" start >/dev/null
# A database of its own, created afresh for every run, so that runs are comparable (tables that
# grew over earlier runs or tests make PostgreSQL slower) and the test database stays untouched.
# BENCH_DATABASE=<name> picks another name; BENCH_KEEP_DATABASE=1 keeps it between runs;
# BENCH_GROUP=<suffix> gives the instances a consumer group of their own.
bench_db="${BENCH_DATABASE:-orders_bench}"
if [ "${BENCH_KEEP_DATABASE:-0}" != 1 ]; then
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $bench_db WITH (FORCE)" -c "CREATE DATABASE $bench_db" >/dev/null
fi
export DATABASE_URL="${DATABASE_URL%/*}/$bench_db"
cd "$REPO_ROOT"
for p in order-service product-service inventory-service order-bench; do swift build -c release --product "$p" >/dev/null; done
bin="$(swift build -c release --show-bin-path)"

# Topics as declared (otherwise the first produce may auto-create them with other partition counts).
"$bin/order-service" topics apply >/dev/null 2>&1

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$bin/product-service" --catalog "$here/catalog.json" >"$LOG_DIR/bench-product.log" 2>&1 & pids+=($!)
"$bin/inventory-service" --catalog "$here/catalog.json" >"$LOG_DIR/bench-inventory.log" 2>&1 & pids+=($!)
service_pids=()
for i in $(seq 1 "$instances"); do
  ORDER_SERVICE_GROUP_ID="order-service-bench${BENCH_GROUP:-}" ORDER_SERVICE_INSTANCE_ID="bench-$i" LOG_LEVEL=warning "$bin/order-service" >"$LOG_DIR/bench-order-$i.log" 2>&1 &
  pids+=($!); service_pids+=($!)
done
# Warm-up: also waits until every instance has joined the group and is answering.
"$bin/order-bench" --mode blast --requests 500 --reply-timeout 90 --out "$STATE_DIR/bench/warmup" >/dev/null
"$bin/order-bench" --pids "$(IFS=,; echo "${service_pids[*]}")" --label "$instances instance(s)" --out "$STATE_DIR/bench" "$@"
