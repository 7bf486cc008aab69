#!/usr/bin/env bash
# Carry the stack to an air-gapped machine that already has Python, PyTorch (+ torchvision) and a compiler.
#
# On a connected machine (any OS/Python: the wheels are chosen for the target):
#   bash tools/offline_wheels.sh download DIR [--python-version 3.12] [--platform manylinux_2_28_x86_64]
#        [--torch 2.12.1] [--torchvision 0.27.1] [--have TARGET_FREEZE.txt] [--without NAME ...]
# Copy DIR (and a checkout of this repo) to the target, then there:
#   bash tools/offline_wheels.sh install DIR [--cuda]       # PYTHON=... picks the target's interpreter
#
# download: resolves requirements.txt (minus torch / torchvision / mmcv: the target has torch; mmcv is
# built there) for the target's Python and platform, as if torch, torchvision and the packages of
# --have (the target's `python -m pip list --format=freeze`) were installed: packages the target
# already has in a version that fits are not carried. Then downloads exactly that set as wheels
# (--only-binary=:all:), plus panopticapi-lite (installed --no-deps, see tools/setup.sh), the build
# tools for mmcv (setuptools<81, wheel, ninja) and mmcv 2.1.0 as its source archive. DIR/pins.txt
# lists the set. --without drops requirements.txt entries (e.g. --without onnxruntime pytest).
# The resolution runs in a throwaway venv with a current pip (older pips cannot resolve for another
# platform against installed packages).
#
# install: pip install --no-index from DIR, then mmcv's ops built against the installed torch:
# CPU ops only (the GPU hidden at build time: what flexitransfer needs, its deformable attention
# falls back to PyTorch) or, with --cuda, the CUDA kernels too (FORCE_CUDA=1; needs nvcc of the CUDA
# major that torch was built with; TORCH_CUDA_ARCH_LIST, e.g. "9.0" for H100/H200, limits the build
# to the GPUs used). MAX_JOBS defaults to the core count. Finally flexitransfer itself (-e, --no-deps).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
MMCV="mmcv==2.1.0"
BUILD_TOOLS=("setuptools<81" "wheel" "ninja")
MMCV_DEPS=(addict mmengine numpy packaging Pillow pyyaml yapf)  # mmcv 2.1.0's Requires-Dist (Linux)
usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
cmd="$1"; DIR="$2"; shift 2

