#!/usr/bin/env bash
# Set up (system packages, venv, test tools), then run the whole test suite: core, real-model
# checks, napari under a virtual X server, notebooks and a real browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-test-tools
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-xcb}
# Keep the two cores for the model; no network, no stdin.
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"
