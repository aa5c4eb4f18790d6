"""Admission control for the transports (issue 13 F1, F11): connection counts, message rates and buffered bytes.

Pure bookkeeping – no socket, no asyncio; the clock is injected – so every rule is unit-testable. The transports
(:mod:`coordinator.service.transport_ws`, :mod:`coordinator.service.transport_grpc`) share one :class:`Admission`
and ask it at three points:

- a new TCP connection (WebSocket) or session (gRPC): :meth:`Admission.open` → ``None`` or the refusal reason
  (global cap ``max_connections``, per-IP cap ``max_connections_per_ip``); :meth:`Admission.close` when it ends;
- every incoming frame/message: :meth:`Admission.allow_message` with the connection's own :class:`TokenBucket`
  (``conn_msg_rate``/``conn_msg_burst``) and the peer IP's shared one (``ip_msg_rate``/``ip_msg_burst``) → ``None``
  or the reason to close (WebSocket 1008, gRPC RESOURCE_EXHAUSTED);
- whenever a connection's buffered incoming bytes change: :meth:`Admission.set_buffered` → whether the total over all
  connections is still within ``max_buffered_mb`` (else the transport closes that connection with 1009).

Refusals are counted in :attr:`Admission.counters` and logged at most once per ``log_interval`` seconds per kind
(:meth:`Admission.refused`), so a flood cannot turn into a log flood.

Loopback peers (127.0.0.0/8, ::1) are exempt from the per-IP rules when ``exempt_loopback`` (the default): local
demos and benchmarks run hundreds of clients from one address, and behind a reverse proxy on the same host every
peer is the proxy – per-IP limits belong in the proxy then. The global and per-connection rules always apply.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("fl-coordinator.admission")


@dataclass(frozen=True)
class LimitSettings:
    """``[limits]`` of ``fl-coordinator serve`` (docs/operations.md): safe for a public deployment, generous for
    real clients (a client sends a handful of messages per round)."""

    pre_auth_max_frame_kb: int = 64  # largest frame before the connection is authenticated (a hello is < 1 KiB)
    max_buffered_mb: float = 256.0  # incoming bytes held in partial/queued frames, all connections together
    max_connections: int = 0  # WebSocket/HTTP connections + gRPC sessions; 0 = open-file limit − 128 (≥ 64)
    max_connections_per_ip: int = 256
    exempt_loopback: bool = True  # 127.0.0.0/8 and ::1 skip the per-IP rules (not the global/per-connection ones)
    conn_msg_rate: float = 50.0  # frames/s per connection (token bucket) ...
    conn_msg_burst: int = 100  # ... and its burst
    ip_msg_rate: float = 500.0  # frames/s per peer IP over all its connections
    ip_msg_burst: int = 1000
    # HTTP/2 concurrent streams (client sessions) on one gRPC connection; grpc's default is unlimited. Native clients
    # in one process share one connection (grpc's global subchannel pool: tests/e2e workers run up to 15), so this
    # must exceed the clients a single process runs; the per-IP and global caps bound the rest
    grpc_max_streams_per_connection: int = 32
    close_timeout: float = 2.0  # seconds a peer gets to answer a WebSocket close before the socket is dropped
    log_line_max_chars: int = 2000  # longer log records are cut, "… (N chars)" appended
    log_repeats_per_minute: int = 10  # the same message template at most this often, then one summary line

    def validate(self) -> None:
        for name in ("pre_auth_max_frame_kb", "max_connections_per_ip", "conn_msg_burst", "ip_msg_burst",
                     "grpc_max_streams_per_connection", "log_line_max_chars", "log_repeats_per_minute"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("max_buffered_mb", "conn_msg_rate", "ip_msg_rate", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_connections < 0:
            raise ValueError("max_connections must be >= 0 (0 = from the open-file limit)")
        if self.log_line_max_chars < 80:
            raise ValueError("log_line_max_chars must be >= 80")

    @property
    def pre_auth_max_bytes(self) -> int:
        return self.pre_auth_max_frame_kb * 1024

    @property
    def max_buffered_bytes(self) -> int:
        return int(self.max_buffered_mb * 1024 * 1024)

    def connection_cap(self) -> int:
        """``max_connections``, or with 0 the soft open-file limit minus 128 descriptors kept for the store,
        model files and logs (at least 64)."""
        if self.max_connections:
            return self.max_connections
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft == resource.RLIM_INFINITY:
                soft = 65536
        except (ImportError, OSError, ValueError):
            soft = 1024
        return max(64, soft - 128)


@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; starts full. :meth:`take` with the current (monotonic) time."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float | None = None

    def take(self, now: float, n: float = 1.0) -> bool:
        if self.stamp is None:
            self.tokens, self.stamp = float(self.burst), now
        else:
            self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.stamp) * self.rate)
            self.stamp = max(self.stamp, now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


def peer_ip(peer: str | tuple | None) -> str:
    """The IP of a peer address: ``("1.2.3.4", 5)``, gRPC's ``"ipv4:1.2.3.4:5"`` / ``"ipv6:[::1]:5"``, or text."""
    if isinstance(peer, tuple):
        return str(peer[0]) if peer else ""
    text = str(peer or "")
    for prefix in ("ipv4:", "ipv6:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            if text.startswith("["):
                return text[1:text.find("]")] if "]" in text else text[1:]
            return text.rsplit(":", 1)[0] if prefix == "ipv4:" else text
    return text


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass
class _Peer:
    connections: int = 0
    bucket: TokenBucket | None = None


@dataclass
class Admission:
    """The shared admission state of one service (see the module docstring)."""

    limits: LimitSettings = field(default_factory=LimitSettings)
    clock: Callable[[], float] = time.monotonic
    log_interval: float = 60.0
    counters: dict[str, int] = field(default_factory=dict)
    connections: int = 0
    buffered: int = 0

    def __post_init__(self) -> None:
        self.limits.validate()
        self.cap = self.limits.connection_cap()
        self._peers: dict[str, _Peer] = {}
        self._held: dict[object, int] = {}
        self._logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    # ── connections ──────────────────────────────────────────────────────────────────────────────────
    def _per_ip(self, ip: str) -> bool:
        return not (self.limits.exempt_loopback and is_loopback(ip))

    def open(self, ip: str) -> str | None:
        """Admit a new connection from ``ip`` (counted until :meth:`close`) or return why not (not counted)."""
        if self.connections >= self.cap:
            return self.refused("connections", f"{self.connections} connections open (max_connections {self.cap})")
        peer = self._peers.get(ip)
        if peer is not None and self._per_ip(ip) and peer.connections >= self.limits.max_connections_per_ip:
            return self.refused("connections_per_ip", f"{peer.connections} connections open from {ip} "
                                f"(max_connections_per_ip {self.limits.max_connections_per_ip})")
        if peer is None:
            peer = self._peers[ip] = _Peer()
        peer.connections += 1
        self.connections += 1
        return None

    def close(self, ip: str, key: object = None) -> None:
        """A connection admitted by :meth:`open` ended (``key``: its :meth:`set_buffered` key, released too)."""
        if key is not None:
            self.set_buffered(key, 0)
        peer = self._peers.get(ip)
        if peer is None:
            return
        self.connections -= 1
        peer.connections -= 1
        if peer.connections <= 0:  # per-IP state lives only while the IP has connections: bounded memory
            del self._peers[ip]

    def peers(self) -> int:
        return len(self._peers)

    # ── message rates ────────────────────────────────────────────────────────────────────────────────
    def connection_bucket(self) -> TokenBucket:
        return TokenBucket(self.limits.conn_msg_rate, self.limits.conn_msg_burst)

    def allow_message(self, bucket: TokenBucket, ip: str) -> str | None:
        """One incoming frame on a connection with ``bucket`` from ``ip``: ``None`` or the reason to close it."""
        now = self.clock()
        if not bucket.take(now):
            return self.refused("message_rate", f"over {self.limits.conn_msg_rate:g} messages/s (burst "
                                f"{self.limits.conn_msg_burst}) on one connection from {ip}")
        peer = self._peers.get(ip)
        if peer is not None and self._per_ip(ip):
            if peer.bucket is None:
                peer.bucket = TokenBucket(self.limits.ip_msg_rate, self.limits.ip_msg_burst)
            if not peer.bucket.take(now):
                return self.refused("message_rate_per_ip", f"over {self.limits.ip_msg_rate:g} messages/s (burst "
                                    f"{self.limits.ip_msg_burst}) from {ip}")
        return None

    # ── buffered bytes ───────────────────────────────────────────────────────────────────────────────
    def set_buffered(self, key: object, held: int) -> bool:
        """Connection ``key`` now holds ``held`` incoming bytes; False if the total exceeds ``max_buffered_mb``
        (the caller closes that connection, then calls ``set_buffered(key, 0)`` or :meth:`close`)."""
        old = self._held.pop(key, 0)
        if held > 0:
            self._held[key] = held
        self.buffered += held - old
        if held > old and self.buffered > self.limits.max_buffered_bytes:
            self.refused("buffered_bytes", f"{self.buffered} bytes buffered in incoming frames (max_buffered_mb "
                         f"{self.limits.max_buffered_mb:g})")
            return False
        return True

    # ── refusals: counted, logged at most once per interval per kind ─────────────────────────────────
    def refused(self, kind: str, detail: str) -> str:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        now = self.clock()
        last = self._logged.get(kind)
        if last is None or now - last >= self.log_interval:
            skipped = self._suppressed.pop(kind, 0)
            more = f" ({skipped} more since the last report)" if skipped else ""
            log.warning("admission: refused (%s): %s%s", kind, detail, more)
            self._logged[kind] = now
        else:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
        return detail


__all__ = ["Admission", "LimitSettings", "TokenBucket", "is_loopback", "peer_ip"]
