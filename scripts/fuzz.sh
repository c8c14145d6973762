#!/usr/bin/env bash
# Runs every cargo-fuzz target of a decoder of untrusted bytes for SECONDS each (default 30):
# the device frame decoder (protocol/frame/fuzz, `decode`) and the network frames, control
# messages, record batches and module signatures the broker and its clients read
# (protocol/wire/fuzz, `control`), the control-plane records and the acknowledgement ledger the
# broker reads from disk (server/storage/fuzz, `records`), and the MQTT packets the bridge reads
# from devices (device-bridge/bridge/fuzz, `mqtt`).
# Installs cargo-fuzz from crates.io when missing. cargo-fuzz needs nightly compiler flags
# (sanitizers); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them, since this machine kind
# has no nightly. A crash leaves its input under <crate>/fuzz/artifacts/; turn it into a test of
# that crate (STYLE.md).
set -euo pipefail
seconds="${1:-30}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
target_dir="${CARGO_TARGET_DIR:-$repo/target}/fuzz"
for crate_target in "protocol/frame decode" "protocol/wire control" "server/storage records" \
    "device-bridge/bridge mqtt"; do
    read -r crate target <<<"$crate_target"
    (cd "$repo/$crate" && RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$target_dir" "$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1)
done
