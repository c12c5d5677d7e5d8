#!/usr/bin/env bash
# The GPU checks of issue #13 in one run, under 8 minutes on one H100/H200-class GPU:
#   1. the `gpu` tests (tests/test_gpu.py): precision drift, CUDA batch invariance, detection batches, OOM back-off
#      under a memory cap, compile parity, the measured batch size;
#   2. `facerestore bench --reference` on the built-in set with FULL-SIZE random networks (benchmarks/homes.py full):
#      difface --steps 100 and --steps 20, dr2 (default), ipc-guided (arcface-guided, parsing mask);
# and writes everything as JSON under $OUT (default benchmarks/results/gpu-<date>/).
#
# On the lent GPU machine (no registry there): build the missing wheels here first,
#   pip wheel --no-deps -w .gpu-wheels facexlib filterpy pillow-heif && \
#   pip wheel --no-deps --no-build-isolation -w .gpu-wheels basicsr
# and carry .gpu-wheels; this script installs them with --no-deps and runs the project from the tree.
# REHEARSE=1 runs the same steps on the CPU with 1-step sampling on one photo, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu-$(date -u +%Y-%m-%d)}
HOME_DIR=${HOME_DIR:-/tmp/facerestore-full-home}
mkdir -p "$OUT"
log() { echo "[gpu-check $(date -u +%H:%M:%S)] $*"; }

if [ -d .gpu-wheels ] && ! $PY -c "import facexlib, basicsr" 2>/dev/null; then
  log "installing carried wheels"; $PY -m pip install --no-deps --quiet .gpu-wheels/*.whl
fi
$PY - <<'EOF' > "$OUT/environment.json"
import json, platform, torch
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                  "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}))
EOF
log "environment: $(cat "$OUT/environment.json")"

if [ "${REHEARSE:-0}" = 1 ]; then  # one aligned face, one step: minutes on a CPU instead of hours
  DEVICE=cpu; STEPS100=1; STEPS20=1; DR2=(--dr2-n 1); LIMIT=(60 900 900 900 900)
  INPUTS=(../shared/data/aligned-lq/256.png --aligned)
else
  DEVICE=cuda; STEPS100=100; STEPS20=20; DR2=(); LIMIT=(90 130 60 60 90)
  INPUTS=(--detector retinaface_mobile0.25)
fi

log "gpu tests"
timeout "${LIMIT[0]}" $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider --junitxml "$OUT/gpu-tests.xml" \
  > "$OUT/gpu-tests.txt" 2>&1
log "gpu tests exit $?: $(tail -n 1 "$OUT/gpu-tests.txt")"

log "full-size random weights into $HOME_DIR"
[ -f "$HOME_DIR/weights/iddpm_ffhq512_ema500000.pth" ] || $PY benchmarks/homes.py full "$HOME_DIR" || exit 1
export FACERESTORE_HOME="$HOME_DIR" FACERESTORE_OFFLINE=1

bench() {  # name, seconds allowed, bench arguments...
  local name=$1 limit=$2; shift 2
  log "bench $name"
  timeout "$limit" $PY -m facerestore_cli bench "${INPUTS[@]}" --device "$DEVICE" --reference \
    --save "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1
  log "bench $name exit $?"; cat "$OUT/$name.txt"
}
bench difface-steps100 "${LIMIT[1]}" --method difface --steps "$STEPS100"
bench difface-steps20 "${LIMIT[2]}" --method difface --steps "$STEPS20" --no-startup
bench dr2-default "${LIMIT[3]}" --method dr2 "${DR2[@]}" --no-startup
bench ipc-guided "${LIMIT[4]}" --method ipc-guided --steps "$STEPS20" --no-startup
log "done: results in $OUT"
