#!/usr/bin/env python3
"""The audit trail at a million events (driven by bench/audit-scale.sh).

Loads EVENTS events into a private redis-server as the services write them (the trail
`oauth:audit` with ids spread over the last RETENTION_DAYS days, and the per-user and
per-client index streams with the same ids; USERS users, CLIENTS clients), then measures:

- Redis memory per million events (the trail and its indexes together);
- what the operator commands take: `audit --limit 100` (the newest page), `audit --user U`
  (every event of one user, through its index), `trace --client C` (every event of one
  client, oldest first), `audit --type refresh_reuse_detected --limit 20` (a rare type,
  read through the trail page by page) — wall time and the CLI's peak RSS;
- the longest Redis stall while the trail is trimmed by real writes: `tokens mint --count
  300` with AUDIT_MAX_EVENTS at half the trail (each write trims a bounded slice), then with
  AUDIT_RETENTION cutting half of it by age; a PING probe every millisecond on its own
  connection sees the stall (target < 20 ms).

Fails only when a command fails or reads a wrong count.
"""

import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from store_scale import (  # noqa: E402
    Probe, Redis, gateway_env, in_scratch, resp, run_cli, start_redis,
)

EVENTS = int(os.environ.get("EVENTS", "1000000"))
USERS = int(os.environ.get("USERS", "1000"))
CLIENTS = int(os.environ.get("CLIENTS", "100"))
RETENTION_DAYS = 30
RESULTS = os.environ.get("RESULTS", "bench/RESULTS.md")
STALL_TARGET_MS = 20.0
TYPES = ["token_refreshed"] * 70 + ["token_used"] * 10 + ["access_refused"] * 8 + \
    ["token_issued", "login", "authorization_started", "consent_granted"] * 2 + \
    ["token_revoked", "grant_refused", "client_registered", "refresh_reuse_detected"] * 1



def log(msg):
    print(f"[audit-scale] {msg}", file=sys.stderr, flush=True)

def load(port, now_ms):
    """EVENTS events, oldest first, through redis-cli --pipe."""
    rng = random.Random(7)
    span = RETENTION_DAYS * 86_400_000
    start = now_ms - span
    step = span / EVENTS
    per_user = {}
    chunks = []
    p = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for i in range(EVENTS):
        ms = int(start + i * step)
        user, client = f"user{rng.randrange(USERS)}", f"client{rng.randrange(CLIENTS)}"
        per_user[user] = per_user.get(user, 0) + 1
        kind = rng.choice(TYPES)
        event = {
            "v": 1, "type": kind, "level": "info", "actor": {"kind": "client", "id": client},
            "outcome": "success", "user": user, "user_id": str(hash(user) & 0xffffff),
            "upstream": "github", "client_id": client, "jti": f"{i:022d}",
            "family": f"{i // 8:022d}", "grant": "refresh_token", "scope": "mcp",
            "resource": "https://mcp.example.com/mcp", "ip": "203.0.113.7",
            "user_agent": "claude-code/2.1 (external, cli)",
        }
        entry = f"{ms}-{i % 1000}"
        chunks.append(resp("XADD", "oauth:audit", entry, "t", kind, "e",
                           json.dumps(event, separators=(",", ":"))))
        chunks.append(resp("XADD", f"oauth:audit_user:{user}", entry, "t", kind))
        chunks.append(resp("XADD", f"oauth:audit_client:{client}", entry, "t", kind))
        if len(chunks) >= 30_000:
            p.stdin.write("".join(chunks))
            chunks = []
    p.stdin.write("".join(chunks))
    p.stdin.close()
    out = p.stdout.read()
    p.wait()
    if "errors: 0" not in out:
        raise SystemExit(f"loading failed: {out}")
    return per_user


def run(work, procs):
    port, r = start_redis(work, procs)
    env = gateway_env(port)
    base = int(r.info("memory")["used_memory"])
    now_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    per_user = load(port, now_ms)
    log(f"loaded {EVENTS} events in {time.monotonic() - t0:.1f} s")
    used = int(r.info("memory")["used_memory"]) - base
    probe_conn = Redis(port)
    probe = Probe(lambda: probe_conn.cmd("PING"), 0.001)
    probe.start()
    rows = []

    def measure(name, args, expect=None, extra_env=None):
        start = time.monotonic()

        def count(stdout):
            return sum(1 for _ in stdout)
        seconds, rss, n = run_cli(args, {**env, **(extra_env or {})}, check_output=count)
        end = time.monotonic()
        if expect is not None and n != expect:
            raise SystemExit(f"{name}: {n} lines, expected {expect}")
        rows.append((name, seconds, rss, probe.worst(start, end), n))
        log(f"{name}: {seconds:.2f} s, {rss:.0f} MiB, stall {probe.worst(start, end):.1f} ms")

    user = max(per_user, key=per_user.get)
    measure("`audit --json --limit 100` (the newest page)", ["audit", "--json", "--limit", "100"], 100)
    measure(f"`audit --json --user {user}` ({per_user[user]} events, through its index)",
            ["audit", "--json", "--user", user], per_user[user])
    client_events = int(r.cmd("XLEN", "oauth:audit_client:client3"))
    measure(f"`trace --json --client client3` ({client_events} events)",
            ["trace", "--json", "--client", "client3"], client_events)
    measure("`audit --json --type refresh_reuse_detected --limit 20` (a rare type, page by page)",
            ["audit", "--json", "--type", "refresh_reuse_detected", "--limit", "20"], 20)
    # Trimming by real writes: each mint writes an event through the grant script, which
    # trims whole stream nodes, a bounded slice per call.
    mint = ["tokens", "mint", "--count", "300", "--user-id", "1", "--user", "alice",
            "--client-id", "bench", "--scope", "mcp"]
    measure("300 writes with AUDIT_MAX_EVENTS = half the trail (trims by length)", mint,
            300, {"AUDIT_MAX_EVENTS": str(EVENTS // 2)})
    after_length = int(r.cmd("XLEN", "oauth:audit"))
    measure("300 writes with AUDIT_RETENTION = half the span (trims by age)", mint,
            300, {"AUDIT_RETENTION": f"{RETENTION_DAYS // 2}d"})
    after_age = int(r.cmd("XLEN", "oauth:audit"))
    probe.stop.set()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    per_event = used / EVENTS
    lines = [
        "",
        f"## audit trail at {EVENTS:,} events: run {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        "",
        f"- machine: nproc={os.cpu_count()}; tree: {commit}; {USERS} users, {CLIENTS} clients, "
        f"events over {RETENTION_DAYS} days (bench/audit-scale.sh)",
        f"- Redis memory: {used / 2**20:.0f} MiB for {EVENTS:,} events with their user and client "
        f"index entries: {per_event:.0f} bytes an event, {per_event * 1e6 / 2**30:.2f} GiB per million",
        "",
        "| operation | wall (s) | CLI peak RSS (MiB) | longest Redis stall (ms) | lines |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds, rss, stall, n in rows:
        lines.append(f"| {name} | {seconds:.2f} | {rss:.0f} | {stall:.1f} | {n} |")
    worst = max(row[3] for row in rows[-2:])
    lines += [
        "",
        f"- trimming: {after_length:,} events left after the length-bounded writes (each call trims "
        f"at most 100 stream nodes: the trail converges over writes), {after_age:,} after the age-bounded ones",
        f"- longest stall while trimming: {worst:.1f} ms — target < {STALL_TARGET_MS:.0f} ms: "
        f"{'met' if worst < STALL_TARGET_MS else 'NOT met'}",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(section)


if __name__ == "__main__":
    in_scratch("audit-scale.", run)
