#!/usr/bin/env bash
# Benchmarks the order service on this machine: sets up and starts the local stack (broker,
# PostgreSQL, reference services) and N order-service instances (release builds), warms up, then
# runs order-bench. Results: a table on stdout and a JSON file under .local/bench/; order-bench
# prints the service's CPU and context switches per request (and per thread group).
#   deploy/local/bench.sh [--instances N] [--broker tansu|mock] [order-bench options, e.g. --mode paced --rate 1000 --duration 30]
# --broker mock runs librdkafka's mock cluster in a process of its own (`order-bench mock-broker`)
# instead of the local Tansu broker and points every process at it: its cost per request does not
# grow with its log, so a paced run measures what the service adds.
# BENCH_GROUP=<suffix> gives the consumer groups their own names (two benches on one broker);
# BENCH_SKIP_SETUP=1 skips setup.sh and starting the broker and the database (they must be running).
# KAFKA_* variables reach every process it starts (e.g. KAFKA_FETCH_WAIT_MAX_MS=2: the mock cluster
# holds a fetch that finds no data for the whole wait, where Kafka answers as data arrives).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
instances=1
broker=tansu
while [ $# -gt 0 ]; do
  case "$1" in
    --instances) instances="$2"; shift 2 ;;
    --broker) broker="$2"; shift 2 ;;
    *) break ;;
  esac
done
case "$broker" in tansu|mock) ;; *) echo "--broker: tansu or mock, not $broker" >&2; exit 2 ;; esac
group_suffix="${BENCH_GROUP:+-$BENCH_GROUP}"
if [ "${BENCH_SKIP_SETUP:-0}" != 1 ]; then
  "$here/setup.sh" >/dev/null
  [ "$broker" = mock ] || "$here/broker.sh" start >/dev/null
  "$here/db.sh" start >/dev/null
fi
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
# BENCH_BIN_DIR=<dir> runs executables built before (e.g. copies of two builds, for an A/B comparison).
if [ -n "${BENCH_BIN_DIR:-}" ]; then
  bin="$BENCH_BIN_DIR"
else
  for p in order-service product-service inventory-service order-bench; do swift build -c release --product "$p" >/dev/null; done
  bin="$(swift build -c release --show-bin-path)"
fi

pids=()
mock_pid=""
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # The broker last: the services leave their group and flush through it.
  if [ -n "$mock_pid" ]; then kill -TERM "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
watch=()
service_env=()
if [ "$broker" = mock ]; then
  # The mock has no CreateTopics: mock-broker creates every topic of topics.yaml itself.
  # The old log goes first: the redirect below truncates it only once the child runs, and until
  # then the wait would read the previous run's address.
  rm -f "$LOG_DIR/bench-mock-broker.log"
  "$bin/order-bench" mock-broker --topics-file topics.yaml >"$LOG_DIR/bench-mock-broker.log" 2>&1 &
  mock_pid=$!
  for _ in $(seq 1 300); do [ -s "$LOG_DIR/bench-mock-broker.log" ] && break; sleep 0.1; done
  KAFKA_BOOTSTRAP_SERVERS="$(head -n1 "$LOG_DIR/bench-mock-broker.log")"
  [ -n "$KAFKA_BOOTSTRAP_SERVERS" ] || { echo "the mock broker did not start; see $LOG_DIR/bench-mock-broker.log" >&2; exit 1; }
  export KAFKA_BOOTSTRAP_SERVERS
  service_env=(ORDER_SERVICE_CREATE_TOPICS=false)
  watch+=(--watch "broker=$mock_pid")
else
  # Topics as declared (otherwise the first produce may auto-create them with other partition counts).
  "$bin/order-service" topics apply >/dev/null 2>&1
  tansu_pid="$(pgrep -of 'tansu broker' || true)"
  [ -z "$tansu_pid" ] || watch+=(--watch "broker=$tansu_pid")
fi
echo "broker: $broker ($KAFKA_BOOTSTRAP_SERVERS)" >&2

"$bin/product-service" --catalog "$here/catalog.json" --group-id "product-service$group_suffix" >"$LOG_DIR/bench-product.log" 2>&1 &
pids+=($!); watch+=(--watch "product-service=$!")
"$bin/inventory-service" --catalog "$here/catalog.json" --group-id "inventory-service$group_suffix" >"$LOG_DIR/bench-inventory.log" 2>&1 &
pids+=($!); watch+=(--watch "inventory-service=$!")
service_pids=()
for i in $(seq 1 "$instances"); do
  # Metrics every 5 s: order-bench reports the instances' own handling time per window in the run.
  env ${service_env[@]+"${service_env[@]}"} ORDER_SERVICE_GROUP_ID="order-service-bench$group_suffix" ORDER_SERVICE_INSTANCE_ID="bench-$i" \
    ORDER_SERVICE_METRICS_INTERVAL_MS="${ORDER_SERVICE_METRICS_INTERVAL_MS:-5000}" \
    LOG_LEVEL=warning "$bin/order-service" >"$LOG_DIR/bench-order-$i.log" 2>&1 &
  pids+=($!); service_pids+=($!)
done
# Warm-up: also waits until every instance has joined the group and is answering.
"$bin/order-bench" --mode blast --requests 500 --reply-timeout 90 --out "$STATE_DIR/bench/warmup" >/dev/null
"$bin/order-bench" --pids "$(IFS=,; echo "${service_pids[*]}")" "${watch[@]}" --label "$instances instance(s), $broker" \
  --out "$STATE_DIR/bench" "$@"
