#!/usr/bin/env bash
# bench/revocation-reach.sh — how fast a revocation reaches every verify replica: 1,000
# cached tokens, 4 verify replicas on one Redis, each token revoked in turn and every replica
# polled until it refuses it (p50/p99/max of the time to the last refusal; target p99 <
# 100 ms); halfway, one replica's subscription is cut, and at the end no revoked token may be
# served 200 anywhere (bench/revocation_reach.py has the details).
#
# With CLUSTER=3 the store is a Redis Cluster (3 primaries + 3 replicas, #30): a revocation
# published on the token's shard reaches replicas subscribed to other nodes.
#
# Usage:   bash bench/revocation-reach.sh            CLUSTER=3 bash bench/revocation-reach.sh
# Env:     TOKENS=1000 REPLICAS=4 CLUSTER=3 SKIP_BUILD=1 KEEP_TMP=1
# Results are printed and appended to bench/RESULTS.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/python-bench.sh"
export TOKENS=${TOKENS:-1000} REPLICAS=${REPLICAS:-4} CLUSTER=${CLUSTER:-}
python_bench revocation-reach revocation_reach.py redis-server
