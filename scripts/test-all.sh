#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every unit, property and integration test.
# Installs what it needs first (rustup components and targets, Debian's prometheus package for
# promtool, mosquitto-clients, nats-server, mosquitto, clang and lld, and qemu-system-arm from backports), so it works on a fresh
# machine with only cargo, rustup and apt.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints the seconds since the start, so a slow step shows in the log.
started=$SECONDS
step() { printf '\n== [%4ds] %s\n' "$((SECONDS - started))" "$*"; }

step "toolchain components and targets"
rustup component add rustfmt clippy >/dev/null 2>&1 || rustup component add rustfmt clippy
# Example processors are WebAssembly modules (docs/processor-abi.md).
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown

# One target dir for every step, so nothing is compiled twice.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Property tests: enough cases to matter, few enough for 2 cores.
export PROPTEST_CASES="${PROPTEST_CASES:-128}"

step "Debian packages"
# promtool (package prometheus) checks the broker's /metrics in server/broker/tests/metrics.rs;
# mosquitto_pub/sub (mosquitto-clients) talk to the bridge in device-bridge/bridge/tests/mqtt.rs;
# silt-loadtest's peers (tools/loadtest/tests/peers.rs) start nats-server and mosquitto themselves.
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
# clang and wasm-ld build the C example processor (device-runtime's tests/identity.rs).
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
promtool --version | head -1
mosquitto_pub --help 2>&1 | head -1 || true
nats-server --version

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
# The device tier's shared readings processor is a feature of silt-device-runtime that only
# firmware turns on; its code and host tests are checked here too.
cargo clippy --workspace --all-targets --locked --features silt-device-runtime/readings -- -D warnings

step "example processors for wasm32"
# Into the directory the integration tests load modules from, so they find them built.
EXAMPLES=(threshold-filter unit-convert ema-smooth anomaly-zscore window-aggregate send-on-change)
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/wasm-examples" cargo build --release --locked \
    --target wasm32-unknown-unknown "${EXAMPLES[@]/#/-p}"

step "firmware"
# The QEMU firmware boots in device-bridge/bridge/tests/qemu.rs; the script installs
# qemu-system-arm (bookworm-backports) and the thumbv7em target. The ESP32-C3 firmware cannot
# run here: it is built (and its protocol logic unit-tested on the host) only.
SILT_FW_QEMU_ELF=$(scripts/firmware-qemu.sh)
export SILT_FW_QEMU_ELF
scripts/firmware-esp32c3.sh

step "cargo test"
# Tests outside silt-server that run silt-broker use the one this command builds for
# silt-server's own tests (server/broker/tests/support/server_bin.rs says why).
SILT_BROKER_BIN="$CARGO_TARGET_DIR/debug/silt-broker" cargo test --workspace --locked \
    --features silt-device-runtime/readings

step "power cuts in a virtual machine"
# 3 cycles of produce, power cut (SIGKILL to QEMU) and verify, with the debug binaries cargo
# test just built; scripts/powercut.sh runs long campaigns (docs/reliability.md). Installs
# qemu-system-x86 and a Debian kernel package itself; about 2 minutes under emulation.
POWERCUT_PROFILE=debug scripts/powercut.sh 3

step "the fog tier end to end"
# scripts/demo-edge.sh, short, on the debug binaries cargo test built: a QEMU device gets the
# send-on-change edge filter over its link while it runs and sends fewer frames than a raw one,
# every sample it sent arriving as measured and none it left out farther than delta.
SILT_BIN_DIR="$CARGO_TARGET_DIR/debug" SAMPLES=300 PERIOD_MS=50 scripts/demo-edge.sh 1

step "a cluster of three brokers, one killed"
# scripts/demo-cluster.sh, shorter, on the debug binaries: three brokers from
# scripts/cluster-local.sh, the partition's leader killed between two runs of produce, every
# acknowledged record read back once and in order.
SILT_BIN_DIR="$CARGO_TARGET_DIR/debug" RECORDS=20000 scripts/demo-cluster.sh

step "fuzz the decoders of untrusted bytes"
# 20 s of libFuzzer on each decoder of untrusted bytes: device frames, the network frames,
# control messages and record batches of the protocol, the control-plane records on disk and
# the bridge's MQTT packets (built with stable cargo; no cargo-fuzz to install).
scripts/fuzz.sh 20

echo
echo "all tests passed in $((SECONDS - started)) s"
