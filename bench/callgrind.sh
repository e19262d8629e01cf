#!/usr/bin/env bash
# Instructions per request of credgate, counted by callgrind, on the plain
# forward path and on the intercepted one (CONNECT + TLS interception to a TLS
# origin): repeatable where timings on a shared 2-core machine are not.
#
#   bash bench/callgrind.sh BIN [BIN…]     e.g. two builds side by side
#
# One keep-alive origin on 127.0.0.1 (Python), plain HTTP and HTTPS with a
# certificate from a CA made here. For each binary: credgate under
# `valgrind --tool=callgrind` with one static credential injected and that CA
# trusted, a task; then for each path 200 warm-up requests, counters zeroed,
# N requests (BENCH_REQUESTS, default 3000) through `hey -c 10`, a dump.
# Prints credgate's instructions (every thread, the decision-log writer
# included) divided by the answered requests, per path and binary, and each
# binary's figure ÷ the first one's. The HTTPS origin listens on
# 127.0.0.1:443 (BENCH_HTTPS_PORT; hey names the server "host:port" when the
# URL has a port, which credgate refuses: see README), so it needs root, as
# does installing valgrind, hey, openssl and python3 by name with apt-get
# when missing.
set -euo pipefail
(($# > 0)) || { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
N=${BENCH_REQUESTS:-3000}
HTTPS_PORT=${BENCH_HTTPS_PORT:-443}
# Clients must not pick up a proxy from the caller's environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v hey >/dev/null || missing+=(hey)
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
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

die() {
    echo "callgrind.sh: $*" >&2
    exit 1
}

# The origin's CA and a certificate for 127.0.0.1, as bench/run.sh makes them.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=credgate bench origin CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$WORK/origin.key" -out "$WORK/origin.csr" 2>/dev/null
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$WORK/origin.ext"
openssl x509 -req -in "$WORK/origin.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/origin.ext" -out "$WORK/origin.crt" 2>/dev/null

cat >"$WORK/origin.py" <<'PY'
import asyncio, ssl, sys
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
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    writer.close()
async def main():
    cert, key, https_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    plain = await asyncio.start_server(handle, "127.0.0.1", 0)
    secure = await asyncio.start_server(handle, "127.0.0.1", https_port, ssl=tls)
    print(plain.sockets[0].getsockname()[1], flush=True)
    async with plain, secure:
        await asyncio.gather(plain.serve_forever(), secure.serve_forever())
asyncio.run(main())
PY

if (exec 3<>"/dev/tcp/127.0.0.1/$HTTPS_PORT") 2>/dev/null; then
    die "127.0.0.1:$HTTPS_PORT is in use; the HTTPS origin needs it (BENCH_HTTPS_PORT, see bench/README.md)"
fi
python3 "$WORK/origin.py" "$WORK/origin.crt" "$WORK/origin.key" "$HTTPS_PORT" >"$WORK/origin-port" 2>"$WORK/origin.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -s $WORK/origin-port ]] && break; sleep 0.05; done
[[ -s $WORK/origin-port ]] || { cat "$WORK/origin.log" >&2; die "the origin did not start"; }
OPORT=$(cat "$WORK/origin-port")
if [[ $HTTPS_PORT == 443 ]]; then HTTPS_AUTHORITY=127.0.0.1; else HTTPS_AUTHORITY=127.0.0.1:$HTTPS_PORT; fi
PATHS=("plain forward, http|http://127.0.0.1:$OPORT/bench"
    "CONNECT+MITM, https|https://$HTTPS_AUTHORITY/bench")
# One credential for every binary: the scrubber's prefilter is built from its
# bytes, and with a credential of its own per binary the same build measured
# up to 9 % apart from one run to the next.
CREDENTIAL="cgbench_$(openssl rand -hex 16)"

# `count BIN`: appends "BIN plain intercepted" (instructions per request) to
# $WORK/counts.
count() {
    local bin=$1 d
    d=$(mktemp -d "$WORK/run-XXXX")
    "$bin" ca init --out "$d/ca" >/dev/null
    cat >"$d/credgate.yaml" <<YAML
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0, token: { file: $d/admin-token } }
ca: { cert: $d/ca/ca.crt, key: $d/ca/ca.key }
audit: { path: $d/decisions.jsonl }
upstream: { extra_ca: $WORK/ca.crt }
credentials:
  bench-origin:
    static: { env: CREDGATE_BENCH_ORIGIN_TOKEN }
    inject: { header: Authorization, format: "Bearer {token}" }
scopes:
  bench:
    - host: 127.0.0.1
      port: $OPORT
      schemes: [http]
      methods: [GET]
      paths: ["/bench"]
      credential: bench-origin
      allow_private: true
    - host: 127.0.0.1
      port: $HTTPS_PORT
      schemes: [https]
      methods: [GET]
      paths: ["/bench"]
      credential: bench-origin
      allow_private: true
YAML
    CREDGATE_BENCH_ORIGIN_TOKEN=$CREDENTIAL \
        valgrind --tool=callgrind --callgrind-out-file="$d/callgrind.out" \
        "$bin" serve --config "$d/credgate.yaml" 2>"$d/stderr.log" &
    local cpid=$!
    PIDS+=("$cpid")
    for _ in $(seq 1 600); do
        grep -q '^credgate: proxy on ' "$d/stderr.log" 2>/dev/null && break
        sleep 0.1
    done
    local proxy admin id token
    proxy=$(grep -m1 -oE 'proxy on 127\.0\.0\.1:[0-9]+' "$d/stderr.log" | grep -oE '127[0-9.:]+' || true)
    admin=$(grep -m1 -oE 'admin API on 127\.0\.0\.1:[0-9]+' "$d/stderr.log" | grep -oE '127[0-9.:]+' || true)
    [[ -n $proxy && -n $admin ]] || { cat "$d/stderr.log" >&2; die "$bin did not start under valgrind"; }
    read -r id token < <("$bin" task start --json --scope bench --ttl 30m \
        --admin "http://$admin" --admin-token-file "$d/admin-token" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["token"])')
    local p name url dump=0 answered total tunnels through figures=()
    for p in "${PATHS[@]}"; do
        name=${p%%|*} url=${p#*|}
        # Warm-up out of the figure: for CONNECT it also mints and caches the
        # leaf; the counted run opens its own tunnels (CONNECT + handshake),
        # 10 or a few more when hey redials, counted from the decision log.
        hey -n 200 -c 10 -x "http://$id:$token@$proxy" "$url" >"$d/warmup.txt"
        sleep 1
        tunnels=$(grep -c '"method":"CONNECT"' "$d/decisions.jsonl" || true)
        callgrind_control -z "$cpid" >/dev/null 2>&1
        hey -n "$N" -c 10 -x "http://$id:$token@$proxy" "$url" >"$d/hey.txt"
        callgrind_control -d "$cpid" >/dev/null 2>&1
        sleep 1
        tunnels=$(($(grep -c '"method":"CONNECT"' "$d/decisions.jsonl" || true) - tunnels))
        dump=$((dump + 1))
        for _ in $(seq 1 100); do
            grep -q '^totals:' "$d/callgrind.out.$dump" 2>/dev/null && break
            sleep 0.1
        done
        answered=$(grep -oE '\[200\][[:space:]]+[0-9]+ responses' "$d/hey.txt" | grep -oE '[0-9]+ responses' | grep -oE '[0-9]+' || true)
        ((${answered:-0} > 0)) || { cat "$d/hey.txt" "$d/stderr.log" >&2; die "$bin: no request answered 200 on $name"; }
        total=$(grep -E '^totals:' "$d/callgrind.out.$dump" | awk '{print $2}')
        through=""
        if ((tunnels > 0)); then through=" in $tunnels tunnels"; fi
        echo "$bin: $name: $answered requests$through, $((total / answered)) instructions per request" >&2
        figures+=($((total / answered)))
    done
    kill -TERM "$cpid"
    wait "$cpid" 2>/dev/null || true
    echo "$bin ${figures[*]}" >>"$WORK/counts"
}

: >"$WORK/counts"
for bin in "$@"; do
    count "$(realpath "$bin")"
done

# One column per binary, then each later one ÷ the first.
names=("${PATHS[@]%%|*}")
awk -v paths="$(IFS=';'; echo "${names[*]}")" -v n="$N" '
    { bin[NR] = $1; for (i = 2; i <= NF; i++) v[NR, i - 1] = $i }
    END {
        np = split(paths, P, ";")
        head = "| path |"; rule = "|---|"
        for (b = 1; b <= NR; b++) { head = head " instructions/req, build " b " |"; rule = rule "---:|" }
        for (b = 2; b <= NR; b++) { head = head " build " b " ÷ build 1 |"; rule = rule "---:|" }
        print ""; print head; print rule
        for (p = 1; p <= np; p++) {
            line = "| " P[p] " |"
            for (b = 1; b <= NR; b++) line = line " " v[b, p] " |"
            for (b = 2; b <= NR; b++) line = line sprintf(" %.4f× |", v[b, p] / v[1, p])
            print line
        }
        print ""
        for (b = 1; b <= NR; b++) print "- build " b ": " bin[b]
        print "- " n " requests per path through hey -c 10, after 200 of warm-up"
    }
' "$WORK/counts"
