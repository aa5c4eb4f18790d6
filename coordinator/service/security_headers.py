"""Security headers of every HTTP response on the coordinator's port (issue 13, F18).

The coordinator's origin is where browser clients keep their signing keys (IndexedDB), so nothing on it may run
script from elsewhere, be framed, or be sniffed into another type:

- ``Content-Security-Policy`` (:data:`DEFAULT_CSP`): everything from this origin only. ``'wasm-unsafe-eval'``
  lets Pyodide, libsodium and our kernel compile WebAssembly (without it the runtime cannot start –
  ``tests/test_web_csp_browser.py``); JavaScript ``eval`` stays forbidden: Pyodide's ``pyodide.asm.mjs`` has
  ``eval`` calls, but only on paths the client never takes (side modules' EM_ASM, ``emscripten_run_script``) – the
  demo loads, trains and joins without ``'unsafe-eval'`` (the same test, and the browser e2e tests). The demo
  page's inline import map is allowed by its SHA-256 (added per page by :func:`csp_for`), not by
  ``'unsafe-inline'``; inline styles are allowed (``style-src 'unsafe-inline'``: the demo uses ``style=``).
  ``connect-src 'self'`` covers the page's ``fetch`` and its WebSocket to the same host and port (``ws:``/``wss:``
  match ``'self'`` in CSP 3). ``frame-ancestors 'none'``: never framed.
- ``X-Frame-Options: DENY`` (the same for browsers without CSP 2), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer``, ``Cross-Origin-Opener-Policy: same-origin``.

An operator may replace the policy (``[http] content_security_policy``); it is then sent verbatim (no hashes added).
"""

from __future__ import annotations

import base64
import hashlib
import re

DEFAULT_CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
               "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")

STATIC_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                  "Cross-Origin-Opener-Policy": "same-origin"}

_INLINE_SCRIPT = re.compile(rb"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP source expressions (``'sha256-…'``) of the inline ``<script>`` elements of an HTML page."""
    out = []
    for m in _INLINE_SCRIPT.finditer(html):
        digest = base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()
        expr = f"'sha256-{digest}'"
        if expr not in out:
            out.append(expr)
    return out


def csp_for(content_type: str, body: bytes, policy: str = DEFAULT_CSP) -> str:
    """The policy for one response: ``policy``, with the hashes of an HTML page's inline scripts added to its
    ``script-src`` (only for the default policy – an operator's own is sent as written)."""
    if policy != DEFAULT_CSP or not content_type.startswith("text/html"):
        return policy
    hashes = inline_script_hashes(body)
    if not hashes:
        return policy
    return policy.replace("script-src 'self'", "script-src 'self' " + " ".join(hashes), 1)


def check_policy(policy: str) -> str:
    """``policy`` if it can be sent as a header value (visible ASCII and spaces, no CR/LF), else ``ValueError``."""
    if not policy.strip() or not all(" " <= c <= "~" for c in policy):
        raise ValueError("a Content-Security-Policy must be non-empty visible ASCII on one line")
    return policy.strip()


def security_headers(content_type: str, body: bytes, policy: str = DEFAULT_CSP) -> dict[str, str]:
    return {"Content-Security-Policy": csp_for(content_type, body, policy), **STATIC_HEADERS}


__all__ = ["DEFAULT_CSP", "STATIC_HEADERS", "check_policy", "csp_for", "inline_script_hashes", "security_headers"]
