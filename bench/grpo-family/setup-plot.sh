#!/usr/bin/env bash
# A venv with matplotlib for bench/grpo-family/plot.py (which re-runs itself
# with this venv's python when the system python lacks matplotlib).
#   bash bench/grpo-family/setup-plot.sh      (VENV= to put it elsewhere)
set -euo pipefail
venv="${VENV:-/tmp/grpo-family-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet matplotlib
"$venv/bin/python" -c 'import matplotlib; print("matplotlib", matplotlib.__version__, "in '"$venv"'")'
