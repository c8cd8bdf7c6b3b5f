#!/usr/bin/env bash
# Compare one MCP worker reached four ways, in interleaved rounds:
#   direct       - mcp-bench -> mcp-worker
#   gateway-full - mcp-bench -> mcp-proxy with JWT (HS256 issuer), a rate limit
#                  and the request log (Redis stream -> SQLite) -> the same worker
#   gateway      - mcp-bench -> mcp-proxy, routing only (request log off)
#   nginx        - mcp-bench -> nginx (plain reverse proxy) -> the same worker
# Stage 1: closed loop at fixed concurrency (throughput at saturation), rounds
# direct gateway nginx, direct gateway nginx, ...
# Stage 2: open loop at half of nginx's median stage-1 throughput (latency at a
# fixed rate), same interleaving.
# Each run also reports the CPU time (utime+stime from /proc/PID/stat) of the
# proxy and worker processes over the measured window, and their RSS.
# The generator is pinned to the first CPU(s), the servers to the others.
#
# Usage: bench/compare.sh [--smoke] [options]   (see --help)
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/compare.sh [options]
  --smoke               tiny load: 1 round, 1 s per phase, concurrency 4, open-loop rate <= 100/s
  --rounds N            interleaved rounds per stage (default 3)
  --duration D          measured time per phase (default 10s)
  --warmup D            warm-up per phase (default 2s)
  --concurrency C       closed-loop concurrency (default 32)
  --sessions S          sessions per run (default 8)
  --workload W          mcp-bench --workload (default: mcp-bench's default mix)
  --payload-bytes N     large_call payload (default 65536)
  --protocol P          2025-06-18 (default) or 2026-07-28
  --gateway-threads N   gateway `threads:` (default: number of server CPUs)
  --open-rate R         open-loop rate in req/s (default: half of nginx's median
                        closed-loop throughput)
  --out DIR             keep JSON/HTML reports and the summary here (default: a temp dir)
  --variant NAME=FILE   also measure a gateway whose config is the base one plus the YAML
                        in FILE (repeatable), e.g. rate limits: bench/variants/limit-local.yaml;
                        FILE "-" adds nothing (the base configuration)
  --variant-bin NAME=PATH
                        run variant NAME with another mcp-proxy binary, e.g. a build of
                        the previous commit: --variant base=- --variant-bin base=/tmp/old-proxy
  --tls                 also measure gateway-tls: the routing-only gateway with `tls` (HTTPS
                        on its listener, a certificate from a CA made with openssl for the
                        run; mcp-bench trusts it with --ca-file)
  --only-gateways       measure the gateways and variants only (no direct, no nginx)
  --no-full             leave out gateway-full (JWT + rate limit + request log)
  --streams K[,K...]    after the load stages, hold K idle sessions with their SSE streams
                        open through every target and report memory per stream (from
                        fresh processes only with --streams-only)
  --streams-only        skip the load stages (with --streams)
  --streams-hold D      how long the streams are held (default 10s)
  --http1-streams       the gateways send GET streams to the worker over HTTP/1.1, one
                        connection each (default: h2c_streams, many per connection)
  --no-build            do not run cargo build --release
  -h, --help            this help
Binaries: target/release/{mcp-bench,mcp-worker,mcp-proxy}, overridable with
MCP_BENCH_BIN, MCP_WORKER_BIN, MCP_PROXY_BIN; nginx from PATH or NGINX_BIN
(installed with apt-get when missing). gateway-full checks its rate limit in Redis
and ships its request log through a Redis stream: a redis-server the script starts
on a free port, pinned with the servers, or the one at REDIS_URL when that is set
(or when redis-server is not installed: redis://127.0.0.1:6379). Without an
answering Redis: in process / straight to SQLite.
EOF
}

SMOKE=0
ROUNDS=3
DURATION=10s
WARMUP=2s
CONCURRENCY=32
SESSIONS=8
WORKLOAD=""
PAYLOAD=65536
PROTOCOL=2025-06-18
GATEWAY_THREADS=""
OPEN_RATE=""
OUT=""
BUILD=1
VARIANTS=()
declare -A VARIANT_BIN=()
ONLY_GATEWAYS=0
TLS=0
FULL=1
STREAMS=""
STREAMS_ONLY=0
STREAMS_HOLD=10s
H2C_STREAMS=true

while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --sessions) SESSIONS="$2"; shift ;;
        --workload) WORKLOAD="$2"; shift ;;
        --payload-bytes) PAYLOAD="$2"; shift ;;
        --protocol) PROTOCOL="$2"; shift ;;
        --gateway-threads) GATEWAY_THREADS="$2"; shift ;;
        --open-rate) OPEN_RATE="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --variant) VARIANTS+=("$2"); shift ;;
        --variant-bin) VARIANT_BIN["${2%%=*}"]="${2#*=}"; shift ;;
        --only-gateways) ONLY_GATEWAYS=1 ;;
        --tls) TLS=1 ;;
        --no-full) FULL=0 ;;
        --streams) STREAMS="$2"; shift ;;
        --streams-only) STREAMS_ONLY=1 ;;
        --http1-streams) H2C_STREAMS=false ;;
        --streams-hold) STREAMS_HOLD="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ "$SMOKE" = 1 ]; then
    ROUNDS=1
    DURATION=1s
    WARMUP=200ms
    CONCURRENCY=4
    SESSIONS=2
    STREAMS_HOLD=1s
