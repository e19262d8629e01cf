#!/usr/bin/env bash
# credgate benchmark: a local origin directly, through credgate as a plain
# HTTP forward proxy, and through credgate with CONNECT + TLS interception,
# each at 1 and 50 connections, side by side in one run. See bench/README.md.
#
#   bash bench/run.sh            8 s per run, 3 repetitions, median reported
#   bash bench/run.sh --quick    2 s per run, 1 repetition (smoke check)
#
# Everything runs on 127.0.0.1. Every process started here is stopped by PID
# on exit. Environment overrides: BENCH_DURATION (s), BENCH_REPS,
# BENCH_LOAD_CPU / BENCH_PROXY_CPU (cores for load+origin / credgate),
# BENCH_HTTPS_PORT (default 443, see README), CREDGATE_BIN (skip the build),
# BENCH_KEEP=1 (keep the work directory). Needs root and 127.0.0.1:443.

set -euo pipefail
export LC_ALL=C

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench: unknown argument $arg" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ $QUICK == 1 ]]; then
    DURATION=${BENCH_DURATION:-2}
    REPS=${BENCH_REPS:-1}
else
    DURATION=${BENCH_DURATION:-8}
    REPS=${BENCH_REPS:-3}
fi
WARMUP=1
CONNS=(1 50)
SCENARIOS=(direct-http proxy-http direct-https connect-https)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Clients must not pick up a proxy from the caller's environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

# --- cleanup ---------------------------------------------------------------

PIDS=()
WORK=""
POLICY_RC_CREATED=0

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    if [[ $POLICY_RC_CREATED == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${BENCH_KEEP:-0} == 1 ]]; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -----------------------------------------------------------------

