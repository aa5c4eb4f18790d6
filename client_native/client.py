"""The native client: the shared sans-I/O :class:`flcore.session.ClientSession` driven over gRPC or WebSocket,
with torch for local training (optionally record-level DP-SGD through opacus).

Python API::

    client = NativeClient(LocalData(x, y), ClientOptions(server="127.0.0.1:8766", state_dir="~/.fl-client"))
    summary = asyncio.run(client.run())        # until the coordinator says stop (or max_rounds)

The identity key (Ed25519 seed) lives in ``state_dir/identity.key``; the coordinator key is pinned on first use
in ``state_dir/coordinator.pub`` (or given explicitly); the client's own privacy ledger (every round whose sum
could contain its update, with the noise that protects it) in ``state_dir/privacy-ledger.json``, written before
the masked input leaves. ``ClientOptions.policy`` is what the client requires of every task
(:class:`flcore.policy.PrivacyPolicy`, safe defaults). Network loss → exponential back-off and a new handshake;
the coordinator treats the lost round as a dropout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from client_native.channels import ChannelError, open_channel
from client_native.dp_sgd import DpSgdOptions, DpSgdTrainer
from flcore.policy import PrivacyPolicy
from flcore.session import ClientSession, Failed, LedgerUpdated, RoundDone, SendFrame, Stopped, Train
from flcrypto import default_crypto
from flcrypto.keyfile import load_or_create_seed
from privacy.dp.ledger import write_ledger_file

log = logging.getLogger("fl-client")
# "enrolment": the coordinator does not admit this key (allow-list, or no valid enrolment token) – retrying cannot
# help; "enrolment_busy" (its rate limit on new identities) is retried with back-off like a lost connection
FATAL_CODES = {"handshake", "identity", "version", "banned", "enrolment"}


class ClientError(RuntimeError):
    """The client cannot go on (wrong coordinator key, no common protocol version, …)."""


@dataclass(frozen=True)
class LocalData:
    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.x) == 0:
            raise ValueError(f"local data needs matching, non-empty x and y (got {len(self.x)} and {len(self.y)})")


@dataclass
class ClientOptions:
    server: str  # HOST:PORT
    transport: str = "grpc"  # or "websocket"
    state_dir: str | os.PathLike[str] | None = None  # identity key + pinned coordinator key; None: ephemeral
    coordinator_key: bytes | None = None  # None: pinned file, else trust on first use
    threads: int = 1
    dp_sgd: DpSgdOptions | None = None
    reconnect_initial: float = 0.2
    reconnect_max: float = 5.0
    max_message_bytes: int = 64 * 1024 * 1024
    seed: int | None = None  # local shuffling seed (None: from the OS)
    policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    enrolment_token: str = ""  # from `fl-coordinator enrol-token`, for a coordinator with enrolment = token
    ca_file: str | None = None  # PEM roots for grpcs:// / wss:// servers (None: the system's)


@dataclass
class ClientSummary:
    client_id: str
    rounds: list[int] = field(default_factory=list)  # rounds this client completed
    reconnects: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    stop_reason: str = ""
    dp_sgd_epsilon: float | None = None
    ledger: dict[str, Any] = field(default_factory=dict)  # the privacy ledger's summary at the end
    declined: list[tuple[str, str]] = field(default_factory=list)  # tasks the policy or budget refused


LEDGER_FILE = "privacy-ledger.json"


def load_ledger(state_dir: Path | None) -> dict[str, Any] | None:
    """The persisted ledger state (``None``: none yet). A corrupt file is an error, never silently reset: a
    ledger that forgot releases would let the client overspend its budget."""
    if state_dir is None or not (state_dir / LEDGER_FILE).exists():
        return None
    try:
        return json.loads((state_dir / LEDGER_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ClientError(f"{state_dir / LEDGER_FILE}: unreadable privacy ledger ({exc}); refusing to start") from None


def save_ledger(state_dir: Path, state: dict[str, Any]) -> None:
    """Atomically replace the ledger file (write, fsync, rename)."""
    write_ledger_file(state_dir / LEDGER_FILE, state)


def load_or_create_key(path: Path) -> bytes:
    try:
        return load_or_create_seed(path)
    except ValueError as exc:
        raise ClientError(str(exc)) from None


class NativeClient:
    """Subclass hooks: :meth:`transform_update` (what is sent instead of the honest delta – used by tests and
    the simulation of attackers), :meth:`disconnect_after_send` (drop the connection right after a frame);
    :meth:`_train_sync` and :meth:`local_sample_count` for another local trainer
    (:class:`client_native.flower_app.FlowerAppClient`, which passes ``data=None``)."""

    def __init__(self, data: LocalData | None, options: ClientOptions) -> None:
        self.data, self.opt = data, options
        state = Path(options.state_dir).expanduser() if options.state_dir else None
        self.state_dir = state
        seed = load_or_create_key(state / "identity.key") if state else default_crypto().random_bytes(32)
        coord_key = options.coordinator_key
        if coord_key is None and state and (state / "coordinator.pub").exists():
            coord_key = bytes.fromhex((state / "coordinator.pub").read_text().strip())
        try:
            self.session = ClientSession(seed, coord_key, kind="native", max_message_bytes=options.max_message_bytes,
                                         policy=options.policy, ledger_state=load_ledger(state),
                                         enrolment_token=options.enrolment_token)
        except ValueError as exc:
            raise ClientError(f"privacy ledger: {exc}") from None
        self.summary = ClientSummary(self.session.client_id)
        self.trainer = DpSgdTrainer(options.dp_sgd) if options.dp_sgd else None
        self._rng = np.random.default_rng(options.seed)
        self._channel: Any = None
        self._stopped = False
        self._authenticated = False

    @property
    def client_id(self) -> str:
        return self.session.client_id

    # ── hooks ────────────────────────────────────────────────────────────────────────────────────────
    def transform_update(self, round_: int, delta: np.ndarray) -> np.ndarray:
        return delta

    def disconnect_after_send(self, round_: int, secagg_messages_sent: int) -> bool:
        return False

    def local_sample_count(self) -> int | None:
        """The sample count of the last local training, for display only (it never leaves the client)."""
        return len(self.data.x) if self.data is not None else None

    def _drop_if_asked(self, round_: int, secagg_messages_sent: int) -> None:
        if self.disconnect_after_send(round_, secagg_messages_sent):
            raise ChannelError(f"disconnecting on purpose in round {round_} after {secagg_messages_sent} "
                               "secure-aggregation message(s)")

    # ── main loop ────────────────────────────────────────────────────────────────────────────────────
    async def run(self, max_rounds: int | None = None) -> ClientSummary:
        """Join rounds until the coordinator says stop (or ``max_rounds`` rounds are done)."""
        import torch

        torch.set_num_threads(max(1, self.opt.threads))
        delay = self.opt.reconnect_initial
        first = True
        while not self._stopped:
            if not first:
                self.summary.reconnects += 1
                await asyncio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, self.opt.reconnect_max)
            first = False
            try:
                self._channel = await open_channel(self.opt.server, self.opt.transport, self.opt.max_message_bytes,
                                                   self.opt.ca_file)
            except ChannelError as exc:
                log.info("%s: %s; retrying", self.client_id[:8], exc)
                continue
            self._authenticated = False
            try:
                await self._session_loop(max_rounds)
            except ChannelError as exc:
                log.info("%s: connection lost (%s); reconnecting", self.client_id[:8], exc)
            finally:
                await self._channel.close()
            if self._authenticated:  # the last connection worked: start the back-off afresh
                delay = self.opt.reconnect_initial
        if self.trainer is not None:
            self.summary.dp_sgd_epsilon = self.trainer.epsilon()
        self.summary.ledger = self.session.ledger.summary()
        return self.summary

    async def _session_loop(self, max_rounds: int | None) -> None:
        """One connection's life; sets ``_authenticated`` once the handshake succeeded (to reset the back-off)."""
        secagg_sent = 0
        current_round = -1
        await self._send_all(self.session.start())
        while True:
            data = await self._channel.recv()
            if data is None:
                raise ChannelError("the coordinator closed the session")
            for action in self.session.receive(data):
                if isinstance(action, SendFrame):
                    await self._channel.send(action.data)
                    if self.session.state == "secagg":
                        secagg_sent += 1
                        self._drop_if_asked(current_round, secagg_sent)
                    if self.session.state == "ready" and not self._authenticated:
                        self._authenticated = True
                        self._pin_coordinator_key()
                elif isinstance(action, Train):
                    current_round, secagg_sent = action.round, 0
                    for a2 in await self._train(action):  # the first SecAgg+ message, or Failed
                        if isinstance(a2, SendFrame):
                            await self._channel.send(a2.data)
                        elif isinstance(a2, Failed):
                            self._failed(a2)
                    if self.session.state == "secagg":
                        secagg_sent = 1
                        self._drop_if_asked(current_round, secagg_sent)
                elif isinstance(action, RoundDone):
                    if action.status == "ok":
                        self.summary.rounds.append(action.round)
                    log.info("%s: round %d %s", self.client_id[:8], action.round, action.status)
                    if max_rounds is not None and len(self.summary.rounds) >= max_rounds:
                        self._stopped = True
                        with contextlib.suppress(ChannelError):
                            await self._channel.send(self.session._send("bye", {"reason": "done"}).data)
                        return
                elif isinstance(action, Stopped):
                    self.summary.stop_reason = action.reason
                    self._stopped = True
                    log.info("%s: coordinator stopped the federation: %s", self.client_id[:8], action.reason)
                    return
                elif isinstance(action, LedgerUpdated):
                    self._ledger(action)
                elif isinstance(action, Failed):
                    self._failed(action)

    def _ledger(self, update: LedgerUpdated) -> None:
        """Persist the ledger before the masked input it accounts for is sent."""
        if self.state_dir is not None:
            save_ledger(self.state_dir, update.state)
        self.summary.ledger = update.summary
        log.info("%s: privacy ledger: ε = %s (if secure aggregation holds), worst case %s, %d rounds",
                 self.client_id[:8], _fmt(update.summary.get("epsilon")),
                 _fmt(update.summary.get("epsilon_worst_case")), update.summary.get("participations", 0))

    async def _send_all(self, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, SendFrame):
                await self._channel.send(a.data)

    def _failed(self, f: Failed) -> None:
        if f.code.startswith("policy") or f.code in ("budget", "bad_task"):
            self.summary.declined.append((f.code, f.message))
        self.summary.errors.append((f.code, f.message))
        log.warning("%s: %s: %s", self.client_id[:8], f.code, f.message)
        if f.code == "rejected":  # our first frame was refused before the coordinator knew us: start over
            raise ChannelError(f"handshake rejected: {f.message}")
        if f.code in FATAL_CODES:
            self._stopped = True
            raise ClientError(f"{f.code}: {f.message}")

    def _pin_coordinator_key(self) -> None:
        if self.state_dir is None or self.session.coordinator_key is None:
            return
        path = self.state_dir / "coordinator.pub"
        if not path.exists():
            path.write_text(self.session.coordinator_key.hex() + "\n")

    async def _train(self, task: Train) -> list[Any]:
        delta, loss = await asyncio.to_thread(self._train_sync, task)
        delta = np.asarray(self.transform_update(task.round, delta), dtype=np.float32)
        self._drop_if_asked(task.round, 0)
        return self.session.training_done(delta, loss, self.local_sample_count())

    def _train_sync(self, task: Train) -> tuple[np.ndarray, float]:
        from client_native.torch_model import build_module, flatten, set_parameters, train_local

        if self.data is None:
            raise ClientError("no local data to train on (a subclass without data must override _train_sync)")
        module = build_module(task.spec)
        set_parameters(module, task.parameters)
        hp = task.hyperparameters
        x = self.data.x.reshape(len(self.data.x), *task.spec.input_shape)
        seed = int(self._rng.integers(2**31))
        if self.trainer is not None:
            delta, loss = self.trainer.train(module, x, self.data.y, epochs=int(hp["epochs"]),
                                             batch_size=int(hp["batch_size"]), lr=float(hp["lr"]), seed=seed)
        else:
            delta, loss = train_local(module, x, self.data.y, epochs=int(hp["epochs"]),
                                      batch_size=int(hp["batch_size"]), lr=float(hp["lr"]), seed=seed)
        return flatten(delta, task.spec), loss


def _fmt(x: Any) -> str:
    return "∞" if x is None else f"{x:.3g}"
