"""``fl-coordinator serve``: the store, the engine (resumed from the last completed round), the driver and the
transports (WebSocket + HTTP, gRPC) in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import mle
from coordinator.federation.engine import Engine
from coordinator.service import dashboard, log_hygiene, recent_events
from coordinator.service.admission import Admission
from coordinator.service.driver import EngineDriver
from coordinator.service.http_routes import HttpRoutes
from coordinator.service.security_headers import DEFAULT_CSP
from coordinator.service.settings import ServeSettings, SettingsError, admission_config, federation_to_dict
from coordinator.service.store import Store, StoreError
from coordinator.service.transport_grpc import GrpcTransport
from coordinator.service.transport_ws import WebSocketTransport
from flcrypto import default_crypto
from flcrypto.keyfile import load_or_create_seed

log = logging.getLogger("fl-coordinator")
KEY_FILE = "coordinator.key"


def load_or_create_identity(data_dir: Path, store: Store | None = None) -> bytes:
    """The coordinator's Ed25519 seed, created (mode 0600) on first start. With ``store``: the store records the
    public key it belongs to (issue 13 F19) – a missing key file beside a store that is not empty, or a key file
    holding another key, is refused (:class:`StoreError`, nothing changed): a new key would orphan the signed
    models and every client pinned the old one."""
    path = data_dir / KEY_FILE
    recorded = store.get_config("coordinator_key") if store is not None else None
    if store is not None and not path.exists() and (recorded is not None or not store.is_empty()):
        owner = f"coordinator {recorded[:16]}…" if recorded else "a coordinator"
        raise StoreError(f"{path} is missing but {store.db_path} belongs to {owner}: restore the key file from a "
                         "backup (a new key would orphan the signed models and be rejected by every client that "
                         "pinned the old one); nothing was changed")
    try:
        seed = load_or_create_seed(path)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if store is not None:
        public = default_crypto().ed25519_public_key(seed).hex()
        if recorded is None:
            store.set_config("coordinator_key", public)
        elif recorded != public:
            raise StoreError(f"{path} holds key {public[:16]}… but {store.db_path} belongs to coordinator "
                             f"{recorded[:16]}…: restore the matching key file; nothing was changed")
    return seed


# What a federation stored before an option existed ran with: a data dir from an earlier version resumes under
# these values (and is refused, naming them, if the settings now ask for something else).
LEGACY_FEDERATION_DEFAULTS: dict[str, Any] = {"rotation": False, "downlink": "full"}


def build_engine(settings: ServeSettings, store: Store, seed: bytes) -> Engine:
    """A fresh engine, or one resumed from the store's last completed round (model, round, trust, accountant,
    optimizer state); refuses to resume with a different federation configuration."""
    cfg = settings.federation
    wanted = json.loads(json.dumps(federation_to_dict(cfg)))
    stored = store.get_config("federation")
    if stored is None:
        store.set_config("federation", wanted)
    else:
        stored = {**LEGACY_FEDERATION_DEFAULTS, **stored}  # options a data dir from before they existed ran without
        if stored != wanted:
            diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise SettingsError(f"{store.dir} holds a federation with other settings ("
                                + ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} now" for k in diff)
                                + "); use another --data-dir or the same settings")
    evaluator = None
    if settings.evaluation == "digits":
        from coordinator.federation.evaluation import evaluator as make_evaluator
        from federated_data import load_digits

        ds = load_digits(images=cfg.model.input_shape == (1, 8, 8))
        evaluator = make_evaluator(cfg.model, ds.x_test, ds.y_test)
    elif settings.evaluation.endswith(".npz"):
        from coordinator.federation.evaluation import evaluator as make_evaluator

        with np.load(settings.evaluation) as z:
            if "x" not in z or "y" not in z:
                raise SettingsError(f"{settings.evaluation}: needs arrays 'x' and 'y'")
            x, y = np.asarray(z["x"], np.float32), np.asarray(z["y"], np.int64)
        if x.shape[1:] != tuple(cfg.model.input_shape) and x[0].size != np.prod(cfg.model.input_shape):
            raise SettingsError(f"{settings.evaluation}: x has shape {x.shape[1:]}, the model takes "
                                f"{cfg.model.input_shape}")
        evaluator = make_evaluator(cfg.model, x, y)
    registry = {c.id: c.public_key for c in store.clients()}
    admission = admission_config(settings.server)
    cp = store.latest_completed_round()
    if cp is None:
        return Engine(cfg, seed, seed=cfg.seed, evaluator=evaluator, registry=registry,
                      max_message_bytes=settings.server.max_message_bytes, admission=admission)
    model = mle.load(cp.model_path, trusted_keys=[default_crypto().ed25519_public_key(seed)],
                     require_signature=True)
    params = np.concatenate([np.asarray(model[n], np.float32).ravel() for n, _ in cfg.model.parameter_shapes()])
    log.info("resuming after round %d (model %s)", cp.round, cp.model_path.name)
    return Engine(cfg, seed, seed=cfg.seed, evaluator=evaluator, params=params, state=cp.state, registry=registry,
                  max_message_bytes=settings.server.max_message_bytes, admission=admission)


@dataclass
class RunningService:
    driver: EngineDriver
    ws: WebSocketTransport
    grpc: GrpcTransport
    ws_port: int
    grpc_port: int
    store: Store
    operator: dashboard.OperatorView | None = None  # the dashboard's data and /metrics

    async def stop(self) -> None:
        self.driver.cancel_timers()
        for link in list(self.driver.links.values()):  # end every stream normally (no handler is cancelled)
            link.close("coordinator stopping")
        await asyncio.sleep(0.05)
        await self.ws.stop()
        self.ws.routes.close()
        await self.grpc.stop()
        self.driver.flush()  # pending enrolments (unless durability was lost)
        self.store.close()
        if self.operator is not None:
            recent_events.uninstall(self.operator.events)


async def start_service(settings: ServeSettings, static: dict[str, Path] | None = None,
                        index: Path | None = None, web: bool | None = None) -> RunningService:
    """``web``: serve the browser client and the demo page (coordinator.service.web_assets); default: when neither
    ``static`` nor ``index`` is given (and client_web/node_modules exists – logged if not)."""
    s = settings.server
    data_dir = Path(s.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(data_dir)
    try:
        seed = load_or_create_identity(data_dir, store)
        if s.identity_expiry_days:
            store.prune_identities(time.time() - s.identity_expiry_days * 86400.0)
        engine = build_engine(settings, store, seed)
    except BaseException:
        store.close()
        raise
    driver = EngineDriver(engine, store, audit_dir=s.audit_dir or None, identity_expiry_days=s.identity_expiry_days)
    if engine.finished:  # resumed after the last round: --exit-when-finished must not wait for an event
        engine.stopped_reason = engine.stopped_reason or f"all {settings.federation.rounds} rounds done"
        driver.finished.set()
    logging.getLogger("websockets").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    h = settings.http
    routes = HttpRoutes(engine.status, dict(static or {}), index, operator_token=settings.operator_token,
                        health=engine.health,
                        csp=h.content_security_policy or DEFAULT_CSP)
    operator = dashboard.OperatorView(driver, store, recent_events.install())
    dashboard.mount(routes, operator)
    if web or (web is None and static is None and index is None):
        from coordinator.service.web_assets import mount

        mount(routes)
    admission = Admission(settings.limits)  # one for both transports: connection caps and per-IP rates are shared
    operator.admission_refusals = admission.counters
    ws = WebSocketTransport(driver, routes, s.max_message_bytes, admission, s.allowed_origins, h.limits())
    grpc_t = GrpcTransport(driver, s.max_message_bytes, admission)
    ws_port = await ws.start(s.host, s.ws_port)
    grpc_port = await grpc_t.start(s.host, s.grpc_port)
    info = {"ws_port": ws_port, "grpc_port": grpc_port, "coordinator_key": engine.public_key.hex(),
            "pid": os.getpid()}
    log.info("coordinator %s… listening: ws+http %s:%d, grpc %s:%d, data %s (round %d of %d)",
             engine.public_key.hex()[:16], s.host, ws_port, s.host, grpc_port, data_dir, engine.round_number,
             settings.federation.rounds)
    log.info("GET /status: public aggregates; GET /status/operator: %s", "full status, bearer token required"
             if settings.operator_token else "disabled (no --operator-token-file or FL_OPERATOR_TOKEN)")
    log.info("GET /dashboard: the operator dashboard (asks for the token); GET /metrics: Prometheus, %s",
             "bearer token required" if settings.operator_token else "disabled with the operator view")
    if s.port_file:
        tmp = Path(s.port_file + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, s.port_file)
    return RunningService(driver, ws, grpc_t, ws_port, grpc_port, store, operator)


async def serve(settings: ServeSettings) -> int:
    # attacker text never becomes a huge log line, floods of one message become a summary (issue 13 F10, F12)
    log_hygiene.install(settings.limits.log_line_max_chars, settings.limits.log_repeats_per_minute)
    service = await start_service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(stop.wait())]
    waiters.append(asyncio.create_task(service.driver.failed.wait()))
    if settings.server.exit_when_finished:
        waiters.append(asyncio.create_task(service.driver.finished.wait()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if service.driver.fatal is not None:
        pass  # the driver logged its one line ("durability lost: …"); exit status 1
    elif service.driver.finished.is_set():
        # participants of the last round that were disconnected at its end reconnect and must hear "stop"
        engine = service.driver.engine
        deadline = loop.time() + max(0.0, settings.server.exit_grace)
        while engine.awaiting_stop() and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # let the stop messages reach the clients
        log.info("federation finished: %s", engine.stopped_reason)
    for w in waiters:
        w.cancel()
    await service.stop()
    return 1 if service.driver.fatal is not None else 0
