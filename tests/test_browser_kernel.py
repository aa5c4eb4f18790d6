"""The WASM kernel in real headless Chromium (Pyodide + client_pyodide.engine) against torch autograd: loss,
logits and the gradient of every parameter for every layer type within 1e-4; an epoch of SGD with momentum
against torch.optim.SGD; a browser client's local round of ``serve --model cnn:digits`` on a digits shard against
torch and the coordinator's numpy evaluation; the committed flkernel.wasm is exactly what build.sh produces."""

from __future__ import annotations

import base64
import filecmp
import hashlib
import json
import random
import shutil
import subprocess

import numpy as np
import pytest
import torch
from browser_support import CLIENT_WEB, browser_page  # noqa: F401  (module-scoped fixture)

from client_native.torch_model import build_module, flatten, get_parameters, set_parameters, unflatten
from coordinator.federation.evaluation import forward
from flcore.modelspec import CNN_DIGITS, Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU, mlp

pytestmark = pytest.mark.browser

SPECS = {
    "mlp": mlp([20, 32, 17, 5]),
    "conv_pad_pool": ModelSpec((2, 9, 9), (Conv2d(2, 4, 3, 1, 1), ReLU(), MaxPool2d(2), Flatten(), Linear(64, 6)), 6),
    "conv_stride_overlap_pool": ModelSpec(
        (3, 11, 10), (Conv2d(3, 5, 3, 2, 0), ReLU(), MaxPool2d(3, 1), Conv2d(5, 4, 2, 1, 1), Flatten(),
                      Linear(4 * 4 * 3, 7), ReLU(), Linear(7, 3)), 3),
    "flatten_first": ModelSpec((1, 4, 4), (Flatten(), Linear(16, 9), ReLU(), Linear(9, 4)), 4),
    "wide_mlp": mlp([300, 261, 10]),  # K and N beyond the GEMM's 256 blocks, odd tails
    "cnn_digits": CNN_DIGITS,  # serve --model cnn:digits: two conv-pool blocks, the second on 8 channels
}

BROWSER_GRAD = """
import json
from client_pyodide import runtime
from flcore.modelspec import ModelSpec
a = json.loads(ARGS)
m = runtime.model(a["spec"], max_batch=64, fresh=True)
m.set_flat_parameters(a["params"])
loss, g = m.loss_and_gradients(a["x"], a["y"])
result = {"loss": loss, "grads": list(g), "logits": m.logits(a["x"]), "params": list(m.flat_parameters())}
"""


def _run(page, template: str, args: dict):
    return page.run(f"ARGS = {json.dumps(json.dumps(args))}\n" + template)


