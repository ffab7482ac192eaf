#!/usr/bin/env bash
# Set up, then segment five of scikit-image's coins with the embedded default model (LiteMedSAM),
# offline. Writes out/coins/{subpart,part,whole}.tif, scores.json and overlay.png.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/sam-viz segment sample:coins -o out/coins \
  --box 19,32,70,77 --box 129,25,182,77 --box 312,153,383,221 --box 15,230,78,291 \
  --box 217,237,272,291