fi
[ "$STREAMS_ONLY" = 0 ] || [ -n "$STREAMS" ] || { echo "compare.sh: --streams-only needs --streams" >&2; exit 2; }
for k in ${STREAMS//,/ }; do
    case "$k" in ''|*[!0-9]*) echo "compare.sh: --streams takes counts, got $STREAMS" >&2; exit 2 ;; esac
done

# Every server and the generator hold one descriptor per connection (the
# proxies two: client and worker side): use all the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
BENCH="${MCP_BENCH_BIN:-$RELEASE/mcp-bench}"
WORKER="${MCP_WORKER_BIN:-$RELEASE/mcp-worker}"
PROXY="${MCP_PROXY_BIN:-$RELEASE/mcp-proxy}"

log() { printf '[compare] %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -p mcp-bench -p mcp-workers -p mcp-proxy) \
        || die "cargo build --release failed"
fi
for b in "$BENCH" "$WORKER" "$PROXY"; do
    [ -x "$b" ] || die "missing executable $b (build it or set MCP_*_BIN)"
done

NGINX="${NGINX_BIN:-$(command -v nginx || true)}"
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ]; then
    log "nginx not found: installing the Debian package"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null \
        || die "cannot install nginx with apt-get"
    NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
fi
[ -x "$NGINX" ] || die "nginx not executable: $NGINX"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-compare.XXXXXX")"
[ -n "$OUT" ] || OUT="$WORK/results"
mkdir -p "$OUT"
PIDS=()
REDIS_URL_GIVEN="${REDIS_URL:+1}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
REDIS_OWN_PID=""
REDIS_PREFIX="mcp-bench-$$-$RANDOM"
REDIS_USED=0
cleanup() {
    local status=$? pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # Only this run's keys (its own prefix), in a Redis the run did not start itself.
    if [ "$REDIS_USED" = 1 ] && [ -z "$REDIS_OWN_PID" ] && command -v redis-cli >/dev/null 2>&1; then
        { redis-cli -u "$REDIS_URL" --scan --pattern "*$REDIS_PREFIX*" 2>/dev/null \
            | while read -r key; do redis-cli -u "$REDIS_URL" del "$key" >/dev/null 2>&1 || true; done; } || true
    fi
    if [ "$status" -ne 0 ]; then
        log "logs kept in $WORK"
    else
        case "$OUT" in
            "$WORK"/*) log "reports kept in $OUT" ;;
            *) rm -rf "$WORK" ;;
        esac
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU pinning: generator on the first half of the CPUs, servers on the rest.
NCPU="$(nproc 2>/dev/null || echo 1)"
PIN_GEN=()
PIN_SRV=()
SRV_CPUS=0
if [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    GEN_LAST=$(( NCPU / 2 - 1 ))
    PIN_GEN=(taskset -c "0-$GEN_LAST")
    PIN_SRV=(taskset -c "$(( GEN_LAST + 1 ))-$(( NCPU - 1 ))")
    SRV_CPUS=$(( NCPU - GEN_LAST - 1 ))
    log "pinning: generator on CPUs 0-$GEN_LAST, servers on CPUs $(( GEN_LAST + 1 ))-$(( NCPU - 1 ))"
else
    SRV_CPUS="$NCPU"
    log "not pinning (CPUs: $NCPU, taskset: $(command -v taskset || echo none))"
fi
[ -n "$GATEWAY_THREADS" ] || GATEWAY_THREADS="$SRV_CPUS"

# Ports below the ephemeral range, so that no client socket of an earlier
# run can hold the port.
EPHEMERAL_LOW="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
PORT_LOW=10000
PORT_SPAN=$(( EPHEMERAL_LOW - PORT_LOW ))
[ "$PORT_SPAN" -gt 1000 ] || { PORT_LOW=20000; PORT_SPAN=10000; }
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$(( PORT_LOW + RANDOM % PORT_SPAN ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

wait_port() {
    local port="$1" name="$2" i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not listen on port $port (logs in $WORK)"
}

# Wait until an MCP request through URL succeeds.
wait_mcp() {
    local url="$1" name="$2" i
    for i in $(seq 1 50); do
        if MCP_BENCH_TOKEN="${TOKEN[$name]:-}" "$BENCH" run --url "$url" ${CA[$name]:+--ca-file "${CA[$name]}"} \
            --duration 100ms --warmup 0s --concurrency 1 --sessions 1 \
            --workload small_call=1 --protocol "$PROTOCOL" --quiet >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    die "no MCP answer through $name at $url (logs in $WORK)"
}

WORKER_PORT="$(free_port)"
GATEWAY_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
NGINX_PORT="$(free_port)"

RUST_LOG=warn "${PIN_SRV[@]}" "$WORKER" tools --listen "127.0.0.1:$WORKER_PORT" --id bench-worker \
    >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
PIDS+=("$WORKER_PID")
wait_port "$WORKER_PORT" "mcp-worker"

# The base configuration: routing only. The request log is off (one line,
# so that a variant setting `logging:` replaces it).
cat >"$WORK/gateway.yaml" <<EOF
listen: 127.0.0.1:$GATEWAY_PORT
admin: 127.0.0.1:$ADMIN_PORT
threads: $GATEWAY_THREADS
logging: { enabled: false }
routes:
  - path: /mcp
    pool: remote
    upstream_path: /mcp
pools:
  remote:
    upstreams: [127.0.0.1:$WORKER_PORT]
    balance: round_robin
    health: { kind: http, path: /health, interval: 5s }
    h2c_streams: $H2C_STREAMS
EOF
"${PIN_SRV[@]}" "$PROXY" run --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
wait_port "$GATEWAY_PORT" "mcp-proxy"

# gateway.yaml with another listener and admin port, minus the one-line
# top-level keys that FILE sets, plus FILE.
derive_config() {
    local port="$1" admin="$2" file="$3" keys
    keys="$(grep -oE '^[a-z_]+:' "$file" | tr -d ':' | sort -u | paste -sd'|' || true)"
    sed -e "s/^listen: .*/listen: 127.0.0.1:$port/" -e "s/^admin: .*/admin: 127.0.0.1:$admin/" \
        "$WORK/gateway.yaml" \
        | { if [ -n "$keys" ]; then grep -vE "^($keys): *[{].*[}] *$" || true; else cat; fi; }
    cat "$file"
}

