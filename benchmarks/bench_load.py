"""Load benchmark (issue 13): a real ``fl-coordinator serve`` on loopback with a few real native clients
(``fl-client`` processes, torch, secure aggregation in one group) running rounds continuously, then

- **baseline**: rounds/s with only the real clients, ``/health`` latency p50/p95/p99 (a fresh connection per
  request, spread over the window), coordinator RSS (``/proc/PID/status`` VmRSS);
- **idle load**, for each N in ``--sizes``: N WebSocket connections that complete the real handshake
  (``flcore.session.ClientSession``: hello/auth with real Ed25519 keys, the coordinator's challenge verified) and
  then idle without saying ``ready``. Printed: connections held at the end of the window (open and answering a
  ping), RSS per connection ((RSS loaded − RSS before) / N), ``/health`` percentiles, rounds/s with the load against
  an unloaded window just before it, and RSS a few seconds after the connections were closed, twice (it must not
  keep growing);
- **floods** (each bounded in count and time, loopback only), each against an unloaded reference window measured
  just before it: F1 partial 64 MiB WebSocket frames from unauthenticated connections (header + a few MiB, then
  a stall); F2 failing ``/demo/shard?i=0&n=64`` from 8 threads (skipped when the coordinator serves no web assets);
  F4 a Sybil flood (hundreds of fresh identities enrolling over a few connections, saying ``ready`` and never
  revealing, plus a few connections whose identities stay ready 12 s: longer than a probation); F11 one replayed
  ``hello`` in a loop; F13 100 slow readers of the largest static file
  (``pyodide.asm.wasm``) that never read. For each: rounds/s during / reference (ratio), ``/health`` p99, RSS before,
  peak and after, and what the coordinator refused (closed connections, error replies, refused requests).

The idle loads and the floods run in two phases, each with its own coordinator (fresh data dir), real clients and
baseline, so that the idle pool's identities and the settings it needs do not shape the floods. After each flood
the rounds/s of the next 2 × ``--settle`` seconds show whether the federation recovered; F4 runs last because a
Sybil flood can do lasting damage (on 19bb576 it stopped the federation for good). F2 and F13 need the web assets (``client_web/node_modules``, a real
directory: a symlinked one is not served) and are skipped with a note otherwise.

Every connection comes from its own loopback source address (Linux routes all of 127/8 to lo): the idle pool
spreads over ``--conns-per-ip`` connections per address (like many hosts), each flood comes from a single
attacker address, ``/health`` from a few more – so per-IP admission limits act on the attackers as they would in a
deployment, and the benchmark needs no generous per-IP caps. The flood and pool clients run in worker processes
(this file with ``--worker``) so that the main process only measures.

The coordinator gets its settings from a TOML file this benchmark writes (printed in the output): everything the
benchmark depends on is explicit. Settings that only some coordinator versions have (the ``[limits]`` of issue 13:
a deadline for ``ready``, a global connection cap) are passed only when ``fl-coordinator serve --help`` lists them;
``--serve-toml-extra FILE`` merges a TOML file over the generated one and ``--set section.key=value`` overrides one
setting (both win over everything else).

Run (2–3 minutes with ``--quick``: N = 200, 6 s windows; the full run – N = 1000, 5000, 10000, 20–30 s
windows – takes 10–15 minutes and needs ~2 GB of memory)::

    .venv-bench/bin/python benchmarks/bench_load.py --quick [--out load.json]
    .venv-bench/bin/python benchmarks/bench_load.py --sizes 1000,5000,10000 --out load.json
    .venv-bench/bin/python benchmarks/bench_load.py --floods F1,F11 --serve-toml-extra limits.toml

Markdown tables go to stdout, progress lines to stderr, everything measured (and the settings, the commit and
the load average) to ``--out`` as JSON. The soft RLIMIT_NOFILE is raised to the hard limit (the coordinator
inherits it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import http.client
import json
import math
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WASM_PATH = "/sdk/node_modules/pyodide/pyodide.asm.wasm"
WASM_FILE = REPO / "client_web" / "node_modules" / "pyodide" / "pyodide.asm.wasm"
SHARD_PATH = "/demo/shard?i=0&n=64"
ATTACKER_IP = {"F1": "127.66.1.1", "F2": "127.66.2.1", "F4": "127.66.4.1", "F11": "127.66.11.1",
               "F13": "127.66.13.1"}
PROBE_IPS = [f"127.0.2.{i}" for i in range(1, 9)]
# F4 last: a Sybil flood can do lasting damage – on 19bb576 it stopped the federation for good (a Sybil connection
# that said hello with a new key after being selected, then closed: KeyError in Engine._round_end at the abort)
FLOODS = ("F1", "F2", "F11", "F13", "F4")
FLOOD_TEXT = {
    "F1": "partial 64 MiB frames, unauthenticated",
    "F2": f"failing {SHARD_PATH}, 8 threads",
    "F4": "Sybil identities: enrol, ready, never reveal (churning + patient)",
    "F11": "one replayed hello in a loop",
    "F13": "100 slow readers of pyodide.asm.wasm",
}
TCP_STATES = {1: "established", 7: "closed", 8: "close_wait", 4: "fin_wait1", 5: "fin_wait2", 6: "time_wait",
              9: "last_ack", 11: "closing"}


def note(msg: str) -> None:
    print(f"[bench_load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pool_ip(k: int) -> str:
    """Source address of the idle pool's k-th address (127.1.0.1, 127.1.0.2, …)."""
    return f"127.1.{k // 250}.{k % 250 + 1}"


def percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(xs)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]

    return {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "max": s[-1]}


def code_version() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def http_get(port: int, path: str, src: str = "127.0.0.1", timeout: float = 30.0) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(src, 0))
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# ── the coordinator's settings ───────────────────────────────────────────────────────────────────────────────
def serve_options() -> dict[str, str]:
    """{option name (snake_case): the TOML section its --help group names} of this checkout's ``serve``."""
    out = subprocess.run([sys.executable, "-m", "coordinator.service.cli", "serve", "--help"], cwd=REPO,
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, check=True).stdout
    options, group = {}, ""
    for line in out.splitlines():
        m = re.match(r"^([A-Za-z][^:]*):\s*$", line)  # "server:", "limits (admission control, …):"
        if m:
            group = m.group(1).split()[0].lower()
            continue
        for opt in re.findall(r"^\s{2,}--([a-z0-9][a-z0-9-]*)", line):
            if not opt.startswith("no-") and group not in ("options", "optional", "usage"):
                options[opt.replace("-", "_")] = group
    return options


