#!/usr/bin/env bash
# Foundation benchmarks: durable ingest and replay of 100-byte events through a real broker on
# loopback, each run RUNS times, printed as one JSON line per run. BENCHMARKS.md quotes them.
# Usage: bash scripts/bench.sh [RUNS]   (release build; data in a temp dir, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
count=${COUNT:-5000000}
cargo build --release --quiet -p silt-server -p silt-loadtest
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d /tmp/silt-bench.XXXXXX)
. scripts/bench-broker.sh

lt() { "$bin/silt-loadtest" "$@" --broker "$quic" --ca-cert "$work/data/tls/cert.pem" --json; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), count=$count"
# Each measurement gets a fresh data directory, so runs see the same conditions; replay runs
# in a restarted broker, reading from disk as after a restart.
one() { # one LABEL TOPIC_ARGS... : ingest, restart, replay
  local label=$1; shift
  rm -rf "$work/data"
  start
  lt produce --topic bench "$@" | label "ingest $label"
  stop
  start
  lt consume --topic bench --count "$count" | label "replay $label"
  stop
}
common=(--message-size 100 --batch-size 1000 --window 8 --count "$count")
for i in $(seq "$runs"); do
  one "lz4" --producers 1 --partitions 1 "${common[@]}"
  one "uncompressed" --producers 1 --partitions 1 --compression none "${common[@]}"
done
one "lz4, 4 producers, 4 partitions" --producers 4 --partitions 4 "${common[@]}"