redis_answers() {
    local hostport="${REDIS_URL#redis://}"
    hostport="${hostport%%/*}"
    (
        exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || exit 1
        printf 'PING\r\n' >&3
        read -r -t 2 line <&3 || exit 1
        [[ "$line" == +PONG* ]]
    ) 2>/dev/null
}

# gateway-full: JWT from an outside HS256 issuer (a shared secret, as Supabase
# does), a per-user rate limit that never refuses, the request log to SQLite
# (through a Redis stream when Redis answers).
declare -A TOKEN=()
FULL_NOTE=""
FULL_PID=""
if [ "$FULL" = 1 ]; then
    FULL_PORT="$(free_port)"
    FULL_ADMIN="$(free_port)"
    MCP_BENCH_JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    export MCP_BENCH_JWT_SECRET
    JWT_ISS="https://bench.invalid/auth/v1"
    JWT_AUD="mcp-bench"
    TOKEN[gateway-full]="$("$BENCH" token --iss "$JWT_ISS" --aud "$JWT_AUD" --sub bench-user --ttl 24h)" \
        || die "mcp-bench token failed"
    # A Redis of the run's own, pinned with the servers, unless REDIS_URL names one:
    # a shared Redis left to float between CPUs moved gateway-full's open-loop p50 by
    # milliseconds from run to run (docs/benchmarks.md).
    if [ -z "$REDIS_URL_GIVEN" ] && command -v redis-server >/dev/null 2>&1; then
        REDIS_PORT="$(free_port)"
        "${PIN_SRV[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
            --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
        REDIS_OWN_PID=$!
        PIDS+=("$REDIS_OWN_PID")
        REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
        wait_port "$REDIS_PORT" "redis-server"
    fi
    if redis_answers; then
        REDIS_USED=1
        LIMIT_BACKEND=redis
        REDIS_LINE="redis: { url: \"$REDIS_URL\", prefix: $REDIS_PREFIX }"
        FULL_NOTE="gateway-full: JWT (HS256 issuer), rate limit in Redis, request log via a Redis stream into SQLite"
        [ -n "$REDIS_OWN_PID" ] && FULL_NOTE="$FULL_NOTE (the run's own redis-server, pinned with the servers)"
    else
        LIMIT_BACKEND=local
        REDIS_LINE=""
        FULL_NOTE="gateway-full: JWT (HS256 issuer), rate limit in process (no Redis at $REDIS_URL), request log straight into SQLite"
    fi
    cat >"$WORK/full.yaml" <<EOF
