# Sourced by the benchmark scripts: a release broker on free loopback ports with its data in
# $work/data. Needs `bin` (release binaries) and `work` (a temp dir) set; sets `quic`, `admin`,
# `pid`, and a trap that stops the broker and removes $work on exit. Clients find the broker's
# admin token through SILT_TOKEN_FILE; AUTH=off starts the broker without authentication (for
# measuring what authorization costs).
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
quic=127.0.0.1:$(free_port)
admin=127.0.0.1:$(free_port)
if [ "${AUTH:-on}" = on ]; then export SILT_TOKEN_FILE=$work/data/admin.token; fi

start() {
  "$bin/silt-broker" --data-dir "$work/data" --listen "$quic" --admin-listen "$admin" --auth "${AUTH:-on}" \
    >>"$work/broker.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://$admin/health" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "broker did not start: $(tail -3 "$work/broker.log")" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; pid=; }

# Adds "run": LABEL to the JSON object on stdin.
label() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['run']='$1'; print(json.dumps(d))"; }
