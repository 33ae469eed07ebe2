#!/usr/bin/env bash
# Remakes the shipped default CAM model (src/wsss_napari/models/default/cam_default.safetensors)
# from the 31 WSSS4LUAD validation images: weak patches labelled only with the classes they
# contain, EfficientNet-Lite0 from its local ImageNet weights, then its recommended
# post-processing tuned on the same images' masks. See models/default/MODEL_CARD.md.
#   scripts/make_default_model.sh [WSSS4LUAD_VALIDATION_DIR]
# Two CPU threads, fixed seed: a rerun with the same thread count gives bit-identical weights.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/wsss4luad/validation}
M=src/wsss_napari/models/default/cam_default.safetensors
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
wsss-napari train-cls --from-masks "$DATA" --patch-size 128 --patch-stride 64 \
    --backbone tf_efficientnet_lite0 --pretrained --crop-size 128 --epochs 6 \
    --val-fraction 0 --mpp 1.0 --seed 0 --device cpu --half --out "$M"
wsss-napari tune "$M" "$DATA/img" "$DATA/mask" --out /tmp/default-postproc.yaml \
    --into-model "$M"
