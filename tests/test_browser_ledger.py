"""The browser client's privacy policy and privacy ledger against a real `fl-coordinator serve` (headless
Chromium, the demo page, the SDK's IndexedDB):

- a tab with the DEFAULT policy facing a coordinator configured with groups of 3 declines every task it gets
  (a ``declined`` event, code ``policy_group_size``, shown on the page; a ``decline`` frame and no reveal or
  SecAgg+ frame sent); the coordinator logs each decline and never counts the tab as a participant, while
  native clients that accept groups of 3 carry on without it;
- with a coordinator that meets the default policy (groups of 5, two-thirds threshold, z = 2), the tab's ledger
  is stored in IndexedDB *before* each round's masked input leaves (observed from outside the SDK: every
  IndexedDB write that commits and every frame the WebSocket sends are logged in the page), it counts exactly
  the rounds the tab took part in (= the coordinator's count), it survives a page reload, and
  ``forgetIdentity`` deletes it with the identity;
- when the ledger cannot be stored (the IndexedDB transaction aborts), the masked input is never sent:
  ``participate()`` rejects with code ``ledger``, and the tab is a dropout of that round.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    READ_IDENTITY_RECORD,
    check_prerequisites,
    launch_browser,
    origin_guard,
    wait_in_page,
)
from e2e_support import Coordinator, Workers

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# installed before the page's scripts: every frame the page's WebSockets send (described by the Python side,
# unverified) and every IndexedDB write of an identity record with a ledger, when its transaction commits –
# independent of the SDK's own bookkeeping. Both go to window.__fl.log in the order they happen, and to the
# console (which survives reloads).
INIT = """
window.__fl = { log: [] };
const note = (entry) => { window.__fl.log.push(entry); console.log("fl-log " + JSON.stringify(entry)); };
const put = IDBObjectStore.prototype.put;
IDBObjectStore.prototype.put = function (value, key) {
  const req = put.call(this, value, key);
  if (value && value.ledger && window.__failLedgerWrites) {
    this.transaction.abort();  // as a quota error would
  } else if (value && value.ledger) {
    const rounds = value.ledger.entries.map((e) => e.round);
    this.transaction.addEventListener("complete", () => note({ kind: "stored", key, rounds }));
  }
  return req;
};
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  const client = window.flDemo && window.flDemo.client;
  if (client) {
    // the entry takes its place in the log now, as the frame leaves; the worker describes the frame a moment later
    const stored = window.__fl.log.filter((e) => e.kind === "stored");
    const entry = { kind: "sent", storedRounds: stored.length ? stored[stored.length - 1].rounds : [] };
    window.__fl.log.push(entry);
    client.debugDescribeFrame(data).then((d) => {
      Object.assign(entry, { type: d.type, round: d.round, phase: d.phase });
      console.log("fl-log " + JSON.stringify(entry));
    });
  }
  return send.call(this, data);
};
window.addEventListener("fl-demo-client", (e) => {
  e.detail.addEventListener("event", (ev) => note({ kind: "event", ...ev.detail }));
});
"""


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.kill()


def _open(browser: Any, base: str, external: list[str], console: list[dict], init: str = "") -> Any:
    context = browser.new_context()
    context.route("**/*", origin_guard(base + "/", external))
    context.add_init_script(INIT + init)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: console.append(json.loads(m.text[len("fl-log "):]))
            if m.text.startswith("fl-log ") else None)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def test_default_policy_tab_declines_groups_of_three(tmp_path: Path, workers: Workers) -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    # the coordinator's groups of 3 are below the tab's default minimum (5); its noise (0.5) meets the default
    # floor, so the group size is the only reason to decline. Rounds start with 4 ready clients (all of them are
    # then selected), or 3 when nobody else is waiting: the tab is selected in the first round after it joins.
    coord = Coordinator(tmp_path, ["--rounds", "500", "--clients-per-round", "4", "--min-clients-per-round", "3",
                                   "--group-size", "3", "--aggregator", "mean", "--local-epochs", "1",
                                   "--noise-multiplier", "0.5", "--epsilon", "1e6", "--train-timeout", "30",
                                   "--phase-timeout", "3"]).start()
    # RELAXED POLICY for the three native clients only: they accept groups of 3 (and have no ε budget, so the
    # federation does not stop on their account); the tab keeps the default policy
    workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", [1, 2, 3], 4, "--partition", "iid",
                  "--policy", json.dumps({"min_group_size": 3, "epsilon_budget": None}))
    base = f"http://127.0.0.1:{coord.ws_port}"
    external: list[str] = []
    console: list[dict] = []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            page = _open(browser, base, external, console)
            page.goto(f"{base}/?shard=0/4&partition=iid&identity=strict")

            def declines() -> list[dict]:
                return [e for e in console if e["kind"] == "event" and e["type"] == "declined"]

            wait_in_page(page, declines, 90, "the first decline", coord.log_text)
            tab = page.evaluate("() => window.flDemo.client.clientId")
            shown = page.locator("#declined").inner_text()
            assert "groups of 3 < your minimum 5" in shown and "policy_group_size" in shown, shown
            assert page.evaluate("() => window.flDemo.client.policy.minGroupSize") == 5
            assert page.evaluate("() => window.flDemo.relaxed") == []
            # a new connection (reload) is selected again, and declines again
            page.reload()
            wait_in_page(page, lambda: len(declines()) >= 2, 90, "the second decline", coord.log_text)
            summary = page.evaluate("() => window.flDemo.client.summary")
            assert [d["code"] for d in summary["declined"]] == ["policy_group_size"], summary
            assert summary["rounds"] == [] and summary["errors"] == [], summary
            # the native clients carry on without the tab; the tab is never counted
            status = wait_in_page(page, lambda: (s := coord.status())["round"] >= 2 and s, 60, "round 2", coord.log_text)
            rows = {c["id"]: c for c in status["clients"]}
            assert rows[tab]["participations"] == 0 and "policy_group_size" in rows[tab]["declined"], rows[tab]
            assert sorted(c["participations"] > 0 for i, c in rows.items() if i != tab) == [True] * 3, rows
            assert page.evaluate("() => window.flDemo.client.ledger.participations") == 0
            assert not page.errors  # type: ignore[attr-defined]
        finally:
            browser.close()
    assert not external, external
    assert [e["code"] for e in declines()] == ["policy_group_size"] * len(declines())
    assert all("groups of 3 < the client's minimum 5" in e["message"] for e in declines())
    # what the tab sent: the handshake, its commitments, its declines – never a reveal or a SecAgg+ message
    sent = [e["type"] for e in console if e["kind"] == "sent"]
    assert sent.count("decline") == len(declines()) >= 2, sent
    assert set(sent) <= {"hello", "auth", "ready", "decline", "bye"}, sent
    log_text = "".join(p.read_text() for p in coord.logs)
    logged = [line for line in log_text.splitlines() if f"client {tab[:8]} declined round" in line]
    assert len(logged) == len(declines()) and all("policy_group_size" in line for line in logged), logged


def test_ledger_stored_before_masked_input_and_survives_reload(tmp_path: Path, workers: Workers) -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    # a coordinator that meets the default policy: groups of 5 (two-thirds threshold: t = 4), z = 2; three
    # rounds cost each client ε ≈ 5.2 on its own ledger, within the default budget of 10. Default policy everywhere.
    rounds = 3
    coord = Coordinator(tmp_path, ["--rounds", str(rounds), "--clients-per-round", "5", "--group-size", "5",
                                   "--aggregator", "mean", "--local-epochs", "1", "--noise-multiplier", "2.0",
                                   "--epsilon", "10", "--train-timeout", "30", "--phase-timeout", "3"]).start()
    workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", [1, 2, 3, 4], 5, "--partition", "iid")
    base = f"http://127.0.0.1:{coord.ws_port}"
    key = f"{base}#ledger-test"
    external: list[str] = []
    console: list[dict] = []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            page = _open(browser, base, external, console)
            page.goto(f"{base}/?shard=0/5&partition=iid&identity=ledger-test")
            page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=120_000)
            assert page.evaluate("() => window.flDemo.error") is None
            summary = page.evaluate("() => window.flDemo.summary")
            assert summary["stopReason"] == f"all {rounds} rounds done" and summary["errors"] == [], summary
            assert summary["rounds"] == list(range(1, rounds + 1)) and summary["declined"] == [], summary
            log = page.evaluate("() => window.__fl.log")

            # (c) every masked input left after an IndexedDB write holding its round had committed
            masked = [(i, e) for i, e in enumerate(log) if e["kind"] == "sent" and e["phase"] == "masked"]
            assert [e["round"] for _, e in masked] == list(range(1, rounds + 1)), log
            for i, e in masked:
                assert e["round"] in e["storedRounds"], (e, log)
                stored_at = min(j for j, s in enumerate(log) if s["kind"] == "stored" and e["round"] in s["rounds"])
                ledger_event = min(j for j, s in enumerate(log) if s["kind"] == "event" and s["type"] == "ledger"
                                   and s["round"] == e["round"])
                assert stored_at < ledger_event < i, (stored_at, ledger_event, i)
            assert all(s["key"] == key for s in log if s["kind"] == "stored")
            events = [e for e in log if e["kind"] == "event" and e["type"] == "ledger"]
            assert [e["participations"] for e in events] == list(range(1, rounds + 1))
            assert all(e["persisted"] and e["budget"] == 10 and e["delta"] == 1e-6 for e in events), events

            # (b) the ledger counts exactly the rounds the tab took part in, as the coordinator does
            tab = page.evaluate("() => window.flDemo.client.clientId")
            ledger = page.evaluate("() => window.flDemo.client.ledger")
            status = coord.status()
            row = next(c for c in status["clients"] if c["id"] == tab)
            assert ledger["participations"] == row["participations"] == rounds, (ledger, row)
            assert ledger["lastRound"] == rounds and ledger["private"] and ledger["budget"] == 10
            # its own figure is the conservative one: t − colluders honest noise shares, not the coordinator's t
            assert status["privacy"]["epsilon"] <= ledger["epsilon"] < ledger["epsilonWorstCase"] and \
                ledger["epsilon"] <= 10, (status["privacy"], ledger)
            assert page.locator("#led-rounds").inner_text() == str(rounds)
            assert page.locator("#led-eps").inner_text() == f"{ledger['epsilon']:.2f}"
            # the default policy is on the page, and the coordinator's figures next to it
            assert page.locator("#policy-banner").inner_text().startswith("Default policy")
            assert page.locator("#pol-group-v").inner_text() == "5"
            assert page.locator("#pol-noise-v").inner_text() == "0.5"
            assert page.locator("#pol-budget-v").inner_text() == "10"
            assert page.locator("#co-group").inner_text() == "5" and page.locator("#co-noise").inner_text() == "2"
            record = page.evaluate(READ_IDENTITY_RECORD, key)
            assert [e["round"] for e in record["ledger"]["entries"]] == list(range(1, rounds + 1)), record
            assert record["ledger"]["epsilon_budget"] == 10 and record["clientId"] == tab

            # a reload restores the ledger with the identity; the finished federation adds nothing
            page.reload()
            page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=60_000)
            assert page.evaluate("() => window.flDemo.client.clientId") == tab
            assert page.evaluate("() => window.flDemo.ledger") == ledger  # shown at connect, before participating
            assert page.locator("#led-rounds").inner_text() == str(rounds)
            assert page.evaluate("() => window.flDemo.client.ledgerState.entries.length") == rounds

            # forgetIdentity: the ledger belongs to the identity and goes with it
            page.evaluate("""async () => {
                const sdk = await import("/sdk/sdk/fl-client.js");
                await sdk.forgetIdentity(location.origin, "ledger-test");
            }""")
            assert page.evaluate(READ_IDENTITY_RECORD, key) is None
            page.reload()
            page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=60_000)
            assert page.evaluate("() => window.flDemo.client.clientId") != tab
            assert page.evaluate("() => window.flDemo.ledger.participations") == 0
            assert not page.errors  # type: ignore[attr-defined]
        finally:
            browser.close()
    assert not external, external


def test_ledger_write_failure_withholds_the_masked_input(tmp_path: Path, workers: Workers) -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    coord = Coordinator(tmp_path, ["--rounds", "2", "--clients-per-round", "5", "--group-size", "5",
                                   "--aggregator", "mean", "--local-epochs", "1", "--noise-multiplier", "2.0",
                                   "--epsilon", "10", "--train-timeout", "30", "--phase-timeout", "3"]).start()
    workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", [1, 2, 3, 4], 5, "--partition", "iid")
    base = f"http://127.0.0.1:{coord.ws_port}"
    external: list[str] = []
    console: list[dict] = []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            # every IndexedDB write of a record holding a ledger aborts
            page = _open(browser, base, external, console, "window.__failLedgerWrites = true;")
            page.goto(f"{base}/?shard=0/5&partition=iid&identity=failing")
            page.wait_for_function("() => window.flDemo.error", timeout=120_000)
            assert "ledger" in page.evaluate("() => window.flDemo.error")
            tab = page.evaluate("() => window.flDemo.client.clientId")
            errors = [e for e in console if e["kind"] == "event" and e["type"] == "error"]
            assert [(e["code"], e["fatal"]) for e in errors] == [("ledger", True)], errors
            assert "the masked update was not sent" in errors[0]["message"]
            assert not [e for e in console if e["kind"] == "event" and e["type"] == "ledger"]
            # the round went on without the tab: its group of 5 released a sum of the other four (t = 4)
            status = wait_in_page(page, lambda: (s := coord.status())["round"] >= 1 and s, 60, "round 1", coord.log_text)
            assert status["metrics"]["survivors"] == 4, status["metrics"]
            assert next(c for c in status["clients"] if c["id"] == tab)["participations"] == 0
            # in memory the participation is counted (conservative); nothing about it was stored
            assert page.evaluate("() => window.flDemo.client.ledger.participations") == 1
            record = page.evaluate(READ_IDENTITY_RECORD, f"{base}#failing")
            assert record["seedLength"] == 32 and record["ledger"] is None, record
            assert not page.errors  # type: ignore[attr-defined]
        finally:
            browser.close()
    assert not external, external
    sent = [e for e in console if e["kind"] == "sent"]
    assert [e["phase"] for e in sent if e["type"] == "secagg"] == ["advertise", "shares"], sent
    assert not [e for e in console if e["kind"] == "stored"]
