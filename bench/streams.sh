#!/usr/bin/env bash
# Streaming benchmark: a long download, a long upload and server-sent events
# over TLS, each directly to the origin, through nginx terminating TLS as a
# reverse proxy (the floor: it forwards and adds a header, nothing more) and
# through credgate (CONNECT + TLS interception, a static credential injected,
# the response scrubbed and the request body scanned), side by side in one
# run. See bench/README.md.
#
#   bash bench/streams.sh           1 GiB each way, 500 events, 3 repetitions
#   bash bench/streams.sh --quick   256 MiB each way, 100 events, 1 repetition
#
# Everything runs on 127.0.0.1. Every process started here is stopped by PID
# on exit. Environment overrides: BENCH_BYTES (bytes per transfer),
# BENCH_EVENTS, BENCH_INTERVAL_MS (between events, default 10), BENCH_REPS,
# BENCH_LOAD_CPU / BENCH_PROXY_CPU (cores for client+origin / proxy under
# test), CREDGATE_BIN (skip the build), BENCH_KEEP=1 (keep the work
# directory). Needs root when nginx-light, curl, openssl or python3 must be
# installed.

set -euo pipefail
export LC_ALL=C
BENCH_NAME=streams

QUICK=0
while (($# > 0)); do
    case "$1" in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "streams: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    BYTES=${BENCH_BYTES:-$((256 << 20))}
    EVENTS=${BENCH_EVENTS:-100}
    REPS=${BENCH_REPS:-1}
else
    BYTES=${BENCH_BYTES:-$((1 << 30))}
    EVENTS=${BENCH_EVENTS:-500}
    REPS=${BENCH_REPS:-3}
fi
INTERVAL_MS=${BENCH_INTERVAL_MS:-10}
PATHS=(direct nginx credgate)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Clients must not pick up a proxy from the caller's environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
STREAMS_PY=$REPO/bench/streams.py

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
install_packages "${missing[@]}"
build_credgate

NPROC=$(nproc)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
LOAD_CPU=${BENCH_LOAD_CPU:-0}
PROXY_CPU=${BENCH_PROXY_CPU:-1}
if ((NPROC < 2)); then
    log "warning: one CPU only; client, origin and proxy share it"
    LOAD_CPU=0 PROXY_CPU=0
fi
CLK_TCK=$(getconf CLK_TCK)

umask 077
WORK=$(mktemp -d "${TMPDIR:-/tmp}/credgate-streams.XXXXXX")
mkdir -p "$WORK/out"
CREDENTIAL="cgbench_$(openssl rand -hex 16)"

# --- the origin ----------------------------------------------------------------

# The bodies: random bytes (they do not compress, and hold no credential),
# written once, read in 1 MiB pieces by the origin and the upload client.
make_data() {
    DATA=$WORK/data.bin
    openssl rand -out "$DATA" "$BYTES"
}

start_origin() {
    local attempt
    for ((attempt = 0; attempt < 5; attempt++)); do
        ORIGIN_PORT=$(free_port)
        taskset -c "$LOAD_CPU" python3 "$STREAMS_PY" origin --port "$ORIGIN_PORT" \
            --cert "$WORK/origin-tls/origin.crt" --key "$WORK/origin-tls/origin.key" \
            --data "$DATA" 2>>"$WORK/origin.log" &
        ORIGIN_PID=$!
        PIDS+=("$ORIGIN_PID")
        if wait_port "$ORIGIN_PORT" && kill -0 "$ORIGIN_PID" 2>/dev/null; then
            return
        fi
        stop_pid "$ORIGIN_PID"
    done
    cat "$WORK/origin.log" >&2
    die "the origin did not start"
}

# --- the proxies ---------------------------------------------------------------

# nginx terminating TLS with the origin's certificate and forwarding over TLS
# to it (verified, keep-alive), as in run.sh, set up for streams: bodies pass
# through in both directions without being spooled to disk (no request
# buffering, no temporary files), 64 KiB buffers, no body size limit. The
# events' `X-Accel-Buffering: no` makes it pass each one on at once.
start_nginx_rp() {
    local d="$WORK/nginx-rp"
    mkdir -p "$d/logs" "$d/tmp"
    RP_PORT=$(free_port)
    cat >"$d/nginx.conf" <<EOC
master_process off;
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    upstream origin_tls {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$RP_PORT ssl;
        ssl_certificate $WORK/origin-tls/origin.crt;
        ssl_certificate_key $WORK/origin-tls/origin.key;
        client_max_body_size 0;
        client_body_buffer_size 64k;
        location / {
            proxy_pass https://origin_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $CREDENTIAL";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $ORIGIN_CA;
            # nginx 1.22 checks the name against DNS names only; the origin's
            # certificate has both.
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }
    }
}
EOC
    taskset -c "$PROXY_CPU" nginx -p "$d" -c "$d/nginx.conf" 2>>"$d/logs/stderr.log" &
    NGINXRP_PID=$!
    PIDS+=("$NGINXRP_PID")
    if ! { wait_port "$RP_PORT" && kill -0 "$NGINXRP_PID" 2>/dev/null; }; then
        cat "$d/logs/stderr.log" "$d/logs/error.log" >&2 2>/dev/null || true
        die "nginx reverse proxy did not start"
    fi
}

# credgate with one scope for the origin: GET /echo, /download, /events and
# PUT /upload, each injecting the static credential (so every response is
# scrubbed for it, and every request body scanned), the origin's CA trusted.
start_credgate() {
    start_bench_credgate "$(cat <<EOF
    - host: 127.0.0.1
      port: $ORIGIN_PORT
      schemes: [https]
      methods: [GET]
      paths: ["/echo", "/download", "/events"]
      credential: bench-origin
      allow_private: true
    - host: 127.0.0.1
      port: $ORIGIN_PORT
      schemes: [https]
      methods: [PUT]
      paths: ["/upload"]
      credential: bench-origin
      allow_private: true
EOF
)" bench-streams
}

