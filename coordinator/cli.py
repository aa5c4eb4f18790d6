"""The ``fl-coordinator`` command: one entry point, a subcommand per capability."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fl-coordinator",
        description="Federated-learning coordinator for browser and native clients.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from mle.cli import add_mle_parser

    add_mle_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
