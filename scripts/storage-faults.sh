#!/usr/bin/env bash
# A long storage-fault campaign (issue 14, point 1): TRIALS trials (default 200), alternating
# a cut tail of sled's log (512 B to 32 KiB) and one flipped bit, each on a copy of a data
# directory holding 50,000 acknowledged records, then `silt-broker check` and a broker started
# on it (server/broker/tests/storage_faults.rs says what each outcome means). Prints every
# trial and, last, the tally as JSON. The test suite runs 4 trials.
# Usage: bash scripts/storage-faults.sh [TRIALS]   (SEED=N to repeat a campaign)
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-200}
seed=${SEED:-$(date +%s)}
SILT_FAULT_TRIALS=$trials SILT_FAULT_SEED=$seed \
  cargo test --quiet -p silt-broker --test storage_faults -- --nocapture 2>&1 |
  grep -E '^(storage fault campaign|trial [0-9]+:|\{|thread|test result)'
