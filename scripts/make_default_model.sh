#!/usr/bin/env bash
# Remakes the shipped default models from the 31 WSSS4LUAD validation images:
# 1. the CAM model (src/wsss_napari/models/default/cam_default.safetensors): weak patches
#    labelled only with the classes they contain, EfficientNet-Lite0 from its local ImageNet
#    weights, then its recommended post-processing tuned on the same images' masks;
# 2. the segmentation model (seg_default.safetensors, stage 2): pseudo-masks of the same weak
#    patches made by that CAM model with its recommended post-processing, then two
#    DeepLabV3+ (seeds 0 and 1) whose encoders start from the CAM model's, trained on them
#    and shipped as one ensemble (the mean of their probabilities).
# See models/default/MODEL_CARD.md.
#   scripts/make_default_model.sh [--stage2-only] [WSSS4LUAD_VALIDATION_DIR]
# --stage2-only: keep the existing CAM model, remake only the segmentation model.
# Two CPU threads, fixed seed: a rerun with the same thread count gives bit-identical weights.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE2_ONLY=0
if [[ "${1:-}" == "--stage2-only" ]]; then STAGE2_ONLY=1; shift; fi
DATA=${1:-../shared/data/wsss4luad/validation}
M=src/wsss_napari/models/default/cam_default.safetensors
S=src/wsss_napari/models/default/seg_default.safetensors
SEG_EPOCHS=10
SEG_SEEDS="0 1"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
if [[ $STAGE2_ONLY == 0 ]]; then
wsss-napari train-cls --from-masks "$DATA" --patch-size 128 --patch-stride 64 \
    --backbone tf_efficientnet_lite0 --pretrained --crop-size 128 --epochs 6 \
    --val-fraction 0 --mpp 1.0 --seed 0 --device cpu --half --out "$M"
wsss-napari tune "$M" "$DATA/img" "$DATA/mask" --out /tmp/default-postproc.yaml \
    --into-model "$M"
fi
# stage 2: the same weak patches (128 px, stride 64), pseudo-masks, segmentation network
W=$(mktemp -d /tmp/wsss-default-seg.XXXXXX)
trap 'rm -rf "$W"' EXIT
python -c "import sys; from wsss_napari.progress import run_to_end; \
from wsss_napari.train.weak import write_weak_patches; \
run_to_end(write_weak_patches(sys.argv[1], sys.argv[2], 128, 64))" "$DATA" "$W/patches"
wsss-napari pseudo "$M" "$W/patches" --out "$W/pseudo" --device cpu
MEMBERS=()
for SEED in $SEG_SEEDS; do
wsss-napari train-seg "$W/patches" "$W/pseudo" --encoder tf_efficientnet_lite0 \
    --weights "$M" --decoder deeplabv3plus --loss ce+dice --epochs "$SEG_EPOCHS" \
    --crop-size 128 --val-fraction 0 --mpp 1.0 --seed "$SEED" --device cpu \
    --out "$W/seg$SEED.safetensors"
MEMBERS+=("$W/seg$SEED.safetensors")
done
# the shipped model: the members' mean probability, as one file (models/ensemble.py)
wsss-napari ensemble "${MEMBERS[@]}" --half --out "$S"
