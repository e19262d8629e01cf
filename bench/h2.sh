#!/usr/bin/env bash
# HTTP/2 benchmark: 100 concurrent streams on one HTTP/2 connection (h2load
# -c 1 -m 100), directly to the origin, through
# nginx terminating TLS and HTTP/2 as a reverse proxy (the floor: it
# forwards and adds a header, nothing more) and through credgate (CONNECT,
# TLS interception with HTTP/2 to the agent, a static credential injected,
# the response scrubbed), side by side in one run. h2load speaks no proxy
# protocol, so for credgate it connects to socat on the load core, which
# opens the CONNECT tunnel (with the task's Proxy-Authorization) and relays.
# See bench/README.md.
#
#   bash bench/h2.sh            8 s per run, 3 repetitions
#   bash bench/h2.sh --quick    4 s per run, 1 repetition
#
# Everything runs on 127.0.0.1; the origin listens on 127.0.0.1:443, the
# authority credgate's rule names. Every process started here is stopped by PID on exit. Environment
# overrides: BENCH_DURATION (seconds per run), BENCH_REPS, BENCH_STREAMS
# (concurrent streams, default 100), BENCH_LOAD_CPU / BENCH_PROXY_CPU,
# CREDGATE_BIN (skip the build), BENCH_KEEP=1. Needs root when nginx-light,
# nghttp2-client (h2load), socat, curl or openssl must be installed, and for
# port 443.

set -euo pipefail
export LC_ALL=C
BENCH_NAME=h2

QUICK=0
while (($# > 0)); do
    case "$1" in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "h2: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    DURATION=${BENCH_DURATION:-4}
    REPS=${BENCH_REPS:-1}
else
    DURATION=${BENCH_DURATION:-8}
    REPS=${BENCH_REPS:-3}
fi
STREAMS=${BENCH_STREAMS:-100}
PATHS=(direct nginx credgate)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v socat >/dev/null || missing+=(socat)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
install_packages "${missing[@]}"
build_credgate

NPROC=$(nproc)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
LOAD_CPU=${BENCH_LOAD_CPU:-0}
PROXY_CPU=${BENCH_PROXY_CPU:-1}
if ((NPROC < 2)); then
    log "warning: one CPU only; load generator, origin and proxy share it"
    LOAD_CPU=0 PROXY_CPU=0
fi
CLK_TCK=$(getconf CLK_TCK)

umask 077
WORK=$(mktemp -d "${TMPDIR:-/tmp}/credgate-h2.XXXXXX")
mkdir -p "$WORK/out"
CREDENTIAL="cgbench_$(openssl rand -hex 16)"
make_origin_certs

# nginx on the load core as the origin, HTTP/2 and HTTP/1.1 over TLS on
# 127.0.0.1:443, a ~100-byte body echoing the Authorization it received; and
# nginx on the proxy core terminating TLS and HTTP/2 and forwarding over TLS
# (HTTP/1.1, keep-alive: nginx's proxy speaks no HTTP/2 upstream).
start_nginx() {
    local name=$1 cpu=$2 port=$3 server=$4 d="$WORK/$1"
    mkdir -p "$d/logs" "$d/tmp"
    cat >"$d/nginx.conf" <<EOC
master_process off;
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    http2_max_requests 10000000;
    http2_max_concurrent_streams 256;
    default_type text/plain;
    ssl_certificate $WORK/origin-tls/origin.crt;
    ssl_certificate_key $WORK/origin-tls/origin.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    upstream origin_tls {
        server 127.0.0.1:443;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$port ssl http2;
        $server
    }
}
EOC
    taskset -c "$cpu" nginx -p "$d" -c "$d/nginx.conf" 2>>"$d/logs/stderr.log" &
    local pid=$!
    PIDS+=("$pid")
    if ! { wait_port "$port" && kill -0 "$pid" 2>/dev/null; }; then
        cat "$d/logs/stderr.log" "$d/logs/error.log" >&2 2>/dev/null || true
        die "nginx ($name) did not start"
    fi
    eval "${name^^}_PID=$pid"
}

if (exec 3<>"/dev/tcp/127.0.0.1/443") 2>/dev/null; then
    die "127.0.0.1:443 is in use; the origin needs it"
fi
start_nginx origin "$LOAD_CPU" 443 '
        location = /bench {
            return 200 "credgate bench origin, fixed body; auth=$http_authorization\n";
        }
        location / { return 404; }'
RP_PORT=$(free_port)
start_nginx rp "$PROXY_CPU" "$RP_PORT" "
        location / {
            proxy_pass https://origin_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Authorization \"Bearer $CREDENTIAL\";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $ORIGIN_CA;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
        }"

# credgate with one rule for the origin, injecting the static credential.
start_bench_credgate "$(cat <<EOF
    - host: 127.0.0.1
      schemes: [https]
      methods: [GET]
      paths: ["/bench"]
      credential: bench-origin
      allow_private: true
EOF
)" bench-h2

