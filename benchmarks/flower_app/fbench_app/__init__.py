"""Flower app for benchmarks/bench_flower.py (see ../pyproject.toml)."""