# Debian packages that provide the tools, installed by name when missing.
ensure_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v hey >/dev/null || missing+=(hey)
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v base64 >/dev/null || missing+=(coreutils)
    if ((${#missing[@]} == 0)); then
        return
    fi
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root to install them, or install them yourself"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} (Debian packages)"
    # Keep Debian from starting the nginx service it installs.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    mkdir -p /var/tmp
    TMPDIR=/var/tmp apt-get update -qq
    TMPDIR=/var/tmp DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
    if [[ $POLICY_RC_CREATED == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
}

build_credgate() {
    if [[ -n ${CREDGATE_BIN:-} ]]; then
        BIN=$CREDGATE_BIN
    else
        command -v cargo >/dev/null || die "cargo not found (Rust is needed to build credgate)"
        log "building credgate (cargo build --release)"
        (cd "$REPO" && cargo build --release --quiet --bin credgate)
        BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/credgate"
    fi
    [[ -x $BIN ]] || die "no credgate binary at $BIN"
}

# --- helpers ---------------------------------------------------------------

# A TCP port nothing listens on now (the origin's ports; credgate binds :0).
free_port() {
    local port i
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

wait_port() {
    local port=$1 i
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

cpu_ticks() {
    local f
    read -r -a f <"/proc/$1/stat"
    echo $((f[13] + f[14]))
}

rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

hwm_kb() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

records() {
    if [[ -f $AUDIT ]]; then
        wc -l <"$AUDIT"
    else
        echo 0
    fi
}

# --- setup -----------------------------------------------------------------

ensure_tools
build_credgate

NPROC=$(nproc)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
LOAD_CPU=${BENCH_LOAD_CPU:-0}
PROXY_CPU=${BENCH_PROXY_CPU:-1}
if ((NPROC < 2)); then
    log "warning: one CPU only; load generator, origin and credgate share it"
    LOAD_CPU=0 PROXY_CPU=0
fi
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/credgate-bench.XXXXXX")
chmod 700 "$WORK"
AUDIT="$WORK/credgate/decisions.jsonl"

# The origin's own CA and a certificate for 127.0.0.1; credgate trusts the CA
# through upstream.extra_ca.
make_origin_certs() {
    local d="$WORK/origin-tls"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=credgate bench origin CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=127.0.0.1" -keyout "$d/origin.key" -out "$d/origin.csr" 2>/dev/null
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$d/origin.ext"
    openssl x509 -req -in "$d/origin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -CAcreateserial -days 2 -extfile "$d/origin.ext" -out "$d/origin.crt" 2>/dev/null
    ORIGIN_CA="$d/ca.crt"
}

# nginx: one process on the load core, a ~100-byte body that echoes the
# Authorization header it received (credgate must scrub it on the way back).
start_nginx() {
    local d="$WORK/nginx" attempt
    mkdir -p "$d/logs" "$d/tmp"
    # hey 0.1.4 (Debian) sends "host:port" as the TLS server name whenever
    # the URL has a port; a server name with a port is invalid (RFC 6066), and
    # credgate's TLS stack refuses it. On the default port hey sends none (IP
    # literal), so the HTTPS origin listens on 127.0.0.1:443.
    HTTPS_PORT=${BENCH_HTTPS_PORT:-443}
    if (exec 3<>"/dev/tcp/127.0.0.1/$HTTPS_PORT") 2>/dev/null; then
        die "127.0.0.1:$HTTPS_PORT is in use; the HTTPS origin needs it (see bench/README.md)"
    fi
    if [[ $HTTPS_PORT == 443 ]]; then
        HTTPS_AUTHORITY=127.0.0.1
    else
        HTTPS_AUTHORITY=127.0.0.1:$HTTPS_PORT
    fi
    for ((attempt = 0; attempt < 5; attempt++)); do
        HTTP_PORT=$(free_port)
        cat >"$d/nginx.conf" <<EOF
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
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    default_type text/plain;
    ssl_certificate $WORK/origin-tls/origin.crt;
    ssl_certificate_key $WORK/origin-tls/origin.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen 127.0.0.1:$HTTP_PORT;
        listen 127.0.0.1:$HTTPS_PORT ssl;
        location = /bench {
            return 200 "credgate bench origin, fixed body; auth=\$http_authorization\n";
        }
        location / { return 404; }
    }
}
EOF
        taskset -c "$LOAD_CPU" nginx -p "$d" -c "$d/nginx.conf" 2>>"$d/logs/stderr.log" &
        NGINX_PID=$!
        PIDS+=("$NGINX_PID")
        if wait_port "$HTTP_PORT" && wait_port "$HTTPS_PORT" && kill -0 "$NGINX_PID" 2>/dev/null; then
            return
        fi
        stop_pid "$NGINX_PID"
    done
    cat "$d/logs/stderr.log" "$d/logs/error.log" >&2 2>/dev/null || true
    die "nginx did not start"
}

start_credgate() {
    local d="$WORK/credgate" i line
    mkdir -p "$d"
    "$BIN" ca init --out "$d/ca" >/dev/null
    cat >"$d/credgate.yaml" <<EOF
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0, token: { file: $d/admin-token } }
ca: { cert: $d/ca/ca.crt, key: $d/ca/ca.key }
audit: { path: $AUDIT }
upstream: { extra_ca: $ORIGIN_CA }
credentials:
  bench-origin:
    static: { env: CREDGATE_BENCH_ORIGIN_TOKEN }
    inject: { header: Authorization, format: "Bearer {token}" }
scopes:
  bench:
    - host: 127.0.0.1
      port: $HTTP_PORT
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
EOF
    CREDGATE_BENCH_ORIGIN_TOKEN=$CREDENTIAL taskset -c "$PROXY_CPU" \
        "$BIN" serve --config "$d/credgate.yaml" 2>"$d/stderr.log" &
    CREDGATE_PID=$!
    PIDS+=("$CREDGATE_PID")
    for ((i = 0; i < 200; i++)); do
        line=$(grep -m1 '^credgate: proxy on ' "$d/stderr.log" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$CREDGATE_PID" 2>/dev/null || break
        sleep 0.05
    done
    if [[ -z $line ]]; then
        cat "$d/stderr.log" >&2
        die "credgate did not start"
    fi
    # "credgate: proxy on 127.0.0.1:P, admin API on 127.0.0.1:Q (config …)"
    PROXY_ADDR=$(sed -E 's/^credgate: proxy on ([^,]+),.*/\1/' <<<"$line")
    ADMIN_ADDR=$(sed -E 's/.*admin API on ([^ ]+) .*/\1/' <<<"$line")
    local json
    json=$("$BIN" task start --json --scope bench --ttl 2h --agent bench --label run=bench \
        --admin "http://$ADMIN_ADDR" --admin-token-file "$d/admin-token" --ca "$d/ca/ca.crt")
    TASK_ID=$(sed -nE 's/^  "id": "([^"]+)",?$/\1/p' <<<"$json")
    TASK_TOKEN=$(sed -nE 's/^  "token": "([^"]+)",?$/\1/p' <<<"$json")
    [[ -n $TASK_ID && -n $TASK_TOKEN ]] || die "could not read the task id and token from: task start --json"
    PROXY_BASIC=$(printf '%s:%s' "$TASK_ID" "$TASK_TOKEN" | base64 -w0)
    PROXY_URL="http://$TASK_ID:$TASK_TOKEN@$PROXY_ADDR"
}

# One request per path with curl (verifying TLS), before any load: each must
# answer 200 with the credential echoed back only where no proxy is in play.
sanity_checks() {
    local out body fail=0
    check() {
        local what=$1 expect_cred=$2
        shift 2
        if ! out=$(curl -sS --max-time 10 -w '\n%{http_code}' "$@" 2>&1); then
            log "check $what: curl failed: $out"
            fail=1
            return
        fi
        body=${out%$'\n'*}
        local code=${out##*$'\n'}
        if [[ $code != 200 ]]; then
            log "check $what: status $code: $body"
            fail=1
        elif [[ $expect_cred == yes && $body != *"$CREDENTIAL"* ]]; then
            log "check $what: origin did not echo the credential: $body"
            fail=1
        elif [[ $expect_cred == no && $body == *"$CREDENTIAL"* ]]; then
            log "check $what: the credential reached the client: $body"
            fail=1
        elif [[ $expect_cred == no && $body != *"auth=Bearer "* ]]; then
            log "check $what: credgate did not inject the credential: $body"
            fail=1
        elif [[ $body == *"$TASK_TOKEN"* ]]; then
            log "check $what: the task token reached the client"
            fail=1
        else
            log "check $what: 200 ${body%%$'\n'*}"
        fi
    }
    check direct-http yes -H "Authorization: Bearer $CREDENTIAL" "http://127.0.0.1:$HTTP_PORT/bench"
    check direct-https yes --cacert "$ORIGIN_CA" -H "Authorization: Bearer $CREDENTIAL" \
        "https://$HTTPS_AUTHORITY/bench"
    check proxy-http no --proxy "$PROXY_URL" "http://127.0.0.1:$HTTP_PORT/bench"
    check connect-https no --proxy "$PROXY_URL" --cacert "$WORK/credgate/ca/ca.crt" \
        "https://$HTTPS_AUTHORITY/bench"
    ((fail == 0)) || die "a sanity check failed; not measuring a broken setup"
}

# --- load ------------------------------------------------------------------

write_wrk_script() {
    cat >"$WORK/proxy.lua" <<EOF
-- Absolute-form requests to credgate, authenticated as the bench task.
wrk.method = "GET"
wrk.path = "http://127.0.0.1:$HTTP_PORT/bench"
wrk.headers["Host"] = "127.0.0.1:$HTTP_PORT"
wrk.headers["Proxy-Authorization"] = "Basic $PROXY_BASIC"
EOF
}

# Runs one load generator for `secs` seconds; its output goes to `out`.
load() {
    local scenario=$1 conns=$2 secs=$3 out=$4
    local limit=$((secs + 30))
    case $scenario in
        direct-http)
            timeout "$limit" taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency \
                -H "Authorization: Bearer $CREDENTIAL" "http://127.0.0.1:$HTTP_PORT/bench" >"$out" 2>&1
            ;;
        proxy-http)
            timeout "$limit" taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency \
                -s "$WORK/proxy.lua" "http://$PROXY_ADDR/" >"$out" 2>&1
            ;;
        direct-https)
            SSL_CERT_FILE=$ORIGIN_CA timeout "$limit" taskset -c "$LOAD_CPU" hey -cpus 1 \
                -c "$conns" -z "${secs}s" -H "Authorization: Bearer $CREDENTIAL" \
                "https://$HTTPS_AUTHORITY/bench" >"$out" 2>&1
            ;;
        connect-https)
            SSL_CERT_FILE=$WORK/credgate/ca/ca.crt timeout "$limit" taskset -c "$LOAD_CPU" hey -cpus 1 \
                -c "$conns" -z "${secs}s" -x "$PROXY_URL" \
                "https://$HTTPS_AUTHORITY/bench" >"$out" 2>&1
            ;;
    esac
}

# wrk/hey output → "rps p50_ms p99_ms requests non2xx errors". hey prints
# latencies in seconds with four decimals, so its percentiles come in 0.1 ms steps.
parse_wrk() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        / requests in / { reqs = $1 }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
        # No summary at all (the tool failed) counts as an error.
        END { printf "%.2f %.3f %.3f %d %d %d\n", rps, p50, p99, reqs, bad, errs + (rps == "") }
    ' "$1"
}

