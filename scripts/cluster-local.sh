#!/usr/bin/env bash
# A cluster of Silt brokers on this machine's loopback, for trying replication out and for
# tests.
#
#   scripts/cluster-local.sh start DIR N    start N brokers (1 to 9) with their data under DIR
#   scripts/cluster-local.sh stop DIR       stop them (SIGTERM, then SIGKILL after 10 s)
#
# `start` prepares DIR with `silt-broker cluster-init` (a CA, a certificate per broker, one
# admin token), starts broker I (node id I) on free loopback ports with its data in
# DIR/node-I and its log in DIR/node-I.log, waits until the cluster has formed (every broker
# up and a metadata leader elected), and writes:
#   DIR/env    shell lines exporting SILT_BROKER (every broker's address, comma-separated),
#              SILT_CA_CERT and SILT_TOKEN for a client, and PATH with the directory of the
#              binaries first: `. DIR/env; silt cluster status`
#   DIR/pids   "NODE_ID PID" per line
# DIR must be new or empty. Binaries come from SILT_BIN_DIR when set, else they are built
# (cargo build --release --workspace, as the acceptance checks build) into CARGO_TARGET_DIR
# (default ./target).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
usage() { echo "usage: scripts/cluster-local.sh start DIR N | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd="$1"
dir="$2"

stop() {
    [ -f "$dir/pids" ] || { echo "no $dir/pids: nothing to stop" >&2; return 0; }
    while read -r _ pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$dir/pids"
    for _ in $(seq 1 100); do
        alive=0
        while read -r _ pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$dir/pids"
        [ "$alive" = 0 ] && return 0
        sleep 0.1
    done
    while read -r _ pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$dir/pids"
}

case "$cmd" in
    stop) stop; exit 0 ;;
    start) ;;
    *) usage ;;
esac
[ $# -eq 3 ] || usage
n="$3"
[[ "$n" =~ ^[1-9]$ ]] || { echo "N must be 1 to 9 (got '$n')" >&2; exit 2; }
if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    echo "$dir is not empty: give a new directory" >&2
    exit 2
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if [ -n "${SILT_BIN_DIR:-}" ]; then
    bin="$SILT_BIN_DIR"
else
    target_dir="${CARGO_TARGET_DIR:-$repo/target}"
    (cd "$repo" && cargo build --release --locked --quiet --workspace --target-dir "$target_dir")
    bin="$target_dir/release"
fi

# Ports free for both UDP (QUIC) and TCP (the admin port), all different.
ports="$(python3 - "$((n * 3))" <<'PY'
import socket, sys
want, held, out = int(sys.argv[1]), [], []
while len(out) < want:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close(); continue
    held += [t, u]; out.append(port)
print(" ".join(map(str, out)))
PY
)"
read -r -a port <<<"$ports"

"$bin/silt-broker" cluster-init "$dir" --nodes "$n" >/dev/null
peers=""
for i in $(seq 1 "$n"); do
    peers+="${peers:+,}$i@127.0.0.1:${port[$(((i - 1) * 3 + 2))]}"
done
brokers=""
: >"$dir/pids"
for i in $(seq 1 "$n"); do
    listen="127.0.0.1:${port[$(((i - 1) * 3))]}"
    admin="127.0.0.1:${port[$(((i - 1) * 3 + 1))]}"
    cluster="127.0.0.1:${port[$(((i - 1) * 3 + 2))]}"
    brokers+="${brokers:+,}$listen"
    "$bin/silt-broker" --data-dir "$dir/node-$i" --listen "$listen" --admin-listen "$admin" \
        --node-id "$i" --cluster-listen "$cluster" --peers "$peers" >"$dir/node-$i.log" 2>&1 &
    echo "$i $!" >>"$dir/pids"
    echo "$admin" >"$dir/node-$i.admin"
done
cat >"$dir/env" <<ENV
export PATH="$(cd "$bin" && pwd):\$PATH"
export SILT_BROKER=$brokers
export SILT_CA_CERT=$dir/ca.pem
export SILT_TOKEN=$(cat "$dir/admin.token")
ENV

# Formed: every broker answers, and one of them leads the metadata group.
formed=0
for _ in $(seq 1 300); do
    status="$( (. "$dir/env"; "$bin/silt" --json cluster status) 2>/dev/null || true)"
    if [ -n "$status" ] && python3 -c '
import json, sys
d = json.loads(sys.argv[1]); n = int(sys.argv[2])
ok = len(d["nodes"]) == n and all(x["state"] == "up" for x in d["nodes"]) and any(x["metadata_leader"] for x in d["nodes"])
sys.exit(0 if ok else 1)' "$status" "$n"; then
        formed=1
        break
    fi
    while read -r id pid; do
        kill -0 "$pid" 2>/dev/null || { echo "broker $id stopped:" >&2; tail -5 "$dir/node-$id.log" >&2; stop; exit 1; }
    done <"$dir/pids"
    sleep 0.2
done
if [ "$formed" != 1 ]; then
    echo "the cluster did not form within 60 s; the brokers' logs are in $dir" >&2
    stop
    exit 1
fi
echo "$n brokers up in $dir: . $dir/env; silt cluster status"