# What the benchmark depends on beyond [server]/[federation] (which every version has). Each is passed only when
# `serve --help` lists an option matching the pattern, in the section its --help group names; `profiles` says
# whether the coordinator of the idle load, of the floods, or both get it. Everything else keeps serve's defaults
# (the production ones), so the floods meet the admission control an operator would run.
CONDITIONAL: list[tuple[str, str, set[str], str]] = [
    (r"^(ready|idle)_(timeout|deadline)$", "long", {"idle"},
     "the idle pool authenticates and never says ready: its connections must outlive the window"),
    (r"^enrolment_per_minute$", "unlimited", {"idle"},
     "the idle pool enrols up to max(N) fresh identities within seconds (the flood coordinator keeps the default)"),
    (r"^max_connections$", "biggest", {"idle", "flood"},
     "a global connection cap must admit the largest pool plus the real clients and the probes"),
    (r"^exempt_loopback$", "false", {"idle", "flood"},
     "every loopback source address stands for one host: per-IP rules apply to the attackers"),
    (r"^conn_msg_rate$", "200", {"idle", "flood"},
     "a real client sends ~7 frames per round, and the bench's run up to ~15 rounds/s"),
    (r"^conn_msg_burst$", "400", {"idle", "flood"}, "(the same)"),
    (r"^ip_msg_rate$", "2000", {"idle", "flood"}, "the real clients share 127.0.0.1"),
    (r"^ip_msg_burst$", "4000", {"idle", "flood"}, "(the same)"),
]


def build_settings(args: argparse.Namespace, clients: int, profile: str) -> tuple[dict[str, Any], list[str]]:
    """The coordinator's TOML for ``profile`` ("idle": the idle-load phase, "flood": the floods) and notes on
    what was passed or could not be."""
    opts = serve_options()
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "ws_port": 0, "grpc_port": 0, "log_level": "warning",
                   "max_message_mb": 64.0, "exit_when_finished": False},
        "federation": {"rounds": 1_000_000, "clients_per_round": clients, "min_clients_per_round": 0,
                       "group_size": clients, "aggregator": "mean", "noise_multiplier": 0.0,
                       "epsilon": math.inf, "train_timeout": 30.0, "phase_timeout": args.phase_timeout,
                       "ban_threshold": 0.2},
        "model": {"spec": "mlp:64-32-10"},
        "evaluation": {"dataset": "none"},
    }
    notes = []
    values: dict[str, Any] = {"long": 3600.0 + 4 * (args.window + args.ref_window) + 2 * args.setup_timeout,
                              "unlimited": 0.0, "biggest": max(args.sizes or [0]) + 2048, "false": False,
                              "200": 200.0, "400": 400, "2000": 2000.0, "4000": 4000}
    for pattern, what, profiles, why in CONDITIONAL:
        if profile not in profiles:
            continue
        hits = [o for o in opts if re.search(pattern, o)]
        if not hits:
            notes.append(f"{pattern.strip('^$')}: not in this coordinator's serve --help, nothing passed")
        for o in hits:
            doc.setdefault(opts[o], {})[o] = values[what]
            notes.append(f"[{opts[o]}] {o} = {to_toml_value(values[what])} ({why})")
    if args.serve_toml_extra:
        extra = tomllib.loads(Path(args.serve_toml_extra).read_text())
        for section, table in extra.items():
            if isinstance(table, dict):
                doc.setdefault(section, {}).update(table)
            else:
                raise SystemExit(f"--serve-toml-extra: {section} is not a table")
        notes.append(f"merged {args.serve_toml_extra}")
    for item in args.set:
        key, eq, value = item.partition("=")
        section, _, name = key.partition(".")
        if not name or not eq:
            raise SystemExit(f"--set {item!r}: expected section.key=value")
        try:
            v: Any = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            v = value
        doc.setdefault(section, {})[name] = v
        notes.append(f"--set {section}.{name} = {v!r}")
    return doc, notes