def _torch_loss_grads(spec: ModelSpec, params: np.ndarray, x: np.ndarray, y: np.ndarray):
    module = build_module(spec)
    set_parameters(module, unflatten(params, spec))
    logits = module(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
    loss.backward()
    grads = np.concatenate([p.grad.detach().numpy().reshape(-1) for p in module.parameters()])
    return float(loss.detach()), grads, logits.detach().numpy()


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("batch", [1, 13, 32])
def test_gradients_equal_torch_autograd(browser_page, name: str, batch: int) -> None:  # noqa: F811
    spec = SPECS[name]
    rng = np.random.default_rng(hash((name, batch)) % 2**32)
    init = spec.init_parameters(seed=batch)
    params = np.concatenate([np.asarray(init[n], np.float32) for n, _ in spec.parameter_shapes()])
    params += rng.normal(0, 0.05, params.shape).astype(np.float32)  # off the initialization's symmetry
    x = rng.normal(0, 1, (batch, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, batch).astype(np.int64)
    out = _run(browser_page, BROWSER_GRAD, {"spec": spec.to_json(), "params": params.tolist(),
                                            "x": x.reshape(-1).tolist(), "y": y.tolist()})
    t_loss, t_grads, t_logits = _torch_loss_grads(spec, params, x, y)
    assert np.array_equal(np.asarray(out["params"], np.float32), params)  # round trip through kernel memory
    np.testing.assert_allclose(np.asarray(out["logits"]), t_logits, atol=1e-4, rtol=1e-4)
    assert abs(out["loss"] - t_loss) <= 1e-4 * max(1.0, abs(t_loss))
    g = np.asarray(out["grads"], np.float32)
    assert g.shape == t_grads.shape
    assert np.abs(t_grads).max() > 1e-3  # the comparison is not vacuous
    np.testing.assert_allclose(g, t_grads, atol=1e-4, rtol=1e-4)
    # every layer with parameters gets its own check, so a wrong layout cannot hide behind a small tensor
    pos = 0
    for pname, shape in spec.parameter_shapes():
        n = int(np.prod(shape))
        np.testing.assert_allclose(g[pos: pos + n], t_grads[pos: pos + n], atol=1e-4, rtol=1e-4, err_msg=pname)
        pos += n


BROWSER_TRAIN = """
import json
from client_pyodide import runtime
a = json.loads(ARGS)
m = runtime.model(a["spec"], max_batch=32)
m.set_flat_parameters(a["params"])
delta, loss = m.train(a["x"], a["y"], epochs=2, batch_size=a["batch"], lr=0.05, momentum=0.9, seed=a["seed"])
ev = m.evaluate(a["x"], a["y"])
result = {"delta": list(delta), "loss": loss, "eval": ev, "pred": m.predict(a["x"][: 3 * a["d"]])}
"""


def test_sgd_epochs_match_torch_sgd_with_momentum(browser_page) -> None:  # noqa: F811
    spec = SPECS["conv_pad_pool"]
    n, batch, seed = 45, 8, 7
    rng = np.random.default_rng(3)
    init = spec.init_parameters(seed=1)
    params = np.concatenate([np.asarray(init[k], np.float32) for k, _ in spec.parameter_shapes()])
    x = rng.normal(0, 1, (n, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, n).astype(np.int64)
    d = int(np.prod(spec.input_shape))
    out = _run(browser_page, BROWSER_TRAIN, {"spec": spec.to_json(), "params": params.tolist(), "d": d,
                                             "x": x.reshape(-1).tolist(), "y": y.tolist(), "batch": batch,
                                             "seed": seed})
    # the same visiting order in torch: random.Random(seed).shuffle per epoch (engine.train's contract)
    module = build_module(spec)
    set_parameters(module, unflatten(params, spec))
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    r, perm, losses = random.Random(seed), list(range(n)), []
    for _ in range(2):
        r.shuffle(perm)
        for i in range(0, n, batch):
            idx = perm[i: i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
            losses.append(loss.item())
    t_delta = flatten(get_parameters(module), spec) - params
    np.testing.assert_allclose(np.asarray(out["delta"], np.float32), t_delta, atol=1e-4, rtol=1e-3)
    assert abs(out["loss"] - float(np.mean(losses))) < 1e-4
    with torch.no_grad():
        logits = module(torch.from_numpy(x))
    t_eval_loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)))
    assert abs(out["eval"][0] - t_eval_loss) < 1e-4
    assert out["eval"][1] == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))
    assert out["pred"] == logits.argmax(1).numpy()[:3].tolist()


