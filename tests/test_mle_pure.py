"""The numpy-free path: with numpy unimportable (as in Pyodide), write → sign → read → verify round-trips."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys, builtins
    _real_import = builtins.__import__
    def _blocked(name, *args, **kwargs):
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("numpy is blocked in this test")
        return _real_import(name, *args, **kwargs)
    builtins.__import__ = _blocked
    import array, struct
    import mle
    assert "numpy" not in sys.modules
    seed = bytes(range(32))
    pk = mle.public_key(seed)
    w = array.array("f", [0.5 * i - 3 for i in range(24)])
    tensors = {
        "w": mle.Tensor(w, "f32", (4, 6)),
        "i": array.array("q", [1, -2, 3]),
        "h": mle.Tensor([1.5, -2.25, 0.0], "f16", (3,)),
        "q": mle.quantize_int8(list(w), axis=0, shape=(4, 6)),
        "s": mle.sparse_topk(list(w), k=5, value_dtype="f32"),
        "fe": mle.FieldElements([1, 2, 65535], modulus_bits=16),
        "fp": mle.FieldElements(array.array("I", [1, 2, 4095, 7, 0x1FFFF]), modulus_bits=17, packed=True),
    }
    blob = mle.dumps(tensors, {"kind": "pure"}, signing_key=seed)
    f = mle.loads(blob, trusted_keys=[pk], require_signature=True)
    assert f.signer == pk and f.metadata == {"kind": "pure"}
    assert isinstance(f["w"], memoryview) and f["w"].tolist() == w.tolist()
    assert f["i"].tolist() == [1, -2, 3]
    assert list(f["h"]) == [1.5, -2.25, 0.0]
    scale = f.raw("q", "scale").cast("f").tolist()
    q = list(f["q"])
    for ch in range(4):
        for j in range(6):
            assert abs(q[ch * 6 + j] - w[ch * 6 + j]) <= scale[ch] / 2 + 1e-6
    s = list(f["s"])
    assert sum(1 for v in s if v != 0) == 5 and s[23] == w[23] and s[0] == 0
    assert f.field_values("fe")[1].tolist() == [1, 2, 65535]
    assert f.field_values("fp") == (17, f["fp"]) and f["fp"].tolist() == [1, 2, 4095, 7, 0x1FFFF]
    assert len(f.raw("fp")) == 11  # 5 × 17 bits
    try:
        mle.loads(blob, trusted_keys=[mle.public_key(bytes(32))])
    except mle.SignatureError:
        pass
    else:
        raise AssertionError("foreign key accepted")
    base = mle.loads(mle.dumps({"w": mle.Tensor(w, "f32", (4, 6))}))
    delta = mle.loads(mle.dumps({"w": mle.quantize_int8([0.1] * 24, shape=(4, 6))}, mle.delta_metadata(base)))
    new = mle.apply_delta(base, delta)
    assert all(abs(a - (b + 0.1)) < 1e-3 for a, b in zip(new["w"], w))
    assert "numpy" not in sys.modules
    print("PURE-OK")
    """
)


def test_mle_works_with_numpy_unimportable() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "PURE-OK" in out.stdout
