# Sourced by the benches that a Python script drives (store-scale, revocation-reach,
# token-refresh, audit-scale): `python_bench NAME SCRIPT TOOL…` checks the tools are there,
# builds the release binaries unless SKIP_BUILD=1, and runs bench/SCRIPT with TARGET_DIR,
# RESULTS and KEEP_TMP exported (the script's own knobs come from the environment).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export RESULTS=${RESULTS:-$PWD/bench/RESULTS.md} KEEP_TMP=${KEEP_TMP:-0}

python_bench() {
  local name=$1 script=$2 tool
  shift 2
  for tool in "$@" python3; do
    command -v "$tool" >/dev/null || { echo "[$name] needs $tool (apt-get install -y $tool)" >&2; exit 1; }
  done
  if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --locked --bins >&2
  fi
  python3 "bench/$script"
}
