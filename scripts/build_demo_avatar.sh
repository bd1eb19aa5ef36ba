#!/usr/bin/env bash
# Rebuild the bundled demo avatar (assets/avatars/demo) from nothing but the repository:
# synthetic talking head (landmark-warp) -> prepare -> train (demo profile, CPU) -> two more
# U-Net stages, each from the last one's weights (demo-finetune, demo-polish) -> trim ->
# evaluate. About four hours on a 2-core CPU; every step skips what is already done and an
# interrupted stage resumes (rm -rf runs/demo dataset/demo to start over). DEMO_FEATURE_MODE
# picks the audio features (default below, chosen by measurement: bench/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODE=${DEMO_FEATURE_MODE:-whisper}
STABLE=runs/demo/checkpoints/unet_$MODE.pt
STAGE1=runs/demo/unet_stage1.pt
STAGE2=runs/demo/unet_stage2.pt

# "<profile> <epoch>" of the U-Net the renderer would load, "none 0" before any.
unet_state() {
  $PY -c "import sys, torch; s = torch.load(sys.argv[1], weights_only=True); \
print(s['config']['profile']['name'], s['epoch'])" "$STABLE" 2>/dev/null || echo "none 0"
}

# stage PROFILE INIT: train PROFILE's U-Net from INIT's weights, resume it when it is the run
# in progress, or nothing when it has finished.
stage() {
  local want=$1 init=$2 profile epoch epochs
  read -r profile epoch <<<"$(unet_state)"
  epochs=$($PY -c "import sys; from training.profiles import get_profile; \
print(get_profile(sys.argv[1]).unet.epochs)" "$want")
  if [[ $profile != "$want" ]]; then
    $PY -m synctalk train runs/demo --profile "$want" --device cpu --feature-mode "$MODE" \
      --init-from "$init"
  elif (( epoch < epochs )); then
    $PY -m synctalk train runs/demo --profile "$want" --device cpu --feature-mode "$MODE" --resume
  fi
}

[[ -f dataset/demo/demo.mp4 ]] || $PY -m synctalk synth --text-file assets/demo/train.txt \
  --out dataset --name demo --seed 1
$PY -m synctalk prepare demo --out runs/demo
cp dataset/demo/truth.npz runs/demo/
export SYNCTALK_MODELS__THREADS=2
if [[ ! -f $STAGE1 ]]; then
  # SyncNet, then 11 U-Net epochs over the first 800 frames; re-running resumes.
  $PY -m synctalk train runs/demo --profile demo --device cpu --feature-mode "$MODE" --resume
  cp "$STABLE" "$STAGE1"
fi
if [[ ! -f $STAGE2 ]]; then
  stage demo-finetune "$STAGE1"
  cp "$STABLE" "$STAGE2"
fi
stage demo-polish "$STAGE2"
$PY -m training.package_demo runs/demo assets/avatars/demo --frames 250
$PY -m synctalk evaluate demo --feature-mode "$MODE" --text-file assets/demo/heldout.txt \
  --json bench/out/demo-eval.json
