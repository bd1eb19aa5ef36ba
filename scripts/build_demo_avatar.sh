#!/usr/bin/env bash
# Rebuild the bundled demo avatar (assets/avatars/demo) from nothing but the repository:
# synthetic talking head -> prepare -> train (demo profile, CPU) -> trim -> evaluate.
# About an hour on a 2-core CPU; every step skips what is already done (rm -rf runs/demo
# dataset/demo to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[[ -f dataset/demo/demo.mp4 ]] || $PY -m synctalk synth --text-file assets/demo/train.txt \
  --out dataset --name demo --seed 1
$PY -m synctalk prepare demo --out runs/demo
cp dataset/demo/truth.npz runs/demo/
SYNCTALK_MODELS__THREADS=1 $PY -m synctalk train runs/demo --profile demo --device cpu
$PY -m training.package_demo runs/demo assets/avatars/demo --frames 250
$PY -m synctalk evaluate demo --text-file assets/demo/heldout.txt --json bench/out/demo-eval.json
