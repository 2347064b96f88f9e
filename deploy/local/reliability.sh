#!/usr/bin/env bash
# Runs the reliability tier at a bigger scale than the test suite does and prints a pass/fail table:
# the crash test with 3 instances (two SIGKILLs) and RELIABILITY_SCALE × 600 requests, the hostile-input
# fuzz with RELIABILITY_SCALE × 1,800 records, the backlog with RELIABILITY_SCALE × 3,300 requests,
# the database outage and the takeover measurement.
#   deploy/local/reliability.sh [scale, default 17 (≈10,000 requests in the crash test)]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
export RELIABILITY_SCALE="${1:-17}"
"$here/setup.sh" >/dev/null
"$here/broker.sh" start >/dev/null
"$here/db.sh" start >/dev/null
cd "$REPO_ROOT"
swift build --build-tests >/dev/null
export ORDER_SERVICE_BIN_DIR="$(swift build --show-bin-path)"
log="$LOG_DIR/reliability-$(date +%Y%m%dT%H%M%S).log"
set +e
swift test --skip-build --filter ReliabilityTests 2>&1 | tee "$log" | grep -E "TAKEOVER|✘ Test|✔ Test" 
set -e
echo
printf '%-70s %s\n' "scenario (scale $RELIABILITY_SCALE)" "result"
printf '%-70s %s\n' "$(printf '%.0s-' {1..70})" "------"
grep -E "^(✔|✘) Test \"" "$log" | sed -E 's/^(✔|✘) Test "([^"]*)".*/\1|\2/' | sort -u -t'|' -k2,2 |
  while IFS='|' read -r mark name; do
    printf '%-70.70s %s\n' "$name" "$([ "$mark" = "✔" ] && echo PASS || echo FAIL)"
  done
grep -q "^✘" "$log" && exit 1 || exit 0
