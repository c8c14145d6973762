#!/usr/bin/env bash
# Device bridge benchmarks: simulated devices (silt-loadtest devices) through a release
# silt-bridge into a release broker, both on free loopback ports with their data in a temp dir.
# Each scenario gets a fresh broker and bridge, with the reading topics created beforehand (a
# topic's creation on the first reading would show in the first frames' latency); prints one
# JSON line per run (the simulator's report, the bridge's and the broker's own histograms, and
# the CPU seconds each process used), which BENCHMARKS.md quotes.
#
# Usage: bash scripts/bench-bridge.sh [SCENARIO...]
#   throughput        100 devices over TCP frames, as fast as a window of 16 allows
#   throughput-mqtt   the same over MQTT QoS 1
#   fleet             10,000 devices over TCP at 1 frame/s each for $DURATION (default 60s)
#   fleet-mqtt        the same over MQTT
# With no arguments it runs all four. DEVICES, RATE, DURATION and FRAMES override the sizes;
# BRIDGE_TOML is the bridge's --config file (for A/B runs of its limits); TMPDIR=/dev/shm puts both
# data dirs on tmpfs, where a durable flush costs nothing (to tell flush time from the rest);
# BRIDGE_BIN runs another build of silt-bridge (to compare a change against this tree's).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p silt-server -p silt-bridge -p silt-loadtest -p silt-cli
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d "${TMPDIR:-/tmp}/silt-bench-bridge.XXXXXX")
. scripts/bench-broker.sh

# 10,000 devices hold 10,000 sockets on each side: the simulator raises its own soft limit,
# the bridge inherits this shell's.
ulimit -n "$(ulimit -Hn)"

bridge_pid=
stop_bridge() { [ -n "$bridge_pid" ] && { kill "$bridge_pid" 2>/dev/null; wait "$bridge_pid" 2>/dev/null || true; }; bridge_pid=; }
trap 'stop_bridge; cleanup' EXIT
tcp=127.0.0.1:$(free_port)
mqtt=127.0.0.1:$(free_port)
bridge_admin=127.0.0.1:$(free_port)

start_bridge() {
  printf '%b' "${BRIDGE_TOML:-}" >"$work/bridge.toml"
  "${BRIDGE_BIN:-$bin/silt-bridge}" --broker "$quic" --ca-cert "$work/data/tls/cert.pem" --data-dir "$work/bridge" \
    --listen-tcp "$tcp" --listen-mqtt "$mqtt" --listen-mqtts off --admin-listen "$bridge_admin" --config "$work/bridge.toml" \
    >>"$work/bridge.log" 2>&1 &
  bridge_pid=$!
  for _ in $(seq 100); do curl -fs "http://$bridge_admin/health" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "bridge did not start: $(tail -3 "$work/bridge.log")" >&2; exit 1
}

# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

# Summarises a /metrics page (ADDR, metric name PREFIX): each histogram's count, mean, the
# bucket bounds under which half and 99% of its observations fall and how many took over 10 ms
# and over 100 ms, and the counters.
metrics() {
  curl -fs "http://$1/metrics" | python3 -c '
import json, re, sys
prefix = sys.argv[1]
h, c = {}, {}
for line in sys.stdin:
    if line.startswith("#") or not line.startswith(prefix): continue
    m = re.match(r"(silt_\w+?)(_bucket|_sum|_count)?(\{[^}]*\})? (\S+)", line)
    if not m: continue
    name, part, labels, value = m.group(1), m.group(2), m.group(3) or "", float(m.group(4))
    if part == "_bucket":
        le = re.search(r"le=\"([^\"]+)\"", labels).group(1)
        h.setdefault(name, {"buckets": []})["buckets"].append((float(le), value))
    elif part in ("_sum", "_count"):
        h.setdefault(name, {"buckets": []})[part[1:]] = value
    else:
        c[name + labels] = value
out = {"counters": c}
for name, d in h.items():
    n = d.get("count", 0)
    def q(p):
        for le, v in d["buckets"]:
            if n and v >= p * n: return le * 1000
        return None
    out[name.replace(prefix, "").replace("_duration_seconds", "")] = {
        "count": int(n), "mean_ms": round(d.get("sum", 0) / n * 1000, 3) if n else None,
        "p50_le_ms": q(0.5), "p99_le_ms": q(0.99),
        "over_10ms": int(n - dict(d["buckets"]).get(0.01, n)),
        "over_100ms": int(n - dict(d["buckets"]).get(0.1, n))}
print(json.dumps(out))' "$2"
}

