#!/usr/bin/env bash
# benchmarks/quality.sh HQ_DIR [METHOD|PRESET.yaml ...]   (or: make quality HQ=DIR)
#
# A CelebA-Test-style comparison on your own aligned HQ faces, shaped like DifFace Table III:
#   1. degrade HQ_DIR with a paper's model (MODEL=diffbfr|difface|dr2, default diffbfr, seed 0),
#   2. restore the LQ faces (--aligned) with every method whose weights are present (or those named), each at its
#      preset's defaults and at two more values of one knob (the sweep below),
#   3. measure every restored set against HQ_DIR with `facerestore eval` (METRICS, default: all eval offers),
#   4. write benchmarks/results/quality-DATE/table.md: the table, then every command line that made it.
# Environment: FACERESTORE (the command, default .venv/bin/facerestore), OUT (results folder), MODEL, METRICS,
# DETECTOR (LMD's, default retinaface_resnet50), EXTRA (more `run` arguments, e.g. "--batch-size 8").
set -euo pipefail
cd "$(dirname "$0")/.."
HQ=${1:?usage: benchmarks/quality.sh HQ_DIR [METHOD|PRESET.yaml ...]}
shift
FR=${FACERESTORE:-.venv/bin/facerestore}
MODEL=${MODEL:-diffbfr}
METRICS=${METRICS:-psnr,ssim,lpips,ids,deg,lmd,niqe}
DETECTOR=${DETECTOR:-retinaface_resnet50}
OUT=${OUT:-benchmarks/results/quality-$(date -u +%Y-%m-%d)}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
LOG="$OUT/commands.txt"
: > "$LOG"
say() { echo "\$ $*" >> "$LOG"; "$@"; }

# one knob per method, two values beside the preset's default
declare -A SWEEP=(
  [difface]="--start-t 300 --start-t 500"
  [ipc_guided]="--guidance-scale 0 --guidance-scale 300"
  [dr2]="--dr2-n 4 --dr2-n 16"
  [diffbfr]="--tem-start-t 80 --tem-start-t 150"
)

if [ $# -eq 0 ]; then  # every built-in preset whose weights are present (the detector is not needed: --aligned)
  mapfile -t TARGETS < <("$FR" methods --json | python3 -c '
import json, sys
for line in sys.stdin:
    v = json.loads(line)
    if all(m.startswith("retinaface") for m in v["missing"]):
        print(v["preset"])')
else
  TARGETS=("$@")
fi
[ ${#TARGETS[@]} -gt 0 ] || { echo "no method has its weights: facerestore methods" >&2; exit 4; }

say "$FR" degrade "$HQ" -o "$OUT/lq" --model "$MODEL" --seed 0 -r
ROWS=()
for target in "${TARGETS[@]}"; do
  if [ -f "$target" ]; then
    choose=(--preset "$target"); method=$(awk '/^method:/ {print $2}' "$target"); label=$(basename "$target" .yaml)
  else
    choose=(--method "$target"); method=${target//-/_}; label=$target
  fi
  read -r -a knobs <<< "${SWEEP[$method]:-}"
  variants=("")
  for ((i = 0; i < ${#knobs[@]}; i += 2)); do variants+=("${knobs[i]} ${knobs[i+1]}"); done
  for variant in "${variants[@]}"; do
    name=$label${variant:+ ${variant}}
    folder="$OUT/restored/${name// /_}"
    # shellcheck disable=SC2086
    say "$FR" run "$OUT/lq" -o "$folder" -r --aligned -q "${choose[@]}" $variant $EXTRA
    ROWS+=("$folder")
  done
done
say "$FR" eval "${ROWS[@]}" --gt "$HQ" --metrics "$METRICS" --detector "$DETECTOR" -q --markdown \
  --per-image "$OUT/per-image.jsonl" > "$OUT/table.body.md"
{
  echo "# Quality on $(basename "$HQ") degraded with the $MODEL model ($(date -u +%Y-%m-%d))"
  echo
  echo "Rows: restored sets (folder names: preset, then the knob changed from its default). ↑ higher is better,"
  echo "↓ lower. Measured with \`facerestore eval\` (README, Evaluating)."
  echo
  cat "$OUT/table.body.md"
  echo
  echo "## Commands"
  echo
  echo '```'
  cat "$LOG"
  echo '```'
} > "$OUT/table.md"
rm "$OUT/table.body.md"
echo "$OUT/table.md"
