#!/usr/bin/env python3
"""Sends lines [first, last) of a token file to /verify once each, as Traefik's ForwardAuth
would, over 4 keep-alive connections; exits 1 when any answer is not 200.

Usage: send_tokens.py BASE_URL TOKENS_FILE FIRST LAST
"""
import http.client
import sys
import threading
import urllib.parse

CONNECTIONS = 4


def main() -> int:
    base, path, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(path, encoding="ascii") as f:
        tokens = [line.strip() for line in f][first:last]
    url = urllib.parse.urlsplit(base)
    failures = []

    def worker(part):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        for token in part:
            conn.request(
                "GET",
                "/verify",
                headers={
                    "Authorization": f"Bearer {token}",
                    "X-Forwarded-Proto": "http",
                    "X-Forwarded-Host": "mcp.localhost",
                    "X-Forwarded-Uri": "/mcp",
                    "X-Forwarded-Method": "POST",
                },
            )
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(resp.status)
        conn.close()

    threads = [
        threading.Thread(target=worker, args=(tokens[i::CONNECTIONS],)) for i in range(CONNECTIONS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        print(f"send_tokens: {len(failures)} answers were not 200: {failures[:5]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
