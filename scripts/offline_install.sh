#!/usr/bin/env bash
# Install fusion_lab (editable, no dependencies) into PYTHON's environment without internet.
#   PYTHON=python3 bash scripts/offline_install.sh
# pip's default build isolation would fetch setuptools and wheel from an index (offline:
# "No matching distribution found for setuptools>=64"); --no-build-isolation builds with
# the setuptools and wheel already installed, and --no-deps relies on the preinstalled
# torch, torchvision, timm, pandas, ... Used by scripts/gpu_check.sh and tested offline by
# tests/test_offline_install.py, so it cannot break unnoticed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import setuptools, wheel; from setuptools import build_meta" 2>/dev/null; then
  echo "error: $PY lacks setuptools or wheel, which an offline install of fusion_lab needs" \
       "(pip install setuptools wheel where an index is reachable)" >&2
  exit 2
fi
if ! out=$(PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install -q \
    --no-build-isolation --no-deps -e . 2>&1); then
  echo "$out" | tail -5 >&2
  echo "error: offline install of fusion_lab failed with $PY (pip install --no-build-isolation" \
       "--no-deps -e .); the lines above say why" >&2
  exit 2
fi
"$PY" -c "import fusion_lab, fusion_lab.registry; print('fusion_lab installed from', \
fusion_lab.__path__[0])"
