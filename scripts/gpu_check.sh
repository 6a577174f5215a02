#!/usr/bin/env bash
# One command for a CUDA machine (an H100), at most about 5 minutes, from the repo root:
#   bash scripts/gpu_check.sh
# 1. nvidia-smi and the torch/CUDA versions; 2. a short study on CUDA with mixed precision;
# 3. training images/s of the bare ResNet50 baseline and CN-CNN at 448x448 (bf16,
#    channels_last), eager and with torch.compile of fusion and attention
#    (scripts/gpu_throughput.py). Works on a fresh machine with torch preinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

echo "== 1. machine"
nvidia-smi || echo "nvidia-smi not found"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), 'available', torch.cuda.is_available())"

if ! "$PY" -c "import fusion_lab" 2>/dev/null; then
  echo "== installing fusion_lab (editable, no dependencies)"
  "$PY" -m pip install -q -e . --no-deps
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "== 2. quickstart study on CUDA, 1 epoch, mixed precision (train.amp=auto)"
timeout 150 "$PY" -m fusion_lab run studies/quickstart.yaml --device cuda --results "$TMP" \
  --set train.epochs=1 --set seeds=[0] --progress plain \
  || echo "study run failed or timed out (exit $?)"

echo "== 3. training throughput at 448x448, batch 32, bf16, channels_last"
timeout 150 "$PY" scripts/gpu_throughput.py --device cuda --image-size 448 --batch-size 32 \
  --steps 20 --warmup 3 --amp bf16 \
  || echo "throughput run failed or timed out (exit $?)"