def test_cnn_digits_local_round_matches_torch_and_the_coordinator(browser_page) -> None:  # noqa: F811
    """A browser client's local round of ``serve --model cnn:digits`` (client_pyodide.client's call: the shard's 64
    flat features, the coordinator's train config – 3 epochs, batch 32, lr 0.2, no momentum – seed = round) gives
    torch's delta on the same examples as (n, 1, 8, 8) images, visited in the same order; the trained model's
    logits in the browser are the coordinator's numpy evaluation's (coordinator.federation.evaluation.forward)."""
    from client_native.cli import load_data

    data = load_data("digits:3/10", "dirichlet:0.5", 0)  # the shard /demo/shard?i=3&n=10 serves
    x, y = np.asarray(data.x, np.float32), np.asarray(data.y, np.int64)
    assert x.shape[1:] == (64,) and len(x) > 32
    spec, epochs, batch, lr, seed = CNN_DIGITS, 3, 32, 0.2, 4
    init = spec.init_parameters(seed=0)
    params = np.concatenate([np.asarray(init[k], np.float32) for k, _ in spec.parameter_shapes()])
    out = _run(browser_page, """
import json
from client_pyodide import runtime
a = json.loads(ARGS)
m = runtime.model(a["spec"], max_batch=64, fresh=True)
m.set_flat_parameters(a["params"])
before = m.evaluate(a["x"], a["y"])
delta, loss = m.train(a["x"], a["y"], epochs=a["epochs"], batch_size=a["batch"], lr=a["lr"], momentum=0.0,
                      seed=a["seed"])
result = {"delta": list(delta), "loss": loss, "before": before, "after": m.evaluate(a["x"], a["y"]),
          "logits": m.logits(a["x"])}
""", {"spec": spec.to_json(), "params": params.tolist(), "x": x.reshape(-1).tolist(), "y": y.tolist(),
      "epochs": epochs, "batch": batch, "lr": lr, "seed": seed})
    module = build_module(spec)
    set_parameters(module, unflatten(params, spec))
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    images = torch.from_numpy(x.reshape(-1, *spec.input_shape))
    r, perm, losses = random.Random(seed), list(range(len(x))), []
    for _ in range(epochs):
        r.shuffle(perm)
        for i in range(0, len(x), batch):
            idx = perm[i: i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(images[idx]), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
            losses.append(loss.item())
    t_delta = flatten(get_parameters(module), spec) - params
    delta = np.asarray(out["delta"], np.float32)
    assert np.abs(t_delta).max() > 1e-2  # the round moved the model
    np.testing.assert_allclose(delta, t_delta, atol=1e-4, rtol=1e-3)
    assert abs(out["loss"] - float(np.mean(losses))) < 1e-4
    assert out["after"][0] < out["before"][0]
    trained = unflatten(params + delta, spec)
    np.testing.assert_allclose(np.asarray(out["logits"]), forward(spec, trained, x), atol=1e-4, rtol=1e-4)


def test_training_learns_digits_in_browser(browser_page) -> None:  # noqa: F811
    from sklearn.datasets import load_digits

    xd, yd = load_digits(return_X_y=True)
    x = (xd / 16.0).astype(np.float32)[:600]
    y = yd[:600]
    spec = mlp([64, 32, 10])
    init = spec.init_parameters(seed=0)
    params = np.concatenate([np.asarray(init[k], np.float32) for k, _ in spec.parameter_shapes()])
    out = _run(browser_page, """
import json
from client_pyodide import runtime
a = json.loads(ARGS)
m = runtime.model(a["spec"], max_batch=32)
m.set_flat_parameters(a["params"])
before = m.evaluate(a["x"], a["y"])
m.train(a["x"], a["y"], epochs=15, batch_size=32, lr=0.1, momentum=0.9, seed=1)
result = [before, m.evaluate(a["x"], a["y"])]
""", {"spec": spec.to_json(), "params": params.tolist(), "x": x.reshape(-1).tolist(), "y": y.tolist()})
    (loss0, acc0), (loss1, acc1) = out
    assert loss1 < loss0 / 3 and acc1 > 0.9 > acc0


def test_gemm_matches_numpy_on_odd_shapes(browser_page) -> None:  # noqa: F811
    """fl_gemm (the blocked, register-tiled product behind every layer) on shapes that hit every edge: rows not a
    multiple of 4, columns not a multiple of 8 or 4, K and N across the 256 blocks; overwrite and accumulate."""
    shapes = [(1, 1, 1), (3, 5, 7), (4, 8, 1), (5, 9, 300), (33, 260, 17), (64, 10, 513), (7, 513, 259)]
    rng = np.random.default_rng(5)
    mats = [(rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32),
             rng.normal(size=(m, n)).astype(np.float32)) for m, n, k in shapes]
    blobs = [[base64.b64encode(t.tobytes()).decode() for t in abc] for abc in mats]
    out = browser_page.run(f"SHAPES = {shapes!r}\nMATS = {blobs!r}\n" + """
import array, base64
from client_pyodide import runtime
k = runtime.kernel()
res = []
for (m, n, kk), blob in zip(SHAPES, MATS):
    with k.scratch():
        pa, pb, pc = (k.put(base64.b64decode(t)) for t in blob)
        k.x.fl_gemm(m, n, kk, pa, pb, pc, 1)
        acc = k.read(pc, 4 * m * n)
        k.x.fl_gemm(m, n, kk, pa, pb, pc, 0)
        res.append([base64.b64encode(acc).decode(), base64.b64encode(k.read(pc, 4 * m * n)).decode()])
result = res
""")
    out = [[np.frombuffer(base64.b64decode(t), np.float32) for t in pair] for pair in out]
    for (m, n, _), (a, b, c), (acc, over) in zip(shapes, mats, out, strict=True):
        want = a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(np.asarray(over).reshape(m, n), want, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(acc).reshape(m, n), want + c, atol=1e-4, rtol=1e-4)