# --- checks and load -----------------------------------------------------------

# One GET /echo per path with curl (verifying TLS) before any load: the
# origin must have seen the credential, which only credgate may hide again.
sanity_checks() {
    local fail=0 out
    check() {
        local what=$1 expect=$2
        shift 2
        if ! out=$(curl -sS --max-time 10 -w '\n%{http_code}' "$@" 2>&1); then
            log "check $what: curl failed: $out"
            fail=1
            return
        fi
        local body=${out%$'\n'*} code=${out##*$'\n'}
        body=${body%$'\n'}
        if [[ $code != 200 ]]; then
            log "check $what: status $code: $body"
            fail=1
        elif [[ $expect == echoed && $body != *"auth=Bearer $CREDENTIAL"* ]]; then
            log "check $what: the origin did not see the credential: $body"
            fail=1
        elif [[ $expect == scrubbed && ($body == *"$CREDENTIAL"* || $body != *"auth=Bearer ****"*) ]]; then
            log "check $what: not injected and scrubbed: ${body//$CREDENTIAL/<credential>}"
            fail=1
        elif [[ $body == *"$TASK_TOKEN"* ]]; then
            log "check $what: the task token reached the client"
            fail=1
        else
            log "check $what: 200 ${body//$CREDENTIAL/<credential>}"
        fi
    }
    check direct echoed --cacert "$ORIGIN_CA" -H "Authorization: Bearer $CREDENTIAL" \
        "https://127.0.0.1:$ORIGIN_PORT/echo"
    check nginx echoed --cacert "$ORIGIN_CA" "https://127.0.0.1:$RP_PORT/echo"
    check credgate scrubbed --proxy "$PROXY_URL" --cacert "$CREDGATE_CA" \
        "https://127.0.0.1:$ORIGIN_PORT/echo"
    ((fail == 0)) || die "a sanity check failed; not measuring a broken setup"
}

# `client KIND PATH ARGS…`: bench/streams.py KIND through PATH, on the load
# core, bounded in time; prints its JSON line.
client() {
    local kind=$1 path=$2 limit
    shift 2
    if [[ $kind == events ]]; then
        limit=$((EVENTS * INTERVAL_MS / 1000 + 60))
    else
        limit=600
    fi
    local target=(--url "https://127.0.0.1:$ORIGIN_PORT$1" --ca "$ORIGIN_CA")
    case $path in
        nginx) target=(--url "https://127.0.0.1:$RP_PORT$1" --ca "$ORIGIN_CA") ;;
        credgate) target+=(--proxy "$PROXY_ADDR" --auth "$PROXY_BASIC" --ca "$CREDGATE_CA") ;;
    esac
    shift
    timeout "$limit" taskset -c "$LOAD_CPU" python3 "$STREAMS_PY" "$kind" "${target[@]}" "$@" ||
        true
}

