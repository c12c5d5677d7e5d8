#!/usr/bin/env bash
# The CPU benchmarks behind the README's performance table (ratios only: absolute CPU times say little):
#   tiny-builtin      the built-in set (6 portraits, 2 groups, 2 scans of 12 MP) with the suite's tiny networks
#   tiny-scans        the built-in set's two 12-MP scans alone
#   tiny-scans-overlap  the same with --io-workers 2 (what overlap does on a CPU)
#   full-portrait     FULL-SIZE random difface networks, --steps 2, on a 4-face photo: network busy share
# Each with --reference in the same process. Results: benchmarks/results/cpu-<date>/<name>.json (+ .txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/cpu-$(date -u +%Y-%m-%d)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export FACERESTORE_OFFLINE=1

$PY benchmarks/homes.py tiny "$WORK/tiny" > /dev/null
$PY -c "import sys; from pathlib import Path; from facerestore_cli.benchset import write_builtin_set
write_builtin_set(Path(sys.argv[1]))" "$WORK/set"
mkdir "$WORK/scans" && cp "$WORK"/set/scan-*.jpg "$WORK/scans/"

bench() {  # name, home, bench arguments...
  local name=$1 home=$2; shift 2
  echo "== $name"
  FACERESTORE_HOME="$home" $PY -m facerestore_cli bench "$@" --reference --save "$OUT/$name.json" | tee "$OUT/$name.txt"
}
TINY=(--preset "$WORK/tiny/difface-tiny.yaml" --detector retinaface_mobile0.25)
bench tiny-builtin "$WORK/tiny" "${TINY[@]}"
bench tiny-scans "$WORK/tiny" "$WORK/scans" "${TINY[@]}" --no-startup
bench tiny-scans-overlap "$WORK/tiny" "$WORK/scans" "${TINY[@]}" --io-workers 2 --no-startup

$PY benchmarks/homes.py full "$WORK/full" > /dev/null
bench full-portrait "$WORK/full" ../shared/data/photos/old-portrait-01.jpg --method difface --steps 2 \
  --detector retinaface_mobile0.25 --no-startup
echo "results in $OUT"
