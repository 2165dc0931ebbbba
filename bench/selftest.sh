#!/usr/bin/env bash
# Offline checks of the parsing helpers used by bench/verify.sh, against the
# captured/crafted samples in bench/testdata/.  No services, no network.
#   bash bench/selftest.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

fails=0
# check DESCRIPTION EXPECTED COMMAND...: EXPECTED holds lines that must appear
# verbatim in the command's output, and optionally rc=N for its exit status.
check() {
  local desc=$1 expected=$2; shift 2
  local out rc=0 before=$fails
  out=$("$@" 2>&1) || rc=$?
  local line
  while IFS= read -r line; do
    [[ -z $line ]] && continue
    if [[ $line == rc=* ]]; then
      [[ "rc=$rc" == "$line" ]] || { echo "FAIL $desc: want $line, got rc=$rc"; fails=$((fails + 1)); }
    elif ! grep -qxF -- "$line" <<<"$out"; then
      echo "FAIL $desc: missing line '$line' in:"
      printf '    %s\n' "${out//$'\n'/$'\n'    }"
      fails=$((fails + 1))
    fi
  done <<<"$expected"
  ((fails == before)) && echo "ok   $desc"
  return 0
}

H=mcp_gateway_verify_decision_duration_seconds

check "wrk: plain run" "rc=0
requests=1880
rps=1878.10
p50_us=970.00
p99_us=2090.00
non2xx=0" python3 parse_wrk.py testdata/wrk-ok.txt

check "wrk: non-2xx counted" "rc=0
non2xx=2228
p50_us=910.00" python3 parse_wrk.py testdata/wrk-non2xx.txt

check "wrk: us/ms/s units, socket errors" "rc=0
p50_us=443.00
p90_us=860.00
p99_us=1200000.00
requests=1221458
rps=122058.81
sock_read=3
sock_timeout=17" python3 parse_wrk.py testdata/wrk-mixed-units.txt

check "wrk: connection refused is an error" "rc=1" python3 parse_wrk.py testdata/wrk-refused.txt

# after - before, summed over the decision label: 100/900/1000/1009/1020
check "histogram: interval quantiles" "rc=0
count=1020
p50_us=176.9
p90_us=295.0
p99_us=>=1000.0" python3 histogram_quantiles.py "$H" testdata/metrics-before.txt testdata/metrics-after.txt 0.5 0.9 0.99

check "histogram: single scrape, default quantiles" "rc=0
count=35
p50_us=175.0
p99_us=491.2" python3 histogram_quantiles.py "$H" - testdata/metrics-before.txt

check "histogram: empty interval" "rc=0
count=0
p50_us=n/a" python3 histogram_quantiles.py "$H" testdata/metrics-after.txt testdata/metrics-after.txt

check "histogram: counter reset detected" "rc=1" python3 histogram_quantiles.py "$H" testdata/metrics-after.txt testdata/metrics-before.txt
check "histogram: missing metric" "rc=1" python3 histogram_quantiles.py no_such_metric - testdata/metrics-after.txt

check "redis: commandstats sum without config/info" "rc=0
total=1236
cmd_get=1200
cmd_evalsha=34
cmd_client_setinfo=2" python3 redis_calls.py testdata/redis-commandstats.txt

if ((fails)); then echo "$fails check(s) failed"; exit 1; fi
echo "all parser checks passed"
