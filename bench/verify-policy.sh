#!/usr/bin/env bash
# bench/verify-policy.sh — what the per-tool policy costs on the hot path, in one run:
#
#   (b) /verify, cached token, no policy, no body             (verify process 1)
#   (s) the same, sent the same ~2 KB body as (p)              (verify process 3)
#   (p) /verify, same token, a 50-rule TOOL_POLICY and a ~2 KB tools/call body, as Traefik's
#       forwardBody sends it                                   (verify process 2)
#       (b) and (p) alternate ROUNDS times; target: (p) ≥ 0.9 × (b) rps, decision p99 < 20 µs
#   (t0)/(t1) through a real Traefik (e2e/.tools, installed by scripts/e2e-deps) with the
#       shipped forwardAuth settings and the ~2 KB POST to a no-op backend: without forwardBody
#       (to verify 1) and with forwardBody (to verify 2, the policy): what forwarding the body
#       and deciding from it cost together.
#
# Usage:   bash bench/verify-policy.sh      Env: DURATION=10s CONNECTIONS=64 THREADS=2 ROUNDS=3 SKIP_BUILD=1
#          PIN_VERIFY=0 PIN_WRK=1: run the verify processes and wrk on separate CPUs (taskset), so
#          that generating the 2 KB body (wrk's work) does not take CPU from verify
# Results are printed and appended to bench/RESULTS.md; nothing about the figures is asserted,
# the script fails only when an answer is not 200.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH=$ROOT/bench
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
SKIP_BUILD=${SKIP_BUILD:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VERIFY_BIN=$TARGET_DIR/release/mcp-gateway-verify
CLI_BIN=$TARGET_DIR/release/mcp-gateway
TRAEFIK_BIN=$ROOT/e2e/.tools/traefik-3.7.15/bin/traefik
RESULTS=$BENCH/RESULTS.md
HIST=mcp_gateway_verify_decision_duration_seconds

log() { printf '[policy] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/verify-policy.XXXXXX")
PIDS=()
cleanup() {
  local rc=$? pid
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  ((rc != 0)) && for f in "$WORK"/*.log; do [[ -s $f ]] && { log "--- $f"; tail -n 15 "$f" >&2; }; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_200() {
  local i
  for ((i = 0; i < 200; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$1" || true) == 200 ]] && return 0
    sleep 0.1
  done
  die "$1 did not answer 200"
}

for need in wrk redis-server curl; do command -v "$need" >/dev/null || die "$need is missing"; done
if [[ $SKIP_BUILD != 1 ]]; then
  cargo build --release --bins >&2
fi

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.3
while IFS= read -r line; do
  case $line in JWT_ALGORITHM=* | JWT_PRIVATE_KEY_B64=*) export "${line?}" ;; esac
done < <("$CLI_BIN" keys generate --alg RS256)
export BASE_DOMAIN=localhost ISSUER_URL=http://auth.localhost RESOURCE_HOSTS=mcp.localhost
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT ALLOWED_GITHUB_USERS='*' RUST_LOG=warn SHUTDOWN_DRAIN=0

# 50 rules: tools and resources by exact name and by glob, some limited to users.
rules=()
for i in $(seq 1 20); do rules+=("tools/call admin_tool_$i=mcp:admin"); done
for i in $(seq 1 15); do rules+=("tools/call danger_${i}_*=mcp:write"); done
for i in $(seq 1 10); do rules+=("resources/read file:///secret/$i/*=mcp:admin"); done
for i in $(seq 1 5); do rules+=("prompts/get internal_$i=mcp @alice,bob"); done
POLICY=$(IFS=';'; echo "${rules[*]}")

start_verify() {
  local port
  port=$(free_port)
  ${PIN_VERIFY:+taskset -c "$PIN_VERIFY"} env "$@" LISTEN_ADDR="127.0.0.1:$port" "$VERIFY_BIN" >"$WORK/verify-$port.log" 2>&1 &
  PIDS+=($!)
  wait_200 "http://127.0.0.1:$port/ready"
  echo "$port"
}
PLAIN_PORT=$(start_verify)
# (s) on a process of its own, so its decision histogram is the body's alone.
BODY_PORT=$(start_verify)
POLICY_PORT=$(start_verify TOOL_POLICY="$POLICY" SCOPE_HIERARCHY="mcp:admin > mcp:write > mcp")

BENCH_TOKEN=$("$CLI_BIN" tokens mint --user-id 1 --user alice --client-id bench --scope mcp \
  --resource http://mcp.localhost/mcp)
export BENCH_TOKEN
# A realistic tools/call of an allowed tool: ~2 KB of arguments.
BENCH_BODY=$(python3 -c 'import json; print(json.dumps({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "search_documents", "arguments": {"query": "quarterly report", "filters": {"tags": ["finance", "q3"], "limit": 20}, "context": "x" * 1800}, "_meta": {"progressToken": 7}}}))')
export BENCH_BODY
log "tools/call body: ${#BENCH_BODY} bytes, policy: ${#rules[@]} rules"

scrape() { curl -s "http://127.0.0.1:$1/metrics" >"$2"; }
rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
non2xx() { awk '/Non-2xx/ { print $NF }' "$1"; }
run() { # run OUT URL LUA
  ${PIN_WRK:+taskset -c "$PIN_WRK"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$3" "$2" >"$1" 2>&1
  [[ -z $(non2xx "$1") ]] || die "non-2xx answers in $1: $(cat "$1")"
}

code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BENCH_TOKEN" \
  -H "X-Forwarded-Proto: http" -H "X-Forwarded-Host: mcp.localhost" -H "X-Forwarded-Method: POST" \
  --data-binary "$BENCH_BODY" -X GET "http://127.0.0.1:$POLICY_PORT/verify")
[[ $code == 200 ]] || die "the policy verify answered $code to the allowed call"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BENCH_TOKEN" \
  -H "X-Forwarded-Proto: http" -H "X-Forwarded-Host: mcp.localhost" -H "X-Forwarded-Method: POST" \
  --data-binary '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_tool_7"}}' \
  -X GET "http://127.0.0.1:$POLICY_PORT/verify")
[[ $code == 403 ]] || die "the policy verify answered $code to a protected tool (expected 403)"

run "$WORK/warm-b" "http://127.0.0.1:$PLAIN_PORT/verify" "$BENCH/verify-headers.lua"
run "$WORK/warm-p" "http://127.0.0.1:$POLICY_PORT/verify" "$BENCH/verify-body.lua"
scrape "$POLICY_PORT" "$WORK/p-before"
scrape "$BODY_PORT" "$WORK/s-before"
ratios=() same=()
for ((i = 1; i <= ROUNDS; i++)); do
  run "$WORK/b$i" "http://127.0.0.1:$PLAIN_PORT/verify" "$BENCH/verify-headers.lua"
  run "$WORK/s$i" "http://127.0.0.1:$BODY_PORT/verify" "$BENCH/verify-body.lua"
  run "$WORK/p$i" "http://127.0.0.1:$POLICY_PORT/verify" "$BENCH/verify-body.lua"
  ratios+=("$(awk -v p="$(rps "$WORK/p$i")" -v b="$(rps "$WORK/b$i")" 'BEGIN { printf "%.3f", p / b }')")
  same+=("$(awk -v p="$(rps "$WORK/p$i")" -v b="$(rps "$WORK/s$i")" 'BEGIN { printf "%.3f", p / b }')")
done
scrape "$POLICY_PORT" "$WORK/p-after"
scrape "$BODY_PORT" "$WORK/s-after"
dec=$(python3 "$BENCH/histogram_quantiles.py" "$HIST" "$WORK/p-before" "$WORK/p-after" 0.5 0.99)
p50=$(sed -n 's/^p50_us=//p' <<<"$dec"); p99=$(sed -n 's/^p99_us=//p' <<<"$dec")
sdec=$(python3 "$BENCH/histogram_quantiles.py" "$HIST" "$WORK/s-before" "$WORK/s-after" 0.5 0.99)
s50=$(sed -n 's/^p50_us=//p' <<<"$sdec"); s99=$(sed -n 's/^p99_us=//p' <<<"$sdec")
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)')
median_same=$(printf '%s\n' "${same[@]}" | sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)')

# Through Traefik: forwardAuth without and with forwardBody, to a no-op backend.
traefik_line="Traefik not installed (scripts/e2e-deps): body-forwarding cost not measured"
if [[ -x $TRAEFIK_BIN ]]; then
  run_traefik() { # run_traefik NAME FORWARD_BODY VERIFY_PORT
    local port
    port=$(free_port)
    cat >"$WORK/$1-dynamic.yml" <<EOF
http:
  middlewares:
    auth:
      forwardAuth:
        address: http://127.0.0.1:$3/verify
        trustForwardHeader: false
        maxResponseBodySize: 65536
        forwardBody: $2
        maxBodySize: 1048576
        authResponseHeaders: [X-User-Id, X-User-Name, X-Auth-Client-Id, X-Auth-Scope]
  routers:
    mcp:
      entryPoints: [web]
      rule: Host(\`mcp.localhost\`)
      middlewares: [auth]
      service: backend
  services:
    backend:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:$PLAIN_PORT"}]
EOF
    cat >"$WORK/$1-static.yml" <<EOF
entryPoints:
  web:
    address: "127.0.0.1:$port"
providers:
  file:
    filename: $WORK/$1-dynamic.yml
log:
  level: ERROR
EOF
    "$TRAEFIK_BIN" --configFile="$WORK/$1-static.yml" >"$WORK/traefik-$1.log" 2>&1 &
    PIDS+=($!)
    for ((j = 0; j < 100; j++)); do
      [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: mcp.localhost' -H "Authorization: Bearer $BENCH_TOKEN" \
        --data-binary "$BENCH_BODY" "http://127.0.0.1:$port/verify" || true) == 200 ]] && break
      sleep 0.1
    done
    # The backend is verify 1's /verify (any method, 200 for this token): a fast no-op.
    run "$WORK/$1" "http://127.0.0.1:$port/verify" "$BENCH/traefik-body.lua"
    rps "$WORK/$1"
  }
  t0=$(run_traefik nobody false "$PLAIN_PORT")
  t1=$(run_traefik body true "$POLICY_PORT")
  traefik_line="through Traefik 3.7.15 with the ~2 KB POST to a no-op backend: forwardAuth without forwardBody to verify without policy $t0 rps; with forwardBody to verify with the 50-rule policy $t1 rps ($(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f", a / b }')×)"
fi

section=$WORK/section.md
{
  echo
  echo "## Policy run $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
  echo
  echo "- \`bash bench/verify-policy.sh\`, tree $(git rev-parse --short HEAD 2>/dev/null || echo '?'), nproc=$(nproc), wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
  echo "- (b) cached /verify without policy or body, (s) a verify without policy (its own process) sent the ${#BENCH_BODY}-byte tools/call body, (p) a ${#rules[@]}-rule TOOL_POLICY deciding from that body; $ROUNDS alternating rounds:"
  for ((i = 1; i <= ROUNDS; i++)); do
    echo "  - round $i: (b) $(rps "$WORK/b$i"), (s) $(rps "$WORK/s$i"), (p) $(rps "$WORK/p$i") rps; (p)/(b) ${ratios[i-1]}, (p)/(s) ${same[i-1]}"
  done
  echo "- ratio (p)/(b), median: $median — target ≥ 0.9: $(awk -v r="$median" 'BEGIN { print (r >= 0.9 ? "met" : "NOT met") }')"
  echo "- ratio (p)/(s), median (the policy's cost alone, same request): $median_same"
  echo "- decision latency with the policy, p50 / p99: $p50 / $p99 µs — target p99 < 20 µs"
  echo "- decision latency of (s), the same body without a policy, p50 / p99: $s50 / $s99 µs"
  echo "- $traefik_line"
} >"$section"
cat "$section"
cat "$section" >>"$RESULTS"
