"""What the coordinator serves to browsers on its HTTP (= WebSocket) port, from this checkout – no CDN.

| URL | content |
|---|---|
| ``/`` | the demo page (``client_web/demo/index.html``): joins as a client with a digits shard, shows the tab's privacy policy and its own privacy ledger next to the coordinator's figures, draw-a-digit |
| ``/sdk/…`` | ``client_web/`` as is: the SDK (``sdk/fl-client.js``), the runtime loader (``js/``), the WASM kernel, the demo's script and ``node_modules/`` (Pyodide, libsodium-wrappers) |
| ``/py/manifest.json`` | :func:`client_pyodide.bundle.manifest` – the Python files the runtime loads, with SHA-256 |
| ``/py/<path>`` | a file listed in that manifest (:func:`client_pyodide.bundle.resolve`; anything else is 404) |
| ``/demo/shard?i=I&n=N`` | shard I of N (N ≤ 64) of the digits training split (``partition=dirichlet:ALPHA`` with ALPHA in [0.1, 100] – default 0.5 – or ``iid``; ``seed=0``: the same split ``fl-client --data digits:I/N`` uses) as JSON: ``{i, n, partition, seed, features, classes, count, x: base64 float32 (row-major), y: [labels]}`` |

:func:`mount` adds these to an :class:`~coordinator.service.http_routes.HttpRoutes`; ``fl-coordinator serve`` does so
whenever ``client_web/node_modules`` exists (``make web-setup``), and logs why not otherwise.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from pathlib import Path
from urllib.parse import parse_qs

from coordinator.service.http_routes import HttpResponse, HttpRoutes, json_response

log = logging.getLogger("fl-coordinator")

REPO = Path(__file__).resolve().parents[2]
CLIENT_WEB = REPO / "client_web"
SDK_PREFIX, PY_PREFIX, DEMO_PREFIX = "/sdk/", "/py/", "/demo/"
# the shard endpoint runs on the event loop: its parameters are bounded so that no request is expensive
MAX_SHARDS, MAX_SEED, ALPHA_RANGE, MAX_TRIES = 64, 1 << 16, (0.1, 100.0), 100


def missing(client_web: Path = CLIENT_WEB) -> str | None:
    """Why the browser client cannot be served from ``client_web`` (``None``: it can)."""
    need = [client_web / "node_modules" / "pyodide" / "pyodide.mjs",
            client_web / "node_modules" / "libsodium-wrappers" / "dist" / "modules-esm" / "libsodium-wrappers.mjs",
            client_web / "kernel" / "flkernel.wasm", client_web / "sdk" / "fl-client.js",
            client_web / "demo" / "index.html"]
    absent = [p for p in need if not p.is_file()]
    if absent:
        return ", ".join(str(p.relative_to(client_web.parent)) for p in absent) + " missing (run `make web-setup`)"
    return None


def python_bundle(rest: str, query: str) -> HttpResponse | None:
    """``/py/manifest.json`` and the files it lists (nothing else)."""
    from client_pyodide import bundle

    if rest == "manifest.json":
        return HttpResponse(200, "application/json", json.dumps(bundle.manifest()).encode(),
                            {"Cache-Control": "no-cache"})
    path = bundle.resolve(rest)
    if path is None or not path.is_file():
        return None
    return HttpResponse(200, "text/x-python; charset=utf-8", path.read_bytes(), {"Cache-Control": "no-cache"})


@functools.lru_cache(maxsize=64)
def shard_json(i: int, n: int, partition: str = "dirichlet:0.5", seed: int = 0) -> bytes:
    """Shard ``i`` of ``n`` of the digits training split, exactly as ``client_native.cli.load_data`` makes it."""
    import numpy as np

    from federated_data import dirichlet, iid, load_digits

    ds = load_digits()
    rng = np.random.default_rng(seed)
    kind, _, arg = partition.partition(":")
    if kind == "dirichlet":
        alpha = float(arg or 0.5)
        if not ALPHA_RANGE[0] <= alpha <= ALPHA_RANGE[1]:
            raise ValueError(f"dirichlet alpha must be in [{ALPHA_RANGE[0]}, {ALPHA_RANGE[1]}]")
        # the same draws as fl-client's (which allows more tries before giving up)
        parts = dirichlet(ds.y_train, n, alpha, rng, min_size=20, max_tries=MAX_TRIES)
    elif kind == "iid":
        parts = iid(ds.y_train, n, rng)
    else:
        raise ValueError(f"partition {partition!r}: expected dirichlet:ALPHA or iid")
    idx = parts[i]
    x = np.ascontiguousarray(ds.x_train[idx], dtype="<f4")
    return json.dumps({"i": i, "n": n, "partition": partition, "seed": seed, "features": int(x.shape[1]),
                       "classes": int(ds.num_classes), "count": len(idx),
                       "x": base64.b64encode(x.tobytes()).decode(),
                       "y": [int(v) for v in ds.y_train[idx]]}).encode()


def demo_data(rest: str, query: str) -> HttpResponse | None:
    """``/demo/shard?i=&n=[&partition=][&seed=]``."""
    if rest != "shard":
        return None
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        i, n, seed = int(q.get("i", "0")), int(q.get("n", "1")), int(q.get("seed", "0"))
        partition = q.get("partition", "dirichlet:0.5")
        if not (0 <= i < n <= MAX_SHARDS and 0 <= seed < MAX_SEED):
            raise ValueError(f"need 0 <= i < n <= {MAX_SHARDS} and 0 <= seed < {MAX_SEED}")
        body = shard_json(i, n, partition, seed)
    except ImportError as exc:  # scikit-learn (the digits data) is not installed
        return json_response({"error": "unavailable", "message": str(exc)}, 503)
    except ValueError as exc:  # bad numbers, or too many shards for the data (a shard would be too small)
        return json_response({"error": "bad_request", "message": str(exc)}, 400)
    return HttpResponse(200, "application/json", body, {"Cache-Control": "no-store"})


def mount(routes: HttpRoutes, client_web: Path = CLIENT_WEB) -> bool:
    """Add the browser client's routes (table above) to ``routes``; ``False`` (and a log line) when
    ``client_web`` lacks its npm packages or built files."""
    reason = missing(client_web)
    if reason is not None:
        log.warning("browser client not served (no demo page at /): %s", reason)
        return False
    routes.static[SDK_PREFIX] = client_web
    routes.handlers[PY_PREFIX] = python_bundle
    routes.handlers[DEMO_PREFIX] = demo_data
    if routes.index is None:
        routes.index = client_web / "demo" / "index.html"
    log.info("serving the browser client: demo page at /, SDK at %ssdk/fl-client.js, Python bundle at %s",
             SDK_PREFIX, PY_PREFIX)
    return True