download() {
  local pyver=3.12 torch=2.12.1 tv=0.27.1 have="" without=() platforms=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --python-version) pyver="$2"; shift 2 ;;
      --platform) platforms+=("$2"); shift 2 ;;
      --torch) torch="$2"; shift 2 ;;
      --torchvision) tv="$2"; shift 2 ;;
      --have) have="$(realpath "$2")"; shift 2 ;;
      --without) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do without+=("$1"); shift; done ;;
      *) echo "unknown option $1" >&2; usage ;;
    esac
  done
  # glibc 2.28 by default: torch >= 2.6 wheels need it anyway. manylinux_2_X also takes every older
  # manylinux tag (pip itself does not expand it).
  [ ${#platforms[@]} -gt 0 ] || platforms=(manylinux_2_28_x86_64)
  local target=(--python-version "$pyver" --implementation cp --only-binary=:all:)
  for p in "${platforms[@]}"; do
    target+=(--platform "$p")
    if [[ "$p" =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
      for ((g = BASH_REMATCH[1] - 1; g >= 17; g--)); do
        target+=(--platform "manylinux_2_${g}_${BASH_REMATCH[2]}")
      done
      target+=(--platform "manylinux2014_${BASH_REMATCH[2]}")
    fi
  done
  mkdir -p "$DIR"; DIR="$(realpath "$DIR")"
  local tmp; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' RETURN
  # setuptools < 81 (pkg_resources): pip prepares mmcv's metadata from its setup.py even with --no-deps
  "$PY" -m venv "$tmp/pip" && "$tmp/pip/bin/python" -m pip install -q --disable-pip-version-check -U pip \
    "setuptools<81" wheel
  local PIP=("$tmp/pip/bin/python" -m pip --disable-pip-version-check)
  # the target's installed packages, as metadata-only stubs in an empty environment
  "$PY" -m venv --without-pip "$tmp/target"
  { echo "torch==$torch"; echo "torchvision==$tv"; [ -z "$have" ] || cat "$have"; } > "$tmp/have.txt"
  "$tmp/target/bin/python" - "$tmp/have.txt" <<'EOF'
import os, re, sys, sysconfig
site, seen = sysconfig.get_paths()['purelib'], set()
for line in open(sys.argv[1]):
    m = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)', line)
    if not m or m.group(1).lower() in seen:
        continue  # comments, editable / URL installs; the first of a name wins (--torch over --have)
    seen.add(m.group(1).lower())
    d = os.path.join(site, f"{re.sub(r'[-_.]+', '_', m.group(1))}-{m.group(2)}.dist-info")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'METADATA'), 'w') as f:
        f.write(f'Metadata-Version: 2.1\nName: {m.group(1)}\nVersion: {m.group(2)}\n')
EOF
  local drop="torch|torchvision|mmcv"
  for n in "${without[@]}"; do drop+="|$n"; done
  grep -v -E '^\s*(#|$)' "$ROOT/requirements.txt" | grep -v -i -E "^($drop)\s*([=<>!~;[]|\$)" > "$tmp/req.txt" || true
  printf '%s\n' "${MMCV_DEPS[@]}" "${BUILD_TOOLS[@]}" >> "$tmp/req.txt"
  "${PIP[@]}" --python "$tmp/target/bin/python" install --dry-run --quiet --report "$tmp/report.json" \
    "${target[@]}" -r "$tmp/req.txt"
  "$PY" -c "import json, sys
r = json.load(open(sys.argv[1]))
print('\n'.join(sorted(f\"{i['metadata']['name']}=={i['metadata']['version']}\" for i in r['install'])))" \
    "$tmp/report.json" > "$DIR/pins.txt"
  "${PIP[@]}" download --quiet --no-deps "${target[@]}" -d "$DIR" -r "$DIR/pins.txt" "panopticapi-lite==0.2.0"
  "${PIP[@]}" download --quiet --no-deps --no-binary=:all: --no-build-isolation -d "$DIR" "$MMCV"
  local odd; odd="$(cd "$DIR" && ls | grep -v -E '\.whl$|^pins\.txt$|^mmcv-2\.1\.0\.tar\.gz$' || true)"
  [ -z "$odd" ] || { echo "not a wheel for the target (no binary for it?): $odd" >&2; exit 1; }
  echo "[offline] $(ls "$DIR"/*.whl | wc -l) wheels + mmcv source, $(du -sh "$DIR" | cut -f1) in $DIR" \
       "(Python $pyver, ${platforms[*]}; assumed installed: torch $torch, torchvision $tv${have:+, $have})"
}

install() {
  local cuda=0
  [ "${1:-}" != "--cuda" ] || cuda=1
  [ -f "$DIR/pins.txt" ] || { echo "$DIR/pins.txt missing: run the download step first" >&2; exit 1; }
  pipi() { "$PY" -m pip install --disable-pip-version-check --no-index --find-links "$DIR" "$@"; }
  "$PY" -c "import torch, torchvision; print('[offline] torch', torch.__version__, '| torchvision',
torchvision.__version__, '| CUDA', torch.version.cuda)"
  pipi -r "$DIR/pins.txt"
  pipi --no-deps "panopticapi-lite==0.2.0"  # metadata pins numpy < 2; the code runs on numpy 2
  local gpu=(CUDA_VISIBLE_DEVICES= FORCE_CUDA=0)  # GPU hidden: mmcv's setup.py builds the CPU ops only
  [ "$cuda" = 0 ] || gpu=(FORCE_CUDA=1)
  env "${gpu[@]}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" MMCV_WITH_OPS=1 "$PY" -m pip install --disable-pip-version-check \
    --no-index --find-links "$DIR" --no-build-isolation "$MMCV"
  pipi --no-deps --no-build-isolation -e "$ROOT"
  "$PY" -c "import torch, mmcv, mmcv.ops, mmdet, mmseg, mmengine, open_clip, timm, panopticapi, flexitransfer
print('[offline] installed: mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__,
      '| mmengine', mmengine.__version__, '| open_clip', open_clip.__version__, '| timm', timm.__version__)"
}

case "$cmd" in
  download) download "$@" ;;
  install) install "$@" ;;
  *) usage ;;
esac
