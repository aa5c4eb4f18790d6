"""What ``/status`` may publish: the engine's full status dict → a public view with federation-level aggregates only.

:meth:`coordinator.federation.engine.Engine.status` describes every client (id, trust, observations, connection state and
kind). That is for the operator (``/status/operator``, behind a bearer token – :mod:`coordinator.service.http_routes`);
the unauthenticated ``/status`` gets :func:`public_status`, which is built from an **allowlist**: a field the
engine adds later is left out until it is added here, so a new per-client field can never leak by accident.

Each kept field is also checked for its shape: the configuration and progress figures must be JSON scalars, the
counts must be counts (a list or mapping is replaced by its length – never copied), and ``metrics`` keeps only
scalar entries. ``privacy`` is copied whole: it holds federation-level figures only (ε spent, δ, budget, noise,
clip, …) and its keys change with the accounting, so the view does not depend on them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# copied when they are JSON scalars (str, int, float, bool, None)
SCALARS = ("round", "rounds", "finished", "stopped_reason", "clients_per_round", "min_clients_per_round",
           "group_size", "aggregator", "coordinator_key")
# how many clients are connected (authenticated on their current connection) / ready
COUNTS = ("connected", "ready")
# of ``round_in_progress``: the round number, how many groups, how many failed (not the groups' phases)
ROUND_COUNTS = ("round", "groups", "failed_groups")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _count(v: Any) -> int | None:
    """A count: an int as it is, a collection by its length (its members are never published), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, list | tuple | set | frozenset | Mapping):
        return len(v)
    return None


def _round_in_progress(v: Any) -> dict[str, int | None] | None:
    if not isinstance(v, Mapping):
        return None
    return {k: _count(v[k]) for k in ROUND_COUNTS if k in v}


def _client_counts(clients: Any) -> dict[str, int]:
    """``registered``: every client the engine knows; ``connected``; ``banned``."""
    rows = [c for c in clients if isinstance(c, Mapping)] if isinstance(clients, list | tuple) else []
    return {"registered": len(rows), "connected": sum(c.get("connected") is True for c in rows),
            "banned": sum(c.get("banned") is True for c in rows)}


def public_status(full: Mapping[str, Any]) -> dict[str, Any]:
    """The public view of ``Engine.status()``: configuration, progress, the privacy figures, the last round's
    federation-level metrics and client *counts* (``client_counts``) – no client ids, trust or per-client state.
    Fields missing from ``full`` are missing from the view."""
    out: dict[str, Any] = {k: full[k] for k in SCALARS if k in full and _is_scalar(full[k])}
    if "round_in_progress" in full:
        out["round_in_progress"] = _round_in_progress(full["round_in_progress"])
    for k in COUNTS:
        if k in full:
            out[k] = _count(full[k])
    if "privacy" in full:
        p = full["privacy"]
        out["privacy"] = copy.deepcopy(dict(p)) if isinstance(p, Mapping) else None
    if "metrics" in full:
        m = full["metrics"]
        out["metrics"] = {str(k): v for k, v in m.items() if _is_scalar(v)} if isinstance(m, Mapping) else None
    out["client_counts"] = _client_counts(full.get("clients"))
    return out


def operator_status(full: Mapping[str, Any]) -> dict[str, Any]:
    """The operator's view: everything ``Engine.status()`` reports (``/status/operator``, token required)."""
    return dict(full)


__all__ = ["operator_status", "public_status"]