proxy_pid() {
    case $1 in
        nginx) echo "$NGINXRP_PID" ;;
        credgate) echo "$CREDGATE_PID" ;;
        *) echo "" ;;
    esac
}

json_field() {
    python3 -c 'import json, sys
try:
    v = json.loads(sys.argv[1]).get(sys.argv[2])
except ValueError:
    v = None
print("" if v is None else v)' "$1" "$2"
}

# One transfer: KIND (download, upload) through PATH, repetition REP; appends
# "kind path rep MB/s proxy-CPU-s/GB origin-CPU-s/GB client-CPU-s/GB ok" to
# $WORK/results.tsv.
measure_bulk() {
    local kind=$1 path=$2 rep=$3 pid p0=0 p1=0 o0 o1 out ok
    pid=$(proxy_pid "$path")
    [[ -n $pid ]] && p0=$(cpu_ticks "$pid")
    o0=$(cpu_ticks "$ORIGIN_PID")
    if [[ $kind == download ]]; then
        out=$(client download "$path" "/download?bytes=$BYTES" --bytes "$BYTES")
    else
        out=$(client upload "$path" /upload --bytes "$BYTES" --data "$DATA")
    fi
    o1=$(cpu_ticks "$ORIGIN_PID")
    [[ -n $pid ]] && p1=$(cpu_ticks "$pid")
    echo "$out" >"$WORK/out/$kind-$path-r$rep.json"
    local seconds status got client_cpu
    seconds=$(json_field "$out" seconds)
    status=$(json_field "$out" status)
    if [[ $kind == download ]]; then got=$(json_field "$out" bytes); else got=$(json_field "$out" received); fi
    client_cpu=$(json_field "$out" client_cpu)
    ok=0
    [[ $status == 200 && $got == "$BYTES" ]] && ok=1
    awk -v k="$kind" -v p="$path" -v r="$rep" -v b="$BYTES" -v s="${seconds:-0}" -v pt=$((p1 - p0)) \
        -v ot=$((o1 - o0)) -v c="${client_cpu:-0}" -v hz="$CLK_TCK" -v ok="$ok" -v pid="$pid" 'BEGIN {
        gb = b / 1e9
        printf "%s\t%s\t%s\t%.1f\t%s\t%.3f\t%.3f\t%d\n", k, p, r, (s > 0 ? b / s / 1e6 : 0),
            (pid == "" ? "-" : sprintf("%.3f", pt / hz / gb)), ot / hz / gb, c / gb, ok
    }' >>"$WORK/results.tsv"
    log "$(printf '%-8s %-8s rep %d: %s' "$kind" "$path" "$rep" "$(tail -1 "$WORK/results.tsv" | cut -f4-8 |
        awk -F'\t' '{ printf "%8s MB/s  proxy %s s/GB  origin %s s/GB  client %s s/GB  ok %s", $1, $2, $3, $4, $5 }')")"
}

# One event stream through PATH, repetition REP; appends "events path rep
# p50 p99 max received expected" (ms) to $WORK/events.tsv.
measure_events() {
    local path=$1 rep=$2 out
    out=$(client events "$path" "/events?count=$EVENTS&interval_ms=$INTERVAL_MS" \
        --count "$EVENTS" --interval-ms "$INTERVAL_MS")
    echo "$out" >"$WORK/out/events-$path-r$rep.json"
    printf 'events\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "$rep" "$(json_field "$out" p50_ms)" \
        "$(json_field "$out" p99_ms)" "$(json_field "$out" max_ms)" "$(json_field "$out" events)" \
        "$EVENTS" >>"$WORK/events.tsv"
    log "$(printf 'events   %-8s rep %d: ' "$path" "$rep")$(tail -1 "$WORK/events.tsv" |
        awk -F'\t' '{ printf "p50 %.3f ms  p99 %.3f ms  max %.3f ms  %s/%s events", $4, $5, $6, $7, $8 }')"
}

# --- report --------------------------------------------------------------------

