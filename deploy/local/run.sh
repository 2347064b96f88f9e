#!/usr/bin/env bash
# Sets up this machine if needed, then runs the whole system in the foreground:
# Tansu broker + PostgreSQL + reference Product and Inventory services + the order service.
# Ctrl-C (or SIGTERM) stops the order service gracefully, then the reference services.
# Broker and database keep running (deploy/local/broker.sh stop, db.sh stop).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
"$here/setup.sh"
"$here/broker.sh" start
"$here/db.sh" start
cd "$REPO_ROOT"
swift build -c release --product order-service
swift build -c release --product product-service
swift build -c release --product inventory-service
bin="$(swift build -c release --show-bin-path)"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$bin/product-service" --catalog "$here/catalog.json" >"$LOG_DIR/product-service.log" 2>&1 & pids+=($!)
"$bin/inventory-service" --catalog "$here/catalog.json" >"$LOG_DIR/inventory-service.log" 2>&1 & pids+=($!)
echo "reference services started (logs in $LOG_DIR); order service logs follow. Ctrl-C stops."
"$bin/order-service" "$@" & pids+=($!)
trap 'kill -TERM "${pids[2]}" 2>/dev/null' INT TERM
wait "${pids[2]}" || true
