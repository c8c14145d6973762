#!/usr/bin/env bash
# Builds the ESP32-C3 firmware (device-bridge/firmware/esp32c3) in release mode, twice: plain,
# and with the device tier (feature `wasm`: a processor module delivered over the link runs on
# the readings, on the wasmi interpreter), and checks that both ELFs are there; first runs the
# host unit tests of its chip-independent part (the link as this firmware sets it up, the
# build-time settings parsers, the device tier's limits), with and without the device tier.
# Needs only rustup and cargo: it installs the riscv32imc-unknown-none-elf target and the
# standard library's source itself. It does not flash (no board here): see the firmware's
# README for `espflash flash --monitor`.
#
# Why the device tier needs more: the interpreter uses `alloc::sync::Arc`, which Rust's
# riscv32imc target leaves out because the chip has no atomic compare-and-swap. The `wasm`
# build uses the same target described with compare-and-swap available (its spec, printed by
# this rustc, with `atomic-cas` set), core and alloc built from source for it (cargo's
# build-std, allowed on the stable toolchain by RUSTC_BOOTSTRAP=1 for this build only), and
# the firmware supplying the `__sync_*` calls LLVM's `forced-atomics` makes of each
# read-modify-write (src/atomics.rs: interrupts off, one core). The spec keeps the target's
# name, which esp-hal's build script checks.
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
cargo test --locked --lib --features wasm --target "$host" --target-dir "$target_dir"

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

step "firmware with the device tier: build (profile device-tier)"
rustup component add rust-src >/dev/null 2>&1 || rustup component add rust-src
wasm_dir="$target_dir/esp32c3-wasm"
spec="$wasm_dir/spec/$target.json"
mkdir -p "$(dirname "$spec")"
RUSTC_BOOTSTRAP=1 rustc -Z unstable-options --print target-spec-json --target "$target" >"$spec.new"
if ! grep -q '"atomic-cas": false' "$spec.new" || ! grep -q 'forced-atomics' "$spec.new"; then
    echo "error: this rustc's $target spec is not the one src/atomics.rs was written for:" >&2
    cat "$spec.new" >&2
    exit 1
fi
sed 's/"atomic-cas": false/"atomic-cas": true/' "$spec.new" >"$spec.tmp" && rm "$spec.new"
# Rewritten only when it changed, so that cargo's fingerprints keep the last build.
cmp -s "$spec.tmp" "$spec" && rm "$spec.tmp" || mv "$spec.tmp" "$spec"
RUSTC_BOOTSTRAP=1 cargo build --locked --profile device-tier --features wasm --target "$spec" \
    -Zbuild-std=core,alloc -Zjson-target-spec --target-dir "$wasm_dir"
elf="$wasm_dir/$target/device-tier/silt-fw-esp32c3"
header="$(od -An -tx1 -N20 "$elf" | tr -d ' \n')"
if [ "${header:0:10}" != "7f454c4601" ] || [ "${header:36:4}" != "f300" ]; then
    echo "error: $elf is not a 32-bit RISC-V ELF (header $header)" >&2
    exit 1
fi
echo "firmware ELF with the device tier: $elf ($(wc -c <"$elf") bytes with debug info)"