# The tunnel for h2load: each connection to RELAY_PORT becomes a CONNECT to
# 127.0.0.1:443 through credgate.
RELAY_PORT=$(free_port)
taskset -c "$LOAD_CPU" socat "TCP-LISTEN:$RELAY_PORT,bind=127.0.0.1,reuseaddr,fork" \
    "PROXY:${PROXY_ADDR%:*}:127.0.0.1:443,proxyport=${PROXY_ADDR##*:},proxyauth=$TASK_ID:$TASK_TOKEN" \
    2>>"$WORK/socat.log" &
PIDS+=("$!")
wait_port "$RELAY_PORT" || die "socat did not start"

# One request per path with curl over HTTP/2 before any load: the origin
# saw the credential (direct: the client's own), and through credgate the
# agent sees it masked.
check() {
    local what=$1 expect=$2 out
    shift 2
    out=$(curl -sS --http2 --max-time 10 -w '\n%{http_version} %{http_code}' "$@" 2>&1) ||
        die "check $what: curl failed: ${out//$CREDENTIAL/<credential>}"
    local tail=${out##*$'\n'} body=${out%$'\n'*}
    [[ $tail == "2 200" ]] || die "check $what: not an HTTP/2 200: $tail ${body//$CREDENTIAL/<credential>}"
    case $expect in
        echoed) [[ $body == *"auth=Bearer $CREDENTIAL"* ]] || die "check $what: the origin did not see the credential" ;;
        scrubbed) [[ $body != *"$CREDENTIAL"* && $body == *"auth=Bearer ****"* ]] ||
            die "check $what: not injected and scrubbed: ${body//$CREDENTIAL/<credential>}" ;;
    esac
    log "check $what: HTTP/2 200 ${body//$CREDENTIAL/<credential>}"
}
check direct echoed --cacert "$ORIGIN_CA" -H "Authorization: Bearer $CREDENTIAL" "https://127.0.0.1/bench"
check nginx echoed --cacert "$ORIGIN_CA" "https://127.0.0.1:$RP_PORT/bench"
check credgate scrubbed --cacert "$CREDGATE_CA" --proxy "$PROXY_URL" "https://127.0.0.1/bench"

# `run PATH REP`: one h2load run; appends "path rep rps mean_ms requests
# non2xx failed proxy_cpu_us_per_req" to the results.
run() {
    local path=$1 rep=$2 out="$WORK/out/$1-r$2.txt" pid="" t0=0 t1=0 url
    local -a args=(-c 1 -m "$STREAMS" -D "$DURATION" --warm-up-time=1)
    case $path in
        direct) url="https://127.0.0.1/bench" args+=(-H "authorization: Bearer $CREDENTIAL") ;;
        nginx) pid=$RP_PID url="https://127.0.0.1:$RP_PORT/bench" ;;
        credgate) pid=$CREDGATE_PID url="https://127.0.0.1:$RELAY_PORT/bench" args+=(-H ":authority: 127.0.0.1") ;;
    esac
    timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" h2load "${args[@]}" "$url" >"$out" 2>&1 &
    local load_pid=$!
    # The measurement starts after the warm-up second.
    sleep 1
    [[ -n $pid ]] && t0=$(cpu_ticks "$pid")
    wait "$load_pid" || log "warning: h2load ($path) exited with status $?"
    [[ -n $pid ]] && t1=$(cpu_ticks "$pid")
    awk -v path="$path" -v rep="$rep" -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v measured="${pid:+1}" '
        /^finished in/ { rps = $4 + 0 }
        /^requests:/ { total = $2; failed = $10 + $12 + $14 }
        /^status codes:/ { ok = $3 }
        /^time for request:/ { unit = $6; mean = $6 + 0; if (unit ~ /us$/) mean /= 1000; else if (unit ~ /[^m]s$/) mean *= 1000 }
        END {
            cpu = (measured && total > 0) ? sprintf("%.1f", ticks / hz * 1e6 / total) : "-"
            printf "%s %s %s %.3f %d %d %d %s\n", path, rep, rps, mean, total, total - ok, failed, cpu
        }' "$out" >>"$WORK/results.txt"
}

