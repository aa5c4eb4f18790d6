"""The native gRPC ``fl-client`` (a real process) survives its coordinator being SIGKILLed mid-round and
restarted on the same data dir: it reconnects with back-off, as the WebSocket client does, and finishes
(issue 13 F8: it exited with ``InvalidStateError`` when it wrote to a gRPC call the dead coordinator had ended)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import REPO, Coordinator, _env

from client_native.channels import ChannelError, GrpcChannel

pytestmark = pytest.mark.slow

# one client in groups of 1 (its policy opts into them), long enough local training that a kill lands while it
# trains: its next write goes to a call the dead coordinator ended
FLAGS = ["--rounds", "6", "--clients-per-round", "1", "--group-size", "1", "--aggregator", "mean",
         "--noise-multiplier", "0", "--local-epochs", "40", "--train-timeout", "30", "--phase-timeout", "3",
         "--exit-when-finished"]
CLIENT_POLICY = ["--min-group-size", "1", "--colluders", "0", "--threshold-rule", "majority", "--min-noise", "0",
                 "--epsilon-budget", "inf"]


def test_grpc_fl_client_survives_sigkilled_coordinators_mid_round(tmp_path: Path) -> None:
    coord = Coordinator(tmp_path, FLAGS).start()
    log = tmp_path / "fl-client.log"
    cmd = [sys.executable, "-m", "client_native.cli", "--server", f"127.0.0.1:{coord.grpc_port}",
           "--data", "digits:0/1", "--state-dir", str(tmp_path / "client"), *CLIENT_POLICY]
    with open(log, "wb") as out:
        client = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env())
    try:
        for after in (1, 2, 3):  # three kills, each while a round is in progress
            deadline = time.time() + 120
            while True:
                s = coord.status()
                if s["round"] >= after and s["round_in_progress"] is not None:
                    break
                assert client.poll() is None, log.read_text()
                assert time.time() < deadline, coord.log_text()
                time.sleep(0.01)
            coord.kill()
            time.sleep(0.5)  # the client sees the dead coordinator (and trains on) before the restart
            assert client.poll() is None, log.read_text()  # on main: exited with InvalidStateError
            coord.start()
        assert client.wait(180) == 0, log.read_text()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        coord.kill()
    text = log.read_text()
    assert "InvalidStateError" not in text and "Traceback" not in text, text
    assert "all 6 rounds done" in text and "reconnects" in text, text


def test_a_grpc_write_to_an_ended_call_is_a_channel_error() -> None:
    """The unit behind F8: once the server ended the call, ``send`` raises :class:`ChannelError` (which the
    client's reconnect loop handles), not grpc's ``asyncio.InvalidStateError``."""

    class EndedCall:
        async def write(self, data: bytes) -> None:
            raise asyncio.InvalidStateError("RPC already finished.")

    async def scenario() -> None:
        import grpc

        ch = GrpcChannel("127.0.0.1:1")
        ch._grpc, ch.call = grpc, EndedCall()
        with pytest.raises(ChannelError, match="RPC already finished"):
            await ch.send(b"frame")

    asyncio.run(scenario())
