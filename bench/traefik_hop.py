#!/usr/bin/env python3
"""The forwardAuth hop through a real Traefik: what asking verify costs the proxy, over
HTTP/1.1 and over HTTP/2 (TLS, ALPN h2), against a no-op auth answer on the same server and
against Traefik alone. Run by bench/verify.sh (run (h)); standalone:

    python3 bench/traefik_hop.py --out RESULTS_SECTION.md

One Traefik process with one entry point per configuration, all in front of the same no-op
backend (nginx `return 200`), one verify process (plain listener: HTTP/1.1; TLS listener:
h2 by ALPN, certificate from `mcp-gateway tls generate`), one redis-server:

    (T)   Traefik alone: no middleware
    (h1)  forwardAuth over HTTP/1.1 to verify's /verify, a valid cached token
    (h2)  forwardAuth over HTTP/2 (TLS) to verify's /verify
    (n1)  forwardAuth over HTTP/1.1 to verify's /health: the same server's no-op answer
    (n2)  forwardAuth over HTTP/2 (TLS) to /health
    (b64k)/(b256k)/(b1m) (h2) with forwardBody and a 2 KB POST, maxBodySize 64 KiB, 256 KiB,
          1 MiB: Traefik allocates maxBodySize + 1 bytes for every forwarded request

Each configuration runs ROUNDS times, alternating, wrk at CONNECTIONS connections. For each:
rps, p50/p99, Traefik's and verify's CPU per request (from /proc), and new connections per
auth request (verify's mcp_gateway_verify_connections_total). The table keeps the median
round of each. Targets (issue 29): (h2)/(T) >= 0.6, (h2)/(n2) >= 0.95, new connections per
auth request over h2 < 0.01. SOAK=600 adds a run of that many seconds over h2 sampling the
TIME_WAIT sockets every 30 s.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)
from parse_wrk import parse  # noqa: E402
from store_scale import free_port  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
HOST = "mcp.localhost"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def get(url, headers=None, timeout=5):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def wait_for(url, headers=None, want=200, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if get(url, headers)[0] == want:
            return
        time.sleep(0.1)
    raise SystemExit(f"traefik_hop: {url} did not answer {want} within {seconds} s")


def metric(base, prefix):
    _, text = get(f"{base}/metrics")
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def time_wait():
    out = subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True, text=True)
    return len(out.stdout.splitlines())


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, log, env=None):
        p = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    ap.add_argument("--traefik", default=os.path.join(ROOT, "e2e/.tools/traefik-3.7.15/bin/traefik"))
    ap.add_argument("--out", help="append the Markdown section here")
    args = ap.parse_args()
    duration = os.environ.get("DURATION", "10s")
    warmup = os.environ.get("WARMUP", "2s")
    connections = int(os.environ.get("CONNECTIONS", "64"))
    threads = int(os.environ.get("THREADS", "2"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    soak = int(os.environ.get("SOAK", "0"))
    verify_bin = os.path.join(args.target_dir, "release/mcp-gateway-verify")
    cli_bin = os.path.join(args.target_dir, "release/mcp-gateway")
    for tool in (verify_bin, cli_bin, args.traefik):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"traefik_hop: {tool} missing")
    for tool in ("redis-server", "nginx", "wrk", "ss"):
        if not shutil.which(tool):
            raise SystemExit(f"traefik_hop: {tool} not on PATH")

    work = tempfile.mkdtemp(prefix="traefik-hop.")
    procs = Procs()
    try:
        return run(args, work, procs, verify_bin, cli_bin, duration, warmup, connections,
                   threads, rounds, soak)
    finally:
        procs.stop()
        if os.environ.get("KEEP_TMP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def run(args, work, procs, verify_bin, cli_bin, duration, warmup, connections, threads, rounds, soak):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "VERIFY_", "LISTEN_"))}
    redis_port = free_port()
    procs.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], f"{work}/redis.log")
    keys = subprocess.run([cli_bin, "keys", "generate", "--alg", "RS256"], capture_output=True,
                          text=True, check=True, env=env).stdout
    for line in keys.splitlines():
        if "=" in line and line.startswith("JWT_"):
            k, v = line.split("=", 1)
            env[k] = v
    env.update({
        "BASE_DOMAIN": "localhost", "ISSUER_URL": "http://auth.localhost",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}", "RESOURCE_HOSTS": HOST,
        "ALLOWED_GITHUB_USERS": "*", "LOG_FORMAT": "json", "RUST_LOG": "warn",
        "SHUTDOWN_DRAIN": "0",
    })
    time.sleep(0.3)
    token = subprocess.run([cli_bin, "tokens", "mint", "--user-id", "1", "--user", "alice",
                            "--client-id", "bench", "--scope", "mcp", "--resource",
                            f"http://{HOST}/mcp"], capture_output=True, text=True, check=True,
                           env=env).stdout.strip()
    tls = f"{work}/tls"
    subprocess.run([cli_bin, "tls", "generate", "--out", tls, "--names", "127.0.0.1,localhost"],
                   check=True, capture_output=True, env=env)

    vport, tport = free_port(), free_port()
    venv = dict(env, LISTEN_ADDR=f"127.0.0.1:{vport}", VERIFY_TLS_CERT=f"{tls}/verify.crt",
                VERIFY_TLS_KEY=f"{tls}/verify.key", VERIFY_TLS_LISTEN_ADDR=f"127.0.0.1:{tport}")
    verify = procs.start([verify_bin], f"{work}/verify.log", venv)
    vbase = f"http://127.0.0.1:{vport}"
    wait_for(f"{vbase}/health")

    bport = free_port()
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1; pid {work}/nginx.pid;
error_log {work}/nginx-error.log; events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {work}; proxy_temp_path {work};
  fastcgi_temp_path {work}; uwsgi_temp_path {work}; scgi_temp_path {work};
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{bport}; location / {{ return 200 "ok"; }} }} }}
""")
    procs.start(["nginx", "-c", f"{work}/nginx.conf", "-e", f"{work}/nginx-error.log"], f"{work}/nginx.log")
    wait_for(f"http://127.0.0.1:{bport}/")

    configs = {
        "T": None,
        "h1": (f"{vbase}/verify", False, 0),
        "h2": (f"https://127.0.0.1:{tport}/verify", False, 0),
        "n1": (f"{vbase}/health", False, 0),
        "n2": (f"https://127.0.0.1:{tport}/health", False, 0),
        "b64k": (f"https://127.0.0.1:{tport}/verify", True, 65536),
        "b256k": (f"https://127.0.0.1:{tport}/verify", True, 262144),
        "b1m": (f"https://127.0.0.1:{tport}/verify", True, 1048576),
    }
    ports = {name: free_port() for name in configs}
    dyn = ["http:", "  middlewares:"]
    for name, cfg in configs.items():
        if cfg is None:
            continue
        address, body, max_body = cfg
        dyn += [f"    {name}:", "      forwardAuth:", f"        address: {address}",
                "        trustForwardHeader: false", "        maxResponseBodySize: 65536",
                "        authResponseHeaders: [X-User-Id, X-User-Name, X-Auth-Client-Id, X-Auth-Scope]"]
        if body:
            dyn += ["        forwardBody: true", f"        maxBodySize: {max_body}"]
        if address.startswith("https://"):
            dyn += ["        tls:", f"          ca: {tls}/ca.crt"]
    dyn += ["  routers:"]
    for name, cfg in configs.items():
        dyn += [f"    {name}:", f"      entryPoints: [{name}]", f"      rule: Host(`{HOST}`)",
                "      service: backend"]
        if cfg is not None:
            dyn += [f"      middlewares: [{name}]"]
    dyn += ["  services:", "    backend:", "      loadBalancer:",
            f"        servers: [{{url: \"http://127.0.0.1:{bport}\"}}]"]
    with open(f"{work}/dynamic.yml", "w") as f:
        f.write("\n".join(dyn) + "\n")
    static = ["entryPoints:"]
    for name, port in ports.items():
        static += [f"  {name}:", f"    address: \"127.0.0.1:{port}\""]
    static += ["providers:", "  file:", f"    filename: {work}/dynamic.yml", "log:", "  level: ERROR"]
    with open(f"{work}/static.yml", "w") as f:
        f.write("\n".join(static) + "\n")
    traefik = procs.start([args.traefik, f"--configFile={work}/static.yml"], f"{work}/traefik.log")
    headers = {"Host": HOST, "Authorization": f"Bearer {token}"}
    for name, port in ports.items():
        wait_for(f"http://127.0.0.1:{port}/mcp", headers)

    lua = f"{work}/hop.lua"
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"message": "x" * 1900}}})
    with open(lua, "w") as f:
        f.write(f'wrk.headers["Host"] = "{HOST}"\n'
                f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    body_lua = f"{work}/hop-body.lua"
    with open(body_lua, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.headers["Host"] = "{HOST}"\n'
                f'wrk.headers["Authorization"] = "Bearer {token}"\n'
                f'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.body = {json.dumps(body)}\n')

    def wrk(name, dur, record):
        script = body_lua if name.startswith("b") else lua
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", dur,
                              "--latency", "-s", script, f"http://127.0.0.1:{ports[name]}/mcp"],
                             capture_output=True, text=True)
        if not record:
            return None
        return parse(out.stdout)

    def measure(name):
        before = (cpu_seconds(traefik.pid), cpu_seconds(verify.pid),
                  metric(vbase, 'mcp_gateway_verify_connections_total{listener="plain"}'),
                  metric(vbase, 'mcp_gateway_verify_connections_total{listener="tls"}'))
        r = wrk(name, duration, True)
        after = (cpu_seconds(traefik.pid), cpu_seconds(verify.pid),
                 metric(vbase, 'mcp_gateway_verify_connections_total{listener="plain"}'),
                 metric(vbase, 'mcp_gateway_verify_connections_total{listener="tls"}'))
        n = max(r["requests"], 1)
        # Two scrapes of /metrics open two connections of their own on the plain listener.
        opened = (after[2] - before[2] - 1) + (after[3] - before[3])
        r.update(traefik_cpu_us=(after[0] - before[0]) * 1e6 / n,
                 verify_cpu_us=(after[1] - before[1]) * 1e6 / n,
                 conn_per_req=(max(opened, 0) / n) if configs[name] is not None else None)
        if r.get("non2xx"):
            raise SystemExit(f"traefik_hop: ({name}) {r['non2xx']} non-2xx answers")
        print(f"[hop] ({name}) {r['rps']:.0f} rps, p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us, "
              f"traefik {r['traefik_cpu_us']:.1f} us/req, verify {r['verify_cpu_us']:.1f} us/req, "
              f"new connections/req {r['conn_per_req']}", file=sys.stderr)
        return r

    for name in configs:
        wrk(name, warmup, False)
    results = {name: [] for name in configs}
    for _ in range(rounds):
        for name in configs:
            results[name].append(measure(name))

    # Over the limit: what a client gets for an MCP request larger than maxBodySize.
    big = "x" * 70000
    req = urllib.request.Request(f"http://127.0.0.1:{ports['b64k']}/mcp", data=big.encode(),
                                 headers=dict(headers, **{"Content-Type": "application/json"}))
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            over_limit = r.status
    except urllib.error.HTTPError as e:
        over_limit = e.code

    soak_rows = []
    if soak > 0:
        tw0 = time_wait()
        proc = subprocess.Popen(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{soak}s",
                                 "-s", lua, f"http://127.0.0.1:{ports['h2']}/mcp"],
                                stdout=subprocess.PIPE, text=True)
        start = time.time()
        while proc.poll() is None:
            time.sleep(30)
            soak_rows.append((round(time.time() - start), time_wait()))
        soak_rows.insert(0, (0, tw0))

    def median(name):
        rows = results[name]
        return sorted(rows, key=lambda r: r["rps"])[len(rows) // 2]

    med = {name: median(name) for name in configs}
    ratio = lambda a, b: med[a]["rps"] / med[b]["rps"] if med[b]["rps"] else 0.0  # noqa: E731
    lines = [
        "| run | rps | p50 µs | p99 µs | Traefik CPU µs/req | verify CPU µs/req | new connections / auth request |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {"T": "(T) Traefik alone", "h1": "(h1) forwardAuth HTTP/1.1 → /verify",
              "h2": "(h2) forwardAuth h2 (TLS) → /verify", "n1": "(n1) forwardAuth HTTP/1.1 → no-op",
              "n2": "(n2) forwardAuth h2 (TLS) → no-op",
              "b64k": "(b64k) h2, forwardBody, 2 KB POST, maxBodySize 64 KiB",
              "b256k": "(b256k) h2, forwardBody, 2 KB POST, maxBodySize 256 KiB",
              "b1m": "(b1m) h2, forwardBody, 2 KB POST, maxBodySize 1 MiB"}
    for name in configs:
        r = med[name]
        conn = "—" if r["conn_per_req"] is None else f"{r['conn_per_req']:.4f}"
        lines.append(f"| {labels[name]} | {r['rps']:.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
                     f"{r['traefik_cpu_us']:.1f} | {r['verify_cpu_us']:.1f} | {conn} |")
    summary = [
        f"- (h2)/(T) = {ratio('h2', 'T'):.2f} (target ≥ 0.6); (h1)/(T) = {ratio('h1', 'T'):.2f}",
        f"- (h2)/(n2) = {ratio('h2', 'n2'):.2f} (target ≥ 0.95); (h1)/(n1) = {ratio('h1', 'n1'):.2f}",
        f"- (h2)/(h1) = {ratio('h2', 'h1'):.2f}; new connections per auth request over h2 "
        f"{med['h2']['conn_per_req']:.4f} (target < 0.01), over HTTP/1.1 {med['h1']['conn_per_req']:.2f}",
        f"- forwardBody: (b256k)/(b64k) = {ratio('b256k', 'b64k'):.2f}, (b1m)/(b64k) = "
        f"{ratio('b1m', 'b64k'):.2f}; (b64k)/(h2) = {ratio('b64k', 'h2'):.2f} (the body forwarded, "
        f"a POST instead of a GET); a request over maxBodySize gets {over_limit} from Traefik",
    ]
    if soak_rows:
        summary.append("- TIME_WAIT sockets during a %d s h2 run at %d connections: %s" % (
            soak, connections, ", ".join(f"{t}s: {n}" for t, n in soak_rows)))
    section = "\n".join(lines + [""] + summary) + "\n"
    print(section)
    if args.out:
        with open(args.out, "a") as f:
            f.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
