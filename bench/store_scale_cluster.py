#!/usr/bin/env python3
"""The store on Redis Cluster against one primary, in the same run (bench/store-scale.sh with
CLUSTER=3).

This machine has 2 cores, so wall-clock throughput cannot show what 3 primaries add. What
predicts it is measured instead, for one primary and for a cluster of CLUSTER primaries (each
with a replica; REDIS_WAIT_REPLICAS=0 on both, so the store's own work is compared):

- N live tokens loaded in the store's layout (ids carry their user's bucket; on the cluster
  every key under its cluster name, sent to the primary that serves its slot): bytes per
  token, and each primary's share of keys and memory;
- issuance through the real store (`mcp-gateway tokens mint` for 48 users, each with a client
  of their own), then each script on its own (one user and one client on two primaries): Redis
  µs per
  script call and per token on each primary (INFO commandstats), commands (round trips) per
  token, each primary's share of the commands;
- the operator commands (stats, tokens list, tokens list --user, audit --out of the whole
  trail, audit --client through its index, backup, tokens
  purge-expired, clients delete --complete, restore) with a PING probe on every primary every
  millisecond and a verify probe (cache off) every 2 ms: wall time and the longest stall;
- cross-slot errors on every primary (INFO errorstats).

Usage: store_scale_cluster.py  (environment from bench/store-scale.sh: TARGET_DIR, N, USERS,
       CLIENTS, CLUSTER, RESULTS, KEEP_TMP)
"""

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import store_scale as base  # noqa: E402
from store_scale import (  # noqa: E402
    Probe, Redis, free_port, gateway_env, in_scratch, log, resp, run_cli, run_heading,
    verify_probe, wait_http,
)

N, USERS, CLIENTS = base.N, base.USERS, base.CLIENTS
PRIMARIES = int(os.environ.get("CLUSTER", "3"))
TARGET = base.TARGET
MINT_USERS = [f"minter{i}" for i in range(int(os.environ.get("MINT_USERS", "48")))]
MINT_EACH = int(os.environ.get("MINT_EACH", "375"))
# Tokens minted for one user and one client placed on two different primaries, to measure
# each step's script on its own.
SPLIT_EACH = int(os.environ.get("SPLIT_EACH", "3000"))
SPLIT_ROUNDS = 3


# --- the store's cluster layout, as src/slots.rs computes it --------------------------------

def crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(key):
    k = key.encode()
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1:end]
    return crc16(k) % 16384


def tag_of(b):
    base_tag = f"{b:02x}"
    lo, hi = b * 64, b * 64 + 63
    candidates = [base_tag] + [f"{base_tag}{n}" for n in range(100000)]
    return next(t for t in candidates if lo <= crc16(t.encode()) % 16384 <= hi)


TAGS = [tag_of(b) for b in range(256)]


def bucket(kind, text):
    return hashlib.sha1(kind.encode() + b"\0" + text.encode()).digest()[0]


def token_names(i, clients, cluster):
    """(jti, token key, user index, client index) of bench token i."""
    user = f"user{i % USERS}"
    client = clients[i % CLIENTS]
    ub = bucket("u", user)
    jti = f"{ub:02x}.bench{i:09d}"
    if not cluster:
        return jti, f"oauth:token:{jti}", f"oauth:user_tokens:{user}", \
            f"oauth:client_tokens:{client}"
    ut, ct = TAGS[ub], TAGS[bucket("c", client)]
    return jti, f"oauth:token:{{{ut}}}:{jti}", f"oauth:user_tokens:{{{ut}}}:{user}", \
        f"oauth:client_tokens:{{{ct}}}:{client}"


# --- servers --------------------------------------------------------------------------------

def node(work, procs, port, cluster):
    d = f"{work}/{port}"
    os.makedirs(d, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", d]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
                 "--cluster-config-file", "nodes.conf"]
    procs.append(subprocess.Popen(args, stdout=open(f"{d}/log", "w"),
                                  stderr=subprocess.STDOUT))
    for _ in range(100):
        try:
            Redis(port).cmd("PING")
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"redis-server on {port} did not start")


def cluster_port():
    while True:
        port = free_port()
        if port <= 45535:
            return port


def start_cluster(work, procs):
    ports = [cluster_port() for _ in range(PRIMARIES * 2)]
    for port in ports:
        node(work, procs, port, True)
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", "1", "--cluster-yes"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        infos = [Redis(p).cmd("CLUSTER", "INFO") for p in ports]
        if all("cluster_state:ok" in i for i in infos) and len(primaries(ports[0])) == PRIMARIES:
            synced = all("state=online" in Redis(p).info("replication").get("slave0", "")
                         for p in primaries(ports[0]))
            if synced:
                return ports
        time.sleep(0.2)
    raise SystemExit("the cluster did not come up")


