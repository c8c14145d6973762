#!/usr/bin/env bash
# Builds the ESP32-C3 firmware (device-bridge/firmware/esp32c3) in release mode and checks that
# the ELF is there; first runs the host unit tests of its protocol core (the link state machine
# and the build-time settings parsers). Needs only rustup and cargo: it installs the
# riscv32imc-unknown-none-elf target itself. It does not flash (no board here): see the
# firmware's README for `espflash flash --monitor`.
#
# The firmware is its own cargo workspace (own Cargo.lock, own profiles), so the root
# workspace's `cargo test --workspace` does not build it; this script does. It honours
# CARGO_TARGET_DIR so that CI shares one target directory (artifacts land under
# <target-dir>/riscv32imc-unknown-none-elf/ and <target-dir>/<host>/, apart from the root
# workspace's).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
crate="$repo/device-bridge/firmware/esp32c3"
target=riscv32imc-unknown-none-elf
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# From the crate's directory: its rust-toolchain.toml picks the toolchain (stable), and its
# .cargo/config.toml is only read when cargo runs there.
cd "$crate"

step() { printf '\n== %s\n' "$*"; }

step "rustup target $target"
rustup target add "$target" >/dev/null 2>&1 || rustup target add "$target"

step "firmware protocol core: host unit tests"
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo test --locked --lib --target "$host" --target-dir "$target_dir"

step "firmware: release build for $target"
cargo build --locked --release --target "$target" --target-dir "$target_dir"

elf="$target_dir/$target/release/silt-fw-esp32c3"
if [ ! -s "$elf" ]; then
    echo "error: the firmware ELF is missing: $elf" >&2
    exit 1
fi
# An ELF (7f 'E' 'L' 'F'), 32-bit (class 1), for RISC-V (e_machine 0xf3 at offset 18).
header="$(od -An -tx1 -N20 "$elf" | tr -d ' \n')"
if [ "${header:0:10}" != "7f454c4601" ] || [ "${header:36:4}" != "f300" ]; then
    echo "error: $elf is not a 32-bit RISC-V ELF (header $header)" >&2
    exit 1
fi
echo "firmware ELF: $elf ($(wc -c <"$elf") bytes with debug info; flash it with espflash)"
