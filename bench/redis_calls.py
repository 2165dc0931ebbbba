#!/usr/bin/env python3
"""Sum the `calls=` of `redis-cli INFO commandstats` output (read from stdin or a file).

Usage: redis_calls.py [FILE]

Lines look like (Redis 7 reports subcommands as `cmd|sub`):
  cmdstat_get:calls=1200,usec=2400,usec_per_call=2.00,rejected_calls=0,failed_calls=0
  cmdstat_config|resetstat:calls=1,...
The `config` and `info` commands are excluded: those are the benchmark's own
CONFIG RESETSTAT / INFO commandstats, not traffic from the service.

Prints KEY=VALUE lines: total=<sum> and then one `cmd_<name>=<calls>` per
counted command (subcommand separator `|` replaced by `_`), busiest first.
"""

import re
import sys

EXCLUDED = {"config", "info"}
_LINE_RE = re.compile(r"^cmdstat_([^:]+):.*?\bcalls=(\d+)")


def count_calls(text):
    per_cmd = {}
    for line in text.splitlines():
        m = _LINE_RE.match(line.strip())
        if not m:
            continue
        name = m.group(1).lower()
        if name.split("|", 1)[0] in EXCLUDED:
            continue
        per_cmd[name] = per_cmd.get(name, 0) + int(m.group(2))
    return per_cmd


def main(argv):
    if len(argv) > 2:
        sys.stderr.write(__doc__)
        return 2
    if len(argv) == 2:
        with open(argv[1], encoding="utf-8", errors="replace") as f:
            text = f.read()
    else:
        text = sys.stdin.read()
    per_cmd = count_calls(text)
    print("total=%d" % sum(per_cmd.values()))
    for name, calls in sorted(per_cmd.items(), key=lambda kv: (-kv[1], kv[0])):
        print("cmd_%s=%d" % (re.sub(r"[^a-z0-9_]", "_", name), calls))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
