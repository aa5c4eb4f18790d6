"""Entry point the JS loader calls once Pyodide, libsodium-wrappers and the kernel are ready.

``install(sodium, kernel_exports)`` registers :class:`SodiumCrypto` as :func:`flcrypto.default_crypto` (so every
client-core module – RandomStream, SecAgg+, .mle signing – uses libsodium-wrappers) and creates the kernel and
the :class:`WasmBackend`, whose kernel bit packing it registers with :func:`mle.bitpack.set_accelerator` (so
.mle ``field_packed`` tensors – SecAgg+ masked inputs – are packed and unpacked in the kernel); :func:`kernel`,
:func:`backend`, :func:`crypto` hand them to the session code.
"""

from __future__ import annotations

from typing import Any

_state: dict[str, Any] = {}


def install(sodium: Any, kernel_exports: Any) -> None:
    from client_pyodide.backend import WasmBackend
    from client_pyodide.kernel import Kernel
    from client_pyodide.sodium_crypto import SodiumCrypto
    from flcrypto import set_default_crypto
    from mle.bitpack import set_accelerator

    crypto = SodiumCrypto(sodium)
    set_default_crypto(crypto)
    k = Kernel(kernel_exports)
    backend = WasmBackend(k)
    set_accelerator(backend.pack_bits, backend.unpack_bits)  # .mle field_packed: masked inputs packed in the kernel
    _state.update(crypto=crypto, kernel=k, backend=backend)


def _get(name: str) -> Any:
    if name not in _state:
        raise RuntimeError("client_pyodide.runtime.install() has not run (the JS loader calls it)")
    return _state[name]


def crypto() -> Any:
    return _get("crypto")


def kernel() -> Any:
    return _get("kernel")


def backend() -> Any:
    return _get("backend")


def model(spec_json: str, max_batch: int = 64, fresh: bool = False) -> Any:
    """The :class:`client_pyodide.engine.KernelModel` for a model spec given as JSON (as in .mle metadata).

    Kernel memory is a bump allocator that never frees a model, so models are cached by (spec, max_batch): a
    client calls this every round and gets the same buffers back (load the new global model with
    ``set_parameters``). ``fresh=True`` allocates a separate one (tests, or two models side by side)."""
    from client_pyodide.engine import KernelModel
    from flcore.modelspec import ModelSpec

    spec = ModelSpec.from_json(spec_json)
    key = (spec.to_json(), int(max_batch))
    cache = _state.setdefault("models", {})
    if fresh or key not in cache:
        m = KernelModel(spec, kernel(), max_batch)
        if fresh:
            return m
        cache[key] = m
    return cache[key]
