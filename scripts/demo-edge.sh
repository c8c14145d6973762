#!/usr/bin/env bash
# The fog tier, end to end: devices that run an edge filter send fewer frames with the same
# information, and the broker aggregates what arrives.
#
# Starts on loopback ports, with its data in a temporary directory (removed at the end): a
# broker, one device bridge, and DEVICES+1 Cortex-M devices (the QEMU firmware, each sampling
# a temperature every PERIOD_MS, SAMPLES samples, all the same series). `raw-1` sends every
# sample; the `edge-*` group gets the send-on-change module (`silt device deploy --device
# 'edge-*'`) over its frame link while it runs: from its switch on, a device sends a sample only
# when the temperature moved by more than DELTA degrees from the last one it sent, or
# MAX_SILENCE_MS of event time after it (a frame per sample kept, none for the others). The
# broker runs window-aggregate on what arrives (10-second windows per device). At the end it
# prints, per device, the samples taken and the frames and bytes sent (the readings' traffic,
# apart from what the deploy cost), the saving against `raw-1`, how far any sample an edge
# device did not send lies from the last one it sent (at most DELTA: the same information to
# within DELTA), and the aggregates.
#
# Usage: scripts/demo-edge.sh [DEVICES]      (default 3; 1 to 8)
# Environment: SAMPLES (default 600), PERIOD_MS (default 100), DELTA (default 0.5),
# MAX_SILENCE_MS (default 10000 of event time, where a sample is a second; 0: off),
# CARGO_TARGET_DIR (default ./target), SILT_BIN_DIR (take silt-broker, silt-bridge and silt
# from there instead of building them; the test suite runs it so on its debug binaries with
# SAMPLES=300 PERIOD_MS=50). Needs what scripts/firmware-qemu.sh installs
# (qemu-system-arm from Debian's backports, the thumbv7em target) and the wasm32 target.
#
# Grafana: the broker's /metrics (the admin address printed at the start) has the per-tier
# processor counters the Processors dashboard's "Tiers" row shows (grafana/README.md).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
devices="${1:-3}"
samples="${SAMPLES:-600}"
period_ms="${PERIOD_MS:-100}"
delta="${DELTA:-0.5}"
max_silence_ms="${MAX_SILENCE_MS:-10000}"
case "$devices" in
    [1-8]) ;;
    *) echo "usage: scripts/demo-edge.sh [DEVICES]   (1 to 8 edge devices; got '$devices')" >&2; exit 2 ;;
esac
for n in "$samples" "$period_ms"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "SAMPLES and PERIOD_MS must be whole numbers above 0" >&2; exit 2; }
done
[[ "$max_silence_ms" =~ ^[0-9]+$ ]] || { echo "MAX_SILENCE_MS must be a whole number (0: off)" >&2; exit 2; }
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n== %s\n' "$*"; }

step "building the broker, the bridge, silt, the firmware and the modules"
cd "$repo"
if [ -n "${SILT_BIN_DIR:-}" ]; then
    bin="$SILT_BIN_DIR"
else
    cargo build --release --locked -p silt-server -p silt-cli -p silt-bridge --target-dir "$target_dir"
    bin="$target_dir/release"
fi
elf="$(scripts/firmware-qemu.sh)"
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
# The broker's module as the examples are built; the device's linked with a 16 KiB stack, to fit
# a device's 256 KiB of module memory.
cargo build --release --locked --target wasm32-unknown-unknown -p window-aggregate \
    --target-dir "$target_dir/wasm-examples"
RUSTFLAGS="-C link-arg=-zstack-size=16384" cargo build --release --locked \
    --target wasm32-unknown-unknown -p send-on-change --target-dir "$target_dir/wasm-examples-small-stack"
aggregate_wasm="$target_dir/wasm-examples/wasm32-unknown-unknown/release/window_aggregate.wasm"
edge_wasm="$target_dir/wasm-examples-small-stack/wasm32-unknown-unknown/release/send_on_change.wasm"

