#!/usr/bin/env bash
# One command for a CUDA machine (an H100/H200), under 8 minutes, from the repo root, offline:
#   bash scripts/gpu_check.sh
# 1. nvidia-smi and the torch/CUDA versions; installs fusion_lab without internet if needed
#    (scripts/offline_install.sh: the machine has torch, torchvision, timm, ... preinstalled);
# 2. a short study on CUDA with mixed precision (through the device-side normalisation);
# 3. training images/s of the bare ResNet50 baseline and CN-CNN at 448x448 (bf16,
#    channels_last), eager and with torch.compile of fusion and attention, median [min-max];
#    targets on an H200 (issue 21): cn_cnn >= 400, baseline >= 1,200 images/s;
# 4. loader images/s per worker, old (PIL, float32) vs new (libjpeg-turbo, uint8), and
#    whether the new loader with the machine's workers (cores - 2) keeps up with the targets;
# 5. GPU decoding (dataset.decode: gpu): nvJPEG images/s, the loader end to end, and how far
#    its pixels are from the CPU decoder's.
# Ends with one summary block holding every figure measured (for docs/performance.md).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
START=$SECONDS
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
SUMMARY="$TMP/summary.txt"
: > "$SUMMARY"
note() { echo "$*" >> "$SUMMARY"; }

echo "== 1. machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
  || echo "nvidia-smi not found"
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', \
torchvision.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" \
  | tee -a "$SUMMARY"
CORES=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")
note "CPU cores: $CORES"
if ! "$PY" -c "import fusion_lab.registry" 2>/dev/null; then
  echo "== installing fusion_lab offline (editable, no dependencies, no build isolation)"
  PYTHON="$PY" bash scripts/offline_install.sh || exit 2
fi

echo "== 2. quickstart study on CUDA, 1 epoch, mixed precision (train.amp=auto)"
if timeout 100 "$PY" -m fusion_lab run studies/quickstart.yaml --device cuda --results "$TMP/r" \
    --set train.epochs=1 --set seeds=[0] --progress plain; then
  note "quickstart study on CUDA (1 epoch, seed 0): ok"
else
  note "quickstart study on CUDA: FAILED or timed out (exit $?)"
fi

echo "== 3. training throughput at 448x448, batch 32, bf16, channels_last"
timeout 190 "$PY" scripts/gpu_throughput.py --device cuda --image-size 448 --batch-size 32 \
  --steps 15 --warmup 3 --amp bf16 --summary "$SUMMARY" \
  || note "training throughput: FAILED or timed out (exit $?)"

echo "== 4. loader: old vs new pipeline, images/s per worker"
W=$(( CORES >= 8 ? CORES - 2 : CORES >= 2 ? 2 : 1 ))  # leave the training process its cores
WORKERS="0 1"; [ "$W" -gt 1 ] && WORKERS="0 1 $W"
# shellcheck disable=SC2086
timeout 90 "$PY" scripts/bench_loader.py --images $(( W >= 8 ? 320 : 160 )) --workers $WORKERS \
  --rounds 1 --summary "$SUMMARY" || note "loader benchmark: FAILED or timed out (exit $?)"
RATE=$(sed -n "s/^loader images\/s new, workers=$W: //p" "$SUMMARY" | tail -1)
if [ -n "$RATE" ]; then
  for T in "cn_cnn 400" "baseline 1200"; do
    set -- $T
    OK=$(awk -v r="$RATE" -v t="$2" 'BEGIN { print (r >= t) ? "yes" : "no" }')
    note "loader keeps up with the $1 target ($2 images/s) with $W workers: $OK ($RATE)"
  done
fi

echo "== 5. GPU decoding (dataset.decode: gpu)"
timeout 60 "$PY" scripts/bench_gpu_decode.py --device cuda --images 256 --workers "$W" \
  --summary "$SUMMARY" || note "GPU decoding: FAILED or timed out (exit $?)"

echo
echo "===== summary (scripts/gpu_check.sh, $(( SECONDS - START )) s) ====="
cat "$SUMMARY"
echo "===== end of summary ====="
