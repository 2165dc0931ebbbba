#!/usr/bin/env python3
"""`/token` refresh throughput with the audit trail on and off (driven by
bench/token-refresh.sh).

Two `mcp-gateway-auth` processes share one private redis-server: one with the trail on (the
default: every refresh writes `token_refreshed` in its grant script) and one with
`AUDIT_ENABLED=false`. Each run seeds THREADS fresh refresh grants of a public client, then
wrk chains refreshes on THREADS connections for DURATION (each answer's refresh token is the
next request, as a client does; bench/refresh-chain.lua). The two alternate ROUNDS times, so a
noisy neighbour hits both alike; the median round's ratio is the result (target ≥ 0.95).
Redis' own time per grant script (`INFO commandstats`, evalsha usec_per_call) is read for each
run. ES256 signing keeps the signature from hiding what the store costs.

Fails only when a run answers anything but 200 (or a service does not start).
"""

import hashlib
import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from store_scale import (  # noqa: E402
    TARGET, free_port, gateway_env, in_scratch, start_redis, wait_http,
)
from parse_wrk import parse  # noqa: E402

THREADS = int(os.environ.get("THREADS", "4"))
DURATION = os.environ.get("DURATION", "10s")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
RESULTS = os.environ.get("RESULTS", "bench/RESULTS.md")
BENCH = os.path.dirname(os.path.abspath(__file__))



def log(msg):
    print(f"[token-refresh] {msg}", file=sys.stderr, flush=True)

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seed(r, client_id, n):
    """n refresh grants of alice for `client_id`, in the records' layout; their tokens."""
    now = int(time.time())
    tokens = []
    for _ in range(n):
        token = secrets.token_urlsafe(32)
        digest = b64url(hashlib.sha256(token.encode()).digest())
        family = secrets.token_urlsafe(16)
        record = {
            "family_id": family, "client_id": client_id,
            "user": {"id": "1", "login": "alice"}, "scope": "mcp", "resource": None,
            "amr": ["github"], "issued_at": now, "expires_at": now + 3600, "used": False,
        }
        r.cmd("SET", f"oauth:refresh:{digest}", json.dumps(record), "EX", 3600)
        r.cmd("ZADD", f"oauth:family:{family}", now + 3600, f"r:{digest}")
        r.cmd("EXPIRE", f"oauth:family:{family}", 3600)
        tokens.append(token)
    return tokens


def run(work, procs):
    redis_port, r = start_redis(work, procs)
    env = gateway_env(redis_port)
    keys = subprocess.run([f"{TARGET}/mcp-gateway", "keys", "generate", "--alg", "ES256"],
                          capture_output=True, text=True, check=True).stdout
    for line in keys.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    env.update({"RATE_LIMIT_TOKEN": "0", "RATE_LIMIT_CLIENT_FAILURES": "0"})
    bases = {}
    for name, extra in (("on", {}), ("off", {"AUDIT_ENABLED": "false"})):
        port = free_port()
        procs.append(subprocess.Popen(
            [f"{TARGET}/mcp-gateway-auth"],
            env={**env, **extra, "LISTEN_ADDR": f"127.0.0.1:{port}",
                 "ISSUER_URL": f"http://127.0.0.1:{port}"},
            stdout=open(f"{work}/auth-{name}.log", "w"), stderr=subprocess.STDOUT,
        ))
        bases[name] = f"http://127.0.0.1:{port}"
        wait_http(f"{bases[name]}/health")
    request = urllib.request.Request(
        f"{bases['on']}/register",
        data=json.dumps({"redirect_uris": ["http://127.0.0.1:9/cb"],
                         "token_endpoint_auth_method": "none",
                         "grant_types": ["authorization_code", "refresh_token"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    client_id = json.load(urllib.request.urlopen(request))["client_id"]

    def measure(name):
        tokens_file = f"{work}/tokens-{name}.txt"
        with open(tokens_file, "w") as f:
            f.write("\n".join(seed(r, client_id, THREADS)) + "\n")
        r.cmd("CONFIG", "RESETSTAT")
        out = subprocess.run(
            ["wrk", f"-t{THREADS}", f"-c{THREADS}", f"-d{DURATION}", "--latency",
             "-s", f"{BENCH}/refresh-chain.lua", bases[name]],
            env={**os.environ, "TOKENS_FILE": tokens_file, "CLIENT_ID": client_id},
            capture_output=True, text=True, check=True,
        ).stdout
        result = parse(out)
        if result["non2xx"] or result["sock_connect"] or result["sock_read"]:
            raise SystemExit(f"({name}) refreshes failed:\n{out}")
        stats = r.info("commandstats")
        evalsha = dict(kv.split("=") for kv in stats.get("cmdstat_evalsha", "calls=0,usec_per_call=0").split(",") if "=" in kv)
        xadd = dict(kv.split("=") for kv in stats.get("cmdstat_xadd", "calls=0").split(",") if "=" in kv)
        result["script_us"] = float(evalsha.get("usec_per_call", 0))
        result["xadd"] = int(xadd.get("calls", 0))
        log(f"({name}) {result['rps']:.0f} refreshes/s, Redis {result['script_us']:.1f} µs per script call")
        return result

    for name in ("on", "off"):  # warm-up, unrecorded
        measure(name)
    runs = []
    for _ in range(ROUNDS):
        on, off = measure("on"), measure("off")
        runs.append((on["rps"] / off["rps"] if off["rps"] else 0.0, on, off))
    runs.sort(key=lambda x: x[0])
    ratio, on, off = runs[len(runs) // 2]
    trail = int(r.cmd("XLEN", "oauth:audit"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    section = "\n".join([
        "",
        f"## token refresh, audit on vs off: run {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        "",
        f"- machine: nproc={os.cpu_count()}; tree: {commit}; wrk -t{THREADS} -c{THREADS} -d{DURATION}, "
        f"each connection a chain of refreshes (bench/token-refresh.sh), ES256, {ROUNDS} alternating rounds",
        "",
        "| run | refreshes/s | p50 (µs) | p99 (µs) | Redis µs per grant script | XADD calls |",
        "|---|---:|---:|---:|---:|---:|",
        f"| audit on (default) | {on['rps']:.0f} | {on['p50_us']:.0f} | {on['p99_us']:.0f} | {on['script_us']:.1f} | {on['xadd']} |",
        f"| AUDIT_ENABLED=false | {off['rps']:.0f} | {off['p50_us']:.0f} | {off['p99_us']:.0f} | {off['script_us']:.1f} | {off['xadd']} |",
        "",
        f"- ratio on/off (median round): {ratio:.3f} — target ≥ 0.95: {'met' if ratio >= 0.95 else 'NOT met'}; "
        f"per round: {', '.join(f'{x[0]:.3f}' for x in sorted(runs, key=lambda x: x[1]['rps']))}",
        f"- the trail held {trail} events afterwards (one `token_refreshed` per refresh of the 'on' runs)",
        "",
    ])
    print(section)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(section)


if __name__ == "__main__":
    in_scratch("token-refresh.", run)
