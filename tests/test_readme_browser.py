"""The README's browser quick start runs as written (issue 14: its browser command used to be refused, and three
tabs waited forever without saying that six were needed): the commands between the ``browser-quickstart``
markers – the ``serve`` line and the ``fl-client`` loop – are taken from README.md and run (only the ports, the
data dir and the state dirs are replaced, by free ports and the test's temporary directory), then the URL it
names is opened in headless Chromium: the tab is the fifth client, and the rounds complete with it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from browser_support import check_prerequisites, launch_browser
from e2e_support import REPO, STARTED, Coordinator, _env

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def quickstart() -> tuple[list[str], str, str]:
    """The serve command, the fl-client loop and the URL of README.md's browser quick start."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- browser-quickstart.*?```sh\n(.*?)```.*?<!-- /browser-quickstart -->", text, re.S)
    assert block, "README.md has no browser-quickstart block"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    serve = next(ln for ln in lines if "fl-coordinator serve" in ln)
    loop = next(ln for ln in lines if "fl-client" in ln)
    url = re.search(r"open (http://\S+)", block.group(1))
    assert url, "the quick start names no URL to open"
    return shlex.split(serve), loop, url.group(1)


def test_readme_browser_quickstart(tmp_path: Path) -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    serve, loop, url = quickstart()
    assert serve[:2] == [".venv/bin/fl-coordinator", "serve"] and "--data-dir" in serve
    flags = list(serve[2:])
    i = flags.index("--data-dir")
    del flags[i:i + 2]  # Coordinator sets the data dir (and the ports) itself
    coord = Coordinator(tmp_path, flags).start()
    # the loop as written, with the test's ports and state dirs, run by bash
    script = (loop.replace("127.0.0.1:8766", f"127.0.0.1:{coord.grpc_port}")
              .replace("~/.fl-client-browser", str(tmp_path / "clients")).replace(".venv/bin/", f"{Path(sys.executable).parent}/"))
    assert script != loop and "8766" not in script
    with open(tmp_path / "clients.log", "wb") as out:  # (the child keeps its own copy of the descriptor)
        clients = subprocess.Popen(["bash", "-c", script + "\nwait"], cwd=REPO, env=_env(), stdout=out,
                                   stderr=subprocess.STDOUT)
    STARTED.append(clients)
    rounds = int(flags[flags.index("--rounds") + 1])
    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                page = browser.new_context().new_page()
                page.goto(url.replace("8765", str(coord.ws_port)))
                page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=400_000,
                                       polling=500)
                assert page.evaluate("() => window.flDemo.error") is None, coord.log_text()
                summary = page.evaluate("() => window.flDemo.summary")
                assert summary["stopReason"] == f"all {rounds} rounds done", summary
                assert len(summary["rounds"]) >= rounds - 1 and summary["declined"] == [], summary
                status = coord.status()
                assert status["round"] == rounds and status["finished"], status
            finally:
                browser.close()
    finally:
        subprocess.run(["pkill", "-f", str(tmp_path / "clients")], check=False)
        clients.kill()
        coord.kill()
