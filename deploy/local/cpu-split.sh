#!/usr/bin/env bash
# Where the CPU goes during a benchmark: runs bench.sh with the given arguments and samples every
# process with `perf record -a` over the measured part (after the warm-up), then prints the CPU
# seconds of each process of the stack (PostgreSQL backends summed; "idle" is unused CPU).
#   deploy/local/cpu-split.sh [bench.sh arguments, e.g. --requests 20000 | --mode paced --rate 1000 --duration 20]
# Needs perf (Debian: linux-perf) and root or kernel.perf_event_paranoid <= 0.
# Restarts the Tansu broker first (a clean slate), except with --broker mock or BENCH_SKIP_SETUP=1
# (a shared broker must not be restarted under others).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
case " $* " in
  *" --broker mock "*) ;;
  *) [ "${BENCH_SKIP_SETUP:-0}" = 1 ] || "$here/broker.sh" restart >/dev/null 2>&1 ;;
esac
"$here/bench.sh" "$@" >"$work/bench.log" 2>&1 &
bench_script=$!
bench=""
for _ in $(seq 1 2400); do
  bench="$(pgrep -f "/order-bench --pids" | head -1 || true)"
  [ -n "$bench" ] && break
  kill -0 "$bench_script" 2>/dev/null || break
  sleep 0.1
done
[ -n "$bench" ] || { cat "$work/bench.log" >&2; echo "the benchmark did not start" >&2; exit 1; }
ps -eo pid,args >"$work/pids"
perf record -a -F 250 -o "$work/perf.data" -- bash -c "while kill -0 $bench 2>/dev/null; do sleep 0.1; done" >/dev/null 2>&1
wait "$bench_script" || true
grep -vE "CONFWARN" "$work/bench.log" | sed -n '/^order-bench/,/^results/p'
echo
echo "CPU seconds during the measured run, per process:"
perf script -i "$work/perf.data" -F pid 2>/dev/null | sort | uniq -c >"$work/counts"
awk -v root="$REPO_ROOT" 'NR == FNR { $1 = $1; pid = $1; $1 = ""; args[pid] = substr($0, 2); next }
  {
    a = args[$2]
    if ($2 == 0) n = "idle"
    else if (a ~ /^postgres/ || a ~ /bin\/postgres/) n = "postgresql"
    else if (a ~ /tansu/) n = "tansu"
    else if (a ~ /order-bench mock-broker/) n = "mock-broker"
    else if (a ~ /\/order-service( |$)/) n = "order-service"
    else if (a ~ /\/order-bench( |$)/) n = "order-bench"
    else if (a ~ /\/product-service( |$)/) n = "product-service"
    else if (a ~ /\/inventory-service( |$)/) n = "inventory-service"
    else n = "other"
    s[n] += $1
  }
  END { for (k in s) printf "%8.2f s  %s\n", s[k] / 250, k }' "$work/pids" "$work/counts" | sort -rn
