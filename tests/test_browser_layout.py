"""The demo page on a phone (issue 14: at 390 px it was 648–736 px wide with the drawing panel off-screen): one
column, no horizontal overflow, the drawing pad reachable and drawable by touch. Headless Chromium with a phone
viewport against a real `fl-coordinator serve` (the page is served by it; no other clients needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import check_prerequisites, launch_browser, origin_guard
from e2e_support import Coordinator

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 800)])
def test_demo_fits_the_viewport(tmp_path: Path, width: int, height: int) -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    (tmp_path / "c").mkdir()
    coord = Coordinator(tmp_path / "c", ["--rounds", "1"]).start()
    base = f"http://127.0.0.1:{coord.ws_port}"
    external: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                context = browser.new_context(viewport={"width": width, "height": height}, has_touch=width < 800,
                                              is_mobile=width < 800)
                context.route("**/*", origin_guard(base + "/", external))
                page = context.new_page()
                page.goto(f"{base}/?shard=0/10&identity=layout")
                page.wait_for_selector("#pad")
                layout = page.evaluate("""() => {
                    const pad = document.getElementById("pad").getBoundingClientRect();
                    const sections = [...document.querySelectorAll("main > section")].map((s) => s.getBoundingClientRect());
                    return { scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                             pad: { left: pad.left, right: pad.right, width: pad.width },
                             lefts: sections.map((r) => Math.round(r.left)) };
                }""")
                assert layout["scroll"] <= layout["inner"], layout  # no horizontal overflow
                assert layout["pad"]["left"] >= 0 and layout["pad"]["right"] <= width, layout
                if width < 800:
                    assert len(set(layout["lefts"])) == 1, layout  # one column: every section starts at one x
                    page.locator("#pad").scroll_into_view_if_needed()
                    box = page.locator("#pad").bounding_box()
                    assert box is not None and box["width"] >= 200
                    # a touch stroke across the pad draws (pixels turn dark on the canvas): real touch events
                    cdp = context.new_cdp_session(page)
                    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
                    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
                    for k in range(1, 9):
                        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [
                            {"x": x0 + k * box["width"] * 0.05, "y": y0 + k * box["height"] * 0.05}]})
                    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
                    inked = page.evaluate("""() => {
                        const c = document.getElementById("pad");
                        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                        let n = 0;
                        for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++;
                        return n;
                    }""")
                    assert inked > 0
                else:
                    assert len(set(layout["lefts"])) == 2, layout  # desktop: two columns
            finally:
                browser.close()
    finally:
        coord.kill()
    assert not external, external