parse_hey() {
    awk '
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" && $2 == "in" { p50 = $3 * 1000 }
        $1 == "99%" && $2 == "in" { p99 = $3 * 1000 }
        /^Status code distribution:/ { section = "status"; next }
        /^Error distribution:/ { section = "errors"; next }
        /^[A-Z]/ { section = "" }
        section == "status" && $1 ~ /^\[[0-9]+\]$/ {
            code = substr($1, 2, length($1) - 2) + 0
            reqs += $2
            if (code < 200 || code > 299) bad += $2
        }
        section == "errors" && $1 ~ /^\[[0-9]+\]$/ { errs += substr($1, 2, length($1) - 2) }
        # No summary at all (the tool failed) counts as an error.
        END { printf "%.2f %.3f %.3f %d %d %d\n", rps, p50, p99, reqs, bad, errs + (rps == "") }
    ' "$1"
}

# One measured run; appends a line to results.tsv.
measure() {
    local scenario=$1 conns=$2 rep=$3
    local out="$WORK/out/$scenario-c$conns-r$rep.txt"
    local cpu0 cpu1 rec0 rec1 nx0 nx1 parsed
    rec0=$(records)
    cpu0=$(cpu_ticks "$CREDGATE_PID")
    nx0=$(cpu_ticks "$NGINX_PID")
    load "$scenario" "$conns" "$DURATION" "$out" || log "warning: $scenario c=$conns exited with status $?"
    cpu1=$(cpu_ticks "$CREDGATE_PID")
    nx1=$(cpu_ticks "$NGINX_PID")
    # Records of requests cut off at the end are written when their guard drops.
    sleep 0.2
    rec1=$(records)
    if [[ $scenario == *https ]]; then
        parsed=$(parse_hey "$out")
    else
        parsed=$(parse_wrk "$out")
    fi
    # scenario conns rep rps p50 p99 requests non2xx errors cg_cpu_us nginx_cpu_us records rss_kb
    printf '%s %s %s %s %s %s %s\n' "$scenario" "$conns" "$rep" "$parsed" \
        "$(((cpu1 - cpu0) * 1000000 / CLK_TCK))" "$(((nx1 - nx0) * 1000000 / CLK_TCK))" \
        "$((rec1 - rec0)) $(rss_kb "$CREDGATE_PID")" >>"$WORK/results.tsv"
    local f
    read -r -a f <<<"$parsed"
    log "$(printf '%-14s c=%-3s rep %s: %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  non-2xx %s  errors %s' \
        "$scenario" "$conns" "$rep" "${f[0]:-0}" "${f[1]:-0}" "${f[2]:-0}" "${f[4]:-0}" "${f[5]:-0}")"
    kill -0 "$CREDGATE_PID" 2>/dev/null || die "credgate exited during $scenario c=$conns (see its stderr above)"
}

