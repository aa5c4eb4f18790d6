"""Benchmark: how fast a browser tab becomes a client, what it downloads, what it costs – against the previous
design (Pyodide on the page's main thread) in the same run. Headless Debian Chromium (Playwright), a real
`fl-coordinator serve` on loopback; every byte the browser receives goes through a counting proxy
(tests/throttled_link.py, unthrottled here) so that the figures include the service worker's and the worker's
requests.

- cold ready: a fresh browser profile (no HTTP cache, no Cache Storage, no service worker) → the demo page's
  "ready" (Pyodide, libsodium, the kernel and the Python client core loaded in the SDK's worker), from navigation
  start; bytes received;
- warm ready: the same profile, a new tab (service worker, Cache Storage with the verified files and the
  interpreter's memory snapshot); bytes received;
- longest main-thread task (``longtask`` entries, > 50 ms) during both loads;
- memory per tab: the proportional set size (PSS) of all Chromium processes with 1…TABS ready demo tabs, the slope;
- the peer: the runtime loaded on the main thread (client_web/harness.html, ``loadRuntime`` without the worker:
  what the SDK did before issue 14) – its ready time and longest main-thread task.

Goals (issue 14): warm ready ≤ 2 s, cold ≤ 5 s on a quiet machine; no main-thread task over 50 ms.
Run: `.venv/bin/python benchmarks/bench_browser_loading.py` (after `make web-setup`); REPEATS runs, medians.
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_support import StaticServer, check_prerequisites, launch_browser  # noqa: E402
from e2e_support import Coordinator  # noqa: E402
from throttled_link import ThrottledLink  # noqa: E402

REPEATS = 3
TABS = 4
FLAGS = ["--rounds", "1", "--clients-per-round", "50", "--group-size", "5", "--aggregator", "mean"]
OBSERVER = """
window.__lt = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__lt.push(e.duration); })
  .observe({ type: "longtask", buffered: true });
"""
READY = "() => window.flDemo && (window.flDemo.readyAt || window.flDemo.error)"


def _chromium_pss_mb() -> float:
    """PSS of every Chromium process of this user (MB)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"chromium" not in cmd.split(b"\0", 1)[0]:
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _load(context: Any, url: str) -> dict[str, Any]:
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(READY, timeout=300_000, polling=100)
    if page.evaluate("() => window.flDemo.error"):
        raise RuntimeError(page.evaluate("() => window.flDemo.error"))
    out = {"ready_s": page.evaluate("() => window.flDemo.readyAt") / 1000,
           "longest_ms": max(page.evaluate("() => window.__lt") or [0]),
           "snapshot": page.evaluate("() => window.flDemo.events.some((e) => e.stage === 'ready' && e.snapshot)")}
    return {**out, "page": page}


def measure_sdk(pw: Any, base: str, link: ThrottledLink) -> dict[str, Any]:
    browser = launch_browser(pw)
    try:
        with tempfile.TemporaryDirectory():
            context = browser.new_context()
            context.add_init_script(OBSERVER)
            url = f"http://127.0.0.1:{link.port}/?shard=0/10&identity=ephemeral"
            before = link.bytes_down
            cold = _load(context, url)
            cold["bytes"] = link.bytes_down - before
            cold["page"].wait_for_timeout(3000)  # the service worker's precache and the snapshot's write finish
            cold["page"].close()
            before = link.bytes_down
            warm = _load(context, url)
            warm["bytes"] = link.bytes_down - before
            warm["page"].close()
            return {"cold": cold, "warm": warm}
    finally:
        browser.close()


def measure_memory(pw: Any, link: ThrottledLink) -> list[float]:
    browser = launch_browser(pw)
    try:
        context = browser.new_context()
        pss = [_chromium_pss_mb()]
        pages = []
        for k in range(TABS):
            pages.append(_load(context, f"http://127.0.0.1:{link.port}/?shard={k}/10&identity=mem{k}")["page"])
            time.sleep(1.0)
            pss.append(_chromium_pss_mb())
        return pss
    finally:
        browser.close()


def measure_main_thread_peer(pw: Any) -> dict[str, float]:
    """The runtime on the page's main thread (the harness page: import map + loadRuntime)."""
    server = StaticServer()
    browser = launch_browser(pw)
    try:
        context = browser.new_context()
        context.add_init_script(OBSERVER)
        page = context.new_page()
        page.goto(server.url + "harness.html")
        page.wait_for_function("() => window.fl", timeout=300_000, polling=100)
        return {"ready_s": page.evaluate("() => window.flReadyAt") / 1000,
                "longest_ms": max(page.evaluate("() => window.__lt") or [0])}
    finally:
        browser.close()
        server.close()


def main() -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-browser-loading-"))
    coord = Coordinator(tmp, FLAGS).start()
    link = ThrottledLink(coord.ws_port, rate=1e12).start()  # counts bytes, limits nothing
    runs: list[dict[str, Any]] = []
    peers: list[dict[str, float]] = []
    try:
        with sync_playwright() as pw:
            measure_sdk(pw, "", link)  # warm-up: the coordinator's file cache and gzip copies, the OS page cache
            for r in range(REPEATS):
                runs.append(measure_sdk(pw, "", link))
                peers.append(measure_main_thread_peer(pw))
                c, w = runs[-1]["cold"], runs[-1]["warm"]
                print(f"run {r + 1}: cold {c['ready_s']:.2f} s ({c['bytes'] / 1e6:.2f} MB, longest task "
                      f"{c['longest_ms']:.0f} ms) · warm {w['ready_s']:.2f} s ({w['bytes'] / 1e6:.3f} MB, longest "
                      f"{w['longest_ms']:.0f} ms, snapshot {w['snapshot']}) · main-thread peer {peers[-1]['ready_s']:.2f} s, "
                      f"longest task {peers[-1]['longest_ms']:.0f} ms", flush=True)
            pss = measure_memory(pw, link)
    finally:
        link.close()
        coord.kill()

    def med(part: str, key: str) -> float:
        return statistics.median(r[part][key] for r in runs)

    per_tab = [b - a for a, b in itertools.pairwise(pss)]
    print("\nbrowser client loading (median of", REPEATS, "runs)")
    print(f"  cold ready      {med('cold', 'ready_s'):6.2f} s   goal ≤ 5 s   bytes {med('cold', 'bytes') / 1e6:7.2f} MB")
    print(f"  warm ready      {med('warm', 'ready_s'):6.2f} s   goal ≤ 2 s   bytes {med('warm', 'bytes') / 1e6:7.3f} MB"
          f"   (service worker + Cache Storage + memory snapshot)")
    longest = max(max(r["cold"]["longest_ms"], r["warm"]["longest_ms"]) for r in runs)
    peer_longest = statistics.median(p["longest_ms"] for p in peers)
    print(f"  longest main-thread task   {longest:.0f} ms (0 = none over 50 ms)   "
          f"peer (Pyodide on the main thread): {peer_longest:.0f} ms, ready {statistics.median(p['ready_s'] for p in peers):.2f} s")
    print(f"  memory: Chromium PSS {pss[0]:.0f} MB with no tab, then {' / '.join(f'{p:.0f}' for p in pss[1:])} MB with "
          f"1…{TABS} ready tabs: {statistics.median(per_tab):.0f} MB per tab (median step)")


if __name__ == "__main__":
    main()