work="$(mktemp -d "${TMPDIR:-/tmp}/silt-demo-edge.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

step "broker"
listen="127.0.0.1:$(free_port)"
admin="127.0.0.1:$(free_port)"
"$bin/silt-broker" --data-dir "$work/broker" --listen "$listen" --admin-listen "$admin" >"$work/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fsS "http://$admin/health" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://$admin/health" >/dev/null || { echo "the broker did not start:"; tail -5 "$work/broker.log"; exit 1; }
export SILT_BROKER="$listen" SILT_CA_CERT="$work/broker/tls/cert.pem"
SILT_TOKEN="$(cat "$work/broker/admin.token")"
export SILT_TOKEN
echo "broker on $listen, metrics on http://$admin/metrics (token in $work/broker/admin.token)"

step "the broker tier: window-aggregate over 10-second windows of what arrives"
"$bin/silt" topic create sensors.temperature --partitions 1 >/dev/null
"$bin/silt" processor deploy "$aggregate_wasm" --name temperature-10s --input sensors.temperature \
    --output sensors.temperature.10s --param field=value --param window_ms=10000

step "devices: raw-1 and edge-1..edge-$devices, $samples samples each, one every $period_ms ms"
ids=(raw-1)
for i in $(seq 1 "$devices"); do ids+=("edge-$i"); done
# Event times: from this minute on, a second apart per sample (the firmware's clock= setting),
# so the broker's windows hold ten samples each whatever the pace.
start_ms=$(( $(date +%s) / 60 * 60000 ))
connect=()
for id in "${ids[@]}"; do
    key="$("$bin/silt" device add "$id" --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')"
    port="$(free_port)"
    qemu-system-arm -machine mps2-an386 -nographic -monitor none \
        -semihosting-config enable=on,target=native -serial "tcp:127.0.0.1:$port,server=on,wait=on" \
        -kernel "$elf" \
        -append "clock=$start_ms:1000 period=$period_ms only=temperature $id $key $samples" \
        </dev/null >"$work/$id.log" 2>&1 &
    pids+=($!)
    eval "qemu_${id//-/_}=$!"
    connect+=(--connect-tcp "127.0.0.1:$port")
done
sleep 0.5
"$bin/silt-bridge" --broker "$listen" --ca-cert "$SILT_CA_CERT" --token "$SILT_TOKEN" \
    --data-dir "$work/bridge" --listen-tcp off --listen-mqtt off --listen-mqtts off --admin-listen off \
    "${connect[@]}" >"$work/bridge.log" 2>&1 &
pids+=($!)

step "deploying send-on-change (delta=$delta, max_silence_ms=$max_silence_ms) to the edge-* group over the frame link"
"$bin/silt" device deploy "$edge_wasm" --device 'edge-*' --input temperature --param "delta=$delta" \
    --param "max_silence_ms=$max_silence_ms"
deadline=$(( $(date +%s) + 120 ))
for i in $(seq 1 "$devices"); do
    while :; do
        running="$("$bin/silt" device status "edge-$i" --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["running_version"])')"
        [ "$running" = "1" ] && break
        if [ "$(date +%s)" -gt "$deadline" ]; then
            echo "edge-$i did not switch to the module in 2 minutes:"; tail -5 "$work/edge-$i.log"; exit 1
        fi
        sleep 0.5
    done
done
"$bin/silt" device status edge-1
grep -h "switched to module" "$work"/edge-*.log | sed 's/^/  /'

step "waiting for every device to send its $samples samples"
for id in "${ids[@]}"; do
    pid_var="qemu_${id//-/_}"
    if ! wait "${!pid_var}"; then
        echo "device $id failed:"; tail -5 "$work/$id.log"; exit 1
    fi
done