log "$STREAMS concurrent streams over one HTTP/2 connection, ${DURATION} s per run, $REPS repetition(s)"
for ((rep = 1; rep <= REPS; rep++)); do
    for path in "${PATHS[@]}"; do
        run "$path" "$rep"
    done
done

# The tunnels credgate's agents opened: one per h2load run (and one for the
# check) means every stream of a run shared one connection.
TUNNELS=$(grep -c '"method":"CONNECT"' "$AUDIT" 2>/dev/null || true)
RECORDS=$(wc -l <"$AUDIT")

echo "## HTTP/2: run of $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- machine: $NPROC CPU, kernel $(uname -r), load average before: $LOAD_BEFORE"
echo "- pinning: h2load + socat + origin nginx on CPU $LOAD_CPU, the proxy under test on CPU $PROXY_CPU; $DURATION s per run, $REPS repetition(s), median (min–max)"
echo "- load: h2load $(h2load --version 2>&1 | sed -n 's/^h2load nghttp2\///p'), -c 1 -m $STREAMS (one connection, $STREAMS streams in flight); origin nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), HTTP/2 and HTTP/1.1 over TLS"
echo "- credgate: $RECORDS records, $TUNNELS CONNECT tunnels for $REPS run(s)"
echo
echo "| path | req/s median (min–max) | ÷ nginx | mean ms per request | proxy CPU µs/req | non-2xx | failed |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk -v paths="${PATHS[*]}" '
    { rps[$1] = rps[$1] " " $3; mean[$1] = mean[$1] " " $4
      cpu[$1] = cpu[$1] " " $8; non2xx[$1] += $6; failed[$1] += $7 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function spread(list,   a, n, i, lo, hi) {
        n = split(list, a, " "); lo = hi = a[1]
        for (i = 2; i <= n; i++) { if (a[i] + 0 < lo + 0) lo = a[i]; if (a[i] + 0 > hi + 0) hi = a[i] }
        return n > 1 ? sprintf(" (%.0f–%.0f)", lo, hi) : ""
    }
    END {
        split(paths, order, " ")
        label["direct"] = "direct"; label["nginx"] = "nginx TLS reverse proxy (h2)"; label["credgate"] = "**credgate CONNECT+MITM (h2)**"
        floor = median(rps["nginx"])
        for (i = 1; i <= 3; i++) {
            p = order[i]; r = median(rps[p])
            c = (cpu[p] ~ /-/) ? "–" : sprintf("%.1f", median(cpu[p]))
            printf "| %s | %.0f%s | %.2f× | %.3f | %s | %d | %d |\n", label[p], r, spread(rps[p]),
                r / floor, median(mean[p]), c, non2xx[p], failed[p]
        }
        ratio = median(rps["credgate"]) / floor
        printf "\n| target | measured | goal | |\n|---|---:|---:|---|\n"
        printf "| h2 req/s, credgate ÷ nginx TLS RP (h2) | %.2f× | ≥ 1.0× | %s |\n", ratio, (ratio >= 1.0 ? "met" : "**not met**")
    }' "$WORK/results.txt"
echo
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
