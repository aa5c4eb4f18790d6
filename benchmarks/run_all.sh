#!/usr/bin/env bash
# Runs every benchmark in the benchmarks' own environment and prints their figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/setup_env.sh
for b in benchmarks/bench_*.py; do
  echo "=== $b"
  .venv-bench/bin/python "$b"
done
