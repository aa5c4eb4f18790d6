"""End to end over real sockets: dropouts at every secure-aggregation phase (sums checked bit-exactly against
the plaintext), SIGKILL of the coordinator mid-round and restart, and bad input of every kind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from e2e_support import UTILITY_POLICY, Coordinator, Workers

import mle
from client_native.channels import ChannelError, open_channel
from coordinator.service.store import Store
from flcore.protocol import COORDINATOR_ID, Envelope
from flcore.session import ClientSession, SendFrame
from flcore.wire import client_id_for, decode, encode
from flcrypto import default_crypto

pytestmark = pytest.mark.slow
FAST = ["--train-timeout", "15", "--phase-timeout", "2", "--exit-when-finished", "--aggregator", "mean",
        "--local-epochs", "1", "--noise-multiplier", "0.05", "--epsilon", "1e6", "--l2-clip", "1.0"]


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.kill()


def test_dropout_at_each_secure_aggregation_phase(tmp_path: Path, workers: Workers) -> None:
    """Client 0 drops its connection in round r after r − 1 SecAgg+ messages (before advertising keys, before
    sharing, before its masked input, before the consistency signature, before unmasking), then reconnects.
    Every round completes and each group's unmasked sum equals the plaintext sum of its survivors' inputs."""
    audit, dumps = tmp_path / "audit", tmp_path / "dumps"
    coord = Coordinator(tmp_path, ["--rounds", "5", "--clients-per-round", "10", "--group-size", "5",
                                   "--audit-dir", str(audit), *FAST]).start()
    drops = [f"--drop={r}:{r - 1}:0" for r in range(1, 6)]
    for chunk in ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9]):
        workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", chunk, 10, "--dump-dir", str(dumps), *drops,
                      "--policy", UTILITY_POLICY)
    summaries = workers.wait(240)
    assert coord.wait(30) == 0, coord.log_text()
    dropper = next(s for s in summaries if s["index"] == 0)
    assert dropper["reconnects"] >= 5
    store = Store.open(coord.data_dir)
    assert [r for r, _ in store.metrics()] == [1, 2, 3, 4, 5]
    store.close()
    for r in range(1, 6):
        groups = sorted(audit.glob(f"round-{r:06d}-group-*.mle"))
        assert len(groups) == 2, r  # every group completed (groups of 5, t = 4: one dropout tolerated)
        seen = False
        for path in groups:
            f = mle.load(path)
            survivors = f.metadata["survivors"]
            total = np.zeros(len(f["sum"]), np.uint64)
            for cid in survivors:
                total += np.asarray(mle.load(dumps / f"round-{r:06d}-{cid}.mle")["input"], np.uint64)
            assert np.array_equal(total % (1 << f.metadata["modulus_bits"]), np.asarray(f["sum"], np.uint64)), (r, path.name)
            if dropper["client_id"] in survivors + f.metadata["dropped"]:
                seen = True
                # before its masked input arrived (rounds 1-3) its input is not in the sum; after, it is
                assert (dropper["client_id"] in survivors) == (r >= 4), (r, f.metadata)
        assert seen, r


def test_sigkill_mid_round_and_restart_resumes(tmp_path: Path, workers: Workers) -> None:
    flags = ["--rounds", "10", "--clients-per-round", "6", "--group-size", "6", *FAST]
    coord = Coordinator(tmp_path, flags).start()
    for chunk in ([0, 1, 2], [3, 4, 5]):
        workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", chunk, 6, "--state-root", str(tmp_path / "clients"),
                      "--policy", UTILITY_POLICY)
    deadline = time.time() + 120
    while True:  # kill while a round is in progress, after a few completed ones
        s = coord.status()
        if s["round"] >= 3 and s["round_in_progress"] is not None:
            break
        assert time.time() < deadline, coord.log_text()
        time.sleep(0.02)
    before = coord.status()
    coord.kill()
    store = Store.open(coord.data_dir)
    last = store.latest_completed_round()
    store.close()
    assert last is not None and last.round >= before["round"]
    coord.start()  # same data dir, same ports: clients reconnect on their own
    after = coord.status()
    assert after["round"] == last.round  # resumed from the last completed round, nothing lost
    assert after["privacy"]["epsilon"] >= before["privacy"]["epsilon"] > 0
    trusted = {c["id"]: c["observations"] for c in after["clients"]}
    assert len(trusted) == 6 and all(n >= last.round for n in trusted.values())  # trust state came back
    summaries = workers.wait(180)
    assert coord.wait(30) == 0, coord.log_text()
    assert all(s["stop_reason"] == "all 10 rounds done" and s["reconnects"] >= 1 for s in summaries)
    store = Store.open(coord.data_dir)
    assert [r for r, _ in store.metrics()] == list(range(1, 11))
    ledger_rounds = [r for r, _ in store.dp_ledger()]
    store.close()
    # one DP event per released round attempt: every round once, a round whose sums were released before the kill
    # and that was redone after the restart twice (issue 13 F5: that spend is kept, not lost)
    assert ledger_rounds == sorted(ledger_rounds) and sorted(set(ledger_rounds)) == list(range(1, 11))
    assert len(ledger_rounds) <= 11
    assert "resuming after round" in coord.log_text()


async def _error_code(ch, key: bytes) -> str:
    env, _ = decode(await asyncio.wait_for(ch.recv(), 10), lambda e: key)
    assert env.type == "error"
    return str(env.body["code"])


async def _probe(coord: Coordinator) -> dict[str, str]:
    c = default_crypto()
    key = bytes.fromhex(coord.key)
    ws, grpc = f"127.0.0.1:{coord.ws_port}", f"127.0.0.1:{coord.grpc_port}"
    out: dict[str, str] = {}
    for transport, server in (("websocket", ws), ("grpc", grpc)):
        ch = await open_channel(server, transport)
        await ch.send(b"\x00not an .mle file" * 10)
        out[f"malformed/{transport}"] = await _error_code(ch, key)
        await ch.close()

        a, b = c.random_bytes(32), c.random_bytes(32)
        pk = c.ed25519_public_key(a)
        hello = Envelope("hello", client_id_for(pk), COORDINATOR_ID, "", 0, -1,
                         {"public_key": pk.hex(), "kind": "native", "versions": [1]})
        ch = await open_channel(server, transport)
        await ch.send(encode(hello, b))  # claims key a, signed with key b
        out[f"forged/{transport}"] = await _error_code(ch, key)
        await ch.close()

        s = ClientSession(c.random_bytes(32), key)
        ch = await open_channel(server, transport)
        await ch.send(s.start()[0].data)
        auth = s.receive(await ch.recv())
        assert isinstance(auth[0], SendFrame)
        await ch.send(auth[0].data)
        s.receive(await ch.recv())  # welcome (we do not say ready: no round waits for us)
        await ch.send(auth[0].data)  # the same signed bytes again
        out[f"replay/{transport}"] = await _error_code(ch, key)
        unknown = Envelope("frobnicate", s.client_id, COORDINATOR_ID, s.session, s.seq + 5, -1, {})
        await ch.send(encode(unknown, s.identity_seed))
        out[f"unknown_type/{transport}"] = await _error_code(ch, key)
        await ch.send(b"\x01" * (3 * 1024 * 1024 // 2))  # 1.5 MiB > the 1 MiB limit
        try:
            await asyncio.wait_for(ch.recv(), 10)
            out[f"oversized/{transport}"] = "accepted"
        except ChannelError as exc:
            out[f"oversized/{transport}"] = str(exc)
        await ch.close()
    return out


def test_bad_input_is_rejected_and_the_federation_carries_on(tmp_path: Path, workers: Workers) -> None:
    coord = Coordinator(tmp_path, ["--rounds", "6", "--clients-per-round", "6", "--group-size", "6",
                                   "--max-message-mb", "1", *FAST]).start()
    server = f"127.0.0.1:{coord.grpc_port}"
    workers.spawn(tmp_path, server, [0, 1, 2, 3, 4], 6, "--policy", UTILITY_POLICY)
    # sends a NaN "masked input" every round
    workers.spawn(tmp_path, server, [5], 6, "--attack", "nan", "--policy", UTILITY_POLICY)
    coord.wait_round(1, timeout=120)
    codes = asyncio.run(_probe(coord))
    for transport in ("websocket", "grpc"):
        assert codes[f"malformed/{transport}"] == "bad_format"
        assert codes[f"forged/{transport}"] == "bad_signature"
        assert codes[f"replay/{transport}"] == "replay"
        assert codes[f"unknown_type/{transport}"] == "unknown_type"
    assert "1009" in codes["oversized/websocket"], codes
    assert "RESOURCE_EXHAUSTED" in codes["oversized/grpc"], codes
    summaries = workers.wait(180)
    assert coord.wait(30) == 0, coord.log_text()
    honest = [s for s in summaries if s["index"] != 5]
    nan_client = next(s for s in summaries if s["index"] == 5)
    assert all(s["rounds"] == [1, 2, 3, 4, 5, 6] and not s["errors"] for s in honest)
    assert nan_client["errors"] and all(code == "secagg" and "masked" in msg for code, msg in nan_client["errors"])
    log = coord.log_text()
    for code in ("bad_format", "bad_signature", "replay", "unknown_type", "secagg"):
        assert f"{code}:" in log, code
    store = Store.open(coord.data_dir)
    metrics = dict(store.metrics())
    store.close()
    assert sorted(metrics) == [1, 2, 3, 4, 5, 6] and all(m["survivors"] == 5 for m in metrics.values())