def primaries(port):
    """{primary port: [(first slot, last slot), …]} from CLUSTER SLOTS."""
    out = {}
    for entry in Redis(port).cmd("CLUSTER", "SLOTS"):
        out.setdefault(int(entry[2][1]), []).append((int(entry[0]), int(entry[1])))
    return out


def owner_table(port):
    table = [0] * 16384
    for p, ranges in primaries(port).items():
        for lo, hi in ranges:
            for s in range(lo, hi + 1):
                table[s] = p
    return table


def pipe_into(port, chunks):
    p = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    p.stdin.write("".join(chunks))
    p.stdin.close()
    out = p.stdout.read()
    if p.wait() != 0 or "errors: 0" not in out:
        raise SystemExit(f"loading into {port} failed: {out}")


def load(ports, clients, now, cluster):
    """N tokens in the store's layout: each key sent to the primary serving its slot."""
    exp = now + 30 * 86400
    table = owner_table(ports[0]) if cluster else None
    batches = {}
    seen_index = set()

    def send(key, *command):
        port = table[slot(key)] if cluster else ports[0]
        batches.setdefault(port, []).append(resp(*command))
        if len(batches[port]) >= 30000:
            pipe_into(port, batches.pop(port))

    for i in range(N):
        jti, token, user_index, client_index = token_names(i, clients, cluster)
        user = f"user{i % USERS}"
        record = json.dumps({
            "jti": jti, "user_id": str(100000 + i % USERS), "username": user,
            "client_id": clients[i % CLIENTS], "scope": "mcp:read mcp:write",
            "audience": ["https://mcp.example.com/mcp"], "issued_at": now, "expires_at": exp,
        }, separators=(",", ":"))
        send(token, "SET", token, record, "EXAT", exp)
        send(user_index, "ZADD", user_index, exp, jti)
        send(client_index, "ZADD", client_index, exp, jti)
        seen_index.update((user_index, client_index))
    for index in seen_index:
        send(index, "EXPIREAT", index, exp)
    for client in clients:
        key = f"oauth:client:{{{TAGS[bucket('c', client)]}}}:{client}" if cluster \
            else f"oauth:client:{client}"
        send(key, "SET", key, json.dumps({
            "client_id": client, "client_name": client,
            "redirect_uris": ["http://127.0.0.1:9/cb"],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none", "client_id_issued_at": now,
            "client_secret_expires_at": 0}))
    for port, chunks in batches.items():
        pipe_into(port, chunks)


# --- measuring ------------------------------------------------------------------------------

def stats_of(port):
    r = Redis(port)
    cmd = r.info("commandstats")
    calls = usec = script_calls = script_usec = trips = 0
    for name, value in cmd.items():
        fields = dict(kv.split("=") for kv in value.split(","))
        calls += int(fields["calls"])
        usec += int(fields["usec"])
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            script_calls += int(fields["calls"])
            script_usec += int(fields["usec"])
        if name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_wait", "cmdstat_script|load"):
            trips += int(fields["calls"])
    errors = r.info("errorstats")
    return {
        "calls": calls, "usec": usec, "script_calls": script_calls, "script_usec": script_usec,
        "trips": trips, "cpu": float(r.info("cpu")["used_cpu_sys"]) + float(r.info("cpu")["used_cpu_user"]),
        "keys": int(r.cmd("DBSIZE")), "memory": int(r.info("memory")["used_memory"]),
        "crossslot": sum(int(v.split("=")[1]) for k, v in errors.items() if "CROSSSLOT" in k),
    }


