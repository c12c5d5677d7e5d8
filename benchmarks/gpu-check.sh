#!/usr/bin/env bash
# The GPU checks of issue #13 in one run, under 7 minutes on one H100/H200-class GPU (a lent GPU has 15 minutes in
# all, start-up included, and the run must leave room for one rerun):
#   1. (run last) the `gpu` tests (tests/test_gpu.py): precision drift, CUDA batch invariance, detection batches, OOM back-off
#      under a memory cap, compile parity, the measured batch size;
#   2. benchmarks/cuda_invariance.py: is a face's result independent of its batch neighbours, per precision and
#      cuDNN setting, and what each setting costs;
#   3. `facerestore bench --reference` with FULL-SIZE random networks (benchmarks/homes.py full) on the built-in set's
#      portraits and group photos (8 photos, 16 faces; its scans' 100 faces would not fit the time):
#      ipc-guided (arcface-guided, parsing mask), difface --steps 20, dr2 (default), difface --steps 100 (the longest,
#      last; LIMIT_IPC and LIMIT_STEPS100 lengthen their allowances, default 65 s and 110 s);
# and writes everything as JSON under $OUT (default benchmarks/results/gpu-<date>/). BENCHES="difface-steps20 ...",
# TESTS="pytest -k expression", GPU_TESTS=0 and INVARIANCE=0 run a part, when a lease has little time left.
# TRAINING=1 adds `facerestore train` of every target at FULL size for TRAIN_STEPS (10) steps each, exported in turn
# (metrics, validation grids and logs under $OUT/train/; TRAIN_ARGS adds options to each); BENCHES=none runs no bench.
#
# On the lent GPU machine (no registry there; python 3.12): build the missing wheels here first,
#   pip wheel --no-deps -w .gpu-wheels facexlib lpips pytorch-fid && \
#   pip wheel --no-deps --no-build-isolation -w .gpu-wheels basicsr && \
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .gpu-wheels pillow-heif
#   pip wheel --no-deps --no-build-isolation -w .gpu-wheels .   # this tree (its presets are package data)
# copy ../shared into .gpu-shared (it does not travel), carry both, and run with FACERESTORE_SHARED=$PWD/.gpu-shared;
# this script installs the wheels with --no-deps into /tmp, ahead of the tree on PYTHONPATH.
# REHEARSE=1 runs the same steps on the CPU with 1-step sampling on one photo, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu-$(date -u +%Y-%m-%d)}
HOME_DIR=${HOME_DIR:-/tmp/facerestore-full-home}
mkdir -p "$OUT"
log() { echo "[gpu-check $(date -u +%H:%M:%S)] $*"; }

