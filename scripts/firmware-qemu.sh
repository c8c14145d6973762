#!/usr/bin/env bash
# Builds the QEMU mps2-an386 firmware (device-bridge/firmware/qemu-mps2) in release mode and
# prints the ELF's path as the only line on stdout, so callers can take it with
# `elf=$(scripts/firmware-qemu.sh)`. Installs qemu-system-arm and the thumbv7em-none-eabihf
# target first (scripts/install-qemu.sh). Honours CARGO_TARGET_DIR so CI builds into the one
# target dir it shares between steps; the default is the repository's target/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

"$repo/scripts/install-qemu.sh" >&2

# From the crate's directory, so its own workspace and .cargo/config.toml apply.
cd "$repo/device-bridge/firmware/qemu-mps2"
cargo build --release --locked --target thumbv7em-none-eabihf --target-dir "$target_dir" >&2
echo "$target_dir/thumbv7em-none-eabihf/release/silt-fw-qemu-mps2"
