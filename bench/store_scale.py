#!/usr/bin/env python3
"""The store at scale (driven by bench/store-scale.sh).

Loads N live tokens into a private redis-server in the seed's layout (the record
`oauth:token:{jti}` plus its entries in `oauth:user_tokens:{user}` and
`oauth:client_tokens:{client}`; USERS users, CLIENTS clients), then runs every operator
command that walks the store and the anonymous `DELETE /register/{id}`, one at a time,
while two probes run:

- a PING probe: one PING every millisecond on its own connection; the longest answer is
  the longest Redis stall the operation caused;
- a verify probe: `GET /verify` against a verify started with VERIFY_CACHE_CAPACITY=0, so
  every request is a cache miss that asks Redis (EXISTS) as a first request would.

For each operation it records the wall time, the CLI's peak RSS (wait4 ru_maxrss) and both
probes' longest answer. Targets are reported, never asserted (shared machine); the script
fails only when an operation fails or gives a wrong answer (stats and listings are checked
against N, the backup restores N tokens).

Usage: store_scale.py  (environment from bench/store-scale.sh: TARGET_DIR, N, USERS,
       CLIENTS, RESULTS, KEEP_TMP)
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TARGET = os.environ.get("TARGET_DIR", "target") + "/release"
N = int(os.environ.get("N", "1000000"))
USERS = int(os.environ.get("USERS", "1000"))
CLIENTS = int(os.environ.get("CLIENTS", "100"))
RESULTS = os.environ.get("RESULTS", "bench/RESULTS.md")
KEEP_TMP = os.environ.get("KEEP_TMP", "0") == "1"
STALL_TARGET_MS = 50.0


def log(msg):
    print(f"[store-scale] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, deadline_s=20):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {deadline_s} s")


class Redis:
    """A minimal RESP client: enough for PING, INFO and a few commands."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode()
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def cmd(self, *args):
        out = f"*{len(args)}\r\n".encode()
        for a in args:
            b = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        self.sock.sendall(out)
        return self._read()

    def info(self, section):
        return dict(
            line.split(":", 1)
            for line in self.cmd("INFO", section).splitlines()
            if ":" in line
        )


class Probe(threading.Thread):
    """Runs `once()` in a loop, recording (start time, duration in ms)."""

    def __init__(self, once, pause_s):
        super().__init__(daemon=True)
        self.once, self.pause_s = once, pause_s
        self.samples = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                self.once()
            except Exception:
                self.errors += 1
            self.samples.append((t0, (time.monotonic() - t0) * 1000))
            time.sleep(self.pause_s)

    def worst(self, start, end):
        """Longest answer of a probe that started in [start, end], or that was still
        running at `start` (a stall that began just before counts too)."""
        window = [d for (t, d) in self.samples if start - d / 1000 <= t <= end]
        return max(window) if window else 0.0

    def count(self, start, end):
        return sum(1 for (t, _) in self.samples if start <= t <= end)