def command_stats(port):
    """{command: (calls, usec)} from INFO commandstats."""
    out = {}
    for name, value in Redis(port).info("commandstats").items():
        fields = dict(kv.split("=") for kv in value.split(","))
        out[name.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
    return out


def share(values):
    total = sum(values) or 1
    return [100 * v / total for v in values]


def setup(work, procs, cluster):
    """A store (one primary with a replica, or the cluster), N tokens in it, verify and auth
    on it; returns what the measurements need."""
    if cluster:
        ports = start_cluster(work, procs)
        prims = sorted(primaries(ports[0]))
        seed_port = prims[0]
    else:
        primary, replica = free_port(), free_port()
        node(work, procs, primary, False)
        node(work, procs, replica, False)
        Redis(replica).cmd("REPLICAOF", "127.0.0.1", primary)
        while Redis(primary).info("replication").get("connected_slaves") != "1":
            time.sleep(0.1)
        ports, prims, seed_port = [primary], [primary], primary
    env = gateway_env(seed_port)
    # The store's own work, compared like for like: no WAIT on either (on one server without
    # Sentinel there is none; with it, each write's WAIT is one more round trip on both).
    env["REDIS_WAIT_REPLICAS"] = "0"
    if cluster:
        env["REDIS_URL"] = "redis://127.0.0.1:1"
        env["REDIS_CLUSTER_NODES"] = ",".join(f"127.0.0.1:{p}" for p in ports)
    verify_port = free_port()
    procs.append(subprocess.Popen(
        [f"{TARGET}/mcp-gateway-verify"],
        env={**env, "LISTEN_ADDR": f"127.0.0.1:{verify_port}", "VERIFY_CACHE_CAPACITY": "0"},
        stdout=open(f"{work}/verify-{len(ports)}.log", "w"), stderr=subprocess.STDOUT))
    wait_http(f"http://127.0.0.1:{verify_port}/health")
    clients = [f"bench-client-{c}" for c in range(CLIENTS)]
    now = int(time.time())
    before = [stats_of(p)["memory"] for p in prims]
    log(f"{'cluster' if cluster else 'one primary'}: loading {N} tokens")
    t0 = time.monotonic()
    load(ports, clients, now, cluster)
    load_s = time.monotonic() - t0
    after = [stats_of(p) for p in prims]
    mem = [a["memory"] - b for a, b in zip(after, before)]
    return {
        "ports": ports, "prims": prims, "env": env, "verify_port": verify_port,
        "clients": clients, "load_s": load_s, "mem": mem, "keys": [a["keys"] for a in after],
    }


def issuance(s):
    """`tokens mint` for 12 users through the store; per primary: script µs per call, all
    commands, and the totals per token."""
    for p in s["prims"]:
        Redis(p).cmd("CONFIG", "RESETSTAT")
    cpu = [stats_of(p)["cpu"] for p in s["prims"]]
    t0 = time.monotonic()
    # Each user with a client of their own, as logins spread over clients in use: one
    # client for every token would put every client-index step on one primary.
    for i, user in enumerate(MINT_USERS):
        subprocess.run(
            [f"{TARGET}/mcp-gateway", "tokens", "mint", "--count", str(MINT_EACH), "--user-id",
             "7", "--user", user, "--client-id", f"issuance-{i}", "--scope", "mcp"],
            env=s["env"], stdout=subprocess.DEVNULL, check=True)
    seconds = time.monotonic() - t0
    after = [stats_of(p) for p in s["prims"]]
    for x, before in zip(after, cpu):
        x["cpu_us"] = (x["cpu"] - before) * 1e6
    return after, seconds


def split_steps(s, cluster):
    """Each script of a token's issuance on its own: SPLIT_EACH tokens of one user and one
    client whose buckets are on two different primaries (on one primary: the same pair), so
    one primary runs only the home steps and the other only the client's steps. Returns
    {step: µs per call} and the follow-up's µs per token."""
    user, client = "splituser", None
    if cluster:
        owners = owner_table(s["prims"][0])
        home = owners[slot("{" + TAGS[bucket("u", user)] + "}")]
        for n in range(1000):
            candidate = f"splitclient{n}"
            if owners[slot("{" + TAGS[bucket("c", candidate)] + "}")] != home:
                client = candidate
                break
        other = owners[slot("{" + TAGS[bucket("c", client)] + "}")]
    else:
        client, home, other = "splitclient0", s["prims"][0], s["prims"][0]
    for p in s["prims"]:
        Redis(p).cmd("CONFIG", "RESETSTAT")
    subprocess.run(
        [f"{TARGET}/mcp-gateway", "tokens", "mint", "--count", str(SPLIT_EACH), "--user-id",
         "7", "--user", user, "--client-id", client, "--scope", "mcp"],
        env=s["env"], stdout=subprocess.DEVNULL, check=True)
    at_home, at_client = command_stats(home), command_stats(other)

    def per_call(stats, name):
        calls, usec = stats.get(name, (0, 0))
        return usec / calls if calls else 0.0

    out = {"home": per_call(at_home, "evalsha")}
    if cluster:
        out["client"] = per_call(at_client, "evalsha")
        usec = sum(at_client.get(c, (0, 0))[1] for c in ("xadd", "pexpire"))
        out["follow"] = usec / SPLIT_EACH
    return out


def operator_commands(s):
    env, clients = s["env"], s["clients"]
    pings = [Probe((lambda c: lambda: c.cmd("PING"))(Redis(p)), 0.001) for p in s["prims"]]
    token = subprocess.run(
        [f"{TARGET}/mcp-gateway", "tokens", "mint", "--user-id", "1", "--user", "probe",
         "--client-id", "probe", "--scope", "mcp", "--resource", "http://mcp.localhost/mcp"],
        env=env, capture_output=True, text=True, check=True).stdout.strip()
    verify, statuses = verify_probe(s["verify_port"], token)
    for p in pings + [verify]:
        p.start()
    time.sleep(1)
    backup_file = f"{s['work']}/backup-{len(s['prims'])}.jsonl"
    rows = []

    def count_rows(stdout):
        return sum(1 for line in stdout if line.startswith("  {"))

    def exported(stdout):
        said = stdout.read()
        return int(said.split("exported ", 1)[1].split(" ", 1)[0])

    def flush():
        # Before the measured window, as an operator restores into an empty store.
        for p in s["prims"]:
            Redis(p).cmd("FLUSHALL", "ASYNC")
        while any(int(Redis(p).cmd("DBSIZE")) for p in s["prims"]):
            time.sleep(0.1)
        time.sleep(0.5)

    steps = [
        ("stats", lambda: run_cli(["--json", "stats"], env, check_output=json.load),
         lambda v: v["live_tokens"] >= N),
        ("tokens list", lambda: run_cli(["--json", "tokens", "list"], env,
                                        check_output=count_rows), lambda n: n >= N),
        ("tokens list --user", lambda: run_cli(["--json", "tokens", "list", "--user", "user1"],
                                               env, check_output=count_rows),
         lambda n: n == N // USERS),
        # The audit trail (the issuance's events and more): exported whole, then one
        # client's events through its index.
        ("audit --out", lambda: run_cli(["audit", "--out", f"{s['work']}/trail.jsonl"], env,
                                        check_output=exported), lambda n: n >= MINT_EACH * len(MINT_USERS)),
        ("audit --client", lambda: run_cli(["--json", "audit", "--client", "issuance-0"], env,
                                           check_output=lambda out: sum(1 for _ in out)),
         lambda n: n >= MINT_EACH),
        ("backup", lambda: run_cli(["backup", "--out", backup_file], env), lambda _: True),
        ("tokens purge-expired", lambda: run_cli(["--json", "tokens", "purge-expired"], env,
                                                 check_output=json.load), lambda _: True),
        ("clients delete --complete", lambda: run_cli(["clients", "delete", "--complete",
                                                       clients[1]], env), lambda _: True),
        ("restore", lambda: run_cli(["restore", backup_file], env,
                                    check_output=lambda f: f.read()), lambda _: True),
    ]
    for name, action, check in steps:
        if name == "restore":
            flush()
        log(f"{name} …")
        start = time.monotonic()
        seconds, rss, out = action()
        end = time.monotonic()
        time.sleep(0.05)
        if not check(out):
            raise SystemExit(f"{name} gave a wrong answer: {out!r}")
        rows.append((name, seconds, rss, max(p.worst(start, end) for p in pings),
                     verify.worst(start, end)))
        log(f"{name}: {seconds:.1f} s, worst PING {rows[-1][3]:.1f} ms, "
            f"worst /verify {rows[-1][4]:.1f} ms")
    for p in pings + [verify]:
        p.stop.set()
    return rows, statuses


def run(work, procs):
    results = {}
    for cluster in (False, True):
        s = setup(work, procs, cluster)
        s["work"] = work
        s["issue"], s["mint_s"] = issuance(s)
        results[cluster] = s
    # Each script on its own, one store then the other, three rounds: the median of each.
    rounds = {False: [], True: []}
    for _ in range(SPLIT_ROUNDS):
        for cluster in (False, True):
            rounds[cluster].append(split_steps(results[cluster], cluster))
    for cluster, s in results.items():
        s["split"] = {k: statistics.median(r[k] for r in rounds[cluster]) for k in rounds[cluster][0]}
        s["split_rounds"] = rounds[cluster]
    for cluster, s in results.items():
        s["ops"], s["statuses"] = operator_commands(s)
        s["crossslot"] = sum(stats_of(p)["crossslot"] for p in s["prims"])
    one, many = results[False], results[True]
    minted = MINT_EACH * len(MINT_USERS)

    def per_token(s, field):
        return sum(x[field] for x in s["issue"]) / minted

    def per_call(x):
        return x["script_usec"] / max(x["script_calls"], 1)

    heading, tree = run_heading(f"Store scale on Redis Cluster ({PRIMARIES} primaries)")
    lines = heading + [
        f"- `CLUSTER={PRIMARIES} bash bench/store-scale.sh` (N={N}, {USERS} users, {CLIENTS} "
        f"clients), tree {tree}, nproc={os.cpu_count()}; one primary + replica against "
        f"{PRIMARIES} primaries + {PRIMARIES} replicas, same run, same machine; "
        f"REDIS_WAIT_REPLICAS=0 on both (the store's own work, like for like)",
        f"- memory: one primary {sum(one['mem']) / N:.0f} bytes per token; cluster "
        f"{sum(many['mem']) / N:.0f} bytes per token (tags make names 7 bytes longer)",
        f"- keys per primary: {', '.join(str(k) for k in many['keys'])} "
        f"({', '.join(f'{x:.1f} %' for x in share(many['keys']))}); memory per primary "
        f"{', '.join(f'{x:.1f} %' for x in share(many['mem']))} (target 33 % ± 5 %)",
        f"- issuance (`tokens mint` of {minted} tokens for {len(MINT_USERS)} users, each "
        f"the audit trail on): Redis CPU (INFO cpu) per "
        f"token: one primary {per_token(one, 'cpu_us'):.1f} µs; cluster "
        f"{per_token(many, 'cpu_us'):.1f} µs over all primaries, "
        + ", ".join(f"{x['cpu_us'] / minted:.1f}" for x in many["issue"])
        + f" µs on each; script time per token: one primary {per_token(one, 'script_usec'):.1f} µs, "
        f"cluster {per_token(many, 'script_usec'):.1f} µs; round trips per token (script calls, "
        f"WAIT): one primary {per_token(one, 'trips'):.2f}, cluster {per_token(many, 'trips'):.2f}",
        f"- script µs per call: one primary {per_call(one['issue'][0]):.2f}; cluster "
        + ", ".join(f"{per_call(x):.2f}" for x in many["issue"])
        + " (each primary: its mix of the token's two steps); commands per primary "
        + ", ".join(f"{x:.1f} %" for x in share([x['calls'] for x in many['issue']]))
        + f"; issuance took {one['mint_s']:.1f} s on one primary, {many['mint_s']:.1f} s on the "
        f"cluster (RS256 signing and the CLI dominate)",
        f"- each script on its own ({SPLIT_EACH} tokens of one user and one client on two "
        f"primaries, {SPLIT_ROUNDS} rounds alternating one primary and the cluster, median; "
        f"INFO commandstats, µs per call; home step per round "
        + ", ".join(f"{r['home']:.1f}/{c['home']:.1f}" for r, c in
                    zip(one['split_rounds'], many['split_rounds']))
        + f" one/cluster): one primary PUT_TOKEN "
        f"{one['split']['home']:.2f}; cluster home step (record, user index, event) "
        f"{many['split']['home']:.2f} ({many['split']['home'] / max(one['split']['home'], 1e-9):.2f}×), "
        f"client step (its index) {many['split']['client']:.2f}, and the client's audit index "
        f"entry after them (XADD, PEXPIRE) {many['split']['follow']:.2f} µs per token",
        f"- cross-slot errors: one primary {one['crossslot']}, cluster {many['crossslot']}",
        f"- verify probe answers: one primary {dict(sorted(one['statuses'].items()))}, cluster "
        f"{dict(sorted(many['statuses'].items()))} (401 while restore had not yet brought the "
        f"probe's token back)",
        "",
        "| operation | one primary (s) | cluster (s) | CLI peak RSS one / cluster (MiB) | "
        "longest PING one / cluster (ms) | longest /verify one / cluster (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(one["ops"], many["ops"]):
        lines.append(f"| {a[0]} | {a[1]:.1f} | {b[1]:.1f} | {a[2]:.1f} / {b[2]:.1f} | "
                     f"{a[3]:.1f} / {b[3]:.1f} | {a[4]:.1f} / {b[4]:.1f} |")
    worst = max(max(r[3], r[4]) for r in many["ops"])
    lines += ["", f"- longest stall on the cluster {worst:.1f} ms — target ≤ "
              f"{base.STALL_TARGET_MS:.0f} ms: {'met' if worst <= base.STALL_TARGET_MS else 'NOT met'}"]
    section = "\n".join(lines) + "\n"
    print(section)
    with open(base.RESULTS, "a", encoding="utf-8") as f:
        f.write(section)
    log(f"appended to {base.RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(in_scratch("store-scale-cluster.", run))
