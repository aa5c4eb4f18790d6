"""What the coordinator serves to browsers on its HTTP (= WebSocket) port, from this checkout – no CDN.

| URL | content |
|---|---|
| ``/`` | the demo page (``client_web/demo/index.html``): joins as a client with a digits shard, shows the tab's privacy policy and its own privacy ledger next to the coordinator's figures, draw-a-digit |
| ``/sdk/…`` | from ``client_web/``, the files of :func:`served_files` only: the SDK (``sdk/fl-client.js``) and its worker (``sdk/fl-worker.js``), the runtime loader (``js/``), the demo's script |
| ``/sdk/assets.json`` | where the runtime's large files are, with their SHA-256 and size (:mod:`coordinator.service.asset_bundle`) |
| ``/assets/<hash>/…`` | Pyodide, libsodium and the WASM kernel under content-hashed URLs, cached for a year (``immutable``) |
| ``/sw.js`` | the demo page's service worker (``client_web/sdk/fl-sw.js``, scope ``/``) |
| ``/py/manifest.json`` | :func:`client_pyodide.bundle.manifest` – the Python files the runtime loads, with SHA-256 |
| ``/py/<path>`` | a file listed in that manifest (:func:`client_pyodide.bundle.resolve`; anything else is 404) |
| ``/demo/shard?i=I&n=N`` | shard I of N (N ≤ 64) of the digits training split (``partition=dirichlet:ALPHA`` with ALPHA in [0.1, 100] – default 0.5 – or ``iid``; ``seed=0``: the same split ``fl-client --data digits:I/N`` uses) as JSON: ``{i, n, partition, seed, features, classes, count, x: base64 float32 (row-major), y: [labels]}`` |

:func:`mount` adds these to an :class:`~coordinator.service.http_routes.HttpRoutes`; ``fl-coordinator serve`` does so
whenever ``client_web/node_modules`` exists (``make web-setup``), and logs why not otherwise.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from coordinator.service.asset_bundle import ASSETS_PREFIX, IMMUTABLE, bundle
from coordinator.service.http_routes import (
    Deferred,
    HttpResponse,
    HttpRoutes,
    StaticBody,
    json_response,
    unavailable,
)
from coordinator.service.static_files import expand, read_file

log = logging.getLogger("fl-coordinator")

REPO = Path(__file__).resolve().parents[2]
CLIENT_WEB = REPO / "client_web"
SDK_PREFIX, PY_PREFIX, DEMO_PREFIX = "/sdk/", "/py/", "/demo/"
ASSETS_INDEX, SERVICE_WORKER = "/sdk/assets.json", "/sw.js"
# the shard endpoint's parameters are bounded (its computation runs in a worker thread, ShardService)
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
    """``/py/manifest.json`` and the files it lists (nothing else), with ETags: a reload revalidates (304) instead
    of downloading the bundle again."""
    from client_pyodide import bundle

    if rest == "manifest.json":
        body = json.dumps(bundle.manifest()).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return HttpResponse(200, "application/json", body, {"Cache-Control": "no-cache", "ETag": etag})
    path = bundle.resolve(rest)
    if path is None or not path.is_file():
        return None
    f = read_file(path)
    return HttpResponse(200, "text/x-python; charset=utf-8", f.body, {"Cache-Control": "no-cache", "ETag": f.etag})


def asset_index(client_web: Path, rest: str, query: str) -> StaticBody | None:
    """``/sdk/assets.json``: where the runtime's large files are (:mod:`coordinator.service.asset_bundle`)."""
    return None if rest else StaticBody(bundle(client_web).index_file)


def hashed_asset(client_web: Path, rest: str, query: str) -> StaticBody | None:
    """``/assets/<hash>/<group>/<file>``: immutable (a URL's bytes never change; gzip-encoded when the browser
    accepts it – the hashes in assets.json are of the decoded bytes); an old hash is 404."""
    asset = bundle(client_web).lookup(rest)
    return None if asset is None else StaticBody(asset.file, IMMUTABLE)


def service_worker(client_web: Path, rest: str, query: str) -> HttpResponse | None:
    """``/sw.js``: the service worker (``client_web/sdk/fl-sw.js``), at the root so that its scope is the whole
    origin; revalidated on every registration check (``no-cache``) so that a new version takes over."""
    return None if rest else StaticBody(read_file(client_web / "sdk" / "fl-sw.js"))


