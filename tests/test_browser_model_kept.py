"""Inference after the federation ended and after a reload (issue 14: a reloaded tab said "waiting for the first
global model" although the federation had finished): the SDK keeps the last global model the tab received –
signed by the coordinator – with its identity in IndexedDB and restores it (signature verified again) when the
page loads. Real `fl-coordinator serve`, four native clients, the demo page in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import check_prerequisites, launch_browser, origin_guard, wait_in_page
from e2e_support import Coordinator, Workers

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLAGS = ["--rounds", "2", "--clients-per-round", "5", "--group-size", "5", "--aggregator", "mean",
         "--local-epochs", "1", "--noise-multiplier", "2.5", "--epsilon", "10", "--train-timeout", "60",
         "--phase-timeout", "30", "--population", "5"]
PREDICT = "async () => Array.from(await window.flDemo.client.predict(new Float32Array(64).fill(0.5)))"


def test_the_last_global_model_survives_the_end_and_a_reload(tmp_path: Path, workers: Workers) -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    (tmp_path / "c").mkdir()
    coord = Coordinator(tmp_path / "c", FLAGS).start()
    workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", [1, 2, 3, 4], 5, "--partition", "iid")
    base = f"http://127.0.0.1:{coord.ws_port}"
    external: list[str] = []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            context = browser.new_context()
            context.route("**/*", origin_guard(base + "/", external))
            page = context.new_page()
            page.goto(f"{base}/?shard=0/5&partition=iid&identity=kept")
            page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=180_000)
            assert page.evaluate("() => window.flDemo.error") is None
            assert page.evaluate("() => window.flDemo.summary.stopReason") == "all 2 rounds done"
            # the model round 2's task carried (after round 1): the federation's end sends no model
            assert page.evaluate("() => window.flDemo.client.modelRound") == 1
            before = page.evaluate(PREDICT)
            assert len(before) == 1 and 0 <= before[0] <= 9

            page.reload()  # the federation is over: no task will bring a model any more
            wait_in_page(page, lambda: page.evaluate("() => Boolean(window.flDemo && window.flDemo.client)"), 120,
                         "the client after the reload")
            assert page.evaluate("() => window.flDemo.client.modelRound") == 1
            assert page.evaluate(PREDICT) == before  # the same model, restored
            assert "kept from your last visit" in page.text_content("#prediction-sub")
        finally:
            browser.close()
    assert not external, external
