#!/usr/bin/env python3
"""Each store script's own cost on Redis Cluster against one server (bench/cluster-scripts.sh).

`INFO commandstats` on a multi-primary cluster mixes each primary's scripts and, on this shared
machine, the two stores are measured minutes apart. Here the same `mcp-gateway tokens mint`
runs against a plain redis-server and a one-node cluster (cluster-enabled, every slot; so the
cluster's steps, follow-ups and names are used, on one node) side by side, alternating, and
Redis's SLOWLOG with a 0 µs threshold records every command's own duration: a token's issuance
as one script on one server (PUT_TOKEN), as its steps on a cluster (the client's index step,
then the home step: record, user index, event), and the commands around them.

Usage: cluster_scripts.py  (environment from bench/cluster-scripts.sh: TARGET_DIR, RESULTS,
       KEEP_TMP; TOKENS=3000 ROUNDS=3)
"""

import collections
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import store_scale as base  # noqa: E402
from store_scale import Redis, free_port, gateway_env, in_scratch, log, run_heading  # noqa: E402

TARGET = base.TARGET
TOKENS = int(os.environ.get("TOKENS", "3000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def start(work, procs, cluster):
    port = free_port()
    d = f"{work}/{port}"
    os.makedirs(d, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", d]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    procs.append(subprocess.Popen(args, stdout=open(f"{d}/log", "w"), stderr=subprocess.STDOUT))
    for _ in range(100):
        try:
            Redis(port).cmd("PING")
            break
        except Exception:
            time.sleep(0.1)
    r = Redis(port)
    if cluster:
        r.cmd("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        while "cluster_state:ok" not in text(r.cmd("CLUSTER", "INFO")):
            time.sleep(0.1)
    r.cmd("CONFIG", "SET", "slowlog-log-slower-than", "0")
    r.cmd("CONFIG", "SET", "slowlog-max-len", str(20 * TOKENS))
    env = gateway_env(port)
    env["REDIS_WAIT_REPLICAS"] = "0"
    if cluster:
        env["REDIS_URL"] = "redis://127.0.0.1:1"
        env["REDIS_CLUSTER_NODES"] = f"127.0.0.1:{port}"
    return r, env


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def mint(r, env, round_no):
    """TOKENS tokens of one user and one client; {command or script: [µs, …]}."""
    r.cmd("SLOWLOG", "RESET")
    subprocess.run(
        [f"{TARGET}/mcp-gateway", "tokens", "mint", "--count", str(TOKENS), "--user-id", "7",
         "--user", f"scriptuser{round_no}", "--client-id", f"scriptclient{round_no}",
         "--scope", "mcp"], env=env, stdout=subprocess.DEVNULL, check=True)
    by = collections.defaultdict(list)
    for entry in r.cmd("SLOWLOG", "GET", str(20 * TOKENS)):
        args = entry[3]
        name = text(args[0]).lower()
        if len(entry) > 4 and text(entry[4]) == "?:0":
            # A command a script ran: its time is inside the script's.
            name = "in a script/" + name
        if name == "evalsha":
            # A script by its number of keys: 3 = PUT_TOKEN (one server) or the home step
            # (cluster: token, tombstone, user index); 1 = the client's index step.
            name = f"script/{text(args[2])} keys"
        by[name].append(int(entry[2]))
    return by


def run(work, procs):
    stores = {cluster: start(work, procs, cluster) for cluster in (False, True)}
    rounds = {False: [], True: []}
    for n in range(ROUNDS):
        for cluster in (False, True):
            log(f"round {n + 1}: {'cluster' if cluster else 'one server'}")
            rounds[cluster].append(mint(*stores[cluster], n))

    def mean(cluster, name):
        return statistics.median(
            statistics.mean(r[name]) if r.get(name) else 0.0 for r in rounds[cluster])

    def per_token(cluster):
        return statistics.median(
            sum(sum(v) for k, v in r.items() if not k.startswith("in a script/")) / TOKENS
            for r in rounds[cluster])

    put, home, step = mean(False, "script/3 keys"), mean(True, "script/3 keys"), \
        mean(True, "script/1 keys")
    heading, tree = run_heading("Store scripts on Redis Cluster against one server")
    lines = heading + [
        f"- `bash bench/cluster-scripts.sh` (TOKENS={TOKENS}, ROUNDS={ROUNDS}), tree {tree}, "
        f"nproc={os.cpu_count()}: `tokens mint` of one user's tokens on one redis-server and on a "
        f"one-node Redis Cluster, alternating; every command's own time from SLOWLOG (threshold "
        f"0); per round the mean, then the median of the rounds",
        f"- one server, PUT_TOKEN (record, both indexes, event, both audit index entries): "
        f"{put:.2f} µs per call",
        f"- cluster, home step (record, user index, event, the user's audit index entry): "
        f"{home:.2f} µs per call ({home / max(put, 1e-9):.2f}× PUT_TOKEN; target ≤ 1.10×: "
        f"{'met' if home <= 1.10 * put else 'NOT met'}); the client's index step {step:.2f} µs "
        f"per call; the client's audit index entry (XADD, PEXPIRE, after them) "
        f"{mean(True, 'xadd') + mean(True, 'pexpire'):.2f} µs",
        f"- every command's time per token (scripts with what they ran, and the commands sent "
        f"on their own): one server {per_token(False):.2f} µs, cluster "
        f"{per_token(True):.2f} µs ({per_token(True) / max(per_token(False), 1e-9):.2f}×)",
        f"- per round, PUT_TOKEN / home step / client step: " + "; ".join(
            f"{statistics.mean(a['script/3 keys']):.1f} / {statistics.mean(b['script/3 keys']):.1f}"
            f" / {statistics.mean(b['script/1 keys']):.1f}"
            for a, b in zip(rounds[False], rounds[True])),
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    with open(base.RESULTS, "a", encoding="utf-8") as f:
        f.write(section)
    log(f"appended to {base.RESULTS}")


if __name__ == "__main__":
    in_scratch("cluster-scripts.", run)
