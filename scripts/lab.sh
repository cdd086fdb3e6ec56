#!/usr/bin/env bash
# Set up and run the lab on a fresh machine (Python and root are enough), from a clone:
#
#   bash scripts/lab.sh              # the --quick run; arguments go to `rangerlab run`
#
# Installs g++ (for the fused kernels) if missing, makes or reuses .venv with torch==2.13.0 and
# rangerlab[lab], then runs `rangerlab run`, which writes rangerlab-report/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_setup.sh
# Without a compiler the optimizers take the (slower) reference path, after one warning.
apt_install g++ g++ || true
setup_venv lab
rangerlab run "$@"