$REDIS_LINE
database: { url: "sqlite://$WORK/gateway-full.db" }
logging: { enabled: true, spool_dir: "$WORK/spool-full" }
auth:
  issuers:
    - name: bench
      issuer: "$JWT_ISS"
      audiences: ["$JWT_AUD"]
      algorithms: [HS256]
      secret_env: MCP_BENCH_JWT_SECRET
rate_limits:
  defaults: false
  redis_timeout: 50ms
  policies:
    bench: { key: [user], rate: 100000000/s, backend: $LIMIT_BACKEND, on_redis_error: allow }
EOF
    derive_config "$FULL_PORT" "$FULL_ADMIN" "$WORK/full.yaml" >"$WORK/gateway-full.yaml"
    "$PROXY" validate --config "$WORK/gateway-full.yaml" >&2 || die "gateway-full: invalid config"
    "${PIN_SRV[@]}" "$PROXY" run --config "$WORK/gateway-full.yaml" >"$WORK/gateway-full.log" 2>&1 &
    FULL_PID=$!
    PIDS+=("$FULL_PID")
    wait_port "$FULL_PORT" "mcp-proxy (gateway-full)"
    log "$FULL_NOTE"
fi

declare -A VARIANT_URL=()
declare -A VARIANT_PID=()
VARIANT_NAMES=()
# mcp-bench --ca-file per target (gateway-tls).
declare -A CA=()
if [ "$TLS" = 1 ]; then
    command -v openssl >/dev/null 2>&1 || die "--tls needs the openssl command"
    mkdir -p "$WORK/tls"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$WORK/tls/ca.key" -out "$WORK/tls/ca.pem" -days 2 \
        -subj "/CN=mcp-bench CA" 2>/dev/null || die "openssl: cannot make the CA"
    openssl req -new "${ec[@]}" -keyout "$WORK/tls/gateway.key" -out "$WORK/tls/gateway.csr" \
        -subj "/CN=127.0.0.1" 2>/dev/null || die "openssl: cannot make the key"
    printf 'subjectAltName=IP:127.0.0.1\n' >"$WORK/tls/san.ext"
    openssl x509 -req -in "$WORK/tls/gateway.csr" -CA "$WORK/tls/ca.pem" -CAkey "$WORK/tls/ca.key" \
        -CAcreateserial -out "$WORK/tls/gateway.pem" -days 2 -extfile "$WORK/tls/san.ext" \
        2>/dev/null || die "openssl: cannot sign the certificate"
    printf 'tls: { cert_file: "%s", key_file: "%s" }\n' "$WORK/tls/gateway.pem" "$WORK/tls/gateway.key" \
        >"$WORK/tls-variant.yaml"
    VARIANTS+=("gateway-tls=$WORK/tls-variant.yaml")
    CA[gateway-tls]="$WORK/tls/ca.pem"
