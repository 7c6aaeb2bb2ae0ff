#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine with Python 3.11 for pose-repro; safe to re-run.
# Installs the system libraries for headless rendering (Mesa EGL) when missing, creates .venv,
# and installs the project with its dev extra. Re-runs skip what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SYS_PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglib2.0-0)
# Extra system packages a caller needs (the test command adds chromium for the HTML report test).
read -r -a EXTRA <<< "${EXTRA_SYS_PKGS:-}"
SYS_PKGS+=("${EXTRA[@]}")

missing=()
for p in "${SYS_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.pose-repro-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
