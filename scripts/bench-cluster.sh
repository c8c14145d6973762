#!/usr/bin/env bash
# Replicated against single-node ingest and replay, alternating in one run (this machine is
# noisy: compare within a run). Each round: one broker alone on a fresh data dir, then three
# brokers from scripts/cluster-local.sh (the topic replicated on all three, acks once two
# have a batch durable); the same `silt-loadtest produce` into each, then `consume` from the
# earliest offset. Prints one JSON line per measurement.
#
# Usage: scripts/bench-cluster.sh [ROUNDS]     (default 3)
# Environment: COUNT (events per measurement, default 2000000), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
count=${COUNT:-2000000}
cargo build --release --locked --quiet --workspace
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d /tmp/silt-bench-cluster.XXXXXX)
. scripts/bench-broker.sh
cluster_cleanup() { scripts/cluster-local.sh stop "$work/cluster" >/dev/null 2>&1 || true; cleanup; }
trap cluster_cleanup EXIT

common=(--topic bench --message-size 100 --batch-size 1000 --window 8 --json)
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), count=$count"
for i in $(seq "$rounds"); do
  rm -rf "$work/data"
  start
  lt() { "$bin/silt-loadtest" "$@" --broker "$quic" --ca-cert "$work/data/tls/cert.pem"; }
  lt produce --producers 1 --partitions 1 --count "$count" "${common[@]}" | label "ingest, one broker"
  lt consume --count "$count" "${common[@]}" | label "replay, one broker"
  stop

  rm -rf "$work/cluster"
  SILT_BIN_DIR="$bin" scripts/cluster-local.sh start "$work/cluster" 3 >/dev/null
  (
    # shellcheck disable=SC1091
    . "$work/cluster/env"
    unset SILT_TOKEN_FILE
    lt() { "$bin/silt-loadtest" "$@" --broker "$SILT_BROKER" --ca-cert "$SILT_CA_CERT" --token "$SILT_TOKEN"; }
    lt produce --producers 1 --partitions 1 --count "$count" "${common[@]}" | label "ingest, three brokers, replication factor 3"
    lt consume --count "$count" "${common[@]}" | label "replay, three brokers, replication factor 3"
  )
  scripts/cluster-local.sh stop "$work/cluster" >/dev/null
done
