"""``fl-coordinator simulate CONFIG.toml`` and ``fl-coordinator simulate grid CONFIG.toml``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

USAGE = ("fl-coordinator simulate [grid] CONFIG.toml [--out DIR] [--set key=value …] [--workers N] "
         "[--plugin package.module …]")


def add_simulate_parser(sub: Any) -> None:
    p = sub.add_parser("simulate", help="run a simulated federation (or a grid of them) in-process",
                       description="Run experiments with honest and Byzantine clients through the real "
                                   "coordinator engine. `simulate CONFIG.toml` runs one federation; "
                                   "`simulate grid CONFIG.toml` sweeps attacks × defences (docs/simulation.md).",
                       usage=USAGE)
    p.add_argument("target", nargs="+", metavar="[grid] CONFIG", help="a config file, or 'grid' and a config file")
    p.add_argument("--out", help="output directory (default: the config's out_dir, else runs/NAME (git-ignored))")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set rounds=5 --set federation.aggregator=median "
                        "(values are TOML: numbers, true/false, \"strings\" or bare words)")
    p.add_argument("--workers", type=int,
                   help="CPU budget: a grid runs N processes of one thread each (torch, BLAS/OpenMP, aggregation; "
                        "also with N = 1); a single run uses N threads (torch_threads = N)")
    p.add_argument("--plugin", action="append", default=[], metavar="PACKAGE.MODULE",
                   help="import a module that registers extra attacks/defences before the config is checked "
                        "(repeatable; recorded in the config's plugins, so saved configs rerun with it)")
    p.add_argument("--quiet", action="store_true", help="no per-round output")
    p.set_defaults(func=_main)


def _apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    from simulations.config import apply_override, parse_override

    for item in sets:
        apply_override(data, *parse_override(item))
    return data


def _main(args: argparse.Namespace) -> int:
    from simulations.config import ConfigError, SimulationConfig, load_toml

    target = list(args.target)
    grid = target[0] == "grid"
    if grid:
        target = target[1:]
    if len(target) != 1:
        print(f"usage: {USAGE}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print("fl-coordinator simulate: --workers must be >= 1", file=sys.stderr)
        return 2
    try:
        data = _apply_sets(load_toml(target[0]), args.set)
        if args.plugin:
            known = data.get("plugins", [])
            if not isinstance(known, list):
                raise ConfigError(f"plugins must be a list of module names, got {known!r}")
            data["plugins"] = list(dict.fromkeys([*known, *args.plugin]))
        from simulations.grid import _slug

        if grid:
            from simulations.grid import GridSpec, run_grid

            if args.workers:
                data.setdefault("grid", {})["workers"] = args.workers
            spec = GridSpec.from_dict(data)
            out = Path(args.out or spec.base.out_dir or f"runs/{_slug(spec.base.name)}")
            print(f"grid {spec.base.name}: {len(spec.runs())} runs → {out}", flush=True)
            run_grid(spec, out, verbose=not args.quiet)
            print((out / "table.md").read_text())
            return 0
        if "grid" in data:
            raise ConfigError("this config has a [grid] table: run it with `fl-coordinator simulate grid CONFIG`")
        from simulations.runner import Simulation

        if args.workers:
            data["torch_threads"] = args.workers
        cfg = SimulationConfig.from_dict(data)
        out = Path(args.out or cfg.out_dir or f"runs/{_slug(cfg.name)}")
        result = Simulation(cfg).run(out, verbose=not args.quiet, on_error="record")
    except ConfigError as exc:
        print(f"fl-coordinator simulate: config error: {exc}", file=sys.stderr)
        return 2
    if result.error is not None:
        print(result.error["traceback"], file=sys.stderr)
        print(f"fl-coordinator simulate: {cfg.name}: {result.stopped_reason} after {len(result.history)} "
              f"completed round(s); results in {out}", file=sys.stderr)
        return 1
    h = result.history
    line = f"{cfg.name}: {len(h)} rounds in {result.seconds:.1f}s"
    if h:
        line += f", final accuracy {100 * result.final_accuracy:.2f}%"
        if "attack_success_rate" in h[-1]:
            line += f", attack success rate {100 * h[-1]['attack_success_rate']:.1f}%"
    if result.stopped_reason and len(h) < cfg.rounds:
        line += f" (stopped: {result.stopped_reason})"
    print(line + f"; results in {out}")
    return 0
