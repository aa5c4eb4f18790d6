"""Real processes on loopback for the end-to-end tests: a coordinator (`fl-coordinator serve`) and client
worker processes (tests/e2e/client_worker.py)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "e2e" / "client_worker.py"
# the coordinators started here serve /status/operator (the full status with the clients) with this token
OPERATOR_TOKEN = "e2e-support-operator-token-0123456789"
# utility tests run many rounds at small noise: the clients keep the default group/threshold/graph policy but
# accept a small noise multiplier and set no ε budget of their own (the coordinator's budget still applies)
UTILITY_POLICY = '{"min_noise_multiplier": 0.05, "epsilon_budget": null}'
# groups of 3 with a majority threshold (the robust-vs-secure trade-off of docs/threat-model.md): opted into
GROUPS_OF_3_POLICY = ('{"min_group_size": 3, "threshold_rule": "majority", "colluders": 0, '
                      '"min_noise_multiplier": 0.0, "epsilon_budget": null}')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
             timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:``port`` on its own connection: status, headers (lower-case names), body."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env.setdefault("FL_OPERATOR_TOKEN", OPERATOR_TOKEN)
    return env


# every coordinator process a test started: tests/conftest.py kills those still running when the test ends (a test
# that fails, or forgets, must not leave a serve running – and using CPU – for the rest of the suite)
STARTED: list[subprocess.Popen[bytes]] = []


def kill_started(since: int = 0) -> int:
    """SIGKILL the coordinators started since ``STARTED[since]`` that still run (a module-scoped fixture's, started
    earlier, are left to it); returns how many there were."""
    left = [p for p in STARTED[since:] if p.poll() is None]
    for p in left:
        p.kill()
        p.wait()
    del STARTED[since:]
    return len(left)


@dataclass
class Coordinator:
    tmp: Path
    flags: list[str]
    ws_port: int = 0
    grpc_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    key: str = ""
    starts: int = 0
    logs: list[Path] = field(default_factory=list)
    nice: int = 0  # > 0: run the coordinator at this lower CPU priority

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    def start(self, timeout: float = 60.0) -> Coordinator:
        if not self.ws_port:
            self.ws_port, self.grpc_port = free_port(), free_port()
        port_file = self.tmp / "ports.json"
        port_file.unlink(missing_ok=True)
        self.starts += 1
        log = self.tmp / f"coordinator-{self.starts}.log"
        self.logs.append(log)
        cmd = [sys.executable, "-m", "coordinator.service.cli", "serve", "--data-dir", str(self.data_dir),
               "--ws-port", str(self.ws_port), "--grpc-port", str(self.grpc_port), "--port-file", str(port_file),
               "--evaluation", "digits", *self.flags]
        with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env(),
                                         preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None)
        STARTED.append(self.proc)
        deadline = time.time() + timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"coordinator exited with {self.proc.returncode}:\n{log.read_text()}")
            if time.time() > deadline:
                raise TimeoutError(f"coordinator did not start:\n{log.read_text()}")
            time.sleep(0.05)
        self.key = json.loads(port_file.read_text())["coordinator_key"]
        return self

    def status(self) -> dict[str, Any]:
        """The operator view (with every client's id, trust and state)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.ws_port}/status/operator",
                                     headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def wait_round(self, n: int, timeout: float) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.status()
            if s["round"] >= n:
                return s
            time.sleep(0.1)
        raise TimeoutError(f"round {n} not reached in {timeout}s:\n{self.log_text()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"coordinator still running after {timeout}s:\n{self.log_text()}") from None

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-6000:] for p in self.logs if p.exists())


@dataclass
class Workers:
    procs: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def spawn(self, tmp: Path, server: str, indices: list[int], num_clients: int, *extra: str, nice: int = 0) -> None:
        """Native clients in one process; ``nice`` > 0 runs it at that lower CPU priority."""
        log = tmp / f"worker-{len(self.procs)}.log"
        cmd = [sys.executable, str(WORKER), "--server", server, "--indices", ",".join(map(str, indices)),
               "--num-clients", str(num_clients), *extra]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=_env(),
                                    preexec_fn=(lambda: os.nice(nice)) if nice else None)
        self.procs.append((proc, log))

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        out = []
        for proc, log in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"worker still running:\n{log.read_text()[-3000:]}") from None
            if proc.returncode != 0:
                raise RuntimeError(f"worker failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
            out += [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        return out

    def kill(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
