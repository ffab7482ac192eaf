#!/usr/bin/env bash
# Set up, then run the embedded default model (LiteMedSAM) offline: five of scikit-image's
# coins from five boxes (out/coins: labels.tif, scores.json, overlay.png), and every nucleus
# of a generated 1024 x 1024 fluorescence field (out/nuclei: labels.tif and labels.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/sam-viz segment sample:coins -o out/coins --overwrite \
  --box 19,32,70,77 --box 129,25,182,77 --box 312,153,383,221 --box 15,230,78,291 \
  --box 217,237,272,291
.venv/bin/sam-viz everything sample:nuclei -o out/nuclei/labels.tif --overwrite
