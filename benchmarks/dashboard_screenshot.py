"""Screenshot of the operator dashboard (docs/images/dashboard.png) after a federation with an attacker.

    .venv/bin/python benchmarks/dashboard_screenshot.py [--out docs/images/dashboard.png] [--rounds 40]

Starts `fl-coordinator serve` (temporary data dir, free ports, the operator token of tests/e2e_support.py) and
nine native clients (tests/e2e/client_worker.py) in groups of 3 – six over gRPC, two over WebSocket and one
sign-flipping attacker (``signflip10``) – sends one frame that is not an .mle file to ``/ws`` (a warning in the
recent events), opens ``/dashboard`` in headless Chromium (Debian's /usr/bin/chromium; nothing leaves localhost),
enters the token and saves the screenshot once every round is done. Prints the /metrics page's main figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser_support import launch_browser  # noqa: E402
from e2e_support import GROUPS_OF_3_POLICY, OPERATOR_TOKEN, Coordinator, Workers  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(REPO / "docs" / "images" / "dashboard.png"))
    p.add_argument("--rounds", type=int, default=40)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright
    from websockets.sync.client import connect

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        coord = Coordinator(tmp, ["--rounds", str(args.rounds), "--clients-per-round", "9", "--group-size", "3",
                                  "--aggregator", "median", "--local-epochs", "3", "--lr", "0.2",
                                  "--noise-multiplier", "0.2", "--epsilon", "1e6", "--delta", "1e-5",
                                  "--phase-timeout", "5"]).start()
        workers = Workers()
        try:
            grpc, ws = f"127.0.0.1:{coord.grpc_port}", f"127.0.0.1:{coord.ws_port}"
            workers.spawn(tmp, grpc, [0, 1, 2], 9, "--partition", "iid", "--policy", GROUPS_OF_3_POLICY)
            workers.spawn(tmp, grpc, [3, 4, 5], 9, "--partition", "iid", "--policy", GROUPS_OF_3_POLICY)
            workers.spawn(tmp, ws, [6, 7], 9, "--partition", "iid", "--transport", "websocket",
                          "--policy", GROUPS_OF_3_POLICY)
            workers.spawn(tmp, grpc, [8], 9, "--partition", "iid", "--attack", "signflip10",
                          "--policy", GROUPS_OF_3_POLICY)
            coord.wait_round(max(1, args.rounds // 2), timeout=300)
            with connect(f"ws://{ws}/ws") as conn:  # a warning for the recent-events list
                conn.send(b"\x00not an mle file")
                conn.recv(timeout=10)
            base = f"http://127.0.0.1:{coord.ws_port}"
            deadline = time.time() + 300
            while not coord.status()["finished"] and time.time() < deadline:
                time.sleep(0.5)
            with sync_playwright() as pw:
                browser = launch_browser(pw)
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base + "/") else r.abort())
                page.goto(f"{base}/dashboard")
                page.fill("#token", OPERATOR_TOKEN)
                page.click("#token-form button[type=submit]")
                page.wait_for_function("() => window.flDashboard.polls >= 1", timeout=30_000)
                page.screenshot(path=args.out, full_page=True)
                state = page.evaluate("() => window.flDashboard")
                browser.close()
            req = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                metrics = r.read().decode()
            print(f"{args.out}: {state['points']} chart points, {state['clients']} clients, {state['events']} events")
            for line in metrics.splitlines():
                if line.startswith(("flcoord_rounds_completed_total", "flcoord_last_round_accuracy_ratio",
                                    "flcoord_epsilon_spent", "flcoord_clients_banned", "flcoord_frames_rejected")):
                    print(" ", line)
        finally:
            workers.kill()
            coord.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
