#!/usr/bin/env bash
# Sets up this machine if needed, starts the broker and the database, builds, and runs every
# test tier (unit, Kafka against Tansu and librdkafka's mock cluster, PostgreSQL, end to end).
# Extra arguments go to `swift test` (e.g. --filter EndToEndTests).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
"$here/setup.sh"
"$here/broker.sh" start
"$here/db.sh" start
cd "$REPO_ROOT"
swift build --build-tests
# The end-to-end tests start these executables.
export ORDER_SERVICE_BIN_DIR="$(swift build --show-bin-path)"
swift test --skip-build "$@"
