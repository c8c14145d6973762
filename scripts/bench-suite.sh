#!/usr/bin/env bash
# The standard comparison: Silt, NATS JetStream and mosquitto side by side, written into
# BENCHMARKS.md (between its suite markers) with plots in docs/benchmarks/. Installs Debian's
# nats-server and mosquitto when missing, builds release binaries and the threshold-filter
# processor, and starts and stops every server itself on loopback (temp data dirs).
# Usage: bash scripts/bench-suite.sh [--quick] [other `silt-loadtest suite` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ ${#need[@]} -gt 0 ]; then
  sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo build --release --locked --quiet -p silt-server -p silt-loadtest
cargo build --release --locked --quiet --target wasm32-unknown-unknown -p threshold-filter
target=${CARGO_TARGET_DIR:-$PWD/target}
ulimit -n 65536 2>/dev/null || true
exec "$target/release/silt-loadtest" suite --module "$target/wasm32-unknown-unknown/release/threshold_filter.wasm" "$@"
