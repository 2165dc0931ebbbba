#!/usr/bin/env bash
# bench/verify-memory.sh — resident memory of mcp-gateway-verify as its caches fill:
# RSS with 0, 10,000 and 100,000 distinct cached tokens (target: 100k in < 64 MiB), and the
# cached-hit throughput with the full cache against the /health baseline in the same run.
#
# Tokens are real RS256 access tokens minted by `mcp-gateway tokens mint --count` (and
# recorded in a private Redis); each one is sent to /verify once (bench/send_tokens.py, 4
# keep-alive connections), so each becomes one verified-token and one liveness entry.
#
# Usage:   bash bench/verify-memory.sh
# Env:     TOKENS=100000 SKIP_BUILD=1 KEEP_TMP=1 DURATION=10s CONNECTIONS=64 THREADS=2
# Results are printed and appended to bench/RESULTS.md. Nothing is asserted about the
# figures (shared machine); the script fails when a request is not answered 200.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH=$ROOT/bench
TOKENS=${TOKENS:-100000}
FIRST=$((TOKENS / 10))
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VERIFY_BIN=$TARGET_DIR/release/mcp-gateway-verify
CLI_BIN=$TARGET_DIR/release/mcp-gateway
RESULTS=$BENCH/RESULTS.md

log() { printf '[memory] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/verify-memory.XXXXXX")
REDIS_PID='' VERIFY_PID=''
cleanup() {
  local rc=$?
  set +e
  [[ -n $VERIFY_PID ]] && kill "$VERIFY_PID" 2>/dev/null && wait "$VERIFY_PID" 2>/dev/null
  [[ -n $REDIS_PID ]] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  ((rc != 0)) && [[ -s $WORK/verify.log ]] && tail -n 20 "$WORK/verify.log" >&2
  if [[ $KEEP_TMP == 1 ]]; then log "scratch files kept in $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$VERIFY_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

for need in wrk:wrk redis-server:redis-server curl:curl; do
  command -v "${need%%:*}" >/dev/null 2>&1 && continue
  log "installing ${need#*:}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need#*:}" >&2 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need#*:}" >&2; }
done
if [[ $SKIP_BUILD != 1 ]]; then
  log "cargo build --release --bins"
  cargo build --release --bins >&2
fi

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK" \
  >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
for ((i = 0; i < 100; i++)); do
  [[ $(redis-cli -p "$REDIS_PORT" PING 2>/dev/null || true) == PONG ]] && break
  sleep 0.1
done

while IFS= read -r line; do
  case $line in
    JWT_ALGORITHM=* | JWT_PRIVATE_KEY_B64=*) export "${line?}" ;;
  esac
done < <("$CLI_BIN" keys generate --alg RS256)
export BASE_DOMAIN=localhost ISSUER_URL=http://auth.localhost RESOURCE_HOSTS=mcp.localhost
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT ALLOWED_GITHUB_USERS='*' RUST_LOG=warn
export SHUTDOWN_DRAIN=0

VERIFY_PORT=$(free_port)
LISTEN_ADDR=127.0.0.1:$VERIFY_PORT "$VERIFY_BIN" >"$WORK/verify.log" 2>&1 &
VERIFY_PID=$!
for ((i = 0; i < 100; i++)); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$VERIFY_PORT/ready" || true) == 200 ]] && break
  sleep 0.1
done
BASE=http://127.0.0.1:$VERIFY_PORT

log "minting $TOKENS RS256 tokens"
started=$(date +%s)
"$CLI_BIN" tokens mint --count "$TOKENS" --user-id 1 --user alice --client-id bench \
  --scope mcp --resource http://mcp.localhost/mcp >"$WORK/tokens.txt"
log "minted in $(($(date +%s) - started)) s"
[[ $(wc -l <"$WORK/tokens.txt") -eq $TOKENS ]] || die "expected $TOKENS tokens"

# One request first: the process at rest, with its runtime, metrics and one cached token.
head -n 1 "$WORK/tokens.txt" >"$WORK/one.txt"
python3 "$BENCH/send_tokens.py" "$BASE" "$WORK/one.txt" 0 1
rss0=$(rss_kib)
python3 "$BENCH/send_tokens.py" "$BASE" "$WORK/tokens.txt" 0 "$FIRST"
rss10=$(rss_kib)
python3 "$BENCH/send_tokens.py" "$BASE" "$WORK/tokens.txt" "$FIRST" "$TOKENS"
rss100=$(rss_kib)
per_token=$(awk -v a="$rss100" -v b="$rss0" -v n="$TOKENS" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')

# The hot path with the cache full: one cached token (b) against /health with the same
# request (a), alternating.
export BENCH_TOKEN; BENCH_TOKEN=$(head -n 1 "$WORK/tokens.txt")
wrk_rps() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$BENCH/verify-headers.lua" "$BASE$1" |
    awk '/^Requests\/sec:/ { print $2 }'
}
a1=$(wrk_rps /health); b1=$(wrk_rps /verify); a2=$(wrk_rps /health); b2=$(wrk_rps /verify)
ratio=$(awk -v a1="$a1" -v a2="$a2" -v b1="$b1" -v b2="$b2" 'BEGIN { printf "%.3f", (b1 + b2) / (a1 + a2) }')
rss_end=$(rss_kib)

section=$WORK/section.md
{
  echo
  echo "## Memory run $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
  echo
  echo "- \`bash bench/verify-memory.sh\` (TOKENS=$TOKENS), tree $(git rev-parse --short HEAD 2>/dev/null || echo '?'), nproc=$(nproc)"
  echo
  echo "| distinct cached tokens | verify RSS (MiB) |"
  echo "|---:|---:|"
  echo "| 1 | $(mib "$rss0") |"
  echo "| $FIRST | $(mib "$rss10") |"
  echo "| $TOKENS | $(mib "$rss100") |"
  echo
  echo "- per cached token: $per_token bytes; target 100,000 tokens in < 64 MiB: $(awk -v k="$rss100" 'BEGIN { print (k < 65536 ? "met" : "NOT met") }')"
  echo "- with the cache full, cached /verify vs /health (same request), two alternating rounds: $b1, $b2 vs $a1, $a2 rps, ratio $ratio; RSS after: $(mib "$rss_end") MiB"
} >"$section"
cat "$section"
cat "$section" >>"$RESULTS"
log "appended to bench/RESULTS.md"