def test_models_are_cached_per_spec(browser_page) -> None:  # noqa: F811
    out = browser_page.run("""
from client_pyodide import runtime
from flcore.modelspec import mlp
k = runtime.kernel()
spec = mlp([8, 4, 2]).to_json()
a, b = runtime.model(spec), runtime.model(spec)
mark = k.x.fl_mark()
for _ in range(50):
    runtime.model(spec)
same_memory = k.x.fl_mark() == mark
result = [a is b, runtime.model(spec, fresh=True) is not a, same_memory]
""")
    assert out == [True, True, True]


def test_kernel_rejects_bad_inputs(browser_page) -> None:  # noqa: F811
    out = browser_page.run("""
from client_pyodide import runtime
from flcore.modelspec import mlp
m = runtime.model(mlp([4, 3]).to_json(), max_batch=2)
errs = []
for call in (lambda: m.loss_and_gradients([0.0] * 12, [0, 1, 2]),   # batch 3 > max_batch 2
             lambda: m.loss_and_gradients([0.0] * 8, [0, 3]),       # label out of range
             lambda: m.loss_and_gradients([0.0] * 7, [0, 1]),       # not whole examples
             lambda: m.set_flat_parameters([float("nan")] * 15)):
    try:
        call()
        errs.append(None)
    except ValueError as exc:
        errs.append(str(exc))
result = errs
""")
    assert all(e for e in out), out


def test_nothing_is_fetched_from_outside_the_local_server(browser_page) -> None:  # noqa: F811
    """Pyodide, libsodium, the kernel and the Python files all come from the local server (every other request
    would be aborted and recorded by the fixture's route guard)."""
    assert browser_page.external_requests == []
    assert browser_page.timings["ready"] > 0
    files = browser_page.run("import sys, privacy.secagg.client, flcore.modelspec\n"
                             "result = sorted(m.__file__ for m in list(sys.modules.values()) "
                             "if getattr(m, '__file__', None) and m.__file__.startswith('/home/pyodide/fl/'))")
    assert "/home/pyodide/fl/privacy/secagg/client.py" in files and "/home/pyodide/fl/flcore/modelspec.py" in files


