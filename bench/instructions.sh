#!/usr/bin/env bash
# Instructions per request of the gateway, counted by valgrind's callgrind: the user-space
# instructions of every gateway thread (proxy, control plane, SQLite), divided by the requests
# mcp-bench completed while counting was on. Unlike CPU time, the count barely moves with
# what else the machine does, so two builds can be compared on a noisy machine. It does not
# count the kernel (sockets, files) and it overstates code that uses CPU extensions valgrind
# does not emulate (SHA-256 runs its portable version under valgrind).
#
# Usage: bench/instructions.sh [--full] [--proxy BIN] [--duration D] [--out FILE]
#   --full        JWT (HS256 issuer), a Redis rate limit and the request log through a
#                 Redis stream into SQLite, as compare.sh's gateway-full (needs redis-server)
#   --proxy BIN   the mcp-proxy to count (default: target/release/mcp-proxy)
#   --duration D  how long counting runs (default 10s; valgrind slows the gateway ~50×)
#   --out FILE    keep the callgrind file (read it with callgrind_annotate)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PROXY="$RELEASE/mcp-proxy"
FULL=0
DURATION=10s
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --full) FULL=1 ;;
        --proxy) PROXY="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "instructions.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
BENCH="${MCP_BENCH_BIN:-$RELEASE/mcp-bench}"
WORKER="${MCP_WORKER_BIN:-$RELEASE/mcp-worker}"
for b in "$PROXY" "$BENCH" "$WORKER"; do
    [ -x "$b" ] || { echo "instructions.sh: missing executable $b (cargo build --release)" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-instr.XXXXXX")"
OUT="${OUT:-$WORK/callgrind.out}"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    echo "instructions.sh: nothing listens on $1 (logs in $WORK)" >&2
    exit 1
}

WORKER_PORT="$(port)"; GW_PORT="$(port)"; ADMIN_PORT="$(port)"
RUST_LOG=warn "$WORKER" tools --listen "127.0.0.1:$WORKER_PORT" --id w >"$WORK/worker.log" 2>&1 &
wait_port "$WORKER_PORT"
cat >"$WORK/gateway.yaml" <<EOF
listen: 127.0.0.1:$GW_PORT
admin: 127.0.0.1:$ADMIN_PORT
threads: 1
routes:
  - path: /mcp
    pool: remote
    upstream_path: /mcp
pools:
  remote:
    upstreams: [127.0.0.1:$WORKER_PORT]
    balance: round_robin
    health: { kind: http, path: /health, interval: 5s }
    h2c_streams: true
EOF
TOKEN=""
if [ "$FULL" = 1 ]; then
    REDIS_PORT="$(port)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    wait_port "$REDIS_PORT"
    MCP_BENCH_JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    export MCP_BENCH_JWT_SECRET
    TOKEN="$("$BENCH" token --iss https://bench.invalid/ --aud mcp-bench --sub bench-user --ttl 1h)"
    cat >>"$WORK/gateway.yaml" <<EOF
redis: { url: "redis://127.0.0.1:$REDIS_PORT", prefix: instr }
database: { url: "sqlite://$WORK/log.db" }
logging: { enabled: true, spool_dir: "$WORK/spool" }
auth:
  issuers:
    - name: bench
      issuer: "https://bench.invalid/"
      audiences: ["mcp-bench"]
      algorithms: [HS256]
      secret_env: MCP_BENCH_JWT_SECRET
rate_limits:
  defaults: false
  policies:
    bench: { key: [user], rate: 100000000/s, backend: redis, on_redis_error: allow }
EOF
else
    echo "logging: { enabled: false }" >>"$WORK/gateway.yaml"
fi

valgrind --tool=callgrind --callgrind-out-file="$OUT" --instr-atstart=no \
    "$PROXY" run --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
wait_port "$GW_PORT"
run() {
    MCP_BENCH_TOKEN="$TOKEN" "$BENCH" run --url "http://127.0.0.1:$GW_PORT/mcp" --warmup 0s \
        --concurrency 4 --sessions 4 --quiet "$@" >/dev/null 2>&1
}
run --duration 3s # warm-up: connections, caches, prepared statements
callgrind_control -i on "$GW_PID" >/dev/null
run --duration "$DURATION" --json "$WORK/run.json" || true
sleep 1.5 # the request log's last batch
callgrind_control -i off "$GW_PID" >/dev/null
kill -TERM "$GW_PID"
wait "$GW_PID" 2>/dev/null || true
REQUESTS="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results']['requests'])" "$WORK/run.json")"
TOTAL="$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
[ "$REQUESTS" -gt 0 ] || { echo "instructions.sh: no request completed (logs in $WORK)" >&2; exit 1; }
echo "requests $REQUESTS, instructions $TOTAL, per request $(( TOTAL / REQUESTS ))"
echo "callgrind file: $OUT"