fi
for v in "${VARIANTS[@]}"; do
    vname="${v%%=*}"
    vfile="${v#*=}"
    vbin="${VARIANT_BIN[$vname]:-$PROXY}"
    [ -x "$vbin" ] || die "variant $vname: no executable $vbin"
    if [ "$vfile" = "-" ]; then
        vfile="$WORK/empty.yaml"
        : >"$vfile"
    fi
    [ -f "$vfile" ] || die "variant $vname: no file $vfile"
    vport="$(free_port)"
    vadmin="$(free_port)"
    derive_config "$vport" "$vadmin" "$vfile" >"$WORK/gateway-$vname.yaml"
    "$vbin" validate --config "$WORK/gateway-$vname.yaml" >&2 || die "variant $vname: invalid config"
    "${PIN_SRV[@]}" "$vbin" run --config "$WORK/gateway-$vname.yaml" >"$WORK/gateway-$vname.log" 2>&1 &
    VARIANT_PID[$vname]=$!
    PIDS+=("${VARIANT_PID[$vname]}")
    if [ -n "${CA[$vname]:-}" ]; then
        VARIANT_URL[$vname]="https://127.0.0.1:$vport/mcp"
    else
        VARIANT_URL[$vname]="http://127.0.0.1:$vport/mcp"
    fi
    VARIANT_NAMES+=("$vname")
    wait_port "$vport" "mcp-proxy ($vname)"
done

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
# One process (master_process off) so its CPU time is that of one PID.
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $NOFILE; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    upstream mcp_worker {
        server 127.0.0.1:$WORKER_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        client_max_body_size 64m;
        location /mcp {
            proxy_pass http://mcp_worker;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 120s;
        }
    }
}
EOF
"${PIN_SRV[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" \
    >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NGINX_PORT" "nginx"

declare -A URL=(
    [direct]="http://127.0.0.1:$WORKER_PORT/mcp"
    [gateway]="http://127.0.0.1:$GATEWAY_PORT/mcp"
    [nginx]="http://127.0.0.1:$NGINX_PORT/mcp"
)
declare -A PROXY_PID=([direct]="" [gateway]="$GATEWAY_PID" [nginx]="$NGINX_PID")
if [ "$ONLY_GATEWAYS" = 1 ]; then
    TARGETS=()
else
    TARGETS=(direct)
fi
if [ "$FULL" = 1 ]; then
    URL[gateway-full]="http://127.0.0.1:$FULL_PORT/mcp"
    PROXY_PID[gateway-full]="$FULL_PID"
    TARGETS+=(gateway-full)
fi
TARGETS+=(gateway)
for vname in "${VARIANT_NAMES[@]}"; do
    URL[$vname]="${VARIANT_URL[$vname]}"
    PROXY_PID[$vname]="${VARIANT_PID[$vname]}"
    TARGETS+=("$vname")
done
[ "$ONLY_GATEWAYS" = 1 ] || TARGETS+=(nginx)
for t in "${TARGETS[@]}"; do
    wait_mcp "${URL[$t]}" "$t"
done

log "machine: $NCPU CPUs, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
log "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); gateway threads: $GATEWAY_THREADS; open files: $NOFILE"
log "rounds $ROUNDS, duration $DURATION, warm-up $WARMUP, concurrency $CONCURRENCY, sessions $SESSIONS, protocol $PROTOCOL"

COMMON=(--duration "$DURATION" --warmup "$WARMUP" --sessions "$SESSIONS" --payload-bytes "$PAYLOAD"
    --protocol "$PROTOCOL")
[ -n "$WORKLOAD" ] && COMMON+=(--workload "$WORKLOAD")

# CPU clock ticks (utime+stime) used so far by the given processes.
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t="$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)"
        total=$(( total + t ))
    done
    echo "$total"
}

SERVER_PIDS=("$WORKER_PID" "$GATEWAY_PID" "$NGINX_PID" "${VARIANT_PID[@]}" ${FULL_PID:+"$FULL_PID"} ${REDIS_OWN_PID:+"$REDIS_OWN_PID"})

# Wait (up to 60 s) until the servers use under ~4 % of a CPU, so that work
# left queued by an overloaded phase does not leak into the next one.
wait_idle() {
    local start=$SECONDS a b
    while [ $(( SECONDS - start )) -lt 60 ]; do
        a="$(cpu_ticks "${SERVER_PIDS[@]}")"
        sleep 0.5
        b="$(cpu_ticks "${SERVER_PIDS[@]}")"
        if [ $(( b - a )) -le 2 ]; then
            [ $(( SECONDS - start )) -ge 2 ] && log "servers idle after $(( SECONDS - start )) s"
            return 0
        fi
    done
    log "warning: servers still busy after 60 s; measuring anyway"
}

