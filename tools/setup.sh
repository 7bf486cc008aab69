#!/usr/bin/env bash
# One-command set-up: creates .venv at the repo root, installs the pinned stack
# (torch, torchvision, mmcv with compiled ops, mmengine, mmdet, mmsegmentation,
# open_clip, timm, pycocotools, ...) and flexitransfer itself, then runs the main
# job (tiny data -> train -> multi-patch test). Re-running it when everything is
# installed skips the install (a stamp holds the hash of the pinned requirements).
#
#   bash tools/setup.sh            # install + main job
#   SKIP_MAIN_JOB=1 bash tools/setup.sh   # install only
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
VENV="$ROOT/.venv"
STAMP="$VENV/.flexitransfer-stamp"
WHEELS="${FLEXI_WHEELS:-$ROOT/../shared/wheels}"
want="$(cat requirements.txt pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
pipi() { "$VPY" -m pip install --disable-pip-version-check --progress-bar off "$@"; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && \
   "$VPY" -c "import torch, torchvision, mmcv.ops, mmseg, mmdet, open_clip, timm, panopticapi, onnxruntime, flexitransfer" 2>/dev/null; then
  echo "[setup] environment up to date ($VENV)"
else
  echo "[setup] installing into $VENV"
  # pkg_resources (setuptools < 81) is needed by mmcv's source build.
  pipi "setuptools<81" wheel
  # torch first: mmcv compiles against it. Pinned: the local 2.13.0+cpu wheel has
  # no working torchvision, and torch >= 2.14 headers break mmcv's C++17 build.
  pipi "torch==2.12.1" "torchvision==0.27.1"
  # mmcv 2.1.0 with compiled ops: a prebuilt wheel from ../shared/wheels when
  # present, else a source build (~12 min on 2 cores; pip caches the wheel).
  find_links=()
  if ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    echo "[setup] using prebuilt mmcv from $WHEELS"; find_links=(--find-links "$WHEELS")
  else
    echo "[setup] no prebuilt mmcv wheel in $WHEELS: building from source (about 12 minutes)"
  fi
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" MMCV_WITH_OPS=1 pipi --no-build-isolation "${find_links[@]}" \
    "mmcv==2.1.0" "torch==2.12.1"
  pipi -r requirements.txt
  # `panopticapi` for mmdet's panoptic metric: metadata pins numpy < 2, the code runs on numpy 2.
  pipi --no-deps "panopticapi-lite==0.2.0"
  pipi --no-deps --no-build-isolation -e .
  "$VPY" -c "import torch, torchvision, mmcv.ops, mmseg, mmdet, open_clip, timm, flexitransfer; \
print('[setup] torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmseg', mmseg.__version__, '| mmdet', mmdet.__version__)"
  echo "$want" > "$STAMP"
fi

if [ "${SKIP_MAIN_JOB:-0}" != "1" ]; then
  echo "[setup] main job: tiny data -> train -> test at several patch sizes"
  "$VPY" tools/main_job.py
fi
