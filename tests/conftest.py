"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import STARTED, Workers, kill_started


@pytest.fixture(autouse=True)
def _no_coordinator_outlives_its_test() -> Iterator[None]:
    """Every ``fl-coordinator serve`` a test started through ``e2e_support.Coordinator`` is gone when the test ends,
    whether it passed, failed or forgot to stop it (three browser-ledger tests left theirs running, for the rest of
    the suite). Coordinators of module-scoped fixtures are set up before this fixture and left alone."""
    since = len(STARTED)
    yield
    kill_started(since)


@pytest.fixture
def workers() -> Iterator[Workers]:
    """Native ``fl-client`` worker processes a test spawns (``workers.spawn(...)``), killed when it ends."""
    w = Workers()
    yield w
    w.kill()
