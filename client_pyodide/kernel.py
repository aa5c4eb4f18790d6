"""The WASM kernel from Python in Pyodide: memory management and copies through the JS FFI.

The kernel (``client_web/kernel/*.c``, ABI in docs/browser-kernel.md) owns one linear memory with a bump
allocator: :meth:`Kernel.alloc` for buffers that live as long as the kernel (a model's parameters), and
``with kernel.scratch():`` for temporaries, released when the block exits. Pointers are byte offsets.
Copies use a fresh ``Uint8Array`` view per call, so they stay valid after the memory grows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class KernelError(RuntimeError):
    """The kernel refused a call (out of memory, invalid arguments)."""


class Kernel:
    """``exports``: the ``WebAssembly.Instance.exports`` of flkernel.wasm (a JsProxy)."""

    def __init__(self, exports: Any) -> None:
        import js  # Pyodide only

        self.x = exports
        self._memory = exports.memory
        self._u8 = js.Uint8Array

    # ── memory ──────────────────────────────────────────────────────────────────────────────────────
    def alloc(self, nbytes: int) -> int:
        ptr = self.x.fl_alloc(max(0, int(nbytes)))
        if not ptr:
            raise KernelError(f"kernel out of memory allocating {nbytes} bytes")
        return ptr

    @contextmanager
    def scratch(self) -> Iterator[None]:
        """Everything allocated inside the block is freed when it exits."""
        mark = self.x.fl_mark()
        try:
            yield
        finally:
            self.x.fl_release(mark)

    def view(self, ptr: int, nbytes: int) -> Any:
        return self._u8.new(self._memory.buffer, ptr, nbytes)

    def write(self, ptr: int, data: Any) -> None:
        """Copy a Python buffer (bytes, array.array, memoryview) to ``ptr``."""
        mv = memoryview(data).cast("B")
        if mv.nbytes:
            self.view(ptr, mv.nbytes).assign(mv)

    def put(self, data: Any) -> int:
        """Allocate (in the current scope) and copy ``data``; returns the pointer."""
        mv = memoryview(data).cast("B")
        ptr = self.alloc(mv.nbytes)
        self.write(ptr, mv)
        return ptr

    def read(self, ptr: int, nbytes: int) -> bytes:
        return self.view(ptr, nbytes).to_bytes() if nbytes else b""

    def read_into(self, ptr: int, buf: Any) -> Any:
        """Fill the writable Python buffer ``buf`` from ``ptr``; returns ``buf``."""
        mv = memoryview(buf).cast("B")
        if mv.nbytes:
            self.view(ptr, mv.nbytes).assign_to(mv)
        return buf
