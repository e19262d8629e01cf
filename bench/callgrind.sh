#!/usr/bin/env bash
# Instructions per request of credgate on the plain forward path, counted by
# callgrind: repeatable where timings on a shared 2-core machine are not.
#
#   bash bench/callgrind.sh BIN [BIN…]     e.g. two builds side by side
#
# For each binary: a keep-alive origin on 127.0.0.1 (Python), credgate under
# `valgrind --tool=callgrind` with one static credential injected, a task,
# 200 warm-up requests, counters zeroed, then N requests (BENCH_REQUESTS,
# default 3000) through `hey -c 10`; prints credgate's instructions (every
# thread, the decision-log writer included) divided by the answered
# requests. Needs valgrind, hey, openssl and python3 (installed by name with
# apt-get when missing and run as root).
set -euo pipefail
(($# > 0)) || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
N=${BENCH_REQUESTS:-3000}

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v hey >/dev/null || missing+=(hey)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]} > 0)); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/origin.py" <<'PY'
import asyncio, sys
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            auth = b""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"authorization:"):
                    auth = line.split(b":", 1)[1].strip()
            body = b"credgate bench origin, fixed body; auth=" + auth + b"\n"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY

count() {
    local bin=$1 d
    d=$(mktemp -d "$WORK/run-XXXX")
    python3 "$WORK/origin.py" >"$d/origin-port" &
    PIDS+=($!)
    for _ in $(seq 1 100); do [[ -s $d/origin-port ]] && break; sleep 0.05; done
    local oport
    oport=$(cat "$d/origin-port")
    "$bin" ca init --out "$d/ca" >/dev/null
    cat >"$d/credgate.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0, token: { file: $d/admin-token } }
ca: { cert: $d/ca/ca.crt, key: $d/ca/ca.key }
audit: { path: $d/decisions.jsonl }
credentials:
  bench-origin:
    static: { env: CREDGATE_BENCH_ORIGIN_TOKEN }
    inject: { header: Authorization, format: "Bearer {token}" }
scopes:
  bench:
    - host: 127.0.0.1
      port: $oport
      schemes: [http]
      methods: [GET]
      paths: ["/bench"]
      credential: bench-origin
      allow_private: true
YAML
    CREDGATE_BENCH_ORIGIN_TOKEN="cgbench_$(openssl rand -hex 16)" \
        valgrind --tool=callgrind --callgrind-out-file="$d/callgrind.out" \
        "$bin" serve --config "$d/credgate.yaml" 2>"$d/stderr.log" &
    local cpid=$!
    PIDS+=("$cpid")
    for _ in $(seq 1 600); do
        grep -q '^credgate: proxy on ' "$d/stderr.log" 2>/dev/null && break
        sleep 0.1
    done
    local proxy admin id token
    proxy=$(grep -m1 -oE 'proxy on 127\.0\.0\.1:[0-9]+' "$d/stderr.log" | grep -oE '127[0-9.:]+')
    admin=$(grep -m1 -oE 'admin API on 127\.0\.0\.1:[0-9]+' "$d/stderr.log" | grep -oE '127[0-9.:]+')
    read -r id token < <("$bin" task start --json --scope bench --ttl 30m \
        --admin "http://$admin" --admin-token-file "$d/admin-token" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["token"])')
    local url="http://127.0.0.1:$oport/bench"
    hey -n 200 -c 10 -x "http://$id:$token@$proxy" "$url" >/dev/null
    callgrind_control -z "$cpid" >/dev/null 2>&1
    hey -n "$N" -c 10 -x "http://$id:$token@$proxy" "$url" >"$d/hey.txt"
    callgrind_control -d "$cpid" >/dev/null 2>&1
    kill -TERM "$cpid"
    wait "$cpid" 2>/dev/null || true
    local answered total
    answered=$(grep -oE '\[200\][[:space:]]+[0-9]+ responses' "$d/hey.txt" | grep -oE '[0-9]+ responses' | grep -oE '[0-9]+')
    total=$(grep -E '^totals:' "$d/callgrind.out.1" | awk '{print $2}')
    echo "$bin: $answered requests, $((total / answered)) instructions per request"
}

for bin in "$@"; do
    count "$(realpath "$bin")"
done
