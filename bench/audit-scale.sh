#!/usr/bin/env bash
# bench/audit-scale.sh — the audit trail at a million events: Redis memory per event, `audit`
# and `trace` latency and memory, and the longest Redis stall while real writes trim the trail
# (bench/audit_scale.py has the details). Targets (reported, never asserted): trimming stalls
# Redis < 20 ms; the CLI's memory does not grow with the trail.
#
# Usage:   bash bench/audit-scale.sh
# Env:     EVENTS=1000000 USERS=1000 CLIENTS=100 SKIP_BUILD=1 KEEP_TMP=1
# Results are printed and appended to bench/RESULTS.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/python-bench.sh"
python_bench audit-scale audit_scale.py redis-server redis-cli
