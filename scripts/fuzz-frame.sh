#!/usr/bin/env bash
# Runs the cargo-fuzz target of the device frame decoder (protocol/frame/fuzz) for
# SECONDS (default 30). Installs cargo-fuzz from crates.io when missing. cargo-fuzz needs
# nightly compiler flags (sanitizers); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them,
# since this machine kind has no nightly. A crash leaves its input under fuzz/artifacts/; turn
# it into a test in protocol/frame/tests/ (STYLE.md).
set -euo pipefail
seconds="${1:-30}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
cd "$repo/protocol/frame"
target_dir="${CARGO_TARGET_DIR:-$repo/target}/fuzz"
RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$target_dir" decode -- \
    -max_total_time="$seconds" -max_len=2048 -print_final_stats=1
