#!/usr/bin/env bash
# Processor benchmarks: the example processors' per-event cost in wasm against native Rust,
# restart (load + instantiate + restore) and compile costs (criterion, silt-runtime's
# `examples` bench), then `silt-loadtest pipeline` through a real release broker on loopback:
# deploy to first processed event and pipeline throughput, each module RUNS times on a fresh
# data directory. Prints one JSON line per pipeline run. BENCHMARKS.md quotes them.
# Usage: bash scripts/bench-processors.sh [RUNS]   (COUNT=events, default 1000000; SKIP_CRITERION=1)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
count=${COUNT:-1000000}
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet -p silt-server -p silt-loadtest
CARGO_TARGET_DIR=$target/wasm-bench cargo build --release --quiet --target wasm32-unknown-unknown \
  -p threshold-filter -p ema-smooth
bin=$target/release
wasm=$target/wasm-bench/wasm32-unknown-unknown/release
work=$(mktemp -d /tmp/silt-bench-processors.XXXXXX)
. scripts/bench-broker.sh

if [ -z "${SKIP_CRITERION:-}" ]; then
  cargo bench -p silt-runtime --bench examples 2>&1 | grep -E '^[a-z_0-9]+/|time:|bytes' | grep -v '%' >&2
fi

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), count=$count"
one() { # one LABEL MODULE ARGS... : fresh broker, pipeline run, stop
  local label=$1 module=$2; shift 2
  rm -rf "$work/data"
  start
  "$bin/silt-loadtest" pipeline --broker "$quic" --ca-cert "$work/data/tls/cert.pem" --json \
    --topic sensors --message-size 100 --batch-size 1000 --count "$count" --module "$module" "$@" | label "$label"
  stop
}
for i in $(seq "$runs"); do
  one "threshold-filter min=30, 1 partition" "$wasm/threshold_filter.wasm" --param min=30 --partitions 1
  one "ema-smooth, 1 partition" "$wasm/ema_smooth.wasm" --partitions 1
done
one "threshold-filter min=30, 2 partitions" "$wasm/threshold_filter.wasm" --param min=30 --partitions 2
one "ema-smooth, 2 partitions" "$wasm/ema_smooth.wasm" --partitions 2
