"""The real console script: ``fl-coordinator mle inspect`` / ``verify``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np

import mle

SEED = bytes(range(32))


def _cli() -> list[str]:
    exe = shutil.which("fl-coordinator", path=os.path.dirname(sys.executable))
    assert exe, "the fl-coordinator console script is not installed in this environment"
    return [exe]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_cli(), *args], capture_output=True, text=True, timeout=120)


def test_inspect_prints_metadata_and_table(tmp_path) -> None:
    path = tmp_path / "m.mle"
    mle.save(path, {"layer.weight": np.zeros((3, 4), np.float32), "q": mle.quantize_int8(np.ones(5, np.float32))},
             {"task": "digits"}, signing_key=SEED)
    out = _run("mle", "inspect", str(path), "--check")
    assert out.returncode == 0, out.stderr
    assert '"task": "digits"' in out.stdout
    assert "layer.weight" in out.stdout and "f32" in out.stdout and "3x4" in out.stdout
    assert "int8" in out.stdout and "signed" in out.stdout and "checksums ok" in out.stdout


def test_verify_accepts_the_right_key_and_rejects_others(tmp_path) -> None:
    path = tmp_path / "m.mle"
    mle.save(path, {"w": np.ones(3, np.float32)}, signing_key=SEED)
    good = mle.public_key(SEED).hex()
    assert _run("mle", "verify", str(path), "--key", good).returncode == 0
    keyfile = tmp_path / "key.pub"
    keyfile.write_text(good + "\n")
    assert _run("mle", "verify", str(path), "--key", str(keyfile)).returncode == 0
    foreign = _run("mle", "verify", str(path), "--key", mle.public_key(bytes(32)).hex())
    assert foreign.returncode == 1 and "INVALID" in foreign.stderr
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    (tmp_path / "bad.mle").write_bytes(bytes(blob))
    assert _run("mle", "verify", str(tmp_path / "bad.mle"), "--key", good).returncode == 1
    mle.save(tmp_path / "u.mle", {"w": np.ones(3, np.float32)})
    assert _run("mle", "verify", str(tmp_path / "u.mle"), "--key", good).returncode == 1
    (tmp_path / "junk.mle").write_bytes(b"not an mle file at all")
    junk = _run("mle", "inspect", str(tmp_path / "junk.mle"))
    assert junk.returncode == 2 and "bad magic" in junk.stderr
    assert _run("mle", "verify", str(path), "--key", "zz").returncode == 2
