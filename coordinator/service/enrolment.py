"""``fl-coordinator enrol-token``: issue an enrolment token offline, for a coordinator run with
``--enrolment token`` (coordinator/federation/admission.py, docs/operations.md).

    fl-coordinator enrol-token --data-dir fl-data --client-key 3b6a…(64 hex) --valid-days 30

The token is the coordinator identity key's signature over the client's public key and an expiry; the client
passes it in its hello (``fl-client --enrolment-token``, the browser SDK's ``enrolmentToken`` option) the first
time it connects. It is bound to that one key: useless to anyone else, so it may travel by e-mail. Only the
operator, who holds ``DATA_DIR/coordinator.key``, can issue one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

KEY_FILE = "coordinator.key"  # the same file serve creates (coordinator/service/server.py)


def add_enrol_token_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enrol-token", help="issue an enrolment token for a client key (enrolment = token)",
                       description="Print an enrolment token for one client public key, signed with the "
                                   "coordinator's identity key in --data-dir (run serve once first to create it). "
                                   "The client passes it with fl-client --enrolment-token or the SDK's "
                                   "enrolmentToken option; a client shows its key with fl-client --show-identity.")
    p.add_argument("--data-dir", required=True, help="the coordinator's data dir (holds coordinator.key)")
    p.add_argument("--client-key", required=True, help="the client's Ed25519 public key (64 hex characters)")
    p.add_argument("--valid-days", type=float, default=30.0, help="days the token can be used to enrol "
                   "(default 30); an enrolled client needs no token again")
    p.set_defaults(func=_enrol_token)


def issue(data_dir: str | Path, client_key_hex: str, valid_days: float, now: float | None = None) -> tuple[str, int]:
    """(token, expiry in Unix seconds). ``ValueError`` with a one-line reason on bad input or a missing key."""
    from coordinator.federation.admission import issue_token

    path = Path(data_dir) / KEY_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: start fl-coordinator serve with this --data-dir once first") \
            from None
    if len(seed) != 32:
        raise ValueError(f"{path}: expected a 32-byte Ed25519 seed, found {len(seed)} bytes")
    try:
        key = bytes.fromhex(client_key_hex.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError("--client-key must be an Ed25519 public key: 64 hex characters (fl-client --show-identity "
                         "prints it)")
    if not 0 < valid_days <= 3650:
        raise ValueError("--valid-days must be in (0, 3650]")
    expires = int((time.time() if now is None else now) + valid_days * 86400)
    return issue_token(seed, key, expires), expires


def _enrol_token(args: argparse.Namespace) -> int:
    try:
        token, expires = issue(args.data_dir, args.client_key, args.valid_days)
    except ValueError as exc:
        print(f"fl-coordinator enrol-token: error: {exc}", file=sys.stderr)
        return 2
    print(token)
    when = dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"enrolment token for {args.client_key.strip()[:16]}…, usable until {when}", file=sys.stderr)
    return 0
