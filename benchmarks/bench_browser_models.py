"""Benchmark: one federated round's local training per model, in the browser (headless Chromium, Pyodide, the WASM
kernel via ``client_pyodide.runtime.model``) and in native torch.

The work of a client in one round of ``fl-coordinator serve`` on digits: one shard of the digits training split
(iid shard 0 of 12: 113 examples, the 64 features flat as /demo/shard serves them), 3 local epochs, batch 64,
plain SGD (lr 0.1) – for

- ``mlp:64-32-10`` (the default model),
- ``cnn:digits`` (Conv2d(1,8,3,p1)-ReLU-MaxPool2d(2)-Conv2d(8,16,3,p1)-ReLU-MaxPool2d(2)-Flatten-Linear(64,10)),
- ``mlp:64-512-512-10`` (a wide MLP, ≈ 300k parameters).

Browser: ``KernelModel.train`` (what ``client_pyodide.client`` calls each round), timed inside Pyodide after a
warm-up. Torch: ``client_native.torch_model.train_local`` (what the native client calls) on the same examples as
the spec's input shape, one thread (the browser client is single-threaded too) and torch's default thread count.
Each sample is the mean round time over enough rounds back to back to last ≥ 0.1 s (the browser's clock has
0.1 ms resolution); figures are the best (and the median) of the samples, interleaved between browser and torch
so both see the same background load – the best is the stable figure on a shared machine, the median moves with
the load. The last column is best browser time ÷ best torch 1-thread time (< 1: the browser is faster – torch's
per-op overhead dominates on models this small).

Run: ``.venv/bin/python benchmarks/bench_browser_models.py`` (after ``make web-setup``).
"""

from __future__ import annotations

import base64
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_support import StaticServer, check_prerequisites, launch_browser, open_runtime_page  # noqa: E402

from coordinator.service.settings import parse_model  # noqa: E402
from flcore.modelspec import ModelSpec  # noqa: E402

MODELS = ("mlp:64-32-10", "cnn:digits", "mlp:64-512-512-10")
SHARD, SHARDS, PARTITION = 0, 12, "iid"
EPOCHS, BATCH, LR = 3, 64, 0.1
REPEATS = 9

SETUP = """
import array, base64, __main__
from client_pyodide import runtime
m = runtime.model(SPEC, max_batch=BATCH)
x = array.array("f", base64.b64decode(XB64))
y = array.array("i", base64.b64decode(YB64))
p0 = array.array("f", base64.b64decode(PB64))
m.set_flat_parameters(p0)
m.train(x, y, epochs=1, batch_size=BATCH, lr=LR)  # warm-up (tier-up of the wasm code)
__main__.BENCH = (m, x, y, p0)
"""

# K rounds back to back, the mean per round: the browser's clock is coarse (0.1 ms), a small model's round ≈ 1 ms
ROUNDS = """
import time, __main__
m, x, y, p0 = __main__.BENCH
total = 0.0
for _ in range(K):
    m.set_flat_parameters(p0)
    t = time.perf_counter()
    m.train(x, y, epochs=EPOCHS, batch_size=BATCH, lr=LR, seed=1)
    total += time.perf_counter() - t
result = total / K
"""
MIN_SAMPLE_S = 0.1  # each sample runs rounds for at least this long


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


class TorchRound:
    """``client_native.torch_model.train_local`` on the shard shaped as the spec's input, ``threads`` threads."""

    def __init__(self, spec: ModelSpec, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        from client_native.torch_model import build_module, set_parameters, train_local, unflatten

        self.module, self.params = build_module(spec), unflatten(params, spec)
        self.x, self.y = x.reshape(len(x), *spec.input_shape), y.astype(np.int64)
        self._set, self._train = set_parameters, train_local
        self._set(self.module, self.params)
        self._train(self.module, self.x, self.y, epochs=1, batch_size=BATCH, lr=LR)  # warm-up

    def seconds(self, threads: int, k: int) -> float:
        """Mean time of one round over ``k`` rounds back to back."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            total = 0.0
            for _ in range(k):
                self._set(self.module, self.params)
                t = time.perf_counter()
                self._train(self.module, self.x, self.y, epochs=EPOCHS, batch_size=BATCH, lr=LR, seed=1)
                total += time.perf_counter() - t
            return total / k
        finally:
            torch.set_num_threads(before)


def _rounds_per_sample(one_round_s: float) -> int:
    return max(1, math.ceil(MIN_SAMPLE_S / max(one_round_s, 1e-4)))


def _ms(ts: list[float]) -> str:
    return f"{min(ts) * 1e3:7.2f} ({statistics.median(ts) * 1e3:6.2f})"


def main() -> None:
    check_prerequisites()
    import torch
    from playwright.sync_api import sync_playwright

    from client_native.cli import load_data

    data = load_data(f"digits:{SHARD}/{SHARDS}", PARTITION, 0)
    x, y = np.asarray(data.x, np.float32), np.asarray(data.y, np.int32)
    default_threads = torch.get_num_threads()
    server = StaticServer()
    rows: list[tuple[str, int, list[float], list[float], list[float]]] = []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        page = open_runtime_page(browser, server)
        for name in MODELS:
            spec = parse_model(name)
            init = spec.init_parameters(seed=0)
            params = np.concatenate([np.asarray(init[k], np.float32) for k, _ in spec.parameter_shapes()])
            page.run(f"SPEC = {spec.to_json()!r}\nXB64 = {_b64(x)!r}\nYB64 = {_b64(y)!r}\nPB64 = {_b64(params)!r}\n"
                     f"BATCH = {BATCH}\nLR = {LR}\n" + SETUP)
            native = TorchRound(spec, params, x, y)
            consts = f"EPOCHS = {EPOCHS}\nBATCH = {BATCH}\nLR = {LR}\n"
            k_web = _rounds_per_sample(page.run(consts + "K = 3\n" + ROUNDS))
            k_torch = _rounds_per_sample(native.seconds(1, 3))
            web: list[float] = []
            one: list[float] = []
            many: list[float] = []
            for _ in range(REPEATS):  # interleaved: both sides see the same background load
                web.append(page.run(consts + f"K = {k_web}\n" + ROUNDS))
                one.append(native.seconds(1, k_torch))
                many.append(native.seconds(default_threads, k_torch))
            rows.append((name, spec.num_parameters(), web, one, many))
        ua = page.js("() => navigator.userAgent")
        browser.close()
    server.close()
    _report(rows, len(x), default_threads, ua)


def _report(rows: list[tuple[str, int, list[float], list[float], list[float]]], n: int, threads: int,
            ua: Any) -> None:
    print(f"Local training of one round: digits shard {SHARD}/{SHARDS} ({PARTITION}, {n} examples), "
          f"{EPOCHS} epochs, batch {BATCH}, SGD lr {LR}; best (median) of {REPEATS} samples, ms per round")
    print(f"browser: {ua}; torch {__import__('torch').__version__}")
    head = (f"{'model':<20}{'params':>9}{'browser (WASM)':>18}{'torch 1 thread':>18}"
            f"{f'torch {threads} threads':>18}{'browser/torch-1':>17}")
    print(head)
    print("-" * len(head))
    for name, nparams, web, one, many in rows:
        ratio = min(web) / min(one)
        print(f"{name:<20}{nparams:>9,}{_ms(web):>18}{_ms(one):>18}{_ms(many):>18}{ratio:>16.2f}×")


if __name__ == "__main__":
    main()
