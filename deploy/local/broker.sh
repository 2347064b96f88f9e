#!/usr/bin/env bash
# Starts or stops the local Tansu broker (Apache-Kafka-compatible, in-memory storage).
#   broker.sh start | stop | status
# The pid and log live under .local/run and .local/log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
pidfile="$RUN_DIR/tansu.pid"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

case "${1:-start}" in
  start)
    if running; then echo "broker already running (pid $(cat "$pidfile"))"; exit 0; fi
    if port_open; then echo "something already listens on port $KAFKA_PORT; using it as the broker"; exit 0; fi
    [ -x "$TANSU_BIN" ] || { echo "Tansu is not installed: run deploy/local/setup.sh" >&2; exit 1; }
    nohup "$TANSU_BIN" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "memory://tansu/" >"$LOG_DIR/tansu.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do port_open && break; sleep 0.1; done
    port_open || { echo "broker did not start; see $LOG_DIR/tansu.log" >&2; exit 1; }
    echo "broker ready on 127.0.0.1:$KAFKA_PORT (pid $(cat "$pidfile"))"
    ;;
  stop)
    if running; then
      pid="$(cat "$pidfile")"
      kill "$pid"
      # Wait until it is gone and its port is free, so that a following start really starts one.
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do port_open || break; sleep 0.1; done
      rm -f "$pidfile"
      echo "broker stopped"
    fi
    ;;
  restart) "$0" stop; "$0" start ;;
  status) if running; then echo "running (pid $(cat "$pidfile"))"; else echo "stopped"; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
