#!/usr/bin/env bash
# Runs every libFuzzer target of a decoder of untrusted bytes for SECONDS each (default 30):
# the device frame decoder (protocol/frame/fuzz, `decode`) and the network frames, control
# messages, record batches and module signatures the broker and its clients read, and the
# counters blocks processor modules report (protocol/wire/fuzz, `control`), the control-plane records and the acknowledgement ledger the
# broker reads from disk (server/storage/fuzz, `records`), and the MQTT packets the bridge reads
# from devices (device-bridge/bridge/fuzz, `mqtt`).
#
# The targets are cargo-fuzz crates (`cargo fuzz run TARGET` works in each for a developer who
# has it), but this script needs nothing beyond stable cargo: it builds each target with the
# coverage instrumentation cargo-fuzz adds (sancov with 8-bit counters, PC table and compare
# tracing, `--cfg fuzzing`, debug assertions), for the host triple so that build scripts and
# proc-macros stay uninstrumented, and runs the binary with libFuzzer's options. No address
# sanitizer: it needs a nightly flag, finds nothing that safe Rust's bounds checks do not, and
# made every build slower; a panic is a crash either way. Corpora grow in <crate>/fuzz/corpus/;
# a crash leaves its input under <crate>/fuzz/artifacts/: turn it into a test of that crate
# (STYLE.md).
set -euo pipefail
seconds="${1:-30}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}/fuzz"
host="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Cforce-frame-pointers"
for crate_target in "protocol/frame decode" "protocol/wire control" "server/storage records" \
    "device-bridge/bridge mqtt"; do
    read -r crate target <<<"$crate_target"
    fuzz="$repo/$crate/fuzz"
    cargo build --quiet --release --locked --manifest-path "$fuzz/Cargo.toml" --target "$host" \
        --target-dir "$target_dir" --bin "$target"
    mkdir -p "$fuzz/corpus/$target" "$fuzz/artifacts/$target"
    echo "== $crate: $target, ${seconds} s"
    "$target_dir/$host/release/$target" -artifact_prefix="$fuzz/artifacts/$target/" \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 "$fuzz/corpus/$target"
done
