"""Our SecAgg+ as a Flower client Mod: ``ClientApp(client_fn=…, mods=[make_secagg_mod()])``.

What the Mod adds to an unmodified Flower client, for :class:`flower_interop.secure_workflow.GroupedSecureFitWorkflow`
with ``protocol="fl-secagg"`` (docs/flower.md):

- an Ed25519 identity (kept in the node's context, or in ``identity_file`` to keep it across runs); every SecAgg+
  message is signed with it and bound to the group's whole configuration (privacy/secagg, docs/secagg.md);
- the client's own :class:`~flcore.policy.PrivacyPolicy` and privacy ledger, the same checks as our native and
  browser clients (:func:`flcore.task_admission.admit_group_task`): a task whose group is too small, whose
  threshold a coordinator with colluders could split, whose noise is too low or that would exceed the client's ε
  budget is declined before anything derived from the update leaves;
- the update (the ClientApp's returned weights − the global model it was sent) is clipped, quantized, given its
  discrete-Gaussian noise share and masked with ChaCha20 pairwise and self masks (Bonawitz et al. CCS'17, Bell et al.
  CCS'20; Kairouz, Liu & Steinke ICML'21 for the distributed noise); the weights, the sample count and the
  client's metrics never leave the node.

Flower runs each message in a fresh ClientApp call (a fresh process in its deployment engine): the protocol's
state between messages – this round's secrets – is serialised into the node's ``context.state``
(:meth:`privacy.secagg.SecAggClient.export_state`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from flcore.policy import PolicyViolation, PrivacyPolicy
from flcore.task_admission import admit_group_task
from flcore.wire import client_id_for
from flcrypto import default_crypto
from flcrypto.keyfile import load_or_create_seed
from flower_interop.arrays import flat
from flower_interop.grouping import IDENTITY, LEDGER, RECORD, STATE, GroupTask
from privacy.backends import NumpyBackend
from privacy.client_pipeline import prepare_update
from privacy.dp.ledger import LedgerBudgetExceeded, LedgerEntry, PrivacyLedger, write_ledger_file
from privacy.randomness import RandomStream
from privacy.secagg import GroupConfig, SecAggClient, SecAggError

log = logging.getLogger(__name__)
ClientAppCallable = Callable[[Message, Context], Message]


@dataclass
class SecAggMod:
    """The Mod (a callable ``(msg, context, call_next) -> Message``). Picklable: Flower's simulation ships it to
    its workers."""

    policy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    # files that outlive a run; ``{node_id}`` in a path is replaced by the node's id (simulations: one machine)
    identity_file: str | None = None  # 32-byte seed file (created 0600 if missing); None: the node's context
    ledger_file: str | None = None  # JSON ledger (fsync'ed before the masked input leaves); None: the context
    _node: int = field(default=0, init=False, repr=False)

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if RECORD not in msg.content.config_records:
            return call_next(msg, context)  # not ours (e.g. evaluate): the app answers it
        cfg = msg.content.config_records[RECORD]
        stage = cfg.get("stage")
        self._node = int(msg.metadata.dst_node_id)
        try:
            if stage == "hello":
                out = {"identity_key": default_crypto().ed25519_public_key(self._identity(context))}
            elif stage == "task":
                out = self._task(msg, context, call_next, cfg)
            elif stage == "secagg":
                out = self._secagg(context, cfg)
            else:
                raise PolicyViolation("bad_message", f"unknown stage {stage!r}")
        except PolicyViolation as exc:
            context.state.config_records.pop(STATE, None)
            log.warning("secure aggregation declined: %s", exc)
            out = {"declined": exc.code, "reason": exc.message}
        except (SecAggError, ValueError) as exc:
            context.state.config_records.pop(STATE, None)
            log.warning("secure aggregation stopped: %s", exc)
            out = {"declined": "secagg", "reason": str(exc)}
        out["stage"] = str(stage)
        return Message(RecordDict({RECORD: ConfigRecord(out)}), reply_to=msg)

    # ── stages ───────────────────────────────────────────────────────────────────────────────────────
    def _task(self, msg: Message, context: Context, call_next: ClientAppCallable, cfg: ConfigRecord
              ) -> dict[str, Any]:
        """Check the group task against the policy and ledger, train, prepare the update, advertise keys."""
        task = GroupTask.from_bytes(bytes(cfg["task"]))  # type: ignore[arg-type]
        seed = self._identity(context)
        crypto = default_crypto()
        key = crypto.ed25519_public_key(seed)
        me = client_id_for(key)
        ids = task.group_members()
        if me not in ids or task.members[me] != key:
            raise PolicyViolation("bad_task", "the group is not the one the public seed assigns us")
        global_arrays = parameters_to_ndarrays(compat.recorddict_to_fitins(msg.content, keep_input=True).parameters)
        dimension = sum(int(a.size) for a in global_arrays)
        ledger = self._ledger(context)
        try:
            dp, entry = admit_group_task(self.policy, ledger, round_=task.round, attempt=task.attempt, n=len(ids),
                                         degree=len(ids) - 1, threshold=task.threshold, dp_params=task.dp,
                                         dimension=dimension, binding=task.binding())
        except LedgerBudgetExceeded as exc:
            raise PolicyViolation("budget", str(exc)) from None
        msg.content.config_records.pop(RECORD, None)  # the app sees a plain fit
        reply = call_next(msg, context)
        if reply.has_error():
            raise ValueError(f"the ClientApp's fit failed: {reply.error.reason}")
        weights = parameters_to_ndarrays(compat.recorddict_to_fitres(reply.content, keep_input=True).parameters)
        delta = _delta(weights, global_arrays)
        backend = NumpyBackend()
        field_vec = prepare_update(delta, dp, RandomStream.from_os(crypto), backend)[0]
        group_cfg = _group_config(task)
        client = SecAggClient(group_cfg, me, seed, field_vec, backend, crypto)
        advertise = client.start()
        context.state.config_records[STATE] = ConfigRecord({
            "task": bytes(cfg["task"]),  # type: ignore[arg-type]
            "client": json.dumps(client.export_state()), "entry": json.dumps(entry.to_dict())})
        return {"payload": advertise}

    def _secagg(self, context: Context, cfg: ConfigRecord) -> dict[str, Any]:
        """One server message of the protocol in, our replies out; the ledger is written before the masked
        input is returned."""
        if STATE not in context.state.config_records:
            raise PolicyViolation("unexpected", "secure-aggregation message without a task in progress")
        st = context.state.config_records[STATE]
        task = GroupTask.from_bytes(bytes(st["task"]))  # type: ignore[arg-type]
        client = SecAggClient.restore(_group_config(task), self._identity(context),
                                      json.loads(str(st["client"])), NumpyBackend(), default_crypto())
        before = client.phase
        replies = client.handle(bytes(cfg["payload"]))  # type: ignore[arg-type]
        if before != "masked" and client.phase == "masked":  # our masked input is about to leave: account it
            ledger = self._ledger(context)
            ledger.record(LedgerEntry.from_dict(json.loads(str(st["entry"]))))
            self._save_ledger(context, ledger)
        if client.phase in ("done", "failed"):
            context.state.config_records.pop(STATE, None)
        else:
            st["client"] = json.dumps(client.export_state())
        return {"payload": replies[0] if replies else b""}

    # ── node-local storage ───────────────────────────────────────────────────────────────────────────
    def _identity(self, context: Context) -> bytes:
        if self.identity_file:
            return load_or_create_seed(self._path(self.identity_file))  # ValueError unless 32 bytes
        rec = context.state.config_records.setdefault(IDENTITY, ConfigRecord({}))
        if "seed" not in rec:
            rec["seed"] = default_crypto().random_bytes(32)
        return bytes(rec["seed"])  # type: ignore[arg-type]

    def _path(self, template: str) -> Path:
        return Path(template.replace("{node_id}", str(self._node))).expanduser()

    def _ledger(self, context: Context) -> PrivacyLedger:
        raw: str | None = None
        if self.ledger_file and self._path(self.ledger_file).exists():
            raw = self._path(self.ledger_file).read_text()
        elif not self.ledger_file and LEDGER in context.state.config_records:
            raw = str(context.state.config_records[LEDGER]["json"])
        entries = PrivacyLedger.from_dict(json.loads(raw)).entries if raw else []
        return PrivacyLedger(self.policy.epsilon_budget, self.policy.delta, list(entries))

    def _save_ledger(self, context: Context, ledger: PrivacyLedger) -> None:
        if not self.ledger_file:
            context.state.config_records[LEDGER] = ConfigRecord({"json": json.dumps(ledger.to_dict())})
            return
        path = self._path(self.ledger_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_ledger_file(path, ledger.to_dict())


def _group_config(task: GroupTask) -> GroupConfig:
    ids = task.group_members()
    dp = task.dp
    length = int(dp["dimension"]) + (1 if float(dp.get("clip_indicator", 0.0)) > 0 else 0)
    return GroupConfig(task.round, task.group, tuple(ids), {m: task.members[m] for m in ids}, length,
                       int(dp["modulus_bits"]), task.seed, len(ids) - 1, task.threshold, task.binding())


def _delta(weights: list[np.ndarray], global_arrays: list[np.ndarray]) -> np.ndarray:
    """Returned weights − the global model, flat float64; ``ValueError`` if they do not have its shapes."""
    if len(weights) != len(global_arrays) or any(w.shape != g.shape for w, g in zip(weights, global_arrays)):
        raise ValueError(f"the ClientApp returned arrays {[w.shape for w in weights]}, the model's are "
                         f"{[g.shape for g in global_arrays]}")
    return flat(weights) - flat(global_arrays)


def make_secagg_mod(policy: PrivacyPolicy | None = None, *, identity_file: str | None = None,
                    ledger_file: str | None = None) -> SecAggMod:
    """Our SecAgg+ Mod with the client's privacy ``policy`` (default: :class:`PrivacyPolicy()`, the same
    defaults as our own clients: groups ≥ 5, two-thirds threshold, one colluder, noise ≥ 0.5, ε ≤ 10)."""
    return SecAggMod(policy or PrivacyPolicy(), identity_file, ledger_file)
