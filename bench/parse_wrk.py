#!/usr/bin/env python3
"""Parse the text output of `wrk --latency` into shell-friendly KEY=VALUE lines.

Usage: parse_wrk.py WRK_OUTPUT_FILE

Prints (one per line):
  requests=<int>          total requests completed
  rps=<float>             "Requests/sec:" value
  p50_us=<float>          50% line of "Latency Distribution", in microseconds
  p90_us=<float>          (when present)
  p99_us=<float>
  non2xx=<int>            "Non-2xx or 3xx responses:" (0 when wrk omits the line;
                          note wrk itself only counts status >= 400 there)
  sock_connect=/sock_read=/sock_write=/sock_timeout=<int>   "Socket errors:" (0 when absent)

Exits 1 with a message on stderr when the mandatory parts (request count,
Requests/sec, 50% and 99% lines) are missing, e.g. when wrk failed to connect.
"""

import re
import sys

# wrk formats times with these units (src/units.c: us, ms, s, then m, h).
_UNIT_TO_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def time_to_us(text):
    """'443.00us' / '0.97ms' / '1.20s' / '1.00m' -> microseconds (float)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s|m|h)\s*", text)
    if not m:
        raise ValueError("unrecognised wrk time value: %r" % text)
    return float(m.group(1)) * _UNIT_TO_US[m.group(2)]


# The summary lines wrk prints once each: the pattern, the keys its groups fill, their type.
_LINES = [
    (r"(\d+) requests in ", ("requests",), int),
    (r"Requests/sec:\s+([0-9.]+)", ("rps",), float),
    (r"Non-2xx or 3xx responses:\s+(\d+)", ("non2xx",), int),
    (r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
     ("sock_connect", "sock_read", "sock_write", "sock_timeout"), int),
]


def parse(text):
    out = {"non2xx": 0, "sock_connect": 0, "sock_read": 0, "sock_write": 0, "sock_timeout": 0}
    in_dist = False
    for line in text.splitlines():
        s = line.strip()
        if s == "Latency Distribution":
            in_dist = True
            continue
        if in_dist:
            m = re.fullmatch(r"(\d+)%\s+(\S+)", s)  # wrk prints 50/75/90/99
            if m:
                out["p%s_us" % m.group(1)] = time_to_us(m.group(2))
                continue
            in_dist = False  # first non-percentile line ends the block
        for pattern, keys, kind in _LINES:
            m = re.match(pattern, s)
            if m:
                for key, val in zip(keys, m.groups()):
                    out[key] = kind(val)
                break
    missing = [k for k in ("requests", "rps", "p50_us", "p99_us") if k not in out]
    if missing:
        raise ValueError("wrk output lacks: %s" % ", ".join(missing))
    return out


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    with open(argv[1], encoding="utf-8", errors="replace") as f:
        text = f.read()
    try:
        res = parse(text)
    except ValueError as e:
        sys.stderr.write("parse_wrk.py: %s: %s\n" % (argv[1], e))
        return 1
    for key, val in res.items():
        if isinstance(val, float):
            print("%s=%.2f" % (key, val))
        else:
            print("%s=%s" % (key, val))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
