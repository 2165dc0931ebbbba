#!/usr/bin/env bash
# bench/token-refresh.sh — /token refresh throughput with the audit trail on vs off, in the same
# run (bench/token_refresh.py has the details). Target (reported, never asserted): on ≥ 0.95 × off.
#
# Usage:   bash bench/token-refresh.sh
# Env:     THREADS=4 DURATION=10s ROUNDS=3 SKIP_BUILD=1 KEEP_TMP=1
# Results are printed and appended to bench/RESULTS.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/python-bench.sh"
python_bench token-refresh token_refresh.py redis-server wrk
