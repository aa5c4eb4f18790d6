"""The ``fl-coordinator`` command: one entry point, a subcommand per capability."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fl-coordinator",
        description="Federated-learning coordinator for browser and native clients.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from mle.cli import add_mle_parser

    add_mle_parser(sub)
    from simulations.cli import add_simulate_parser

    add_simulate_parser(sub)
    _add_serve_parser(sub)
    from coordinator.service.enrolment import add_enrol_token_parser

    add_enrol_token_parser(sub)
    return parser


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from coordinator.service.settings import add_serve_arguments

    p = sub.add_parser(
        "serve", help="run the coordinator (WebSocket + HTTP for browsers, gRPC for native clients)",
        description="Run the federated-learning coordinator. Settings come from --config FILE.toml, overridden "
                    "by flags. State (SQLite store, signed model files, identity key) lives in --data-dir; "
                    "restarting with the same data dir resumes after the last completed round.")
    add_serve_arguments(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sqlite3

    from coordinator.service.server import serve
    from coordinator.service.settings import SettingsError, load_settings
    from coordinator.service.store import StoreError

    # configured before the settings are read so their warnings (e.g. a world-readable token file) are formatted;
    # the level comes from the settings
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"fl-coordinator serve: error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(settings.server.log_level.upper())
    try:
        return asyncio.run(serve(settings))
    except (SettingsError, StoreError) as exc:  # a refused store (in use, missing beside saved models): one line
        print(f"fl-coordinator serve: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:  # corruption the start-up checks did not see: still one line
        print(f"fl-coordinator serve: error: {settings.server.data_dir}: the store is not usable ({' '.join(str(exc).split())}): restore "
              "it from a backup", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    # One BLAS thread unless the user says otherwise: the coordinator's matrix work is small and memory-bound,
    # and OpenBLAS's spinning worker threads slow it 10-100× when the cores are shared (measured: a 50 × 100k
    # Gram product 6 ms single-threaded vs 0.02-2 s multi-threaded under load). Must happen before numpy loads.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
