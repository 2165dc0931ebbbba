#!/usr/bin/env python3
"""Each store script's own cost on Redis Cluster against one server (bench/cluster-scripts.sh).

`INFO commandstats` on a multi-primary cluster mixes each primary's scripts and, on this shared
machine, the two stores of bench/store-scale.sh are measured minutes apart. Here the same `mcp-gateway tokens mint`
runs against a plain redis-server and a one-node cluster (cluster-enabled, every slot; so the
cluster's steps, follow-ups and names are used, on one node) side by side, alternating, and
Redis's SLOWLOG with a 0 µs threshold records every command's own duration: a token's issuance
as one script on one server (PUT_TOKEN), as its steps on a cluster (the client's index step, a
MULTI/EXEC, then the home step script: record, user index, event, then the client's audit index
entry), and INFO cpu the server's whole CPU per token.

Usage: cluster_scripts.py  (environment from bench/cluster-scripts.sh: TARGET_DIR, RESULTS,
       KEEP_TMP; TOKENS=3000 ROUNDS=5)
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
ROUNDS = int(os.environ.get("ROUNDS", "5"))


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
    else:
        raise SystemExit(f"redis-server on {port} did not start (see {d}/log)")
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


def cpu_seconds(r):
    cpu = r.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def mint(r, env, round_no):
    """TOKENS tokens of one user and one client. {name: [µs, …]} from SLOWLOG for scripts (by
    their number of keys) and for the commands sent on their own; `exec` from commandstats
    (SLOWLOG logs a MULTI block's commands, not the EXEC around them); `cpu` = the server's
    CPU µs per token (INFO cpu: commands, reading and writing)."""
    r.cmd("SLOWLOG", "RESET")
    r.cmd("CONFIG", "RESETSTAT")
    before = cpu_seconds(r)
    subprocess.run(
        [f"{TARGET}/mcp-gateway", "tokens", "mint", "--count", str(TOKENS), "--user-id", "7",
         "--user", f"scriptuser{round_no}", "--client-id", f"scriptclient{round_no}",
         "--scope", "mcp"], env=env, stdout=subprocess.DEVNULL, check=True)
    cpu = (cpu_seconds(r) - before) * 1e6 / TOKENS
    by = collections.defaultdict(list)
    for entry in r.cmd("SLOWLOG", "GET", str(20 * TOKENS)):
        args = entry[3]
        name = text(args[0]).lower()
        if len(entry) > 4 and text(entry[4]) == "?:0":
            # A command a script ran: its time is inside the script's.
            continue
        if name == "evalsha":
            # A script by its number of keys: 3 = PUT_TOKEN (one server) or the home step
            # (cluster: token, tombstone, user index).
            name = f"script/{text(args[2])} keys"
        by[name].append(int(entry[2]))
    stats = r.info("commandstats")
    if "cmdstat_exec" in stats:
        fields = dict(kv.split("=") for kv in stats["cmdstat_exec"].split(","))
        by["exec"] = [int(fields["usec"]) / max(int(fields["calls"]), 1)] * int(fields["calls"])
    by["cpu"] = [cpu]
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

    put, home = mean(False, "script/3 keys"), mean(True, "script/3 keys")
    # The client's index step: a script of one key (or a MULTI/EXEC block).
    step = mean(True, "script/1 keys") + mean(True, "multi") + mean(True, "exec")
    follow = mean(True, "xadd") + mean(True, "pexpire")
    cpu_one, cpu_cluster = mean(False, "cpu"), mean(True, "cpu")
    heading, tree = run_heading("Store scripts on Redis Cluster against one server")
    lines = heading + [
        f"- `bash bench/cluster-scripts.sh` (TOKENS={TOKENS}, ROUNDS={ROUNDS}), tree {tree}, "
        f"nproc={os.cpu_count()}: `tokens mint` of one user's tokens on one redis-server and on a "
        f"one-node Redis Cluster, alternating; every command's own time from SLOWLOG (threshold "
        f"0), INFO cpu; per round the mean, then the median of the rounds",
        f"- one server, PUT_TOKEN (record, both indexes, event, both audit index entries): "
        f"{put:.2f} µs per call",
        f"- cluster, home step (record, user index, event, the user's audit index entry): "
        f"{home:.2f} µs per call ({home / max(put, 1e-9):.2f}× PUT_TOKEN; target ≤ 1.10×: "
        f"{'met' if home <= 1.10 * put else 'NOT met'}); the client's index step "
        f"{step:.2f} µs; the client's audit index entry after them (XADD, PEXPIRE) {follow:.2f} µs",
        f"- Redis CPU per token recorded (INFO cpu: every command, reading and writing): one "
        f"server {cpu_one:.1f} µs, cluster {cpu_cluster:.1f} µs "
        f"({cpu_cluster / max(cpu_one, 1e-9):.2f}×; target ≤ 1.10×: "
        f"{'met' if cpu_cluster <= 1.10 * cpu_one else 'NOT met'})",
        f"- per round, PUT_TOKEN / home step µs, CPU per token one / cluster µs: " + "; ".join(
            f"{statistics.mean(a['script/3 keys']):.1f} / {statistics.mean(b['script/3 keys']):.1f}"
            f", {a['cpu'][0]:.1f} / {b['cpu'][0]:.1f}"
            for a, b in zip(rounds[False], rounds[True])),
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    with open(base.RESULTS, "a", encoding="utf-8") as f:
        f.write(section)
    log(f"appended to {base.RESULTS}")


if __name__ == "__main__":
    in_scratch("cluster-scripts.", run)
