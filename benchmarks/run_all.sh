#!/usr/bin/env bash
# Runs every benchmark in the benchmarks' own environment and prints their figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/setup_env.sh
# bench_load.py runs at its full sizes here (1k/5k/10k idle WebSocket connections, five floods: ~15 min, ~2 GB,
# RLIMIT_NOFILE >= 10.5k hard limit); `--quick` is its ~2 min development mode.
for b in benchmarks/bench_*.py; do
  echo "=== $b"
  .venv-bench/bin/python "$b"
done