def verify_probe(port, token):
    """A probe asking verify about `token` every 2 ms, and the statuses it counts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses = {}

    def once():
        conn.request("GET", "/verify", headers={
            "Authorization": f"Bearer {token}", "X-Forwarded-Proto": "http",
            "X-Forwarded-Host": "mcp.localhost", "X-Forwarded-Uri": "/mcp",
            "X-Forwarded-Method": "POST"})
        answer = conn.getresponse()
        answer.read()
        statuses[answer.status] = statuses.get(answer.status, 0) + 1

    return Probe(once, 0.002), statuses


def resp(*args):
    out = [f"*{len(args)}\r\n"]
    for a in args:
        a = str(a)
        out.append(f"${len(a.encode())}\r\n{a}\r\n")
    return "".join(out)


def load(redis_port, clients, now):
    """N tokens in the seed's layout, through redis-cli --pipe."""
    exp = now + 30 * 86400
    p = subprocess.Popen(
        ["redis-cli", "-p", str(redis_port), "--pipe"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    batch = []
    for i in range(N):
        jti = f"bench{i:09d}"
        user = f"user{i % USERS}"
        client = clients[i % CLIENTS]
        record = json.dumps(
            {
                "jti": jti,
                "user_id": str(100000 + i % USERS),
                "username": user,
                "client_id": client,
                "scope": "mcp:read mcp:write",
                "audience": ["https://mcp.example.com/mcp"],
                "issued_at": now,
                "expires_at": exp,
            },
            separators=(",", ":"),
        )
        batch.append(resp("SET", f"oauth:token:{jti}", record, "EXAT", exp))
        batch.append(resp("ZADD", f"oauth:user_tokens:{user}", exp, jti))
        batch.append(resp("ZADD", f"oauth:client_tokens:{client}", exp, jti))
        if len(batch) >= 30000:
            p.stdin.write("".join(batch))
            batch = []
    for u in range(USERS):
        batch.append(resp("EXPIREAT", f"oauth:user_tokens:user{u}", exp))
    for c in clients:
        batch.append(resp("EXPIREAT", f"oauth:client_tokens:{c}", exp))
    p.stdin.write("".join(batch))
    p.stdin.close()
    out = p.stdout.read()
    if p.wait() != 0 or "errors: 0" not in out:
        raise SystemExit(f"loading failed: {out}")


def peak_rss_kib(pid):
    """VmHWM: the process's peak RSS since it exec'd (wait4's ru_maxrss would count the
    Python process it was forked from)."""
    try:
        # Not yet exec'd: still the forked Python.
        if not os.readlink(f"/proc/{pid}/exe").endswith("mcp-gateway"):
            return None
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def run_cli(args, env, stdout=subprocess.DEVNULL, check_output=None):
    """Runs `mcp-gateway ARGS`; returns (seconds, peak RSS MiB, what check_output made of
    stdout). The peak is read every 5 ms while it runs; the last reading counts."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        [f"{TARGET}/mcp-gateway", *args],
        env=env,
        stdout=subprocess.PIPE if check_output else stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            kib = peak_rss_kib(p.pid)
            if kib:
                peak[0] = max(peak[0], kib)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    checked = check_output(p.stdout) if check_output else None
    err = p.stderr.read()
    p.wait()
    done.set()
    watcher.join()
    elapsed = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"mcp-gateway {' '.join(args)} failed ({p.returncode}): {err}")
    return elapsed, peak[0] / 1024, checked


def in_scratch(prefix, run):
    """Runs `run(work, procs)` in a scratch directory; every process it appends to `procs` is
    stopped afterwards and the directory removed (kept with KEEP_TMP=1)."""
    work = tempfile.mkdtemp(prefix=prefix)
    procs = []
    try:
        return run(work, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        if KEEP_TMP:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def start_redis(work, procs):
    """A private redis-server on a free loopback port; returns (port, connection)."""
    port = free_port()
    procs.append(
        subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", work],
            stdout=open(f"{work}/redis.log", "w"),
            stderr=subprocess.STDOUT,
        )
    )
    for _ in range(100):
        try:
            r = Redis(port)
            r.cmd("PING")
            return port, r
        except Exception:
            time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def run_heading(title):
    """The first lines of a run's entry in RESULTS.md: a blank line, the heading with the UTC
    time, a blank line; and the tree measured (HEAD, and whether it had uncommitted changes)."""
    tree = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                      capture_output=True, text=True).stdout.strip():
        tree += " with uncommitted changes"
    heading = ["", f"## {title} run {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", ""]
    return heading, tree


def gateway_env(redis_port):
    """The services' environment on that Redis, with a fresh RS256 key."""
    keys = subprocess.run(
        [f"{TARGET}/mcp-gateway", "keys", "generate", "--alg", "RS256"],
        capture_output=True, text=True, check=True,
    ).stdout
    env = {
        "PATH": os.environ["PATH"],
        "BASE_DOMAIN": "localhost",
        "ISSUER_URL": "http://auth.localhost",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "RESOURCE_HOSTS": "mcp.localhost",
        "ALLOWED_GITHUB_USERS": "*",
        "RUST_LOG": "warn",
        "SHUTDOWN_DRAIN": "0",
        "GITHUB_CLIENT_ID": "bench",
        "GITHUB_CLIENT_SECRET": "bench-secret",
    }
    for line in keys.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


def main():
    return in_scratch("store-scale.", run)


def run(work, procs):
    redis_port, r = start_redis(work, procs)
    env = gateway_env(redis_port)
    verify_port, auth_port = free_port(), free_port()
    procs.append(subprocess.Popen(
        [f"{TARGET}/mcp-gateway-verify"],
        env={**env, "LISTEN_ADDR": f"127.0.0.1:{verify_port}", "VERIFY_CACHE_CAPACITY": "0"},
        stdout=open(f"{work}/verify.log", "w"), stderr=subprocess.STDOUT,
    ))
    procs.append(subprocess.Popen(
        [f"{TARGET}/mcp-gateway-auth"],
        env={**env, "LISTEN_ADDR": f"127.0.0.1:{auth_port}"},
        stdout=open(f"{work}/auth.log", "w"), stderr=subprocess.STDOUT,
    ))
    wait_http(f"http://127.0.0.1:{verify_port}/health")
    wait_http(f"http://127.0.0.1:{auth_port}/health")

    # One client registered through the API (for DELETE /register/{id}); the others in the
    # registration's layout.
    req = urllib.request.Request(
        f"http://127.0.0.1:{auth_port}/register",
        data=json.dumps({"client_name": "bench", "redirect_uris": ["http://127.0.0.1:9/cb"],
                         "token_endpoint_auth_method": "none"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as answer:
        registered = json.load(answer)
    api_client = registered["client_id"]
    clients = [api_client] + [f"bench-client-{c}" for c in range(1, CLIENTS)]
    now = int(time.time())
    for c in clients[1:]:
        r.cmd("SET", f"oauth:client:{c}", json.dumps({
            "client_id": c, "client_name": c, "redirect_uris": ["http://127.0.0.1:9/cb"],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none", "client_id_issued_at": now,
            "client_secret_expires_at": 0}))

    mem_before = int(r.info("memory")["used_memory"])
    log(f"loading {N} tokens ({USERS} users, {CLIENTS} clients)")
    t0 = time.monotonic()
    load(redis_port, clients, now)
    load_s = time.monotonic() - t0
    mem_after = int(r.info("memory")["used_memory"])
    per_token = (mem_after - mem_before) / N
    log(f"loaded in {load_s:.1f} s; Redis {mem_after / 2**20:.0f} MiB, {per_token:.0f} bytes per token")

    probe_token = subprocess.run(
        [f"{TARGET}/mcp-gateway", "tokens", "mint", "--user-id", "1", "--user", "probe",
         "--client-id", "probe", "--scope", "mcp", "--resource", "http://mcp.localhost/mcp"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()

    # What one issuance costs Redis: the real put_token script, through `tokens mint`.
    def script_usec():
        stats = r.info("commandstats")
        calls = usec = 0
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            if name in stats:
                fields = dict(kv.split("=") for kv in stats[name].split(","))
                calls += int(fields["calls"])
                usec += int(fields["usec"])
        return calls, usec

    r.cmd("CONFIG", "RESETSTAT")
    minted = 20000
    t0 = time.monotonic()
    subprocess.run(
        [f"{TARGET}/mcp-gateway", "tokens", "mint", "--count", str(minted), "--user-id", "2",
         "--user", "issuer", "--client-id", "issuance", "--scope", "mcp"],
        env=env, stdout=subprocess.DEVNULL, check=True)
    mint_s = time.monotonic() - t0
    calls, usec = script_usec()
    issue_usec = usec / max(calls, 1)

    ping_conn = Redis(redis_port)
    ping = Probe(lambda: ping_conn.cmd("PING"), 0.001)
    verify, statuses = verify_probe(verify_port, probe_token)
    ping.start()
    verify.start()
    time.sleep(1)

    rows = []

    def measure(name, action):
        log(f"{name} …")
        start = time.monotonic()
        seconds, rss, note = action()
        end = time.monotonic()
        time.sleep(0.05)
        rows.append({
            "op": name, "seconds": seconds, "rss": rss, "note": note or "",
            "ping_ms": ping.worst(start, end), "pings": ping.count(start, end),
            "verify_ms": verify.worst(start, end), "verifies": verify.count(start, end),
        })
        log(f"{name}: {seconds:.1f} s, RSS {rss if rss is None else round(rss, 1)} MiB, "
            f"worst PING {rows[-1]['ping_ms']:.1f} ms, worst /verify {rows[-1]['verify_ms']:.1f} ms")

    def stats():
        def check(stdout):
            return json.load(stdout)
        s, rss, v = run_cli(["--json", "stats"], env, check_output=check)
        if v["live_tokens"] < N:
            raise SystemExit(f"stats counted {v['live_tokens']} live tokens, loaded {N}")
        return s, rss, f"{v['live_tokens']} live tokens, {v['keys']} keys"

    def count_rows(stdout):
        return sum(1 for line in stdout if line.startswith("  {"))

    def list_all():
        s, rss, n = run_cli(["--json", "tokens", "list"], env, check_output=count_rows)
        if n < N:
            raise SystemExit(f"tokens list printed {n} tokens, loaded {N}")
        return s, rss, f"{n} tokens listed"

    def list_user():
        s, rss, n = run_cli(["--json", "tokens", "list", "--user", "user1"], env,
                            check_output=count_rows)
        if n != N // USERS:
            raise SystemExit(f"tokens list --user printed {n}, expected {N // USERS}")
        return s, rss, f"{n} tokens listed"

    backup_file = f"{work}/backup.jsonl"

    def backup():
        s, rss, _ = run_cli(["backup", "--out", backup_file], env)
        return s, rss, f"{os.path.getsize(backup_file) / 2**20:.0f} MiB file"

    def purge():
        s, rss, out = run_cli(["--json", "tokens", "purge-expired"], env,
                              check_output=lambda f: json.load(f))
        return s, rss, f"{out['expired_index_entries']} expired, {out['orphans']} orphans"

    revoke_cost = {}

    def delete_cli():
        r.cmd("CONFIG", "RESETSTAT")
        s, rss, _ = run_cli(["clients", "delete", "--complete", clients[1]], env)
        calls, usec = script_usec()
        revoke_cost["usec"] = usec / (N // CLIENTS)
        left = int(r.cmd("ZCARD", f"oauth:client_tokens:{clients[1]}"))
        if left or r.cmd("EXISTS", f"oauth:client:{clients[1]}") != "0":
            raise SystemExit(f"clients delete --complete left {left} tokens")
        return s, rss, f"{N // CLIENTS} tokens revoked"

    def delete_api():
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", auth_port, timeout=120)
        conn.request("DELETE", f"/register/{api_client}", headers={
            "Authorization": f"Bearer {registered['registration_access_token']}"})
        status = conn.getresponse().status
        s = time.monotonic() - t0
        if status != 204:
            raise SystemExit(f"DELETE /register answered {status}")
        left = int(r.cmd("ZCARD", f"oauth:client_tokens:{api_client}"))
        if left:
            raise SystemExit(f"DELETE /register left {left} tokens")
        return s, None, f"{N // CLIENTS} tokens revoked (204)"

    def restore():
        r.cmd("FLUSHALL", "ASYNC")
        while int(r.cmd("DBSIZE")) > 0:
            time.sleep(0.1)
        s, rss, out = run_cli(["restore", backup_file], env,
                              check_output=lambda f: f.read())
        live = int(r.cmd("ZCARD", f"oauth:client_tokens:{clients[2]}"))
        if live != N // CLIENTS:
            raise SystemExit(f"restore gave back {live} tokens of a client, expected {N // CLIENTS}")
        return s, rss, out.strip().split(";")[0]

    measure("stats", stats)
    measure("tokens list", list_all)
    measure("tokens list --user", list_user)
    measure("backup", backup)
    measure("tokens purge-expired", purge)
    measure("clients delete --complete", delete_cli)
    measure("DELETE /register/{id}", delete_api)
    measure("restore", restore)
    ping.stop.set()
    verify.stop.set()
    time.sleep(0.1)

    heading, tree = run_heading("Store scale")
    lines = heading + [
        f"- `bash bench/store-scale.sh` (N={N}, {USERS} users, {CLIENTS} clients), tree {tree}, "
        f"nproc={os.cpu_count()}; redis-server {r.info('server').get('redis_version', '?')}",
        f"- loaded in {load_s:.1f} s; Redis used_memory {mem_after / 2**20:.0f} MiB: "
        f"**{per_token:.0f} bytes per live token** (record + 2 index entries)",
        f"- issuance: `tokens mint --count {minted}` took {mint_s:.1f} s (RS256 signing on "
        f"{os.cpu_count()} cores dominates); Redis spent **{issue_usec:.1f} µs per recorded token** "
        f"(the put_token script), a ceiling of ~{1e6 / issue_usec:,.0f} issuances/s for one primary",
        f"- revocation: `clients delete --complete` spent **{revoke_cost.get('usec', 0):.1f} µs of "
        f"Redis time per revoked token** (bounded steps of 200), a ceiling of "
        f"~{1e6 / max(revoke_cost.get('usec', 1), 0.001):,.0f} revocations/s",
        f"- probes: PING every 1 ms; /verify (cache off: each request asks Redis) every 2 ms; "
        f"answers {dict(sorted(statuses.items()))} (401 while restore had not yet brought the probe's token back)",
        "",
        "| operation | wall (s) | CLI peak RSS (MiB) | longest PING (ms) | longest /verify (ms) | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        rss = "—" if row["rss"] is None else f"{row['rss']:.1f}"
        lines.append(
            f"| {row['op']} | {row['seconds']:.1f} | {rss} | {row['ping_ms']:.1f} | "
            f"{row['verify_ms']:.1f} | {row['note']} |")
    worst = max(max(row["ping_ms"], row["verify_ms"]) for row in rows)
    backup_s = next(row["seconds"] for row in rows if row["op"] == "backup")
    rss_max = max(row["rss"] for row in rows if row["rss"] is not None)
    lines += [
        "",
        f"- longest stall {worst:.1f} ms — target ≤ {STALL_TARGET_MS:.0f} ms: "
        f"{'met' if worst <= STALL_TARGET_MS else 'NOT met'}",
        f"- backup of {N} tokens {backup_s:.1f} s — target < 60 s: "
        f"{'met' if backup_s < 60 else 'NOT met'}",
        f"- largest CLI peak RSS {rss_max:.1f} MiB (compare runs with another N: it should not grow with N)",
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(section)
    log(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
