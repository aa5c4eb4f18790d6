"""coordinator.service.web_assets: what the coordinator serves to browsers (the demo page, the SDK and client_web/, the
Python bundle – listed files only –, digits shards), and that `fl-coordinator serve` mounts it."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from client_native.cli import load_data
from client_pyodide import bundle
from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.service import asset_bundle, web_assets
from coordinator.service.http_routes import HttpRoutes
from flcore.modelspec import mlp


def _routes() -> HttpRoutes:
    engine = Engine(FederationConfig(model=mlp([4, 3]), rounds=1, clients_per_round=1, group_size=1,
                                     aggregator="mean"), b"\x07" * 32, seed=0)
    routes = HttpRoutes(engine.status)
    if web_assets.missing() is not None:
        pytest.skip(f"client_web not set up: {web_assets.missing()}")
    assert web_assets.mount(routes)
    return routes


def test_demo_page_sdk_and_runtime_files() -> None:
    routes = _routes()
    r = routes.handle("GET", "/")
    assert r.status == 200 and r.content_type == "text/html" and b'src="/sdk/demo/demo.js"' in r.body
    assert b"importmap" not in r.body  # the SDK's worker loads the runtime from /sdk/assets.json
    for path, ctype in [("/sdk/sdk/fl-client.js", "text/javascript"), ("/sdk/sdk/fl-worker.js", "text/javascript"),
                        ("/sdk/js/runtime.js", "text/javascript"), ("/sdk/js/loader.js", "text/javascript"),
                        ("/sw.js", "text/javascript"), ("/sdk/assets.json", "application/json")]:
        r = routes.handle("GET", path)
        assert r.status == 200 and r.content_type == ctype, path
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["ETag"], path  # revalidated: a new version shows
    for path in ["/sdk/../pyproject.toml", "/sdk/%2e%2e/pyproject.toml", "/sdk/nope.js", "/sdk/js",
                 "/sdk/node_modules/pyodide/pyodide.asm.wasm", "/sdk/kernel/flkernel.wasm", "/sw.js/x"]:
        assert routes.handle("GET", path).status == 404, path


def test_assets_are_content_addressed_immutable_and_listed_with_their_hashes() -> None:
    routes = _routes()
    index = json.loads(routes.handle("GET", "/sdk/assets.json").body)
    assert set(index["entry"]) == {"pyodide", "sodium", "kernel"} and index["preload"]
    for rel, expect in index["files"].items():
        path = rel.removeprefix("..")
        r = routes.handle("GET", path)
        assert r.status == 200 and r.headers["Cache-Control"] == "public, max-age=31536000, immutable", path
        assert hashlib.sha256(r.body).hexdigest() == expect["sha256"] and len(r.body) == expect["size"], path
        # another hash in the same place is not this file (an old version's URL, or a guess)
        digest = path.split("/")[2]
        assert routes.handle("GET", path.replace(digest, "0" * 16)).status == 404
    # Pyodide's files share one directory (it fetches its siblings from indexURL); each group has its own hash
    entries = {k: v.removeprefix("..") for k, v in index["entry"].items()}
    assert entries["pyodide"].endswith("/pyodide/pyodide.mjs") and entries["kernel"].endswith("/kernel/flkernel.wasm")
    pyodide_dir = entries["pyodide"].rsplit("/", 1)[0]
    assert {f"{pyodide_dir}/{n}" for n in ("pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json")} <= \
        {r.removeprefix("..") for r in index["files"]}
    assert len({e.split("/")[2] for e in entries.values()}) == 3
    for path in ["/assets/", "/assets/x", f"{pyodide_dir}/../kernel/flkernel.wasm", f"{pyodide_dir}/console.html"]:
        assert routes.handle("GET", path).status == 404, path


def test_the_one_rewrite_of_a_third_party_file() -> None:
    """libsodium-wrappers.mjs imports the bare "libsodium" (an import map would be needed, and a worker has none);
    the served copy imports its sibling – and differs in nothing else."""
    original = (web_assets.CLIENT_WEB / asset_bundle.ASSET_FILES["sodium/libsodium-wrappers.mjs"]).read_bytes()
    served = asset_bundle.rewritten("sodium/libsodium-wrappers.mjs", original)
    assert b'from"libsodium"' in original and b'from"libsodium"' not in served
    assert served.replace(b'from"./libsodium.mjs"', b'from"libsodium"') == original
    with pytest.raises(ValueError, match="exactly one"):
        asset_bundle.rewritten("sodium/libsodium-wrappers.mjs", original + b';import x from"libsodium"')
    other = (web_assets.CLIENT_WEB / asset_bundle.ASSET_FILES["pyodide/pyodide.mjs"]).read_bytes()
    assert asset_bundle.rewritten("pyodide/pyodide.mjs", other) is other


def test_python_bundle_serves_listed_files_only() -> None:
    routes = _routes()
    r = routes.handle("GET", "/py/manifest.json")
    manifest = json.loads(r.body)
    assert r.status == 200 and manifest == bundle.manifest()
    for f in ("flcore/session.py", "client_pyodide/client.py"):
        r = routes.handle("GET", "/py/" + f)
        assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == manifest["sha256"][f]
    for path in ["/py/flcrypto/pynacl_impl.py", "/py/coordinator/service/server.py", "/py/../pyproject.toml",
                 "/py/flcore/../coordinator/federation/engine.py", "/py/", "/py/flcore"]:
        assert routes.handle("GET", path).status == 404, path


@pytest.mark.parametrize("partition", ["iid", "dirichlet:0.5"])
def test_demo_shard_is_the_native_clients_shard(partition: str) -> None:
    routes = _routes()
    r = routes.handle("GET", f"/demo/shard?i=2&n=6&partition={partition}")
    assert r.status == 200
    shard = json.loads(r.body)
    x = np.frombuffer(base64.b64decode(shard["x"]), "<f4").reshape(-1, shard["features"])
    ref = load_data("digits:2/6", partition, 0)  # what `fl-client --data digits:2/6` trains on
    assert np.array_equal(x, ref.x) and shard["y"] == ref.y.tolist() and shard["count"] == len(ref.y)
    assert x.min() >= 0 and x.max() <= 1 and shard["classes"] == 10


@pytest.mark.parametrize("query", ["i=6&n=6", "i=-1&n=3", "i=a&n=3", "i=0&n=3&partition=zipf", "i=0&n=5000",
                                   "i=0&n=3&seed=-1", "i=0&n=3&seed=99999999", "i=0&n=3&partition=dirichlet:1e-9",
                                   "i=0&n=64"])
def test_demo_shard_bad_requests(query: str) -> None:
    r = _routes().handle("GET", "/demo/shard?" + query)
    assert r.status == 400 and json.loads(r.body)["error"] == "bad_request"
    assert _routes().handle("GET", "/demo/other").status == 404


def test_mount_refuses_an_incomplete_client_web(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    routes = HttpRoutes(lambda: {"round": 0, "finished": False})
    with caplog.at_level("WARNING", logger="fl-coordinator"):
        assert not web_assets.mount(routes, tmp_path)
    assert "browser client not served" in caplog.text and "make web-setup" in caplog.text
    assert routes.static == {} and routes.handlers == {} and routes.index is None
