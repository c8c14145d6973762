#!/usr/bin/env bash
# Replication, end to end, in one command: three brokers on this machine's loopback
# (scripts/cluster-local.sh), a topic kept by all three, RECORDS records produced, the leader
# of its partition killed with SIGKILL, RECORDS more produced through the two that are left,
# and everything read back: exactly 1..2*RECORDS, in order. Prints how long the partition went
# without a leader and stops the brokers (their data is in a temporary directory, removed at
# the end unless KEEP=1).
#
# Usage: scripts/demo-cluster.sh
# Environment: RECORDS (default 50000), SILT_BIN_DIR (take silt-broker and silt from there
# instead of building them; the test suite runs it on its debug binaries with RECORDS=20000),
# CARGO_TARGET_DIR (default ./target), KEEP=1 to keep the data directory.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
records="${RECORDS:-50000}"
[[ "$records" =~ ^[1-9][0-9]*$ ]] || { echo "RECORDS must be a whole number above 0" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/silt-demo-cluster.XXXXXX")"
cleanup() {
    "$repo/scripts/cluster-local.sh" stop "$work/cluster" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "data kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
now_ms() { date +%s%3N; }

step "three brokers"
"$repo/scripts/cluster-local.sh" start "$work/cluster" 3
# shellcheck disable=SC1091
. "$work/cluster/env"   # SILT_BROKER, SILT_CA_CERT, SILT_TOKEN, and silt on PATH
silt cluster status

step "topic rep, kept by all three; $records records"
silt topic create rep --partitions 1 --replication-factor 3
start=$(now_ms)
seq 1 "$records" | silt produce rep
echo "acknowledged in $(($(now_ms) - start)) ms"
leader_of() {
    silt --json cluster status | python3 -c '
import json, sys
d = json.load(sys.stdin)
p = [p for p in d["partitions"] if p["topic"] == "rep" and p["partition"] == 0][0]
print(p["leader"] if p["leader"] is not None else "")'
}
leader="$(leader_of)"
[ -n "$leader" ] || { echo "no leader of rep/0" >&2; exit 1; }

step "SIGKILL to node $leader, the partition's leader"
kill -9 "$(awk -v n="$leader" '$1 == n {print $2}' "$work/cluster/pids")"
killed=$(now_ms)
next=""
for _ in $(seq 1 200); do
    next="$(leader_of 2>/dev/null || true)"
    [ -n "$next" ] && [ "$next" != "$leader" ] && break
    sleep 0.05
done
[ -n "$next" ] && [ "$next" != "$leader" ] || { echo "no new leader within 10 s" >&2; exit 1; }
echo "node $next leads rep/0, $(($(now_ms) - killed)) ms after the kill (as seen by polling silt cluster status)"
silt cluster status

step "$records more, through the two brokers left"
start=$(now_ms)
seq $((records + 1)) $((2 * records)) | silt produce rep
echo "acknowledged in $(($(now_ms) - start)) ms"

step "read back"
silt consume rep --from earliest >"$work/all"
got=$(wc -l <"$work/all")
if [ "$got" != $((2 * records)) ] || ! seq 1 $((2 * records)) | cmp -s - "$work/all"; then
    echo "FAILED: $got records read back, not exactly 1..$((2 * records)) in order" >&2
    exit 1
fi
echo "$got of $((2 * records)) acknowledged records read back exactly once, in order, after node $leader died"