# `summary FILE KIND PATH COLUMN`: "median (min–max)" of COLUMN over the
# repetitions, or the median alone when there is one ("–" when none).
summary() {
    awk -F'\t' -v k="$2" -v p="$3" -v c="$4" '$1 == k && $2 == p && $c != "-" && $c != "" { print $c + 0 }' "$1" |
        sort -g | awk '{ v[++n] = $1 }
    END {
        if (n == 0) { print "–"; exit }
        m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        if (n == 1) printf "%s\n", fmt(m); else printf "%s (%s–%s)\n", fmt(m), fmt(v[1]), fmt(v[n])
    }
    function fmt(x) { return (x >= 100) ? sprintf("%.0f", x) : (x >= 1 ? sprintf("%.2f", x) : sprintf("%.3f", x)) }'
}

# The median alone, as a plain number ("" when none).
median() {
    summary "$@" | awk '{ print ($1 == "–") ? "" : $1 }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.2f×\n", a / b }'
}

report() {
    local kind path
    echo "| stream | path | MB/s median (min–max) | ÷ nginx | ÷ direct | proxy CPU s/GB | origin CPU s/GB | client CPU s/GB | transfers ok |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for kind in download upload; do
        local nginx direct
        nginx=$(median "$WORK/results.tsv" "$kind" nginx 4)
        direct=$(median "$WORK/results.tsv" "$kind" direct 4)
        for path in "${PATHS[@]}"; do
            local m okn total
            m=$(median "$WORK/results.tsv" "$kind" "$path" 4)
            okn=$(awk -F'\t' -v k="$kind" -v p="$path" '$1 == k && $2 == p && $8 == 1 { n++ } END { print n + 0 }' "$WORK/results.tsv")
            total=$(awk -F'\t' -v k="$kind" -v p="$path" '$1 == k && $2 == p { n++ } END { print n + 0 }' "$WORK/results.tsv")
            echo "| $kind $(mib_of "$BYTES") | $(path_name "$path") | $(summary "$WORK/results.tsv" "$kind" "$path" 4) | $(ratio "$m" "$nginx") | $(ratio "$m" "$direct") | $(summary "$WORK/results.tsv" "$kind" "$path" 5) | $(summary "$WORK/results.tsv" "$kind" "$path" 6) | $(summary "$WORK/results.tsv" "$kind" "$path" 7) | $okn / $total |"
        done
    done
    echo
    echo "| events ($EVENTS, ${INTERVAL_MS} ms apart) | p50 ms | p99 ms | max ms | added p50 ms | added p99 ms | events received |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    local d50 d99
    d50=$(median "$WORK/events.tsv" events direct 4)
    d99=$(median "$WORK/events.tsv" events direct 5)
    for path in "${PATHS[@]}"; do
        local p50 p99 added50="–" added99="–" got
        p50=$(median "$WORK/events.tsv" events "$path" 4)
        p99=$(median "$WORK/events.tsv" events "$path" 5)
        if [[ $path != direct ]]; then
            added50=$(awk -v a="$p50" -v b="$d50" 'BEGIN { printf "%+.3f", a - b }')
            added99=$(awk -v a="$p99" -v b="$d99" 'BEGIN { printf "%+.3f", a - b }')
        fi
        got=$(awk -F'\t' -v p="$path" '$2 == p { g += $7; e += $8 } END { printf "%d / %d", g, e }' "$WORK/events.tsv")
        echo "| $(path_name "$path") | $(summary "$WORK/events.tsv" events "$path" 4) | $(summary "$WORK/events.tsv" events "$path" 5) | $(summary "$WORK/events.tsv" events "$path" 6) | $added50 | $added99 | $got |"
    done
}

mib_of() {
    awk -v b="$1" 'BEGIN { if (b >= 1073741824 && b % 1073741824 == 0) printf "%d GiB", b / 1073741824; else printf "%d MiB", b / 1048576 }'
}

path_name() {
    case $1 in
        direct) echo "direct" ;;
        nginx) echo "nginx TLS reverse proxy" ;;
        credgate) echo "**credgate CONNECT+MITM**" ;;
    esac
}

