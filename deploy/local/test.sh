#!/usr/bin/env bash
# Sets up this machine if needed, starts the broker and the database, builds, and runs every
# test tier: unit, Kafka (Tansu and librdkafka's mock cluster), PostgreSQL, deploy files and end
# to end together, then the reliability tier on its own. Extra arguments replace both runs with
# one `swift test` with those arguments (e.g. --filter EndToEndTests).
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
if [ $# -gt 0 ]; then
  swift test --skip-build "$@"
else
  # Unit, Kafka, PostgreSQL and end-to-end tiers together; then the reliability tier on its own,
  # because it kills and restarts processes and cuts connections under load.
  swift test --skip-build --skip ReliabilityTests
  swift test --skip-build --filter ReliabilityTests
fi
