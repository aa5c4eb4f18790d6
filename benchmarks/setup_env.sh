#!/usr/bin/env bash
# Creates the benchmarks' own environment (.venv-bench): the project plus the peers we measure against
# (never test dependencies). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
STAMP=$VENV/.installed-stamp
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ benchmarks/requirements-peers.txt -nt "$STAMP" ] \
   || [ benchmarks/requirements-peers-nodeps.txt -nt "$STAMP" ]; then
  test -x $VENV/bin/python || python3 -m venv $VENV
  $VENV/bin/python -m pip install -q --upgrade pip
  $VENV/bin/python -m pip install -q -e '.[dev]'
  $VENV/bin/python -m pip install -q -r benchmarks/requirements-peers.txt
  # Peers whose declared dependencies would pull unpinned torch/torchvision (CUDA wheels): installed
  # without dependencies; the benchmark stubs the modules they only import for plotting.
  $VENV/bin/python -m pip install -q --no-deps -r benchmarks/requirements-peers-nodeps.txt
  touch "$STAMP"
fi