if [ -d .gpu-wheels ] && ! $PY -c "import facexlib, lpips, pytorch_fid, pillow_heif" 2>/dev/null; then
  log "installing carried wheels"
  $PY -m pip install --quiet --no-index --no-deps --no-compile --target /tmp/facerestore-site .gpu-wheels/*.whl || exit 1
  export PYTHONPATH="/tmp/facerestore-site:$PYTHONPATH" PYTHONSAFEPATH=1  # -m must not put the tree first
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
  DEVICE=cuda; STEPS100=100; STEPS20=20; DR2=(); LIMIT=(100 "${LIMIT_STEPS100:-110}" 45 55 "${LIMIT_IPC:-65}")
  BENCH_SET=${TMPDIR:-/tmp}/facerestore-bench-set
  $PY -c "import sys; from pathlib import Path; from facerestore_cli.benchset import write_builtin_set; \
write_builtin_set(Path(sys.argv[1]))" "$BENCH_SET" || exit 1
  INPUTS=("$BENCH_SET"/portrait-*.jpg "$BENCH_SET"/group-*.jpg --detector retinaface_mobile0.25)
fi

log "full-size random weights into $HOME_DIR"
[ -f "$HOME_DIR/weights/iddpm_ffhq512_ema500000.pth" ] || $PY benchmarks/homes.py full "$HOME_DIR" || exit 1
export FACERESTORE_HOME="$HOME_DIR" FACERESTORE_OFFLINE=1

bench() {  # name, seconds allowed, bench arguments...
  local name=$1 limit=$2; shift 2
  [[ " ${BENCHES:-$name} " == *" $name "* ]] || return 0  # BENCHES="a b": only those
  log "bench $name"
  timeout "$limit" $PY -m facerestore_cli bench "${INPUTS[@]}" --device "$DEVICE" --reference \
    --save "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1
  log "bench $name exit $?"; cat "$OUT/$name.txt"
}
bench ipc-guided "${LIMIT[4]}" --method ipc-guided --steps "$STEPS20"
bench difface-steps20 "${LIMIT[2]}" --method difface --steps "$STEPS20" --no-startup
bench dr2-default "${LIMIT[3]}" --method dr2 "${DR2[@]}" --no-startup
bench difface-steps100 "${LIMIT[1]}" --method difface --steps "$STEPS100" --no-startup

train() {  # target, its own options...: TRAIN_STEPS full-size steps on the shared crops, then export
  local target=$1; shift
  local own=("$@")
  [ "${REHEARSE:-0}" = 1 ] && own+=(--model-config "$RUNS/$target.yaml")
  log "train $target"
  timeout "${LIMIT_TRAIN:-150}" $PY -m facerestore_cli train "$target" --data "$SHARED_DIR/data/aligned-lq" \
    --val-data "$SHARED_DIR/data/aligned-hq-ish" -o "$RUNS/$target" --steps "$TRAIN_STEPS" --log-every 5 \
    --sample-every "$TRAIN_STEPS" --checkpoint-every "$TRAIN_STEPS" --device "$DEVICE" --workers 4 ${TRAIN_ARGS:-} "${own[@]}" \
    > "$OUT/train/$target.txt" 2>&1 && $PY -m facerestore_cli train export "$RUNS/$target" >> "$OUT/train/$target.txt" 2>&1
  log "train $target exit $?"; tail -n 3 "$OUT/train/$target.txt"
  cp "$RUNS/$target/metrics.jsonl" "$OUT/train/$target.metrics.jsonl" 2>/dev/null
  cp "$RUNS/$target/samples/step-$(printf %08d "$TRAIN_STEPS").png" "$OUT/train/$target.png" 2>/dev/null
}
if [ "${TRAINING:-0}" = 1 ]; then  # every target at full size (REHEARSE: the suite's tiny configs), in the order
  # their frozen parts need: IRM(-2) on IRM(-1)'s samples, ipc-mask against the exported IPC and prior
  SHARED_DIR=${FACERESTORE_SHARED:-../shared}; RUNS=${TMPDIR:-/tmp}/facerestore-train; TRAIN_STEPS=${TRAIN_STEPS:-10}
  mkdir -p "$OUT/train" "$RUNS"
  [ "${REHEARSE:-0}" = 1 ] && $PY -c "import sys, yaml; sys.path[:0] = ['tests']; from trained_runs import RUNS; \
[open(f'{sys.argv[1]}/{t}.yaml', 'w').write(yaml.safe_dump(c)) for t, (c, _s, _o) in RUNS.items()]" "$RUNS"
  train difface-estimator --batch-size 8  # its recipe's 16 is more than the ten shared crops
  train diffbfr-irm1
  train diffbfr-irm2 --irm1 "$RUNS/diffbfr-irm1" --irm1-steps 20
  train diffbfr-tem
  train ipc --batch-size 8
  train ipc-prior
  train ipc-mask
fi

if [ "${INVARIANCE:-1}" = 1 ]; then
  log "cuda invariance"
  timeout "${LIMIT[0]}" $PY benchmarks/cuda_invariance.py > "$OUT/cuda-invariance.jsonl" 2>&1
  log "cuda invariance exit $?"; cat "$OUT/cuda-invariance.jsonl"
fi

if [ "${GPU_TESTS:-1}" = 1 ]; then
  log "gpu tests"
  timeout "${LIMIT[0]}" $PY -m pytest -q -m gpu tests/test_gpu.py ${TESTS:+-k "$TESTS"} -p no:cacheprovider \
    --junitxml "$OUT/gpu-tests.xml" > "$OUT/gpu-tests.txt" 2>&1
  log "gpu tests exit $?: $(tail -n 1 "$OUT/gpu-tests.txt")"
fi
log "done: results in $OUT"
