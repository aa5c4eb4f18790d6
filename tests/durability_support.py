"""An in-process federation over the real service stack minus the sockets: the real :class:`EngineDriver` on an
asyncio loop (its timers, its batched enrolments), the real SQLite :class:`Store` in a data dir, the real engine,
and one real :class:`ClientSession` per client behind a :class:`Link` that records every frame the driver sends
(decoded: type, round, status, SecAgg+ phase) together with whether durability had already been lost.

Used by tests/test_durability_*.py; run as a script it is the disk-full scenario of
``test_durability_ledger.py`` (a file-size limit, RLIMIT_FSIZE, makes the round's model file write fail with
EFBIG – a real ``OSError`` from the kernel – after round 1), printing its observations as JSON.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.events import Connected
from coordinator.service.driver import EngineDriver
from coordinator.service.store import Store
from flcore.modelspec import mlp
from flcore.policy import PrivacyPolicy
from flcore.session import ClientSession, SendFrame, Train
from flcore.wire import decode, tensor_bytes
from privacy.secagg.messages import Message


def config(rounds: int = 3, clients: int = 6, hidden: int = 16, downlink: str = "int8-delta") -> FederationConfig:
    return FederationConfig(model=mlp([64, hidden, 10]), rounds=rounds, clients_per_round=clients,
                            group_size=clients, aggregator="mean", byzantine=0, local_epochs=1, lr=0.1, l2_clip=1.0,
                            noise_multiplier=0.05, quantization_bits=16, modulus_bits=32, epsilon=1e9,
                            phase_timeout=5.0, train_timeout=10.0, downlink=downlink)


@dataclass
class Frame:
    conn: str
    type: str
    round: int
    status: str | None
    phase: str | None  # the SecAgg+ message's phase for "secagg" frames
    after_fatal: bool


class RecordingLink:
    def __init__(self, fed: InProcessFederation, conn: str) -> None:
        self.fed, self.conn = fed, conn

    def send(self, data: bytes) -> None:
        env, f = decode(data, lambda e: self.fed.engine.public_key)
        phase = Message.from_bytes(tensor_bytes(f, "secagg")).phase if env.type == "secagg" else None
        frame = Frame(self.conn, env.type, env.round, env.body.get("status"), phase, self.fed.driver.fatal is not None)
        self.fed.frames.append(frame)
        if self.fed.on_frame is not None:
            self.fed.on_frame(frame)
        self.fed.inbox.append((self.conn, data))

    def close(self, reason: str) -> None:
        pass


@dataclass
class InProcessFederation:
    data_dir: Path
    cfg: FederationConfig
    n_clients: int = 6
    frames: list[Frame] = field(default_factory=list)
    inbox: collections.deque[tuple[str, bytes]] = field(default_factory=collections.deque)
    on_frame: Any = None
    on_round: Any = None

    def __post_init__(self) -> None:
        self.seed = bytes(range(32))
        self.store = Store.open(self.data_dir)
        cp = self.store.latest_completed_round()
        self.engine = Engine(self.cfg, self.seed, seed=1, registry={r.id: r.public_key for r in self.store.clients()},
                             state=cp.state if cp else None, params=None if cp is None else self._params(cp))
        self.driver = EngineDriver(self.engine, self.store, on_round=lambda m: self.on_round and self.on_round(m))
        policy = PrivacyPolicy.permissive()
        # the same identities each time the federation is built on a data dir (a restarted coordinator)
        self.sessions = {f"c{i}": ClientSession(hashlib.sha256(b"client-%d" % i).digest(), self.engine.public_key,
                                                policy=policy) for i in range(self.n_clients)}
        self.rng = np.random.default_rng(0)

    def _params(self, cp: Any) -> np.ndarray:
        import mle

        model = mle.load(cp.model_path)
        return np.concatenate([np.asarray(model[n], np.float32).ravel() for n, _ in self.cfg.model.parameter_shapes()])

    def _client(self, conn: str, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, SendFrame):
                self.driver.receive(conn, a.data)
            elif isinstance(a, Train):
                delta = self.rng.normal(0.0, 0.01, size=a.spec.num_parameters()).astype(np.float32)
                self._client(conn, self.sessions[conn].training_done(delta))

    def connect(self) -> None:
        """Connect every client and deliver frames until none is left – synchronously (no timer can fire)."""
        for conn, s in self.sessions.items():
            self.driver.links[conn] = RecordingLink(self, conn)
            self.driver.feed(Connected(conn, "inprocess", self.driver.clock()))
            self._client(conn, s.start())
        while self.inbox:
            conn, data = self.inbox.popleft()
            self._client(conn, self.sessions[conn].receive(data))

    async def run(self, until_round: int, timeout: float = 60.0) -> None:
        """Connect every client and deliver frames until ``until_round`` is committed or durability is lost."""
        self.connect()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.engine.round_number < until_round and self.driver.fatal is None:
            if loop.time() > deadline:
                raise TimeoutError(f"round {until_round} not reached (at {self.engine.round_number})")
            if self.inbox:
                conn, data = self.inbox.popleft()
                self._client(conn, self.sessions[conn].receive(data))
            else:
                await asyncio.sleep(0.005)

    def close(self) -> None:
        self.driver.cancel_timers()
        self.driver.flush()
        self.store.close()


def _disk_full(data_dir: str) -> int:
    """Round 1 commits; then the file-size limit is set just above the WAL's size: the small writes of round 2
    (its start, its privacy ledger) fit, its model file (a 64-1024-10 MLP, 300 KB) does not."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    # downlink "full": the int8-delta residual (engine state, as large as the model) would make round 2's SQLite
    # write, not its model file, the first to cross the limit
    fed = InProcessFederation(Path(data_dir), config(rounds=3, hidden=1024, downlink="full"))
    wal = Path(data_dir) / (Store.DB_NAME + "-wal")

    def limit(metrics: dict[str, Any]) -> None:
        if metrics.get("round") == 1:
            size = max(wal.stat().st_size, (Path(data_dir) / Store.DB_NAME).stat().st_size)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40 * 1024, resource.RLIM_INFINITY))

    fed.on_round = limit
    asyncio.run(fed.run(3))
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print(json.dumps({"fatal": fed.driver.fatal, "round": fed.engine.round_number,
                      "frames": [f.__dict__ for f in fed.frames]}))
    fed.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(_disk_full(sys.argv[1]))
