"""``fl-client``: a native federated client.

    fl-client --server 127.0.0.1:8766 --data digits:3/15 --state-dir ~/.fl-client/3
    fl-client --server 127.0.0.1:8765 --transport websocket --data my-shard.npz

``--data`` is an ``.npz`` file with arrays ``x`` and ``y``, or ``digits:I/N`` – shard I of N of the training split
of scikit-learn's digits (non-IID Dirichlet label skew by default, see ``--partition``).

A Flower client instead of the built-in torch trainer (client_native/flower_app.py, docs/flower-clients.md):

    fl-client --server 127.0.0.1:8766 --flower-app my_app.client_app:app --node-config "partition-id=3 num-partitions=15"

The Flower client loads its own data: ``--data`` (and the DP-SGD flags, which belong to the built-in trainer)
are refused with ``--flower-app``; every other flag, the privacy policy's included, works as without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

import numpy as np

from client_native.client import ClientError, ClientOptions, LocalData, NativeClient, load_ledger
from client_native.dp_sgd import DpSgdOptions
from flcore.policy import THRESHOLD_RULES, PrivacyPolicy


def load_data(spec: str, partition: str = "dirichlet:0.5", partition_seed: int = 0, min_size: int = 20
              ) -> LocalData:
    """``digits:I/N`` or a ``.npz`` path (arrays ``x``, ``y``)."""
    if spec.startswith("digits:"):
        try:
            i_text, n_text = spec[len("digits:"):].split("/")
            i, n = int(i_text), int(n_text)
        except ValueError:
            raise ValueError(f"--data {spec!r}: expected digits:INDEX/COUNT") from None
        if not 0 <= i < n:
            raise ValueError(f"--data {spec!r}: index must be in [0, {n})")
        from federated_data import dirichlet, iid, load_digits

        ds = load_digits()
        rng = np.random.default_rng(partition_seed)
        kind, _, arg = partition.partition(":")
        if kind == "dirichlet":
            parts = dirichlet(ds.y_train, n, float(arg or 0.5), rng, min_size=min_size)
        elif kind == "iid":
            parts = iid(ds.y_train, n, rng)
        else:
            raise ValueError(f"--partition {partition!r}: expected dirichlet:ALPHA or iid")
        idx = parts[i]
        return LocalData(ds.x_train[idx], ds.y_train[idx])
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--data {spec!r}: no such file (or use digits:I/N)")
    with np.load(path) as z:
        if "x" not in z or "y" not in z:
            raise ValueError(f"{path}: needs arrays 'x' and 'y'")
        return LocalData(np.asarray(z["x"], np.float32), np.asarray(z["y"], np.int64))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fl-client", description="Native federated-learning client (torch).")
    p.add_argument("--server", required=False, help="coordinator HOST:PORT (its gRPC port, or its WebSocket port "
                   "with --transport websocket); grpcs://HOST:PORT or wss://HOST/ws for TLS (a coordinator behind a "
                   "TLS proxy)")
    p.add_argument("--ca-file", default=None, help="PEM certificate(s) to verify the TLS server with (default: the "
                   "system's roots)")
    p.add_argument("--transport", choices=("grpc", "websocket"), default="grpc", help="default: grpc")
    p.add_argument("--data", required=False, help="local data: FILE.npz (arrays x, y) or digits:INDEX/COUNT "
                   "(not with --flower-app)")
    p.add_argument("--partition", default="dirichlet:0.5", help="for digits:I/N: dirichlet:ALPHA or iid "
                   "(default: dirichlet:0.5)")
    p.add_argument("--partition-seed", type=int, default=0, help="seed of the digits split (default: 0)")
    p.add_argument("--state-dir", default=None, help="where the identity key and the pinned coordinator key live "
                   "(default: none – a fresh identity each run)")
    p.add_argument("--coordinator-key", default=None, help="coordinator public key (hex) to trust; default: the "
                   "pinned one in --state-dir, else trust on first use")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--dp-sgd-noise", type=float, default=0.0, help="record-level DP-SGD noise multiplier "
                   "(opacus); 0 = off (default)")
    p.add_argument("--dp-sgd-clip", type=float, default=1.0, help="DP-SGD per-sample gradient norm bound")
    p.add_argument("--max-rounds", type=int, default=None, help="leave after this many completed rounds")
    p.add_argument("--max-message-mb", type=float, default=64.0, help="largest message accepted (MiB; default 64)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--enrolment-token", default="", help="enrolment token the coordinator's operator issued for "
                   "this client's key (fl-coordinator enrol-token), for a coordinator that admits only those; "
                   "needed the first time only")
    p.add_argument("--show-identity", action="store_true", help="print this client's id and public key (what "
                   "the operator allow-lists or issues an enrolment token for) from --state-dir and exit")
    f = p.add_argument_group("Flower client", "train with an unmodified Flower client instead of the built-in "
                             "torch trainer (needs flwr: pip install 'fl-coordinator[flower]')")
    f.add_argument("--flower-app", default=None, metavar="MODULE:ATTR", help="a client_fn(context), NumPyClient "
                   "(instance or class), Client or ClientApp, e.g. my_app.client_app:app; it loads its own data")
    f.add_argument("--app-dir", default=".", help="directory put first on the Python path to import --flower-app "
                   "from (default: the current directory)")
    f.add_argument("--node-config", default=None, help="the Flower Context's node_config, as for "
                   "flower-supernode: \"partition-id=0 num-partitions=10\"")
    f.add_argument("--run-config", default=None, help="the Flower Context's run_config, same syntax "
                   "(e.g. \"local-epochs=2\")")
    d = PrivacyPolicy()
    g = p.add_argument_group("privacy policy", "what this client requires of every task; it declines the others "
                             "(nothing about its update is sent). Defaults are safe: see docs/threat-model.md")
    g.add_argument("--min-group-size", type=int, default=d.min_group_size,
                   help=f"smallest secure-aggregation group accepted (default {d.min_group_size})")
    g.add_argument("--threshold-rule", choices=THRESHOLD_RULES, default=d.threshold_rule,
                   help=f"threshold floor: majority or two-thirds (active adversary; default {d.threshold_rule})")
    g.add_argument("--colluders", type=int, default=d.colluders, help="colluding group members (with the "
                   f"coordinator) the threshold must withstand (default {d.colluders})")
    g.add_argument("--allow-sparse-graph", action="store_true", help="accept SecAgg+'s sparse graphs (a malicious "
                   "coordinator can then unmask inputs: not recommended)")
    g.add_argument("--min-noise", type=float, default=d.min_noise_multiplier,
                   help=f"smallest DP noise multiplier accepted (default {d.min_noise_multiplier})")
    g.add_argument("--epsilon-budget", type=float, default=d.epsilon_budget,
                   help=f"this client's own ε budget (its ledger; 'inf' = none; default {d.epsilon_budget:g})")
    g.add_argument("--delta", type=float, default=d.delta, help=f"δ of this client's ledger (default {d.delta:g})")
    g.add_argument("--show-ledger", action="store_true", help="print the privacy ledger in --state-dir and exit")
    return p


def policy_from_args(args: argparse.Namespace) -> PrivacyPolicy:
    return PrivacyPolicy(min_group_size=args.min_group_size, threshold_rule=args.threshold_rule,
                         colluders=args.colluders, allow_sparse_graph=args.allow_sparse_graph,
                         min_noise_multiplier=args.min_noise, epsilon_budget=args.epsilon_budget, delta=args.delta)


def check_flower_args(args: argparse.Namespace) -> None:
    """``--flower-app`` excludes ``--data`` and DP-SGD (the Flower client trains on its own data, with its own
    code); ``--node-config``/``--run-config`` need it."""
    if args.flower_app:
        if args.data:
            raise ValueError("--data and --flower-app exclude each other: the Flower client loads its own data "
                             "(pass it what it needs with --node-config, e.g. \"partition-id=0 num-partitions=10\")")
        if args.dp_sgd_noise > 0:
            raise ValueError("--dp-sgd-noise belongs to the built-in torch trainer, not to --flower-app (use Opacus "
                             "inside the Flower client's fit)")
    elif args.node_config is not None or args.run_config is not None:
        raise ValueError("--node-config and --run-config configure a Flower client: they need --flower-app")


def flower_client(args: argparse.Namespace, opts: ClientOptions) -> NativeClient:
    """The :class:`client_native.flower_app.FlowerAppClient` of ``--flower-app`` (flwr imported only here)."""
    from client_native.flower_app import FlowerAppClient, parse_config_string

    node = parse_config_string(args.node_config or "", "--node-config")
    run = parse_config_string(args.run_config or "", "--run-config")
    return FlowerAppClient(args.flower_app, opts, node_config=node, run_config=run, app_dir=args.app_dir)


def show_ledger(state_dir: str | None, policy: PrivacyPolicy) -> int:
    from privacy.dp.ledger import PrivacyLedger

    if not state_dir:
        print("fl-client: error: --show-ledger needs --state-dir", file=sys.stderr)
        return 2
    state = load_ledger(Path(state_dir).expanduser())
    prior = PrivacyLedger.from_dict(state) if state else None
    ledger = PrivacyLedger(policy.epsilon_budget, policy.delta, list(prior.entries) if prior else [])
    s = ledger.summary()
    print(json.dumps({"policy": policy.to_dict(), "ledger": s,
                      "rounds": [e.__dict__ for e in ledger.entries]}, indent=1))
    return 0


def show_identity(state_dir: str | None) -> int:
    """Print the client id and Ed25519 public key of the identity in ``state_dir`` (created if missing)."""
    from client_native.client import load_or_create_key
    from flcore.wire import client_id_for
    from flcrypto import default_crypto

    if not state_dir:
        print("fl-client: error: --show-identity needs --state-dir (without one each run is a fresh identity)",
              file=sys.stderr)
        return 2
    pk = default_crypto().ed25519_public_key(load_or_create_key(Path(state_dir).expanduser() / "identity.key"))
    print(json.dumps({"client_id": client_id_for(pk), "public_key": pk.hex()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        policy = policy_from_args(args)
        if args.show_ledger:
            return show_ledger(args.state_dir, policy)
        if args.show_identity:
            return show_identity(args.state_dir)
        check_flower_args(args)
        required = ("server",) if args.flower_app else ("server", "data")
        missing = [f"--{n}" for n in required if not getattr(args, n)]
        if missing:
            raise ValueError(f"the following arguments are required: {', '.join(missing)}")
        data = None if args.flower_app else load_data(args.data, args.partition, args.partition_seed)
        key = bytes.fromhex(args.coordinator_key) if args.coordinator_key else None
        if key is not None and len(key) != 32:
            raise ValueError("--coordinator-key must be 32 bytes of hex")
        dp = DpSgdOptions(args.dp_sgd_noise, args.dp_sgd_clip) if args.dp_sgd_noise > 0 else None
        if not 0 < args.max_message_mb <= 2047:
            raise ValueError("--max-message-mb must be in (0, 2047]")
        opts = ClientOptions(args.server, args.transport, args.state_dir, key, args.threads, dp,
                             max_message_bytes=int(args.max_message_mb * 1024 * 1024), policy=policy,
                             enrolment_token=args.enrolment_token.strip(), ca_file=args.ca_file)
        client = flower_client(args, opts) if args.flower_app else NativeClient(data, opts)
    except (ValueError, ClientError) as exc:
        print(f"fl-client: error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("fl-client").info("client %s, %s", client.client_id, f"{len(data.x)} local samples"
                                        if data is not None else f"Flower app {args.flower_app}")
    try:
        summary = asyncio.run(client.run(args.max_rounds))
    except ClientError as exc:
        print(f"fl-client: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    eps = f", DP-SGD ε={summary.dp_sgd_epsilon:.2f}" if summary.dp_sgd_epsilon is not None else ""
    led = summary.ledger
    own = (f"; own ledger: ε={_num(led.get('epsilon'))} if secure aggregation holds, "
           f"{_num(led.get('epsilon_worst_case'))} worst case (δ={policy.delta:g}, {led.get('participations', 0)} "
           f"rounds)") if led else ""
    declined = f"; declined {len(summary.declined)} task(s): {summary.declined[-1][0]}" if summary.declined else ""
    print(f"fl-client {summary.client_id[:8]}: {len(summary.rounds)} rounds, {summary.reconnects} reconnects"
          f"{eps}{own}{declined}; {summary.stop_reason}")
    return 0


def _num(x: object) -> str:
    return "∞" if x is None else f"{x:.3g}"


if __name__ == "__main__":
    sys.exit(main())