# --- report ----------------------------------------------------------------

report() {
    awk -v scenarios="${SCENARIOS[*]}" -v conns="${CONNS[*]}" '
        function sort(a, n,    i, j, t) {
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        }
        function median(a, n) {
            sort(a, n)
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        {
            k = $1 " " $2; n[k]++; i = n[k]
            rps[k, i] = $4; p50[k, i] = $5; p99[k, i] = $6
            reqs[k] += $7; bad[k] += $8; errs[k] += $9
            cg[k, i] = ($7 > 0) ? $10 / $7 : 0
            nx[k, i] = ($7 > 0) ? $11 / $7 : 0
            recs[k] += $12
            if ($13 > rss[k]) rss[k] = $13
        }
        END {
            ns = split(scenarios, S, " "); nc = split(conns, C, " ")
            base["proxy-http"] = "direct-http"; base["connect-https"] = "direct-https"
            label["direct-http"] = "direct, http (wrk)"
            label["proxy-http"] = "credgate forward, http (wrk)"
            label["direct-https"] = "direct, https (hey)"
            label["connect-https"] = "credgate CONNECT+MITM, https (hey)"
            print "| scenario | conns | req/s median (min–max) | mean ms | p50 ms | p99 ms | req/s vs direct | mean added ms | credgate CPU µs/req | nginx CPU µs/req | credgate RSS MiB | non-2xx | errors | records / requests |"
            print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            for (s = 1; s <= ns; s++) for (c = 1; c <= nc; c++) {
                k = S[s] " " C[c]; m = n[k]
                if (!m) continue
                for (i = 1; i <= m; i++) { a[i] = rps[k, i]; b[i] = p50[k, i]; d[i] = p99[k, i]; e[i] = cg[k, i]; f[i] = nx[k, i] }
                lo = hi = a[1]
                for (i = 1; i <= m; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
                R[k] = median(a, m); P50 = median(b, m); P99 = median(d, m)
                # A closed loop of C connections: mean latency = C / throughput.
                MEAN[k] = (R[k] > 0) ? C[c] * 1000 / R[k] : 0
                CG = median(e, m); NX = median(f, m)
                proxied = (S[s] in base)
                if (proxied) {
                    bk = base[S[s]] " " C[c]
                    ratio = (R[bk] > 0) ? sprintf("%.2f×", R[k] / R[bk]) : "–"
                    added = sprintf("%+.3f", MEAN[k] - MEAN[bk])
                    cgs = sprintf("%.0f", CG)
                    rs = sprintf("%.1f", rss[k] / 1024)
                    rr = sprintf("%d / %d", recs[k], reqs[k])
                } else {
                    ratio = "1.00× (baseline)"; added = "–"; cgs = "–"; rs = "–"; rr = "–"
                }
                printf "| %s | %d | %.0f (%.0f–%.0f) | %.3f | %.3f | %.3f | %s | %s | %s | %.0f | %s | %d | %d | %s |\n",
                    label[S[s]], C[c], R[k], lo, hi, MEAN[k], P50, P99, ratio, added, cgs, NX, rs, bad[k], errs[k], rr
            }
        }
    ' "$WORK/results.tsv"
}

# --- run -------------------------------------------------------------------

CREDENTIAL="cgbench_$(openssl rand -hex 16)"
make_origin_certs
start_nginx
start_credgate
write_wrk_script
mkdir -p "$WORK/out"
log "origin http://127.0.0.1:$HTTP_PORT https://$HTTPS_AUTHORITY (nginx pid $NGINX_PID, cpu $LOAD_CPU)"
log "credgate $PROXY_ADDR (pid $CREDGATE_PID, cpu $PROXY_CPU), task $TASK_ID"
sanity_checks
RSS_IDLE=$(rss_kb "$CREDGATE_PID")

log "warming up (${WARMUP} s per scenario and connection count)"
for scenario in "${SCENARIOS[@]}"; do
    for conns in "${CONNS[@]}"; do
        load "$scenario" "$conns" "$WARMUP" "$WORK/out/warmup.txt" || true
    done
done

log "measuring: ${DURATION} s per run, $REPS repetition(s), scenarios interleaved"
: >"$WORK/results.tsv"
for ((rep = 1; rep <= REPS; rep++)); do
    for scenario in "${SCENARIOS[@]}"; do
        for conns in "${CONNS[@]}"; do
            measure "$scenario" "$conns" "$rep"
        done
    done
done

DENIES=$(grep -c '"decision":"deny"' "$AUDIT" || true)
# When a run stops, the load generators drop their connections: idle ones
# (credgate records each as a client_disconnected deny without a method) and
# ones with a request in flight (a client_disconnected deny with its method).
DISCONNECTS=$(grep -c '"decision":"deny".*"reason":"client_disconnected"' "$AUDIT" || true)
IDLE_DISCONNECTS=$(grep -c '"method":null.*"decision":"deny".*"reason":"client_disconnected"' "$AUDIT" || true)
DENIES=$((DENIES - DISCONNECTS))
LEAKED_CRED=$(grep -c -F -- "$CREDENTIAL" "$AUDIT" || true)
LEAKED_TOKEN=$(grep -c -F -- "$TASK_TOKEN" "$AUDIT" || true)
AUDIT_BYTES=$(stat -c %s "$AUDIT")
AUDIT_LINES=$(records)
CG_ERRORS=$(grep -c -E ' (ERROR|WARN) ' "$WORK/credgate/stderr.log" || true)

echo
echo "## credgate benchmark — $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "- machine: $NPROC CPU ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), load average before: $LOAD_BEFORE"
echo "- pinning: load generator + nginx on CPU $LOAD_CPU, credgate on CPU $PROXY_CPU; ${DURATION} s per run, $REPS repetition(s), median (min–max)"
echo "- tools: $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }'), hey $(dpkg-query -W -f='${Version}' hey 2>/dev/null || echo '?'), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), credgate $("$BIN" --version | awk '{ print $2 }')"
echo "- body: ~90 bytes echoing the Authorization the origin received (credgate scrubs its own credential from it)"
echo
report
echo
echo "- credgate RSS: $((RSS_IDLE / 1024)) MiB idle after start, peak (VmHWM) $(($(hwm_kb "$CREDGATE_PID") / 1024)) MiB"
echo "- decision log: $AUDIT_LINES records, $((AUDIT_BYTES / 1024 / 1024)) MiB ($((AUDIT_BYTES / (AUDIT_LINES > 0 ? AUDIT_LINES : 1))) bytes/record); deny records other than client_disconnected: $DENIES; client_disconnected: $DISCONNECTS ($IDLE_DISCONNECTS of them on connections with no request in them)"
echo "- credential in the decision log: $LEAKED_CRED lines; task token in the decision log: $LEAKED_TOKEN lines"
echo "- credgate WARN/ERROR log lines: $CG_ERRORS; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

problems=$(awk '$8 > 0 || $9 > 0 { n++ } END { print n + 0 }' "$WORK/results.tsv")
if ((problems > 0 || DENIES > 0 || LEAKED_CRED > 0 || LEAKED_TOKEN > 0)); then
    echo
    echo "**problems**: $problems run(s) with non-2xx responses or client errors, $DENIES deny records, leaks: credential $LEAKED_CRED, token $LEAKED_TOKEN"
    for f in "$WORK"/out/*-r*.txt; do
        if grep -q -E 'Non-2xx|Socket errors|Error distribution' "$f"; then
            echo
            echo "### $(basename "$f" .txt)"
            echo '```'
            grep -A8 -E 'Non-2xx|Socket errors|Error distribution|Status code distribution' "$f" | head -30
            echo '```'
        fi
    done
    if ((DENIES > 0)); then
        echo
        echo "### deny records by reason"
        echo '```'
        grep '"decision":"deny"' "$AUDIT" | grep -v '"reason":"client_disconnected"' |
            grep -o '"reason":"[a-z_]*"' | sort | uniq -c
        echo '```'
    fi
    if ((CG_ERRORS > 0)); then
        echo
        echo "### credgate stderr (first WARN/ERROR lines)"
        echo '```'
        grep -m10 -E ' (ERROR|WARN) ' "$WORK/credgate/stderr.log"
        echo '```'
    fi
    exit 1
fi
