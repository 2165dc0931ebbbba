#!/usr/bin/env bash
# bench/store-scale.sh — the store at a million live tokens: every operator command that
# walks the store (stats, tokens list, tokens list --user, backup, purge-expired, clients
# delete --complete, restore) and the anonymous DELETE /register/{id}, each measured for wall
# time, the CLI's peak RSS and the longest Redis stall seen meanwhile by a PING probe and by
# a verify cache miss (bench/store_scale.py has the details). Then, unless VERIFY_MEMORY=0,
# verify's RSS with 100,000 cached tokens (bench/verify-memory.sh).
#
# Targets (reported, never asserted): every operation completes; no stall above 50 ms;
# backup of 1 M tokens in under 60 s; CLI memory independent of N (run with N=100000 too and
# compare); verify with 100k cached tokens < 64 MiB.
#
# With CLUSTER=3 (Redis Cluster, #30): the same N tokens on one primary and on a cluster of 3
# primaries (each with a replica) in the same run: bytes per token, each primary's share of
# keys, memory and commands, Redis µs per script call and per issued token, commands (round
# trips) per token, cross-slot errors, and every operator command's time and longest stall on
# both (bench/store_scale_cluster.py).
#
# Usage:   bash bench/store-scale.sh            CLUSTER=3 bash bench/store-scale.sh
# Env:     N=1000000 USERS=1000 CLIENTS=100 SKIP_BUILD=1 KEEP_TMP=1 VERIFY_MEMORY=0
#          CLUSTER=3 MINT_USERS=48 MINT_EACH=375 SPLIT_EACH=3000
# Results are printed and appended to bench/RESULTS.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/python-bench.sh"
export N=${N:-1000000} USERS=${USERS:-1000} CLIENTS=${CLIENTS:-100}
if [[ -n ${CLUSTER:-} ]]; then
  export CLUSTER
  python_bench store-scale store_scale_cluster.py redis-server redis-cli
  exit
fi
python_bench store-scale store_scale.py redis-server redis-cli
if [[ ${VERIFY_MEMORY:-1} != 0 ]]; then
  SKIP_BUILD=1 bash bench/verify-memory.sh
fi
