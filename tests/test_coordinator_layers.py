"""The coordinator's two layers stay apart (docs/architecture.md): ``coordinator.federation`` is the sans-I/O
federation (engine, trust, evidence, optimizers, evaluation, config) and imports nothing from the service around it
nor any I/O module; ``coordinator.service`` (driver, transports, HTTP, store, settings, CLI) may import the
federation. Checked on the source (AST), so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "coordinator"
# modules that do I/O, talk to the network, read the clock or start threads: never in the sans-I/O layer
IO_MODULES = {"asyncio", "socket", "sqlite3", "websockets", "grpc", "threading", "subprocess", "time", "os",
              "http", "urllib", "logging", "signal", "selectors", "concurrent", "coordinator.service", "random"}


def imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _blocked(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in IO_MODULES)


FEDERATION = sorted((ROOT / "federation").glob("*.py"))


def test_both_layers_exist_and_nothing_is_left_flat() -> None:
    assert len(FEDERATION) >= 7 and len(list((ROOT / "service").glob("*.py"))) >= 10
    assert [p.name for p in ROOT.glob("*.py")] == ["__init__.py"]


@pytest.mark.parametrize("path", FEDERATION, ids=lambda p: p.name)
def test_federation_layer_imports_no_service_and_no_io(path: Path) -> None:
    bad = sorted(m for m in imported_modules(path) if _blocked(m))
    assert not bad, f"{path.name} imports {bad}"


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from coordinator.service.store import Store\n    import asyncio\n")
    assert {m for m in imported_modules(bad) if _blocked(m)} == {"coordinator.service.store", "asyncio"}