def to_toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(to_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def to_toml(doc: dict[str, Any]) -> str:
    lines = []
    for section, table in doc.items():
        lines += [f"[{section}]", *(f"{k} = {to_toml_value(v)}" for k, v in table.items()), ""]
    return "\n".join(lines)


# ── processes ─────────────────────────────────────────────────────────────────────────────────────────────────
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Coordinator:
    def __init__(self, tmp: Path, toml_text: str) -> None:
        self.tmp = tmp
        (tmp / "serve.toml").write_text(toml_text)
        self.log = tmp / "coordinator.log"
        port_file = tmp / "ports.json"
        cmd = [sys.executable, "-m", "coordinator.service.cli", "serve", "--config", str(tmp / "serve.toml"),
               "--data-dir", str(tmp / "data"), "--port-file", str(port_file)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env())
        deadline = time.time() + 60
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise SystemExit(f"coordinator exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.time() > deadline:
                raise SystemExit(f"coordinator did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        time.sleep(0.1)
        ports = json.loads(port_file.read_text())
        self.ws_port, self.grpc_port, self.key = ports["ws_port"], ports["grpc_port"], ports["coordinator_key"]
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def rss_kib(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.rss_kib()))
            time.sleep(0.2)

    def peak_mib(self, t0: float, t1: float) -> float:
        vals = [r for t, r in self.samples if t0 <= t <= t1]
        return max(vals, default=self.rss_kib()) / 1024

    def alive(self) -> bool:
        return self.proc.poll() is None

    def round(self, timeout: float = 30.0) -> int:
        _, body = http_get(self.ws_port, "/health", PROBE_IPS[0], timeout)
        return int(json.loads(body)["round"])

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_clients(coord: Coordinator, n: int, transport: str, tmp: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    server = f"127.0.0.1:{coord.grpc_port if transport == 'grpc' else coord.ws_port}"
    for i in range(n):
        cmd = [sys.executable, "-m", "client_native.cli", "--server", server, "--transport", transport,
               "--data", f"digits:{i}/{n}", "--coordinator-key", coord.key, "--min-group-size", str(n),
               "--min-noise", "0", "--epsilon-budget", "inf", "--log-level", "warning"]
        with open(tmp / f"client-{i}.log", "wb") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env()))
    return procs


class Worker:
    """This file run with ``--worker JSON``: prints JSON lines, reads commands on stdin."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(params)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, env=_env(), text=True)

    def line(self, timeout: float) -> dict[str, Any] | None:
        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        if not out or not out[0]:
            return None
        return json.loads(out[0])

    def send(self, cmd: str) -> None:
        try:
            self.proc.stdin.write(cmd + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            pass

    def finish(self, timeout: float = 60.0) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ── measuring ─────────────────────────────────────────────────────────────────────────────────────────────────
def measure(coord: Coordinator, seconds: float, requests: int, label: str) -> dict[str, Any]:
    """rounds/s, /health latency percentiles (ms) and RSS over a window of ``seconds``."""
    t0 = time.time()
    lat: list[float] = []
    obs: list[tuple[float, int]] = []
    failures = 0
    interval = seconds / max(1, requests)
    for i in range(requests):
        target = t0 + i * interval
        if time.time() < target:
            time.sleep(target - time.time())
        if time.time() > t0 + seconds:
            break
        start = time.perf_counter()
        try:
            status, body = http_get(coord.ws_port, "/health", PROBE_IPS[i % len(PROBE_IPS)], 30.0)
            if status != 200:
                raise OSError(f"HTTP {status}")
            obs.append((time.time(), int(json.loads(body)["round"])))
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            failures += 1
        lat.append((time.perf_counter() - start) * 1000)
    while time.time() < t0 + seconds:
        time.sleep(0.05)
    with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
        obs.append((time.time(), coord.round(30.0)))
    t1 = time.time()
    rate = (obs[-1][1] - obs[0][1]) / (obs[-1][0] - obs[0][0]) if len(obs) >= 2 and obs[-1][0] > obs[0][0] else 0.0
    res = {"label": label, "seconds": round(t1 - t0, 2), "rounds": (obs[-1][1] - obs[0][1]) if obs else 0,
           "rounds_per_s": round(rate, 3), "health_ms": {k: (None if v is None else round(v, 2))
                                                         for k, v in percentiles(lat).items()},
           "health_requests": len(lat), "health_failures": failures,
           "rss_mib": round(coord.rss_kib() / 1024, 1), "rss_peak_mib": round(coord.peak_mib(t0, t1), 1),
           "load_average": [round(x, 2) for x in os.getloadavg()]}
    note(f"{label}: {res['rounds_per_s']} rounds/s, /health p50 {res['health_ms']['p50']} ms p99 "
         f"{res['health_ms']['p99']} ms, RSS {res['rss_mib']} MiB (peak {res['rss_peak_mib']})")
    return res


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def run_idle(coord: Coordinator, n: int, args: argparse.Namespace, phase_start_kib: int) -> dict[str, Any]:
    """N idle connections. RSS per connection is given against the RSS just before the pool opened (memory a previous
    pool freed is reused, so after a larger pool this underestimates) and against the phase's start (before any
    pool: includes the identities enrolled so far, which the coordinator keeps)."""
    ref = measure(coord, args.ref_window, args.health_requests // 2, f"idle {n}: reference")
    rss_before = coord.rss_kib()
    per = args.workers_per or max(1, math.ceil(n / 5000))
    n_ips = max(1, math.ceil(n / args.conns_per_ip))
    workers, first = [], 0
    t0 = time.time()
    for w in range(per):
        count = n // per + (w < n % per)
        workers.append(Worker({"kind": "idle", "port": coord.ws_port, "key": coord.key, "first": first,
                               "count": count, "n_ips": n_ips, "concurrency": args.handshake_concurrency,
                               "timeout": args.setup_timeout}))
        first += count
    setup = [w.line(args.setup_timeout + 60) or {"established": 0, "failed": "no answer"} for w in workers]
    setup_s = time.time() - t0
    established = sum(int(s.get("established", 0)) for s in setup)
    errors: collections.Counter[str] = collections.Counter()
    for s in setup:
        errors.update(s.get("errors", {}))
    note(f"idle {n}: {established} established in {setup_s:.1f} s ({dict(errors) or 'no errors'})")
    loaded = measure(coord, args.window, args.health_requests, f"idle {n}: loaded")
    rss_loaded = coord.rss_kib()
    for w in workers:
        w.send("check")
    checks = [w.line(120) or {} for w in workers]
    held = sum(int(c.get("held", 0)) for c in checks)
    closed_by_server = sum(int(c.get("closed_by_server", 0)) for c in checks)
    for w in workers:
        w.send("close")
    for w in workers:
        w.line(120)
        w.finish(60)
    time.sleep(args.settle)
    rss_after1 = coord.rss_kib()
    time.sleep(args.settle)
    rss_after2 = coord.rss_kib()
    res = {"n": n, "established": established, "setup_s": round(setup_s, 1), "handshake_errors": dict(errors),
           "held": held, "closed_by_server": closed_by_server, "reference": ref, "loaded": loaded,
           "ratio": ratio(loaded["rounds_per_s"], ref["rounds_per_s"]),
           "rss_before_mib": round(rss_before / 1024, 1), "rss_loaded_mib": round(rss_loaded / 1024, 1),
           "kib_per_connection": round((rss_loaded - rss_before) / max(1, established), 2),
           "kib_per_connection_vs_phase_start": round((rss_loaded - phase_start_kib) / max(1, established), 2),
           "rss_phase_start_mib": round(phase_start_kib / 1024, 1),
           "rss_after_mib": [round(rss_after1 / 1024, 1), round(rss_after2 / 1024, 1)],
           "settle_s": args.settle}
    note(f"idle {n}: held {held}/{n}, {res['kib_per_connection']} KiB/connection, RSS after "
         f"{res['rss_after_mib']} MiB")
    return res


def flood_params(kind: str, coord: Coordinator, args: argparse.Namespace) -> dict[str, Any]:
    p: dict[str, Any] = {"kind": kind, "port": coord.ws_port, "key": coord.key, "ip": ATTACKER_IP[kind],
                         "duration": args.window}
    if kind == "F1":
        p.update(connections=args.f1_connections, payload_mib=args.f1_payload_mib, max_attempts=50)
    elif kind == "F2":
        p.update(threads=8)
    elif kind == "F4":
        p.update(connections=args.f4_connections, identities=args.f4_identities, hold=args.f4_hold,
                 patient=args.f4_patient, patient_hold=args.f4_patient_hold)
    elif kind == "F11":
        p.update(max_messages=200_000)
    elif kind == "F13":
        p.update(connections=100)
    return p


def safe_round(coord: Coordinator) -> int:
    try:
        return coord.round(30.0)
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return -1


def status_line(port: int, path: str) -> int:
    """The HTTP status of ``GET path`` (the body is not read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(PROBE_IPS[-1], 0)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        m = re.match(rb"HTTP/1\.[01] (\d{3})", s.recv(64))
        return int(m.group(1)) if m else 0


def run_flood(kind: str, coord: Coordinator, args: argparse.Namespace, web: bool) -> dict[str, Any]:
    if kind in ("F2", "F13") and not web:
        return {"flood": kind, "skipped": "the coordinator serves no web assets (client_web/node_modules missing)"}
    if kind == "F13" and (st := status_line(coord.ws_port, WASM_PATH)) != 200:
        return {"flood": kind, "skipped": f"GET {WASM_PATH} answers {st} (a symlinked node_modules is not served)"}
    ref = measure(coord, args.ref_window, args.health_requests // 2, f"{kind}: reference")
    rss_before = coord.rss_kib()
    w = Worker(flood_params(kind, coord, args))
    started = w.line(30) or {}
    t0 = time.time()
    during = measure(coord, args.window, args.health_requests, f"{kind}: during")
    stats = w.line(args.window + 90) or {"error": "no result from the flood worker"}
    w.finish(30)
    t1 = time.time()
    r1 = safe_round(coord)
    time.sleep(args.settle)
    rss_after1 = coord.rss_kib()
    time.sleep(args.settle)
    rss_after2 = coord.rss_kib()
    r2 = safe_round(coord)
    after = round((r2 - r1) / (time.time() - t1), 3) if r1 >= 0 and r2 >= 0 else None
    refused, summary = refusals(kind, stats)
    res = {"flood": kind, "what": FLOOD_TEXT[kind], "worker_start": started, "reference": ref, "during": during,
           "ratio": ratio(during["rounds_per_s"], ref["rounds_per_s"]), "rss_before_mib": round(rss_before / 1024, 1),
           "rss_peak_mib": round(coord.peak_mib(t0, t1), 1),
           "rss_after_mib": [round(rss_after1 / 1024, 1), round(rss_after2 / 1024, 1)],
           "settle_s": args.settle, "rounds_per_s_after": after, "attack": stats, "refused": refused, "summary": summary}
    note(f"{kind}: ratio {res['ratio']}, {after} rounds/s in the {2 * args.settle:g} s after it, refused {refused}; "
         f"{summary}")
    return res


def refusals(kind: str, s: dict[str, Any]) -> tuple[int, str]:
    """How many of the flood's attempts the coordinator refused, and a one-line summary of what it did."""
    g = s.get
    if "error" in s:
        return 0, str(s["error"])
    if kind == "F1":
        n = g("closed_by_server", 0) + g("refused_http", 0) + g("connect_failed", 0)
        return n, (f"{g('attempts', 0)} attempts, {g('upgraded', 0)} upgraded, {g('mib_sent', 0)} MiB written, closed "
                   f"by server {g('closed_by_server', 0)} (codes {g('close_codes', {})}, median "
                   f"{g('close_after_s_p50')} s after the header), refused before upgrade "
                   f"{g('refused_http', 0) + g('connect_failed', 0)}, held at end {g('held_at_end', 0)}")
    if kind == "F2":
        st = g("status", {})
        n = sum(v for k, v in st.items() if k in ("429", "503")) + g("conn_errors", 0)
        return n, (f"{g('requests', 0)} requests ({g('requests_per_s', 0)}/s), statuses {st}, connection errors "
                   f"{g('conn_errors', 0)}, latency p50 {g('latency_ms', {}).get('p50')} ms")
    if kind == "F4":
        n = sum(g("errors", {}).values()) + g("closed_by_server", 0) + g("connect_failed", 0)
        return n, (f"{g('identities', 0)} identities tried, {g('enrolled', 0)} welcomed, {g('selected', 0)} selects "
                   f"received (never revealed), errors {g('errors', {})}, closed by server "
                   f"{g('closed_by_server', 0)}, connect failures {g('connect_failed', 0)}")
    if kind == "F11":
        replies = g("replies", {})
        n = sum(v for k, v in replies.items() if k != "challenge") + g("closed_by_server", 0)
        return n, (f"{g('sent', 0)} hellos sent, replies {replies} ({g('challenges_per_s', 0)} challenges/s), "
                   f"closed by server {g('closed_by_server', 0)} {g('close_codes', {})}")
    if kind == "F13":
        st, tcp = g("status", {}), g("tcp_state_at_end", {})
        n = g("connect_failed", 0) + sum(v for k, v in st.items() if k not in ("200", "none")) + \
            sum(v for k, v in tcp.items() if k != "established")
        return n, (f"{g('connected', 0)} connected, statuses {st}, TCP state at the end {tcp}, connect failures "
                   f"{g('connect_failed', 0)}")
    return 0, ""


# ── workers ───────────────────────────────────────────────────────────────────────────────────────────────────
def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def msg_type(data: bytes) -> tuple[str, str]:
    """(type, error code) of a coordinator message, without verifying it (counting only)."""
    import mle

    try:
        fl = mle.loads(bytes(data)).metadata["fl"]
        return str(fl["type"]), str(fl["body"].get("code", "")) if fl["type"] == "error" else ""
    except Exception:
        return "unparseable", ""


def _session(seed: bytes, key: str) -> Any:
    from flcore.policy import PrivacyPolicy
    from flcore.session import ClientSession

    return ClientSession(seed, bytes.fromhex(key), policy=PrivacyPolicy.permissive())


async def _handshake(ws: Any, session: Any, errors: collections.Counter[str], timeout: float,
                     send_ready: bool) -> bool:
    """hello → challenge (verified against the coordinator key) → auth → welcome; the session's ``ready`` is sent
    only when ``send_ready``. True once welcomed."""
    from flcore.session import Failed, SendFrame

    for a in session.start():
        await ws.send(a.data)
    deadline = time.monotonic() + timeout
    while session.state in ("hello", "auth"):
        data = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        for a in session.receive(data):
            if isinstance(a, SendFrame):
                if session.state == "ready" and not send_ready:
                    continue
                await ws.send(a.data)
            elif isinstance(a, Failed) and a.code != "misrouted":
                errors[a.code] += 1
                if session.state == "hello":  # an error answered our hello: this identity is refused
                    return False
    return session.state == "ready"


def _ws_kwargs(ip: str) -> dict[str, Any]:
    return {"local_addr": (ip, 0), "ping_interval": None, "compression": None, "max_size": 2**22,
            "open_timeout": 30, "close_timeout": 3, "max_queue": 4}


async def worker_idle(p: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect
    from websockets.protocol import State

    uri = f"ws://127.0.0.1:{p['port']}/ws"
    sem = asyncio.Semaphore(p["concurrency"])
    errors: collections.Counter[str] = collections.Counter()
    conns: list[Any] = []
    deadline = time.monotonic() + p["timeout"]

    async def one(k: int) -> None:
        seed = hashlib.blake2b(f"bench-load-idle-{k}".encode(), digest_size=32).digest()
        for _ in range(3):
            if time.monotonic() > deadline:
                errors["setup_timeout"] += 1
                return
            ws = None
            async with sem:
                try:
                    ws = await connect(uri, **_ws_kwargs(pool_ip(k % p["n_ips"])))
                    if await _handshake(ws, _session(seed, p["key"]), errors, 30.0, send_ready=False):
                        conns.append(ws)
                        return
                except Exception as exc:
                    errors[type(exc).__name__] += 1
            if ws is not None:
                await ws.close()
            await asyncio.sleep(0.5)

    await asyncio.gather(*(one(p["first"] + i) for i in range(p["count"])))
    emit({"established": len(conns), "errors": dict(errors)})
    loop = asyncio.get_running_loop()
    psem, csem = asyncio.Semaphore(500), asyncio.Semaphore(500)
    while True:
        cmd = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if cmd == "check":
            async def ping(ws: Any) -> bool:
                if ws.state is not State.OPEN:
                    return False
                async with psem:
                    try:
                        await asyncio.wait_for(await ws.ping(), 20)
                        return True
                    except Exception:
                        return False

            ok = await asyncio.gather(*(ping(ws) for ws in conns))
            closed = sum(1 for ws in conns if ws.state is State.CLOSED)
            codes = collections.Counter(str(ws.close_code) for ws in conns if ws.state is State.CLOSED)
            emit({"held": sum(ok), "closed_by_server": closed, "close_codes": dict(codes)})
        elif cmd in ("close", ""):
            async def close(ws: Any) -> None:
                async with csem:
                    try:
                        await asyncio.wait_for(ws.close(), 5)
                    except Exception:
                        ws.transport.abort()

            await asyncio.gather(*(close(ws) for ws in conns))
            emit({"closed": len(conns)})
            return


async def worker_f1(p: dict[str, Any]) -> dict[str, Any]:
    """Open a WebSocket (raw HTTP upgrade), announce one 64 MiB binary frame, send ``payload_mib`` MiB of it, stall
    until the coordinator closes the connection or the window ends; then again (at most ``max_attempts`` each)."""
    end = time.monotonic() + p["duration"]
    s: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[str] = collections.Counter()
    close_after: list[float] = []
    held: list[Any] = []
    chunk = bytes(1 << 20)  # masked with the key 0: the payload bytes are these zeros

    async def attacker() -> None:
        for _ in range(p["max_attempts"]):
            if time.monotonic() > end - 0.5:
                return
            s["attempts"] += 1
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", p["port"], local_addr=(p["ip"], 0)), 10)
            except (OSError, TimeoutError):
                s["connect_failed"] += 1
                await asyncio.sleep(0.5)
                continue
            try:
                key = base64.b64encode(os.urandom(16)).decode()
                writer.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{p['port']}\r\nUpgrade: websocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                             .encode())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                if head.split(b" ", 2)[1] != b"101":
                    s["refused_http"] += 1
                    codes["http_" + head.split(b" ", 2)[1].decode()] += 1
                    continue
                s["upgraded"] += 1
                writer.write(bytes([0x82, 0xFF]) + struct.pack(">Q", 64 << 20) + bytes(4))
                t_header = time.monotonic()
                for _ in range(p["payload_mib"]):
                    writer.write(chunk)
                    try:
                        await asyncio.wait_for(writer.drain(), max(0.05, end - time.monotonic()))
                    except TimeoutError:
                        break
                    s["mib_sent"] += 1
                held.append(writer)
                try:  # stall: the coordinator closes (a close frame, EOF or a reset) or the window ends
                    data = await asyncio.wait_for(reader.read(), max(0.05, end - time.monotonic()))
                    held.remove(writer)
                    s["closed_by_server"] += 1
                    close_after.append(time.monotonic() - t_header)
                    codes[str(struct.unpack(">H", data[2:4])[0]) if len(data) >= 4 and data[0] == 0x88 else "eof"] += 1
                except TimeoutError:
                    return  # still held at the end of the window
                except ConnectionError:
                    held.remove(writer)
                    s["closed_by_server"] += 1
                    close_after.append(time.monotonic() - t_header)
                    codes["reset"] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                s["refused_http"] += 1
                codes[type(exc).__name__] += 1
            await asyncio.sleep(0.2)

    await asyncio.gather(*(attacker() for _ in range(p["connections"])))
    out: dict[str, Any] = dict(s)
    out.update(held_at_end=len(held), close_codes=dict(codes),
               close_after_s_p50=round(percentiles(close_after)["p50"] or 0, 2) if close_after else None)
    for w in held:
        w.transport.abort()
    return out


def worker_f2(p: dict[str, Any]) -> dict[str, Any]:
    end = time.monotonic() + p["duration"]
    status: collections.Counter[str] = collections.Counter()
    lat: list[float] = []
    errs = [0]
    lock = threading.Lock()

    def loop() -> None:
        while time.monotonic() < end:
            t = time.perf_counter()
            try:
                st, _ = http_get(p["port"], SHARD_PATH, p["ip"], 30.0)
                with lock:
                    status[str(st)] += 1
                    lat.append((time.perf_counter() - t) * 1000)
            except (OSError, http.client.HTTPException):
                with lock:
                    errs[0] += 1
                time.sleep(0.05)

    t0 = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(p["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = sum(status.values())
    return {"requests": n, "requests_per_s": round(n / (time.monotonic() - t0), 1), "status": dict(status),
            "conn_errors": errs[0], "latency_ms": {k: v and round(v, 1) for k, v in percentiles(lat).items()}}


async def worker_f4(p: dict[str, Any]) -> dict[str, Any]:
    """Sybils: over a few connections, fresh identities one after another (a new ``hello`` on the same
    connection): each enrols, says ``ready`` and ignores whatever follows (a ``select`` gets no reveal) for ``hold``
    seconds (the churners: hundreds of enrolments); ``patient`` more connections do the same holding each identity
    ``patient_hold`` seconds (longer than a probation before fresh identities are selected)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    end = time.monotonic() + p["duration"]
    s: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[str] = collections.Counter()
    uri = f"ws://127.0.0.1:{p['port']}/ws"

    async def conn_loop(hold: float) -> None:
        while time.monotonic() < end and s["identities"] < p["identities"]:
            try:
                ws = await connect(uri, **_ws_kwargs(p["ip"]))
            except Exception:
                s["connect_failed"] += 1
                await asyncio.sleep(0.5)
                continue
            try:
                while time.monotonic() < end and s["identities"] < p["identities"]:
                    s["identities"] += 1
                    if not await _handshake(ws, _session(os.urandom(32), p["key"]), errors,
                                            max(0.05, end - time.monotonic()), send_ready=True):
                        continue
                    s["enrolled"] += 1
                    hold_end = min(end, time.monotonic() + hold)
                    while time.monotonic() < hold_end:
                        try:
                            data = await asyncio.wait_for(ws.recv(), hold_end - time.monotonic())
                        except TimeoutError:
                            break
                        t, code = msg_type(data)
                        if t == "select":
                            s["selected"] += 1
                        elif t == "error":
                            errors[code] += 1
                        elif t == "stop":
                            s["stopped"] += 1
            except ConnectionClosed as exc:
                s["closed_by_server"] += 1
                codes[str(exc.rcvd.code if exc.rcvd else "none")] += 1
                await asyncio.sleep(0.2)
            except TimeoutError:
                pass
            finally:
                await ws.close()

    await asyncio.gather(*(conn_loop(p["hold"]) for _ in range(p["connections"])),
                         *(conn_loop(p["patient_hold"]) for _ in range(p["patient"])))
    return {**dict(s), "errors": dict(errors), "close_codes": dict(codes)}


async def worker_f11(p: dict[str, Any]) -> dict[str, Any]:
    """One recorded, signed ``hello`` sent again and again on one connection (reconnecting if closed)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    hello = _session(hashlib.blake2b(b"bench-load-replay", digest_size=32).digest(), p["key"]).start()[0].data
    end = time.monotonic() + p["duration"]
    s: collections.Counter[str] = collections.Counter()
    replies: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[str] = collections.Counter()
    uri = f"ws://127.0.0.1:{p['port']}/ws"
    t0 = time.monotonic()

    async def reader(ws: Any) -> None:
        async for data in ws:
            t, code = msg_type(data)
            replies[f"error:{code}" if t == "error" else t] += 1

    while time.monotonic() < end and s["sent"] < p["max_messages"]:
        try:
            ws = await connect(uri, **{**_ws_kwargs(p["ip"]), "max_queue": 64})
        except Exception:
            s["connect_failed"] += 1
            await asyncio.sleep(0.5)
            continue
        task = asyncio.create_task(reader(ws))
        try:
            while time.monotonic() < end and s["sent"] < p["max_messages"]:
                await asyncio.wait_for(ws.send(hello), max(0.05, end - time.monotonic()))
                s["sent"] += 1
                if s["sent"] % 64 == 0:
                    await asyncio.sleep(0)
        except ConnectionClosed as exc:
            s["closed_by_server"] += 1
            codes[str(exc.rcvd.code if exc.rcvd else "none")] += 1
            await asyncio.sleep(0.2)
        except TimeoutError:
            pass
        finally:
            await asyncio.sleep(0.2)  # replies still in flight
            task.cancel()
            await ws.close()
    elapsed = time.monotonic() - t0
    return {**dict(s), "replies": dict(replies), "close_codes": dict(codes),
            "challenges_per_s": round(replies["challenge"] / elapsed, 1)}


def worker_f13(p: dict[str, Any]) -> dict[str, Any]:
    """``connections`` sockets with a 4 KiB receive buffer request the wasm file and never read."""
    end = time.monotonic() + p["duration"]
    socks, failed = [], 0
    for _ in range(p["connections"]):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind((p["ip"], 0))
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", p["port"]))
            s.sendall(f"GET {WASM_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{p['port']}\r\n\r\n".encode())
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    while time.monotonic() < end:
        time.sleep(0.1)
    status: collections.Counter[str] = collections.Counter()
    tcp: collections.Counter[str] = collections.Counter()
    for s in socks:
        state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        tcp[TCP_STATES.get(state, str(state))] += 1
        try:
            s.setblocking(False)
            head = s.recv(32, socket.MSG_PEEK)
            m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
            status[m.group(1).decode() if m else "none"] += 1
        except OSError:
            status["none"] += 1
        s.close()
    return {"connected": len(socks), "connect_failed": failed, "status": dict(status), "tcp_state_at_end": dict(tcp)}


def worker_main(params: str) -> None:
    p = json.loads(params)
    kind = p["kind"]
    if kind == "idle":
        asyncio.run(worker_idle(p))
        return
    emit({"started": kind, "time": time.time()})
    if kind == "F1":
        out = asyncio.run(worker_f1(p))
    elif kind == "F2":
        out = worker_f2(p)
    elif kind == "F4":
        out = asyncio.run(worker_f4(p))
    elif kind == "F11":
        out = asyncio.run(worker_f11(p))
    elif kind == "F13":
        out = worker_f13(p)
    else:
        raise SystemExit(f"unknown worker {kind}")
    emit(out)


# ── output ────────────────────────────────────────────────────────────────────────────────────────────────────
def fmt(v: Any, spec: str = "") -> str:
    return "–" if v is None else format(v, spec)


def tables(result: dict[str, Any]) -> str:
    out = [f"## bench_load – commit {result['commit']}, {result['cores']} cores, load average at start "
           f"{result['load_average_start']}, at end {result.get('load_average_end')}", "",
           f"{result['clients']} `fl-client` processes over {result['client_transport']} in one SecAgg+ group of "
           f"{result['clients']} (model mlp:64-32-10, no DP noise); each phase has its own coordinator and baseline; "
           "every load is compared with an unloaded reference window just before it.", ""]
    for phase, ph in result["phases"].items():
        b = ph.get("baseline")
        line = (f"**{phase} phase** baseline: {b['rounds_per_s']} rounds/s, /health p50/p95/p99 "
                f"{fmt(b['health_ms']['p50'])}/{fmt(b['health_ms']['p95'])}/{fmt(b['health_ms']['p99'])} ms, RSS "
                f"{b['rss_mib']} MiB" if b else f"**{phase} phase**: no baseline (the federation did not start)")
        out += [f"{line}; coordinator alive at the end: {ph.get('coordinator_alive')}, real clients alive: "
                f"{ph.get('clients_alive')}/{result['clients']}.", ""]
    if result["idle"]:
        out += ["| idle connections N | established | held at end | setup s | RSS before → loaded MiB | KiB/conn vs "
                "before / vs phase start | "
                "/health p50/p95/p99/max ms | rounds/s ref → loaded (ratio) | RSS after close MiB (+s, +2s) |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in result["idle"]:
            h = r["loaded"]["health_ms"]
            out.append(f"| {r['n']} | {r['established']} | {r['held']} | {r['setup_s']} | {r['rss_before_mib']} → "
                       f"{r['rss_loaded_mib']} | {r['kib_per_connection']} / {fmt(r.get('kib_per_connection_vs_phase_start'))} | "
                       f"{fmt(h['p50'])}/{fmt(h['p95'])}/"
                       f"{fmt(h['p99'])}/{fmt(h['max'])} | {r['reference']['rounds_per_s']} → {r['loaded']['rounds_per_s']} "
                       f"({fmt(r['ratio'])}) | {r['rss_after_mib'][0]}, {r['rss_after_mib'][1]} (s = "
                       f"{r['settle_s']}) |")
        out.append("")
    if result["floods"]:
        out += [f"Floods: rounds/s during the flood against the reference window before it; 'after': rounds/s in the "
                f"{2 * result['settle_s']:g} s after it ended; 'refused': connections closed or refused and error "
                "replies (details in the last column).", "",
                "| flood | rounds/s ref → during | ratio | rounds/s after | /health p50/p99/max ms (failures) | RSS before "
                "/ peak / after (+s, +2s) MiB | refused | what the coordinator did |", "|---|---|---|---|---|---|---|---|"]
        for r in result["floods"]:
            if "skipped" in r:
                out.append(f"| {r['flood']} | – | – | – | – | – | – | skipped: {r['skipped']} |")
                continue
            h = r["during"]["health_ms"]
            out.append(f"| {r['flood']} {r['what']} | {r['reference']['rounds_per_s']} → {r['during']['rounds_per_s']} "
                       f"| {fmt(r['ratio'])} | {fmt(r['rounds_per_s_after'])} | {fmt(h['p50'])}/{fmt(h['p99'])}/{fmt(h['max'])} "
                       f"({r['during']['health_failures']}) | "
                       f"{r['rss_before_mib']} / {r['rss_peak_mib']} / {r['rss_after_mib'][0]}, {r['rss_after_mib'][1]} | "
                       f"{r['refused']} | {r['summary']} |")
        out.append("")
    for phase, ph in result["phases"].items():
        out += [f"Coordinator settings, {phase} phase:", *(f"- {n}" for n in ph["settings_notes"]),
                "```toml", ph["settings_toml"].rstrip(), "```", ""]
    return "\n".join(out)


# ── main ──────────────────────────────────────────────────────────────────────────────────────────────────────
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 200, 6 s windows, small floods (~2-3 min)")
    p.add_argument("--sizes", default=None,
                   help="idle connection counts, or 'none' (default 1000,5000,10000; quick: 200)")
    p.add_argument("--floods", default=",".join(FLOODS), help="which floods, comma-separated, or 'none'")
    p.add_argument("--window", type=float, default=None, help="seconds per measured window (default 25; quick 6)")
    p.add_argument("--ref-window", type=float, default=None,
                   help="seconds of the unloaded reference window before each load (default 12; quick 5)")
    p.add_argument("--settle", type=float, default=None, help="seconds after a load before RSS is read, twice (default 5; quick 2)")
    p.add_argument("--health-requests", type=int, default=None, help="/health requests per window (default 200)")
    p.add_argument("--clients", type=int, default=5, help="real fl-client processes (one SecAgg+ group)")
    p.add_argument("--client-transport", default="grpc", choices=("grpc", "websocket"))
    p.add_argument("--phase-timeout", type=float, default=10.0, help="[federation] phase_timeout passed to serve")
    p.add_argument("--conns-per-ip", type=int, default=16, help="idle connections per loopback source address")
    p.add_argument("--workers-per", type=int, default=0, help="idle pool worker processes (default: 1 per 5000)")
    p.add_argument("--handshake-concurrency", type=int, default=64, help="handshakes in flight per worker")
    p.add_argument("--setup-timeout", type=float, default=None, help="seconds to establish a pool (default 300)")
    p.add_argument("--f1-connections", type=int, default=None, help="F1 attackers (default 16; quick 8)")
    p.add_argument("--f1-payload-mib", type=int, default=None, help="F1 MiB sent per frame (default 8; quick 4)")
    p.add_argument("--f4-identities", type=int, default=None, help="F4 Sybil identities (default 400; quick 100)")
    p.add_argument("--f4-connections", type=int, default=4, help="F4 connections the Sybils share")
    p.add_argument("--f4-hold", type=float, default=0.25,
                   help="F4 seconds each Sybil identity stays ready before the next one says hello")
    p.add_argument("--f4-patient", type=int, default=4,
                   help="F4 more connections whose Sybils wait out a probation (--f4-patient-hold)")
    p.add_argument("--f4-patient-hold", type=float, default=12.0,
                   help="F4 seconds a patient Sybil identity stays ready (serve's default probation: 10 s)")
    p.add_argument("--serve-toml-extra", default="", metavar="FILE",
                   help="TOML merged over the generated coordinator settings (per section)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one coordinator setting (TOML value syntax), e.g. --set limits.max_connections=20000")
    p.add_argument("--out", default="", help="write everything measured to this JSON file")
    p.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (logs, data dir)")
    p.add_argument("--render", default="", metavar="FILE.json", help="print the tables of a saved --out file")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    if args.render:
        print(tables(json.loads(Path(args.render).read_text())))
        return
    q = args.quick
    sizes = ("200" if q else "1000,5000,10000") if args.sizes is None else args.sizes
    args.sizes = [] if sizes in ("", "none") else [int(x) for x in sizes.split(",") if x.strip()]
    args.floods = [] if args.floods == "none" else [f.strip().upper() for f in args.floods.split(",") if f.strip()]
    for f in args.floods:
        if f not in FLOODS:
            raise SystemExit(f"--floods: unknown {f} (known: {', '.join(FLOODS)})")
    args.window = args.window or (6.0 if q else 25.0)
    args.ref_window = args.ref_window or (5.0 if q else 12.0)
    args.settle = args.settle if args.settle is not None else (2.0 if q else 5.0)
    args.health_requests = args.health_requests or (80 if q else 200)
    args.setup_timeout = args.setup_timeout or (120.0 if q else 300.0)
    args.f1_connections = args.f1_connections or (8 if q else 16)
    args.f1_payload_mib = args.f1_payload_mib or (4 if q else 8)
    args.f4_identities = args.f4_identities or (100 if q else 400)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20,
                                                    hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    need = max(args.sizes or [0]) + 512
    if nofile < need:
        note(f"RLIMIT_NOFILE {nofile} < {need}: the largest pool will be refused by the file limit")

    result: dict[str, Any] = {"benchmark": "bench_load", "commit": code_version(), "cores": os.cpu_count(),
                              "load_average_start": [round(x, 2) for x in os.getloadavg()], "quick": q,
                              "rlimit_nofile": nofile, "clients": args.clients,
                              "client_transport": args.client_transport, "argv": sys.argv[1:], "phases": {},
                              "settle_s": args.settle, "window_s": args.window, "ref_window_s": args.ref_window,
                              "idle": [], "floods": []}
    note(f"commit {result['commit']}, load average {result['load_average_start']}, RLIMIT_NOFILE {nofile}")
    tmpdir = tempfile.mkdtemp(prefix="bench-load-")
    try:
        # two phases, each with its own coordinator, data dir, real clients and baseline: the idle pool's
        # identities (and the settings it needs) must not shape the floods' measurements
        for phase in ("idle", "flood"):
            if (phase == "idle" and not args.sizes) or (phase == "flood" and not args.floods):
                continue
            run_phase(phase, Path(tmpdir) / phase, args, result)
    finally:
        result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.keep_dir:
            note(f"kept {tmpdir}")
        else:
            subprocess.run(["rm", "-rf", tmpdir], check=False)
        print(tables(result))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
            note(f"wrote {args.out}")


def run_phase(phase: str, tmp: Path, args: argparse.Namespace, result: dict[str, Any]) -> None:
    tmp.mkdir(parents=True)
    doc, notes = build_settings(args, args.clients, phase)
    ph: dict[str, Any] = {"settings": doc, "settings_notes": notes, "settings_toml": to_toml(doc)}
    result["phases"][phase] = ph
    coord = Coordinator(tmp, ph["settings_toml"])
    clients: list[subprocess.Popen[bytes]] = []
    try:
        status, _ = http_get(coord.ws_port, "/py/manifest.json", PROBE_IPS[0])
        web = status == 200 and WASM_FILE.is_file()
        ph["web_assets"] = web
        note(f"{phase} phase: coordinator pid {coord.proc.pid} on ws {coord.ws_port} / grpc {coord.grpc_port}, "
             f"web assets: {web}")
        clients = start_clients(coord, args.clients, args.client_transport, tmp)
        deadline = time.time() + 240
        while coord.round() < 3:
            if time.time() > deadline or not coord.alive():
                raise SystemExit("the real clients did not complete 3 rounds in 240 s:\n" + coord.log_tail())
            time.sleep(0.5)
        ph["baseline"] = measure(coord, args.window, args.health_requests, f"{phase} phase: baseline")
        if phase == "idle":
            start_kib = coord.rss_kib()
            for n in args.sizes:
                if coord.alive():
                    result["idle"].append(run_idle(coord, n, args, start_kib))
        else:
            for f in args.floods:
                if coord.alive():
                    result["floods"].append(run_flood(f, coord, args, web))
    finally:
        ph["coordinator_alive"] = coord.alive()
        ph["clients_alive"] = sum(1 for c in clients if c.poll() is None)
        for c in clients:
            if c.poll() is None:
                c.terminate()
        for c in clients:
            try:
                c.wait(15)
            except subprocess.TimeoutExpired:
                c.kill()
        coord.stop()
        if not ph["coordinator_alive"]:
            ph["coordinator_log_tail"] = coord.log_tail()


if __name__ == "__main__":
    main()
