"""``fl-coordinator mle inspect FILE`` and ``fl-coordinator mle verify FILE --key PUBKEY``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from mle.errors import FormatError, SignatureError
from mle.reader import load


def _read_key(spec: str) -> bytes:
    """A public key given as 64 hex digits, or a file holding 32 raw bytes or 64 hex digits."""
    text = spec.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if os.path.isfile(spec):
        with open(spec, "rb") as f:
            data = f.read()
        if len(data) == 32:
            return data
        try:
            key = bytes.fromhex(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) == 32:
            return key
    raise ValueError(f"--key must be 64 hex digits or a file with a 32-byte Ed25519 public key: {spec!r}")


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        f = load(args.file)
        if args.check:
            f.verify_all()
    except (FormatError, OSError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    h = f.header
    print(f"file      {args.file}")
    print(f"format    .mle version {h.version}, {h.body_length} bytes body, "
          f"{'signed (Ed25519)' if f.signed else 'unsigned'}")
    print(f"sha256    {f.sha256()}")
    print("metadata")
    print("  " + json.dumps(f.metadata, indent=2, sort_keys=True).replace("\n", "\n  "))
    rows: list[tuple[str, ...]] = [("name", "dtype", "shape", "encoding", "segments (role:dtype@offset+len crc32)")]
    for e in f.entries:
        segs = " ".join(f"{s.role_name}:{s.dtype.name}@{s.offset}+{s.length} {s.crc32:08x}" for s in e.segments)
        params = f" {json.dumps(e.params)}" if e.params else ""
        rows.append((e.name, e.dtype.name, "x".join(map(str, e.shape)) or "scalar", e.encoding_name + params, segs))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"tensors   {len(f.entries)}")
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    if args.check:
        print("checksums ok")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        key = _read_key(args.key)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        f = load(args.file, trusted_keys=[key], require_signature=True)
        f.verify_all()
    except SignatureError as exc:
        print(f"INVALID: {args.file}: {exc}", file=sys.stderr)
        return 1
    except (FormatError, OSError) as exc:
        print(f"INVALID: {args.file}: {exc}", file=sys.stderr)
        return 2
    print(f"OK: {args.file} is signed by {key.hex()}")
    return 0


def add_mle_parser(sub: Any) -> None:
    """Register ``mle inspect`` and ``mle verify`` under the ``fl-coordinator`` parser."""
    p = sub.add_parser("mle", help="inspect and verify .mle tensor files")
    msub = p.add_subparsers(dest="mle_command", required=True)
    pi = msub.add_parser("inspect", help="print a file's metadata and tensor table")
    pi.add_argument("file")
    pi.add_argument("--check", action="store_true", help="also verify every tensor's CRC32")
    pi.set_defaults(func=cmd_inspect)
    pv = msub.add_parser("verify", help="verify the signature against a trusted public key (exit 1 if invalid)")
    pv.add_argument("file")
    pv.add_argument("--key", required=True, help="trusted Ed25519 public key: 64 hex digits or a key file")
    pv.set_defaults(func=cmd_verify)
