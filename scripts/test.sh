#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (Python and root are enough), from a
# clone; .ci/run calls this too:
#
#   bash scripts/test.sh             # arguments go to pytest, e.g. -x -k docs
#
# Installs Debian's chromium (the report and docs tests open pages in it headless) and g++ (the
# fused kernels) if missing, makes or reuses $VENV (default .venv) with torch==2.13.0 and
# rangerlab[test,lab,integrations,docs], runs pytest, then builds the docs in strict mode.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_setup.sh
apt_install chromium chromium
apt_install g++ g++
setup_venv test,lab,integrations,docs
python -m pytest "$@"
mkdocs build --strict