# run_phase TARGET STAGE ROUND MODE-ARGS...
run_phase() {
    local target="$1" stage="$2" round="$3"
    shift 3
    wait_idle
    local watch=(--watch-pid "worker=$WORKER_PID")
    [ -n "${PROXY_PID[$target]}" ] && watch+=(--watch-pid "proxy=${PROXY_PID[$target]}")
    if [ "$target" = gateway-full ] && [ -n "$REDIS_OWN_PID" ]; then
        watch+=(--watch-pid "redis=$REDIS_OWN_PID")
    fi
    local name="$stage-r$round-$target"
    log "$stage round $round: $target"
    if ! MCP_BENCH_TOKEN="${TOKEN[$target]:-}" "${PIN_GEN[@]}" "$BENCH" run --url "${URL[$target]}" \
        ${CA[$target]:+--ca-file "${CA[$target]}"} "${COMMON[@]}" "$@" "${watch[@]}" \
        --label "$target/$stage/r$round" --json "$OUT/$name.json" --html "$OUT/$name.html" \
        2>>"$WORK/bench-progress.log" | sed -n '3,4p;/body end/p' >&2; then
        die "mcp-bench failed for $target ($stage, round $round)"
    fi
    [ -s "$OUT/$name.json" ] || die "no report for $target ($stage, round $round)"
}

# run_streams TARGET COUNT
run_streams() {
    local target="$1" count="$2"
    wait_idle
    local watch=(--watch-pid "worker=$WORKER_PID")
    [ -n "${PROXY_PID[$target]}" ] && watch+=(--watch-pid "proxy=${PROXY_PID[$target]}")
    log "streams $count: $target"
    mkdir -p "$OUT/streams"
    if ! MCP_BENCH_TOKEN="${TOKEN[$target]:-}" "${PIN_GEN[@]}" "$BENCH" streams --url "${URL[$target]}" \
        ${CA[$target]:+--ca-file "${CA[$target]}"} \
        --count "$count" --hold "$STREAMS_HOLD" "${watch[@]}" --label "$target/streams/$count" \
        --json "$OUT/streams/$target-$count.json" 2>>"$WORK/bench-progress.log" >&2; then
        log "warning: mcp-bench streams held no stream for $target ($count)"
    fi
}

if [ "$STREAMS_ONLY" = 0 ]; then
for r in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        run_phase "$t" closed "$r" --mode closed --concurrency "$CONCURRENCY"
    done
done

if [ -n "$OPEN_RATE" ]; then
    RATE="$OPEN_RATE"
    log "open-loop rate: $RATE req/s (--open-rate)"
else
    RATE_REF=nginx
    [ "$ONLY_GATEWAYS" = 1 ] && RATE_REF=gateway
    RATE="$("$BENCH" compare --results "$OUT" --suggest-open-rate "$RATE_REF")"
    if [ "$SMOKE" = 1 ] && [ "${RATE%.*}" -gt 100 ]; then
        RATE=100
    fi
    log "open-loop rate: $RATE req/s (half of nginx's median closed-loop throughput)"
fi

for r in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        run_phase "$t" open "$r" --mode open --rate "$RATE"
    done
done
fi

for k in ${STREAMS//,/ }; do
    for t in "${TARGETS[@]}"; do
        run_streams "$t" "$k"
    done
done

{
    echo "Targets: direct = the worker; gateway = routing only; nginx = plain reverse proxy."
    [ -z "$FULL_NOTE" ] || echo "$FULL_NOTE."
    if [ "$FULL" = 1 ]; then
        metrics="$(curl -s "http://127.0.0.1:$FULL_ADMIN/metrics" 2>/dev/null \
            | grep -E '^mcp_gateway_log_(stored|dropped|spooled)_total' | tr '\n' ' ' || true)"
        rows=""
        command -v sqlite3 >/dev/null 2>&1 \
            && rows="$(sqlite3 "$WORK/gateway-full.db" 'select count(*) from request_logs' 2>/dev/null || true)"
        echo "gateway-full request log: ${rows:-?} rows in SQLite so far; ${metrics:-no metrics}"
    fi
    if [ -n "$STREAMS" ] && [ "$STREAMS_ONLY" = 0 ]; then
        echo "Note: the streams were held by processes that had just run the load stages, so"
        echo "their RSS already held what the load left (see 'proxy RSS before'); KiB/stream is"
        echo "only meaningful from fresh processes: measure it with --streams-only."
    fi
    echo
    "$BENCH" compare --results "$OUT"
} | tee "$OUT/summary.md"
