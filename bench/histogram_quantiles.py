#!/usr/bin/env python3
"""Quantiles of a Prometheus histogram over an interval, from two /metrics scrapes.

Usage: histogram_quantiles.py METRIC_NAME BEFORE_FILE AFTER_FILE [Q ...]

  METRIC_NAME   base name, e.g. mcp_gateway_verify_decision_duration_seconds
                (the *_bucket series are read; any labels other than `le` are
                summed away, like `sum by (le) (...)`)
  BEFORE_FILE   scrape taken at the start of the interval, or "-" for none
                (then the AFTER counts are used as they are)
  AFTER_FILE    scrape taken at the end of the interval
  Q             quantiles in [0, 1]; default 0.5 0.99

Bucket counts of BEFORE are subtracted from AFTER, then each quantile is
computed the way Prometheus' histogram_quantile() does: find the first bucket
whose cumulative count reaches q * total, and interpolate linearly between that
bucket's lower and upper bound.  Values are printed in microseconds (the metric
is assumed to be in seconds, as its name says).

Prints KEY=VALUE lines:
  count=<observations in the interval>
  p50_us=<value>    (for q = 0.5; p99_us for 0.99, p99.9 -> p99_9_us, ...)
If a quantile falls into the +Inf bucket the result is the highest finite
bound, printed with a ">=" prefix (Prometheus returns that bound too).
A quantile that cannot be computed (no observations) is printed as "n/a".

Exit status: 0 on success, 1 when the metric is missing or malformed.
"""

import math
import re
import sys

_SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>.*)\})?"
    r"\s+(?P<value>\S+)"
    r"(?:\s+-?\d+)?\s*$"  # optional timestamp
)
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_float(text):
    t = text.strip()
    if t in ("+Inf", "Inf", "inf", "+inf"):
        return math.inf
    if t in ("-Inf", "-inf"):
        return -math.inf
    return float(t)


def parse_labels(text):
    labels = {}
    pos = 0
    text = text or ""
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise ValueError("cannot parse labels: {%s}" % text)
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def read_buckets(path, metric):
    """Return {upper_bound: cumulative_count}, summed over all non-`le` labels."""
    buckets = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE_RE.match(line)
            if not m or m.group("name") != metric + "_bucket":
                continue
            labels = parse_labels(m.group("labels"))
            if "le" not in labels:
                raise ValueError("%s: bucket sample without le label: %s" % (path, line))
            le = parse_float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + parse_float(m.group("value"))
    return buckets


def histogram_quantile(q, buckets):
    """buckets: sorted list of (upper_bound, cumulative_count), last one +Inf.

    Returns (value, clamped) where clamped means the rank fell in the +Inf
    bucket and value is the highest finite bound.  value is None when there
    are no observations.  Mirrors promql's bucketQuantile().
    """
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        raise ValueError("histogram needs at least two buckets, the last one +Inf")
    # Enforce monotonic cumulative counts (as Prometheus does) against float noise.
    fixed = []
    running = 0.0
    for ub, c in buckets:
        running = max(running, c)
        fixed.append((ub, running))
    buckets = fixed
    total = buckets[-1][1]
    if total <= 0:
        return None, False
    if q < 0:
        return -math.inf, False
    if q > 1:
        return math.inf, False
    rank = q * total
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0], True
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0], False
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    if count <= 0:  # cannot happen after the search above, but be safe
        return end, False
    return start + (end - start) * (rank / count), False


def quantile_key(q):
    pct = ("%g" % (q * 100)).replace(".", "_")
    return "p%s_us" % pct


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    metric, before_path, after_path = argv[1], argv[2], argv[3]
    qs = [float(x) for x in argv[4:]] or [0.5, 0.99]
    try:
        after = read_buckets(after_path, metric)
        if not after:
            raise ValueError("%s: no %s_bucket samples" % (after_path, metric))
        before = read_buckets(before_path, metric) if before_path != "-" else {}
        diff = []
        for ub in sorted(after):
            d = after[ub] - before.get(ub, 0.0)
            if d < 0:
                raise ValueError("bucket le=%g went backwards (process restarted between scrapes?)" % ub)
            diff.append((ub, d))
        extra = set(before) - set(after)
        if extra:
            raise ValueError("buckets %s present before but not after" % sorted(extra))
        print("count=%d" % round(diff[-1][1]))
        for q in qs:
            value, clamped = histogram_quantile(q, diff)
            if value is None:
                print("%s=n/a" % quantile_key(q))
            else:
                print("%s=%s%.1f" % (quantile_key(q), ">=" if clamped else "", value * 1e6))
    except (OSError, ValueError) as e:
        sys.stderr.write("histogram_quantiles.py: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
