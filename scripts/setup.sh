#!/usr/bin/env bash
# Create .venv with cldiff and its test tools. The CPU build of torch is
# installed first and pinned, so nothing below can pull a CUDA build.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -W ignore -c "import torch" 2>/dev/null; then
  # CPU wheel. On machines without a local wheel, pip fetches it from the
  # PyTorch CPU index; GPU users install their own build before this script.
  # (pip's notes about this machine's local package folders are filtered out; errors still show)
  { "$VPY" -m pip install -q "torch==2.13.0" || \
    "$VPY" -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu; } \
    2> >(grep -v "is ignored: it is neither" >&2)
fi
# -W ignore: torch warns that numpy is missing until the install below brings it
TORCH=$("$VPY" -W ignore -c "import torch; print(torch.__version__.split('+')[0])")
# the installed torch satisfies cldiff's range, so this installs no other torch
echo "torch==$TORCH" > .venv/torch-pin.txt
# (pip notes about local folders filtered out, as above)
"$VPY" -m pip install -q -c .venv/torch-pin.txt -e ".[test]" 2> >(grep -v "is ignored: it is neither" >&2)
# Fashion-MNIST from Debian's package, where we may install packages.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || \
    echo "note: could not install dataset-fashion-mnist; see README 'Data' (tests on real data will skip)"
fi
