"""``make demo``: the main job. For now a short walkthrough of the .mle format; the federation demo replaces
it when the coordinator lands (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import mle


def _step(text: str) -> None:
    print(f"\n── {text}", flush=True)


def main() -> int:
    rng = np.random.default_rng(0)
    coordinator_seed = bytes(range(32))  # demo key; a real coordinator keeps its seed in its data dir
    coordinator_pk = mle.public_key(coordinator_seed)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        _step("a digits-sized MLP (64-128-10) saved as a signed .mle model")
        model = {
            "0.weight": rng.normal(0, 0.1, (128, 64)).astype(np.float32), "0.bias": np.zeros(128, np.float32),
            "2.weight": rng.normal(0, 0.1, (10, 128)).astype(np.float32), "2.bias": np.zeros(10, np.float32),
        }
        path = out / "global-round-0.mle"
        mle.save(path, model, {"kind": "model", "round": 0}, signing_key=coordinator_seed)
        print(f"wrote {path.name}: {path.stat().st_size} bytes, signed by {coordinator_pk.hex()[:16]}…")

        _step("fl-coordinator mle inspect")
        subprocess.run([sys.executable, "-m", "coordinator.cli", "mle", "inspect", str(path)], check=True)

        _step("a client verifies it against the coordinator key it trusts, then memory-maps it")
        f = mle.load(path, trusted_keys=[coordinator_pk], require_signature=True)
        print(f"signature ok; '0.weight' is a zero-copy view: shape {f['0.weight'].shape}, "
              f"owns its data: {f['0.weight'].flags.owndata}")

        _step("the client trains and sends a compact delta naming its base model")
        delta = {k: rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in model.items()}
        raw = mle.dumps(delta, mle.delta_metadata(f))
        q8 = mle.dumps({k: mle.quantize_int8(v, axis=0 if v.ndim > 1 else None) for k, v in delta.items()},
                       mle.delta_metadata(f))
        sp = mle.dumps({k: mle.sparse_topk(v, fraction=0.01) for k, v in delta.items()}, mle.delta_metadata(f))
        for label, blob in (("raw float32", raw), ("int8 per-channel", q8), ("top-1% sparse", sp)):
            print(f"  {label:<17} {len(blob):>7} bytes  ({len(blob) / len(raw):6.1%} of raw)")
        for label, blob in (("int8", q8), ("sparse", sp)):
            new = mle.apply_delta(f, mle.loads(blob))
            err = max(float(np.abs(new[k] - (model[k] + delta[k])).max()) for k in model)
            note = " (the dropped 99% of the update)" if label == "sparse" else " (within scale/2)"
            print(f"applied the {label} delta: max error vs exact update {err:.2e}{note}")

        _step("tampering and foreign keys are refused")
        bad = bytearray(path.read_bytes())
        bad[200] ^= 1
        try:
            mle.loads(bytes(bad), trusted_keys=[coordinator_pk])
        except (mle.SignatureError, mle.FormatError) as exc:
            print(f"tampered file: {type(exc).__name__}: {exc}")
        foreign = mle.public_key(bytes(32)).hex()
        r = subprocess.run([sys.executable, "-m", "coordinator.cli", "mle", "verify", str(path), "--key", foreign],
                           capture_output=True, text=True)
        print(f"foreign key:   `fl-coordinator mle verify --key {foreign[:8]}…` exit {r.returncode}: "
              f"{r.stderr.strip().split(': ', 2)[-1]}")
        other = mle.loads(mle.dumps({k: v + 1 for k, v in model.items()}))
        try:
            mle.apply_delta(other, mle.loads(q8))
        except mle.DeltaBaseError as exc:
            print(f"wrong base:    {type(exc).__name__}: {exc}")
    print("\nSee docs/mle-format.md for the format; `make test` runs the test suite.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