class ShardService:
    """``/demo/shard``: digits shards, computed off the event loop and cached – failures too.

    A request is validated up front (cheap: numbers, ranges, the partition's form); a valid one names a partition
    ``(n, partition, seed)``, whose computation (a Dirichlet draw redrawn up to ``MAX_TRIES`` times, 200–340 ms
    when it fails) runs in the routes' worker thread (:class:`~coordinator.service.http_routes.Deferred`) once:
    its outcome – every shard's indices, or the error – is kept in a bounded LRU, so repeating a failing request
    costs a dictionary lookup (issue 13, F2: an uncached failure blocked the event loop on every request).
    A worker thread still takes the GIL from the event loop (measured: a busy one left the loop ~1/3 of its
    throughput), so *new* partitions are rate-limited – ``new_per_s`` sustained, ``burst`` at once, beyond that 503
    with ``Retry-After`` – and a flood of distinct parameters keeps the worker busy a bounded fraction of the time;
    the pages' usual requests hit the cache. ``computed`` counts the partitions actually computed."""

    def __init__(self, max_partitions: int = 256, max_bodies: int = 64, new_per_s: float = 1.0,
                 burst: int = 4) -> None:
        self.max_partitions, self.max_bodies = max_partitions, max_bodies
        self.new_per_s, self.burst = new_per_s, burst
        self._tokens, self._refilled = float(burst), time.monotonic()
        self._partitions: OrderedDict[tuple[int, str, int], list[Any] | str] = OrderedDict()
        self._bodies: OrderedDict[tuple[int, int, str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()  # the worker thread fills the caches the event loop reads
        self.computed = 0

    @staticmethod
    def parse(query: str) -> tuple[int, int, str, int]:
        """``(i, n, partition, seed)`` with the partition in canonical form; ``ValueError`` if invalid."""
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        i, n, seed = int(q.get("i", "0")), int(q.get("n", "1")), int(q.get("seed", "0"))
        if not (0 <= i < n <= MAX_SHARDS and 0 <= seed < MAX_SEED):
            raise ValueError(f"need 0 <= i < n <= {MAX_SHARDS} and 0 <= seed < {MAX_SEED}")
        partition = q.get("partition", "dirichlet:0.5")
        kind, _, arg = partition.partition(":")
        if kind == "dirichlet":
            alpha = float(arg or 0.5)
            if not ALPHA_RANGE[0] <= alpha <= ALPHA_RANGE[1]:
                raise ValueError(f"dirichlet alpha must be in [{ALPHA_RANGE[0]}, {ALPHA_RANGE[1]}]")
            partition = f"dirichlet:{alpha:g}"
        elif partition != "iid":
            raise ValueError(f"partition {partition!r}: expected dirichlet:ALPHA or iid")
        return i, n, partition, seed

    def __call__(self, rest: str, query: str) -> HttpResponse | Deferred | None:
        """``/demo/shard?i=&n=[&partition=][&seed=]``: a cached answer at once, else a :class:`Deferred`."""
        if rest != "shard":
            return None
        try:
            key = self.parse(query)
        except ValueError as exc:  # bad numbers or an unknown partition
            return _bad_request(str(exc))
        cached = self._cached(key)
        if cached is not None:
            return cached
        with self._lock:
            known = key[1:] in self._partitions  # only its shard's JSON is missing: cheap
        if not known and not self._take_token():
            return unavailable("busy: too many new shard partitions requested, try again")
        return Deferred(lambda: self.compute(*key))

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.new_per_s)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _cached(self, key: tuple[int, int, str, int]) -> HttpResponse | None:
        _, n, partition, seed = key
        with self._lock:
            body = self._bodies.get(key)
            if body is not None:
                self._bodies.move_to_end(key)
                return _shard_response(body)
            parts = self._partitions.get((n, partition, seed))
        if isinstance(parts, str):  # a cached failure
            return _bad_request(parts)
        return None

    def compute(self, i: int, n: int, partition: str, seed: int) -> HttpResponse:
        """Shard ``i`` of ``n`` of the digits training split, exactly as ``client_native.cli.load_data`` makes it
        (slow the first time for each partition: call it off the event loop)."""
        key = (i, n, partition, seed)
        cached = self._cached(key)
        if cached is not None:
            return cached
        try:
            ds = _digits()
        except ImportError as exc:  # scikit-learn (the digits data) is not installed
            return json_response({"error": "unavailable", "message": str(exc)}, 503)
        pkey = (n, partition, seed)
        with self._lock:
            parts = self._partitions.get(pkey)
        if parts is None:
            parts = self._partition(ds.y_train, n, partition, seed)
            with self._lock:
                self.computed += 1
                self._partitions[pkey] = parts
                while len(self._partitions) > self.max_partitions:
                    self._partitions.popitem(last=False)
        if isinstance(parts, str):
            return _bad_request(parts)
        import numpy as np

        idx = parts[i]
        x = np.ascontiguousarray(ds.x_train[idx], dtype="<f4")
        body = json.dumps({"i": i, "n": n, "partition": partition, "seed": seed, "features": int(x.shape[1]),
                           "classes": int(ds.num_classes), "count": len(idx),
                           "x": base64.b64encode(x.tobytes()).decode(),
                           "y": [int(v) for v in ds.y_train[idx]]}).encode()
        with self._lock:
            self._bodies[key] = body
            while len(self._bodies) > self.max_bodies:
                self._bodies.popitem(last=False)
        return _shard_response(body)

    @staticmethod
    def _partition(labels: Any, n: int, partition: str, seed: int) -> list[Any] | str:
        """Every shard's indices, or why there are none (the error message)."""
        import numpy as np

        from federated_data import dirichlet, iid

        rng = np.random.default_rng(seed)
        try:
            if partition == "iid":
                return iid(labels, n, rng)
            # the same draws as fl-client's (which allows more tries before giving up)
            alpha = float(partition.partition(":")[2])
            return dirichlet(labels, n, alpha, rng, min_size=20, max_tries=MAX_TRIES)
        except ValueError as exc:  # e.g. too many shards for the data (a shard would be too small)
            return str(exc)


@functools.lru_cache(maxsize=1)
def _digits() -> Any:
    from federated_data import load_digits

    return load_digits()


def _bad_request(message: str) -> HttpResponse:
    return json_response({"error": "bad_request", "message": message}, 400)


def _shard_response(body: bytes) -> HttpResponse:
    return HttpResponse(200, "application/json", body, {"Cache-Control": "no-store"})


# what the browser client loads from client_web/ under /sdk/: the SDK and its worker, the runtime loader, the
# demo's script – never node_modules/ (Pyodide, libsodium and the kernel are served under /assets/<hash>/ from
# coordinator.service.asset_bundle), READMEs, package.json, source maps, the kernel's C sources or the test harness.
CLIENT_WEB_FILES = ("sdk/*.js", "sdk/*.d.ts", "js/*.js", "js/*.d.ts", "demo/*.js", "demo/*.html")


def served_files(client_web: Path = CLIENT_WEB) -> frozenset[str]:
    """The allow-list of ``/sdk/``: paths relative to ``client_web`` (:data:`CLIENT_WEB_FILES`). Pyodide, libsodium
    and the kernel are served under ``/assets/<hash>/`` (:mod:`coordinator.service.asset_bundle`) only."""
    return expand(client_web, CLIENT_WEB_FILES)


def mount(routes: HttpRoutes, client_web: Path = CLIENT_WEB) -> bool:
    """Add the browser client's routes (table above) to ``routes``; ``False`` (and a log line) when
    ``client_web`` lacks its npm packages or built files."""
    reason = missing(client_web)
    if reason is not None:
        log.warning("browser client not served (no demo page at /): %s", reason)
        return False
    routes.static[SDK_PREFIX] = client_web
    routes.allow[SDK_PREFIX] = served_files(client_web)
    routes.handlers[PY_PREFIX] = python_bundle
    routes.handlers[ASSETS_INDEX] = functools.partial(asset_index, client_web)
    routes.handlers[ASSETS_PREFIX] = functools.partial(hashed_asset, client_web)
    routes.handlers[SERVICE_WORKER] = functools.partial(service_worker, client_web)
    routes.handlers[DEMO_PREFIX] = ShardService()
    if routes.index is None:
        routes.index = client_web / "demo" / "index.html"
    log.info("serving the browser client: demo page at /, SDK at %ssdk/fl-client.js, Python bundle at %s",
             SDK_PREFIX, PY_PREFIX)
    return True
