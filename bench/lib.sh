# Shared by bench/run.sh, bench/streams.sh and bench/h2.sh (sourced, not run): logging,
# stopping every started process on exit, Debian installs, the credgate build,
# ports, /proc readings and the origin's TLS certificates. The sourcing script
# sets REPO (the repository root) first, and `set -euo pipefail`.

log() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${BENCH_NAME:-bench}" "$*" >&2
    exit 1
}

# --- cleanup ---------------------------------------------------------------
# Every process a script starts goes into PIDS and is stopped by PID on exit,
# also on Ctrl-C; WORK is its work directory (kept with BENCH_KEEP=1).

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

# `install_packages PKG…`: Debian packages by name, as root, with a temporary
# /usr/sbin/policy-rc.d that keeps Debian from starting the services it
# installs (nginx, squid); removed afterwards and on any exit.
install_packages() {
    local missing=("$@")
    ((${#missing[@]} > 0)) || return 0
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root to install them, or install them yourself"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} (Debian packages)"
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

# BIN: CREDGATE_BIN when set, else this checkout's `cargo build --release`
# (honouring CARGO_TARGET_DIR).
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

# A TCP port nothing listens on now, for the origin and the peers (credgate
# binds :0). Below the kernel's ephemeral range, so that no outgoing
# connection can be holding it when the server binds it.
free_port() {
    local port i low
    low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    ((low > 12000)) || low=32768
    for ((i = 0; i < 100; i++)); do
        port=$((10000 + RANDOM % (low - 10000)))
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

# KiB → MiB with one decimal.
mib() {
    awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
}

hwm_kb() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

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

# `start_bench_credgate RULES AGENT`: credgate in $WORK/credgate with one
# scope, `bench`, of RULES (YAML list items, indented by four), the static
# credential `bench-origin` ($CREDENTIAL, injected as a bearer token) and the
# origin's CA trusted, and a task of that scope for AGENT; sets CREDGATE_PID,
# AUDIT, PROXY_ADDR, ADMIN_ADDR, TASK_ID, TASK_TOKEN, PROXY_BASIC, PROXY_URL
# and CREDGATE_CA.
start_bench_credgate() {
    local rules=$1 agent=$2 d="$WORK/credgate" i line json
    mkdir -p "$d"
    AUDIT="$d/decisions.jsonl"
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
$rules
EOF
    CREDGATE_BENCH_ORIGIN_TOKEN=$CREDENTIAL taskset -c "$PROXY_CPU" \
        "$BIN" serve --config "$d/credgate.yaml" 2>"$d/stderr.log" &
    CREDGATE_PID=$!
    PIDS+=("$CREDGATE_PID")
    line=""
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
    PROXY_ADDR=$(sed -E 's/^credgate: proxy on ([^,]+),.*/\1/' <<<"$line")
    ADMIN_ADDR=$(sed -E 's/.*admin API on ([^ ]+) .*/\1/' <<<"$line")
    json=$("$BIN" task start --json --scope bench --ttl 2h --agent "$agent" --label "run=${agent#bench-}" \
        --admin "http://$ADMIN_ADDR" --admin-token-file "$d/admin-token" --ca "$d/ca/ca.crt")
    TASK_ID=$(sed -nE 's/^  "id": "([^"]+)",?$/\1/p' <<<"$json")
    TASK_TOKEN=$(sed -nE 's/^  "token": "([^"]+)",?$/\1/p' <<<"$json")
    [[ -n $TASK_ID && -n $TASK_TOKEN ]] || die "could not read the task id and token from: task start --json"
    PROXY_BASIC=$(printf '%s:%s' "$TASK_ID" "$TASK_TOKEN" | base64 -w0)
    PROXY_URL="http://$TASK_ID:$TASK_TOKEN@$PROXY_ADDR"
    CREDGATE_CA=$d/ca/ca.crt
}
