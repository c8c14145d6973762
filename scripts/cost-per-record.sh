#!/usr/bin/env bash
# Instructions per record of each example module on the broker's host (silt-runtime on
# wasmtime: the broker tier, and the bridge tier, which runs the same host), counted by
# valgrind's callgrind rather than timed, so the figures stand beside the device tier's
# (QEMU's instruction count, `cost_per_record_on_the_device` in
# device-bridge/bridge/tests/device_tier.rs) and repeat on a loaded machine.
#
# For each module and call size (1 record a call, as a device calls; 60, as a bridge round or
# a broker batch carries them) it runs the workload in device-bridge/device-runtime/tests/cost.rs
# under callgrind over 600 records, counting only inside its `cost_measured_calls` (making each
# batch, the call, the output; not compiling or instantiating the module), and prints the count
# per record. x86-64 instructions, so not the device's Cortex-M4 instruction set: the unit is
# the same, the machine is not. Takes a few minutes (cranelift compiles each module under
# valgrind).
#
# The `batches-only` row makes the batches and calls no module: what every other row includes
# for the records' JSON and the batch around them.
#
# Usage: scripts/cost-per-record.sh [MODULE...]   (default: batches-only and every case in
# tests/cost.rs)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(batches-only threshold-filter c-threshold unit-convert ema-smooth anomaly-zscore window-aggregate send-on-change)

if ! command -v valgrind >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
fi

bin="$(cargo test --release --locked -p silt-device-runtime --test cost --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cost":
        print(m["executable"])
')"
# Once outside valgrind: builds the example modules (for wasm32, and the C one with clang) if
# they are not built yet.
SILT_COST=threshold-filter:1:1 "$bin" --ignored --exact workload >/dev/null 2>&1
SILT_COST=c-threshold:1:1 "$bin" --ignored --exact workload >/dev/null 2>&1

records=600
count() {
    SILT_COST="$1" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --toggle-collect='*cost_measured_calls*' "$bin" --ignored --exact workload --test-threads=1 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

echo "| module | x86-64 instructions per record, 1 record a call | in calls of 60 |"
echo "| --- | --- | --- |"
for m in "${modules[@]}"; do
    row="| $m |"
    for per_call in 1 60; do
        n="$(count "$m:$records:$per_call")"
        if [ -z "$n" ] || [ "$n" = 0 ]; then
            echo "error: callgrind gave no count for $m" >&2
            exit 1
        fi
        row="$row $(( n / records )) |"
    done
    echo "$row"
done