# run LABEL LOADTEST_ARGS...: a fresh broker and bridge, the devices scenario, one JSON line.
run() {
  local label=$1; shift
  rm -rf "$work/data" "$work/bridge"
  start
  for t in sensors.temperature sensors.humidity; do
    "$bin/silt" --broker "$quic" --ca-cert "$work/data/tls/cert.pem" topic create "$t" >/dev/null
  done
  start_bridge
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  local broker_cpu0 bridge_cpu0; broker_cpu0=$(cpu "$pid"); bridge_cpu0=$(cpu "$bridge_pid")
  local report
  report=$(/usr/bin/time -f '%U %S' -o "$work/sim.time" "$bin/silt-loadtest" devices --broker "$quic" \
    --ca-cert "$work/data/tls/cert.pem" --json "$@") || { echo "$report"; echo "run $label failed" >&2; }
  local sim_cpu; sim_cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$work/sim.time")
  local broker_cpu bridge_cpu
  broker_cpu=$(awk -v a="$(cpu "$pid")" -v b="$broker_cpu0" 'BEGIN { printf "%.2f", a - b }')
  bridge_cpu=$(awk -v a="$(cpu "$bridge_pid")" -v b="$bridge_cpu0" 'BEGIN { printf "%.2f", a - b }')
  local bridge_metrics broker_metrics
  bridge_metrics=$(metrics "$bridge_admin" silt_bridge_)
  broker_metrics=$(metrics "$admin" silt_ | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(json.dumps({k: v for k, v in d.items() if k in ("flush", "append", "produce_ack")}))')
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); r["run"] = sys.argv[2]; r["loadavg_before"] = sys.argv[3]
r["bridge_toml"] = sys.argv[8]; r["bridge_bin"] = sys.argv[10]; r["work_dir"] = sys.argv[11]
r["cpu_seconds"] = {"broker": float(sys.argv[4]), "bridge": float(sys.argv[5]), "simulator (incl. provisioning)": float(sys.argv[6])}
r["bridge_metrics"] = json.loads(sys.argv[7])
r["broker_metrics"] = json.loads(sys.argv[9])
print(json.dumps(r))' "$report" "$label" "$load" "$broker_cpu" "$bridge_cpu" "$sim_cpu" "$bridge_metrics" "${BRIDGE_TOML:-}" "$broker_metrics" "${BRIDGE_BIN:-}" "$work"
  stop_bridge
  stop
}

echo "# $(date -u +%FT%TZ) $(git describe --always --dirty) $(nproc) cores, $(uname -r), load $(cut -d" " -f1-3 /proc/loadavg)"
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(throughput throughput-mqtt fleet fleet-mqtt)
for s in "${scenarios[@]}"; do
  case $s in
    throughput) run "$s" --bridge "$tcp" --transport tcp --devices "${DEVICES:-100}" --rate 0 \
      --window 16 --frames "${FRAMES:-2000}" ;;
    throughput-mqtt) run "$s" --bridge "$mqtt" --transport mqtt --devices "${DEVICES:-100}" --rate 0 \
      --window 16 --frames "${FRAMES:-1000}" ;;
    fleet) run "$s" --bridge "$tcp" --transport tcp --devices "${DEVICES:-10000}" --rate "${RATE:-1}" \
      --duration "${DURATION:-60s}" --window 8 --ack-timeout 5s ;;
    fleet-mqtt) run "$s" --bridge "$mqtt" --transport mqtt --devices "${DEVICES:-10000}" --rate "${RATE:-1}" \
      --duration "${DURATION:-60s}" --window 8 --ack-timeout 5s ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
