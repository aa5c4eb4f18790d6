"""The Python half of the browser client (client_web/): code that runs *inside Pyodide*.

Pure Python (stdlib only at import time) next to the very same client-core files (``flcrypto``, ``mle``,
``flcore``, ``privacy``) that the native client imports; the JS loader (``client_web/js/runtime.js``) copies
them all from the server into Pyodide's file system and then calls :func:`client_pyodide.runtime.install`.

- :mod:`client_pyodide.kernel` – the WASM SIMD kernel (``client_web/kernel/flkernel.wasm``) through Pyodide's
  JS FFI: linear-memory allocation and copies in/out.
- :mod:`client_pyodide.engine` – training of a :class:`flcore.modelspec.ModelSpec` on the kernel (forward,
  backward, softmax cross-entropy, SGD), parameters in torch's layout.
- :mod:`client_pyodide.backend` – :class:`WasmBackend`, a :class:`privacy.backends.Backend` whose vector math
  (mod-2^m masking, stochastic rounding) runs in the kernel, bit-identical to the pure-Python backend.
- :mod:`client_pyodide.sodium_crypto` – :class:`SodiumCrypto`, the libsodium-wrappers implementation of
  :class:`flcrypto.Crypto`, byte-identical to PyNaCl.
- :mod:`client_pyodide.bundle` – which repository files the browser loads (used by the HTTP server side).

Only :mod:`bundle` is meaningful on CPython; the others need Pyodide's ``js`` / ``pyodide.ffi`` modules, imported
lazily.
"""
