#!/usr/bin/env bash
# bench/cluster-scripts.sh — each store script's own Redis time on Redis Cluster against one
# server (#30): the same `mcp-gateway tokens mint` on a plain redis-server and on a one-node
# cluster, alternating rounds, every command timed by SLOWLOG (bench/cluster_scripts.py).
#
# Targets (reported, never asserted): a token's home step on the cluster within 10 % of
# PUT_TOKEN's time on one server; the Redis CPU per token recorded (INFO cpu) within 10 %.
#
# Usage:   bash bench/cluster-scripts.sh
# Env:     TOKENS=3000 ROUNDS=5 SKIP_BUILD=1 KEEP_TMP=1
# Results are printed and appended to bench/RESULTS.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/python-bench.sh"
python_bench cluster-scripts cluster_scripts.py redis-server
