#!/usr/bin/env bash
# A small mutation check, run by hand: deliberate one-line breakages of the core guarantees, each
# applied to a scratch copy of the working tree, each with the test targets that must catch it.
# Prints which mutants the suite killed; exits non-zero when one survived (or no longer applies).
#   deploy/local/mutate.sh            all mutants
#   deploy/local/mutate.sh M3 M5      only these
# Needs the broker and PostgreSQL (started here, like test.sh). The scratch copy and its build
# directory live under .local/mutate (kept between runs, so only the mutated module rebuilds).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
"$here/setup.sh" >/dev/null
"$here/broker.sh" start >/dev/null
"$here/db.sh" start >/dev/null

work="$REPO_ROOT/.local/mutate"
copy="$work/src"
build="$work/build"
mkdir -p "$copy" "$build"

# id | file | text to replace (exact, once) | replacement | test filter (swift test --filter)
mutants=(
  "M1|Sources/OrderCore/Dispatcher/Dispatcher.swift|        tracker.begin(tp, record.offset)|        tracker.begin(tp, record.offset); effects.storeOffset(tp, record.offset + 1)|DispatcherTests"
  "M2|Sources/OrderCore/Pipeline/Stages/PersistStage.swift|guard try await store.storeReply(conn, key: key, reply: reply.bytes) else { throw Duplicate() }|_ = try await store.storeReply(conn, key: key, reply: reply.bytes)|RequestPipelineTests"
  "M3|Sources/OrderCore/Dispatcher/Dispatcher.swift|            enqueue(record, lane: handler.laneKey(for: record))|            enqueue(record, lane: \"\\(record.topic)/\\(record.partition)/\\(record.offset)\")|DispatcherTests"
  "M4|Sources/OrderCore/Pipeline/Stages/DecodeStage.swift|        guard v >= range.lowerBound, v <= range.upperBound else {|        guard v >= range.lowerBound, v < range.upperBound else {|DecodeStageTests"
  "M5|Sources/OrderCore/Pipeline/Stages/UpstreamStages.swift|answer.filter { \$0.available < \$0.requested }|answer.filter { \$0.available <= \$0.requested }|UpstreamStagesTests"
  "M6|Sources/OrderCore/Store/OrderStore.swift|WHERE order_id = \$1 AND status = 'pending' RETURNING|WHERE order_id = \$1 RETURNING|RequestPipelineTests"
  "M7|Sources/OrderCore/Contract/Money.swift|        guard cents >= 0, cents <= Self.max.cents else { return nil }|        guard cents >= 0 else { return nil }|MoneyTests"
  "M8|Sources/OrderCore/Pipeline/Stages/PersistStage.swift|                cart.items.map(\\.orderedPart) == checked.items.map(\\.orderedPart)|                true|RequestPipelineTests"
  "M9|Sources/OrderCore/Store/OrderStore.swift|OR NOT EXISTS (SELECT 1 FROM outbox p WHERE p.ordering_key = o.ordering_key AND p.id < o.id)|OR true|OutboxOrderingTests"
  "M10|Sources/OrderCore/Contract/Models.swift|        if utf8.contains(0) { return \"name contains NUL\" }||ProductTests|UpstreamAnswerTests"
)
describe() {
  case "$1" in
    M1) echo "store the offset before the reply is acknowledged" ;;
    M2) echo "skip the idempotency claim (a repeated create_order commits again)" ;;
    M3) echo "drop the per-key lane (every record its own lane)" ;;
    M4) echo "compare quantities with < instead of <= (limit 10000 refused)" ;;
    M5) echo "stock check with <= instead of < (exact stock refused)" ;;
    M6) echo "apply a deduction result twice (no status = 'pending' guard)" ;;
    M7) echo "Money without its upper bound" ;;
    M8) echo "create_order orders whatever the locked cart holds (no check-vs-lock comparison)" ;;
    M9) echo "outbox ignores ordering keys (confirmed may overtake pending)" ;;
    M10) echo "product names with NUL accepted" ;;
  esac
}

sync_copy() {  # the working tree as it is (tracked and new files), without build output
  (cd "$REPO_ROOT" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -) | (cd "$copy" && tar -xf -)
}

run_filter() {  # $1: filter; returns the test run's status
  (cd "$copy" && swift build --build-tests --scratch-path "$build" >"$work/build.log" 2>&1) || return 2
  (cd "$copy" && ORDER_SERVICE_BIN_DIR="$(swift build --scratch-path "$build" --show-bin-path)" \
     timeout 600 swift test --scratch-path "$build" --skip-build --filter "$1" >"$work/test.log" 2>&1)
  local status=$?
  # A mutant that hangs a test: timeout stops swift-test, not the test bundle it started.
  pkill -9 -f "$build/.*PackageTests.xctest" 2>/dev/null || true
  return $status
}

selected=("$@")
results=()
survivors=0
# The unmutated suite must pass the filters first, or a "killed" would mean nothing.
filters=()
for m in "${mutants[@]}"; do
  IFS='|' read -r id _ _ _ filter rest <<<"$m"
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " == *" $id "* ]]; then continue; fi
  filters+=("$filter${rest:+|$rest}")
done
all_filters="$(IFS='|'; echo "${filters[*]}")"
sync_copy
printf '\033[1m[mutate]\033[0m baseline: %s\n' "$all_filters"
if ! run_filter "$all_filters"; then
  echo "the unmutated suite fails these tests; fix it first (see $work/build.log, $work/test.log)" >&2
  exit 1
fi
for m in "${mutants[@]}"; do
  IFS='|' read -r id file old new filter rest <<<"$m"
  [ -n "${rest:-}" ] && filter="$filter|$rest"
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " == *" $id "* ]]; then continue; fi
  sync_copy
  printf '\033[1m[mutate]\033[0m %s %s (%s)\n' "$id" "$(describe "$id")" "$filter"
  if ! MUT_FILE="$copy/$file" MUT_OLD="$old" MUT_NEW="$new" python3 - <<'PY'
import os, sys
p, old, new = os.environ["MUT_FILE"], os.environ["MUT_OLD"], os.environ["MUT_NEW"]
s = open(p).read()
if s.count(old) < 1:
    sys.exit(1)
open(p, "w").write(s.replace(old, new, 1))
PY
  then
    results+=("$id"$'\t'"$(describe "$id")"$'\t'"$filter"$'\t'"DOES NOT APPLY (the code changed: update the mutant)")
    survivors=$((survivors + 1)); continue
  fi
  set +e; run_filter "$filter"; status=$?; set -e
  case $status in
    0) results+=("$id"$'\t'"$(describe "$id")"$'\t'"$filter"$'\t'"SURVIVED"); survivors=$((survivors + 1)) ;;
    2) results+=("$id"$'\t'"$(describe "$id")"$'\t'"$filter"$'\t'"killed (does not compile)") ;;
    *) results+=("$id"$'\t'"$(describe "$id")"$'\t'"$filter"$'\t'"killed") ;;
  esac
done
sync_copy  # leave the copy unmutated

printf '\n| mutant | breakage | tests | result |\n| --- | --- | --- | --- |\n'
for r in "${results[@]}"; do
  IFS=$'\t' read -r a b c d <<<"$r"
  printf '| %s | %s | %s | %s |\n' "$a" "$b" "${c//|/ or }" "$d"
done
[ "$survivors" -eq 0 ]