def test_typed_arrays_from_js_feed_the_engine(browser_page) -> None:  # noqa: F811
    """The SDK hands data over as JS typed arrays (Float32Array/Int32Array): the engine takes them as they are."""
    out = browser_page.js("""() => {
        const py = window.fl.pyodide;
        const rt = py.pyimport("client_pyodide.runtime");
        const m = rt.model(JSON.stringify({input_shape: [4], num_classes: 3, loss: "softmax_cross_entropy",
                                           layers: [{type: "Linear", in_features: 4, out_features: 3}]}), 8);
        m.set_flat_parameters(new Float32Array([1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0]));
        const x = new Float32Array([0.1, 0.9, 0.2, 0, 3, 1, 2, 0]);
        const pred = m.predict(x).toJs();
        const res = m.train.callKwargs(x, new Int32Array([1, 0]), {epochs: 3, batch_size: 2, lr: 0.5});
        const delta = Array.from(res.get(0));
        m.destroy(); rt.destroy();
        return {pred, n: delta.length};
    }""")
    assert out == {"pred": [1, 0], "n": 15}


BROWSER_BITPACK = """
import array, base64, hashlib
from client_pyodide import runtime
from mle import bitpack
from privacy.secagg.wire import encode_masked
be = runtime.backend()
h = lambda b: hashlib.sha256(b).hexdigest()
res = []
for m, n, blob in CASES:
    v = array.array("H" if m <= 16 else "I", base64.b64decode(blob))
    kernel, pure = be.pack_bits(v, m), bitpack.pack_pure(v, m)
    res.append([h(kernel), h(pure), be.unpack_bits(kernel, n, m) == v, bitpack.unpack_pure(pure, n, m) == v,
                h(encode_masked(v, m, 5, 2))])
acc = bitpack._accelerator
result = {"res": res, "registered": acc is not None and acc == (be.pack_bits, be.unpack_bits)}
"""


def test_bit_packing_in_the_kernel_and_in_pure_python_matches_cpython(browser_page) -> None:  # noqa: F811
    """.mle field_packed in the browser: the kernel's fl_pack_bits/fl_unpack_bits (WasmBackend.pack_bits/unpack_bits,
    registered with mle.bitpack by runtime.install) and mle.bitpack's pure-Python packer in Pyodide give CPython's
    numpy bytes for m from 1 to 32 and lengths around the kernel's 8-byte tail, unpack back exactly, and a masked
    input encoded in the browser (encode_masked → the kernel) is byte for byte the one CPython writes."""
    from mle import bitpack
    from privacy.secagg.wire import encode_masked

    rng = np.random.default_rng(11)
    cases, want = [], []
    for m in (1, 3, 7, 12, 16, 17, 20, 31, 32):
        for n in (0, 1, 9, 77, 20_000 if m in (12, 20) else 1001):
            v = rng.integers(0, 1 << m, n, dtype=np.uint64).astype(np.uint16 if m <= 16 else np.uint32)
            cases.append((m, n, base64.b64encode(v.tobytes()).decode()))
            packed = bitpack.pack_numpy(v, m).tobytes()
            digest = hashlib.sha256(packed).hexdigest()
            want.append([digest, digest, True, True, hashlib.sha256(encode_masked(v, m, 5, 2)).hexdigest()])
    out = browser_page.run(f"CASES = {cases!r}\n" + BROWSER_BITPACK)
    assert out["registered"]
    for case, got, expected in zip(cases, out["res"], want, strict=True):
        assert got == expected, case[:2]


def test_committed_wasm_is_reproducible(tmp_path) -> None:
    """flkernel.wasm is committed; rebuilding it with the pinned flags gives the same bytes."""
    if not (shutil.which("clang") and shutil.which("wasm-ld")):
        pytest.fail("clang and wasm-ld are needed (Debian packages clang, lld): run `make web-setup`", pytrace=False)
    out = tmp_path / "flkernel.wasm"
    subprocess.run(["sh", str(CLIENT_WEB / "kernel" / "build.sh"), str(out)], check=True, capture_output=True)
    assert filecmp.cmp(out, CLIENT_WEB / "kernel" / "flkernel.wasm", shallow=False), \
        "client_web/kernel/flkernel.wasm is stale: run client_web/kernel/build.sh and commit the result"
