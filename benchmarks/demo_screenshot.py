"""Screenshots of the demo page after a few rounds, with a digit drawn on its canvas: on a desktop
(docs/browser-demo.png, 1280 px wide) and on a phone (docs/browser-demo-phone.png, 390 × 844, touch).

    .venv/bin/python benchmarks/demo_screenshot.py [--out docs/browser-demo.png] [--rounds 15]

Starts `fl-coordinator serve` (temporary data dir, free ports) and three native clients (tests/e2e/client_worker.py),
opens the demo page in headless Chromium (Debian's /usr/bin/chromium; nothing leaves localhost) in a desktop tab
and a phone-sized tab as the fourth and fifth clients, waits for the federation to finish, draws a "7" on each
canvas and saves the screenshots.
One group of 5 (t = 4) with little noise (z = 0.05): every client – the page included, through its URL – relaxes
only the noise floor and its own ε budget, which the page shows as a relaxed policy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser_support import launch_browser  # noqa: E402
from e2e_support import UTILITY_POLICY, Coordinator, Workers  # noqa: E402

# a "7": top bar, then the diagonal down to the bottom left (fractions of the canvas)
SEVEN = [[(0.22, 0.2), (0.5, 0.19), (0.78, 0.2)], [(0.78, 0.2), (0.66, 0.45), (0.54, 0.68), (0.45, 0.86)]]


def draw(page: Any, strokes: list[list[tuple[float, float]]]) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        (x0, y0), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(REPO / "docs" / "browser-demo.png"))
    p.add_argument("--phone-out", default=str(REPO / "docs" / "browser-demo-phone.png"))
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        coord = Coordinator(tmp, ["--rounds", str(args.rounds), "--clients-per-round", "5", "--group-size", "5",
                                  "--aggregator", "mean", "--local-epochs", "3", "--lr", "0.2", "--l2-clip", "2.0",
                                  "--noise-multiplier", "0.05", "--epsilon", "1e6", "--delta", "1e-5",
                                  "--phase-timeout", "3", "--exit-when-finished"]).start()
        workers = Workers()
        try:
            workers.spawn(tmp, f"127.0.0.1:{coord.grpc_port}", [2, 3, 4], 5, "--partition", "iid",
                          "--policy", UTILITY_POLICY)
            base = f"http://127.0.0.1:{coord.ws_port}"
            with sync_playwright() as pw:
                browser = launch_browser(pw)
                desktop = browser.new_context(viewport={"width": 1280, "height": 800})
                phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                            is_mobile=True, has_touch=True)
                pages = []
                for shard, context in enumerate((desktop, phone)):
                    page = context.new_page()
                    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base + "/") else r.abort())
                    page.goto(f"{base}/?shard={shard}/5&partition=iid&identity=ephemeral&minNoise=0.05&epsilonBudget=inf")
                    pages.append(page)
                for page, out in zip(pages, (args.out, args.phone_out), strict=True):
                    page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=240_000)
                    if page.evaluate("() => window.flDemo.error"):
                        raise SystemExit(f"demo failed: {page.evaluate('() => window.flDemo.error')}")
                    time.sleep(2.0)  # the last /status polls
                    page.locator("#pad").scroll_into_view_if_needed()
                    draw(page, SEVEN)
                    page.wait_for_function("() => window.flDemo.prediction !== null", timeout=10_000)
                    page.evaluate("() => window.scrollTo(0, 0)")
                    page.screenshot(path=out, full_page=True)  # the privacy panel is below the fold
                    print(f"{out}: round {page.inner_text('#round')}, loss {page.inner_text('#loss')}, "
                          f"accuracy {page.inner_text('#accuracy')}, drawn 7 predicted as "
                          f"{page.evaluate('() => window.flDemo.prediction')}, local training "
                          f"{page.evaluate('() => window.flDemo.trainSeconds')}")
                browser.close()
            workers.wait(60)
        finally:
            workers.kill()
            coord.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
