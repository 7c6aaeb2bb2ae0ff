#!/usr/bin/env bash
# Install what the tests need and run the whole suite (slow tests included; GPU tests skip
# themselves without CUDA). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_SYS_PKGS="chromium" bash scripts/bootstrap.sh
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true EGL_PLATFORM=surfaceless
exec .venv/bin/python -m pytest -q "$@"