targets() {
    local dl ul d99 c99 dr ur added
    dl=$(ratio "$(median "$WORK/results.tsv" download credgate 4)" "$(median "$WORK/results.tsv" download nginx 4)")
    ul=$(ratio "$(median "$WORK/results.tsv" upload credgate 4)" "$(median "$WORK/results.tsv" upload nginx 4)")
    d99=$(median "$WORK/events.tsv" events direct 5)
    c99=$(median "$WORK/events.tsv" events credgate 5)
    added=$(awk -v a="$c99" -v b="$d99" 'BEGIN { printf "%+.3f", a - b }')
    met() { awk -v v="${1%×}" -v op="$2" -v g="$3" 'BEGIN { ok = (op == ">=") ? v + 0 >= g : v + 0 < g; print ok ? "met" : "**not met**" }'; }
    echo "| target | measured | goal | |"
    echo "|---|---:|---:|---|"
    echo "| bulk download MB/s, credgate ÷ nginx | $dl | ≥ 0.8× | $(met "$dl" ">=" 0.8) |"
    echo "| upload MB/s, credgate ÷ nginx | $ul | ≥ 0.8× | $(met "$ul" ">=" 0.8) |"
    echo "| SSE p99 added by credgate (through − direct) | $added ms | < 1 ms | $(met "$added" "<" 1) |"
}

# --- run -----------------------------------------------------------------------

make_origin_certs
make_data
start_origin
start_nginx_rp
start_credgate
log "origin https://127.0.0.1:$ORIGIN_PORT (pid $ORIGIN_PID, cpu $LOAD_CPU)"
log "nginx reverse proxy https://127.0.0.1:$RP_PORT (pid $NGINXRP_PID, cpu $PROXY_CPU)"
log "credgate $PROXY_ADDR (pid $CREDGATE_PID, cpu $PROXY_CPU), task $TASK_ID"
sanity_checks

# A short warm-up per path: connections, the leaf certificate, the page cache.
for path in "${PATHS[@]}"; do
    client download "$path" "/download?bytes=$((16 << 20))" --bytes $((16 << 20)) >/dev/null
done

log "measuring: $(mib_of "$BYTES") each way, $EVENTS events ${INTERVAL_MS} ms apart, $REPS repetition(s), paths interleaved"
: >"$WORK/results.tsv"
: >"$WORK/events.tsv"
for ((rep = 1; rep <= REPS; rep++)); do
    for kind in download upload; do
        for path in "${PATHS[@]}"; do
            measure_bulk "$kind" "$path" "$rep"
        done
    done
    for path in "${PATHS[@]}"; do
        measure_events "$path" "$rep"
    done
done

RECORDS=$(wc -l <"$AUDIT")
DENIES=$(grep -c '"decision":"deny"' "$AUDIT" || true)
LEAKED=$(grep -c -F -e "$CREDENTIAL" -e "$TASK_TOKEN" "$AUDIT" || true)
CG_ERRORS=$(grep -c -E ' (ERROR|WARN) ' "$WORK/credgate/stderr.log" || true)
FAILED=$(awk -F'\t' '$8 != 1 { n++ } END { print n + 0 }' "$WORK/results.tsv")
FAILED=$((FAILED + $(awk -F'\t' '$7 != $8 { n++ } END { print n + 0 }' "$WORK/events.tsv")))

echo
echo "## credgate streaming benchmark — $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "- machine: $NPROC CPU ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), load average before: $LOAD_BEFORE"
echo "- pinning: client + origin (Python, bench/streams.py) on CPU $LOAD_CPU, the proxy under test on CPU $PROXY_CPU; $REPS repetition(s), median (min–max)"
echo "- tools: nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), Python $(python3 -c 'import platform, ssl; print(platform.python_version(), "with", ssl.OPENSSL_VERSION)'), credgate $("$BIN" --version | awk '{ print $2 }')"
echo "- bodies: $BYTES random bytes each way (MB = 10^6 bytes, GB = 10^9); events: $EVENTS, ${INTERVAL_MS} ms apart, latency = arrival − send time (CLOCK_MONOTONIC)"
echo
report
echo
echo "### Targets"
echo
targets
echo
echo "- decision log: $RECORDS records, deny records: $DENIES, credential or task token in it: $LEAKED lines; credgate WARN/ERROR log lines: $CG_ERRORS"
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((FAILED > 0 || DENIES > 0 || LEAKED > 0)); then
    echo
    echo "**problems**: $FAILED transfer(s) or event stream(s) incomplete, $DENIES deny records, $LEAKED leaked lines"
    for f in "$WORK"/out/*.json; do
        grep -q -E '"error"|"status": [^2]' "$f" && echo "- $(basename "$f" .json): $(head -c 300 "$f")"
    done
    exit 1
fi