step "traffic per device (the edge devices ran the filter from their switch on)"
"$bin/silt" consume sensors.temperature --from earliest --format jsonl >"$work/readings.jsonl"
python3 - "$work" "$delta" "${ids[@]}" <<'EOF'
import json, re, sys
work, delta, ids = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
rows = {}
for id in ids:
    out = open(f"{work}/{id}.log").read()
    done = re.search(r"done (\d+) frames, \d+ retransmits, \d+ sent, (\d+) bytes \((\d+) in module states\)", out)
    taken = re.search(r"(\d+) samples: (\d+) sent, (\d+) not", out)
    frames, nbytes, state = int(done.group(1)), int(done.group(2)), int(done.group(3))
    rows[id] = (int(taken.group(1)), frames, nbytes - state, state, int(taken.group(3)))
raw = rows["raw-1"]
print(f"{'device':8} {'samples':>8} {'frames':>7} {'bytes':>8} {'not sent':>9} {'frames saved':>13} {'bytes saved':>12} {'state bytes':>12}")
for id, (n, frames, nbytes, state, skipped) in rows.items():
    saved = "" if id == "raw-1" else f"{100 * (1 - frames / raw[1]):12.1f}% {100 * (1 - nbytes / raw[2]):11.1f}%"
    print(f"{id:8} {n:>8} {frames:>7} {nbytes:>8} {skipped:>9} {saved:>26} {state:>12}")
if any(rows[id][1] >= raw[1] for id in ids[1:]):
    print("an edge device sent no fewer frames than raw-1: did the module reach it in time?")
    sys.exit(1)
print("(bytes: the readings' frames, hellos and heartbeats the device sent; state bytes: its module")
print(" state frames, the answers to a module's delivery, apart)")
# Every device samples the same series (a sample's value depends on its number only), so
# raw-1's readings are what each edge device measured.
values = {}
for line in open(f"{work}/readings.jsonl"):
    r = json.loads(line)
    v = r["value"] if isinstance(r["value"], dict) else json.loads(r["value"])
    values.setdefault(r["key"], {})[v["seq"]] = v["value"]
measured = values["raw-1"]
for id in ids[1:]:
    sent, last, worst = values.get(id, {}), None, 0.0
    for seq in sorted(measured):
        if seq in sent:
            if sent[seq] != measured[seq]:
                print(f"{id}: sample {seq} arrived as {sent[seq]}, measured {measured[seq]}")
                sys.exit(1)
            last = sent[seq]
        elif last is not None:
            worst = max(worst, abs(measured[seq] - last))
    print(f"{id}: {len(sent)} of {len(measured)} samples arrived, each as measured; the farthest a "
          f"sample not sent lies from the last one sent: {worst:.3f} (delta {delta})")
    if worst > delta:
        sys.exit(1)
EOF

step "the broker tier: 10-second aggregates of what arrived (the last windows of raw-1 and edge-1)"
sleep 2
"$bin/silt" consume sensors.temperature.10s --from earliest --format jsonl >"$work/windows.jsonl"
python3 - "$work/windows.jsonl" <<'EOF'
import json, sys
windows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    v = r["value"] if isinstance(r["value"], dict) else json.loads(r["value"])
    windows.setdefault(v["key"], {})[v["window_start"]] = v
raw, edge = windows.get("raw-1", {}), windows.get("edge-1", {})
print(f"{'window start (ms)':>18}  {'raw-1: count  mean':>20}  {'edge-1: count  mean':>21}")
for start in sorted(set(raw) & set(edge))[-6:]:
    r, e = raw[start], edge[start]
    print(f"{start:>18}  {r['count']:>13} {r['mean']:6.2f}  {e['count']:>14} {e['mean']:6.2f}")
print("windows per device:", {k: len(v) for k, v in sorted(windows.items())})
EOF
echo
echo "done: the edge devices sent a frame only for samples that moved by more than $delta degrees;"
echo "every record they sent is the one send-on-change keeps of the raw readings (the identity"
echo "tests in device-bridge/bridge/tests/device_tier.rs check that byte for byte)."
