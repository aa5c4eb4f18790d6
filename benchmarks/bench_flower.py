"""Benchmark: Flower's deployment engine and ours side by side on the same work, measured in the same run.

Work (both sides): N clients each send a random float32 update of d = 101,770 values (the size of the MLP
784-128-10) per round – no training –, through secure aggregation, to a server that averages them
(FedAvg / mean, no evaluation, no DP noise). Same seeds every run; the aggregate is checked against the plain
mean on both sides.

1. Deployment, N = 10 and 20 clients, on loopback:
   - Flower 1.42 (``flwr[simulation]==1.42.0``): ``flower-superlink --insecure`` + N ``flower-supernode
     --insecure`` processes (each its own ``--node-config "partition-id=i num-partitions=N"`` and Runtime API
     port), then ``flwr run benchmarks/flower_app bench``. The app: ``DefaultWorkflow(fit_workflow=
     SecAggPlusWorkflow(num_shares=N, reconstruction_threshold=t))`` + ``secaggplus_mod`` (the legacy API
     where Flower's SecAgg+ lives); t = ``required_threshold(N, "two-thirds", 1)``, num_shares = N: the
     complete graph.
     The ``bench`` SuperLink connection lives in ``$FLWR_HOME/config.toml`` (flwr 1.42 reads connections from
     there, not from the app's pyproject.toml); FLWR_HOME and HOME point at a temporary directory; telemetry,
     the update check and runtime dependency installation are off (nothing is downloaded).
     Round boundaries: the ServerApp writes a time stamp before and after each round's fit workflow
     (benchmarks/flower_app/fbench_app/server_app.py). Coordinator CPU: the SuperLink process and everything
     under it – ``flower-superexec``, which it starts in a new session, and the ``flwr-serverapp`` process
     that runs the ServerApp –, read from /proc (utime + stime, plus reaped children) at each round's end.
     Clients' CPU: the SuperNodes with their SuperExecs and ``flwr-clientapp`` processes.
   - Ours: ``fl-coordinator serve`` (gRPC) + benchmarks/light_clients.py (N clients in one process: the real
     client session, Ed25519 signatures, clipping/quantization, SecAgg+; they accept any well-formed task, as
     in bench_rounds.py). The product's secure configuration: groups of 5 (the clients' default policy
     minimum), complete graph, t = ``required_threshold(5, "two-thirds", 1)`` = 4 – and, for the same graph
     and threshold as Flower's, one group of N. Every group checked against the clients' default policy
     (``PrivacyPolicy().check_group``). Fixed clip C = 1 (adaptive clipping off), 16-bit quantization,
     aggregator ``mean``, server step 1. Round boundaries: the round's model file appearing in the data dir
     (polled every 20 ms), and the store's ``completed_at`` afterwards. Coordinator CPU: the serve process,
     from /proc at each round's end. Clients' CPU: the light-clients process.
   Reported per side: launch → first round done (start-up, reported apart), the first round's own duration,
   steady-state seconds per round (mean spacing of round completions after the first), coordinator CPU seconds
   per steady round, the clients' CPU per steady round, and the ratios Flower / ours.
   - Flower's deployment engine again, N = 10, with fl-coordinator's ``GroupedSecureFitWorkflow`` on the server
     and our SecAgg+ Mod on the clients (flower_interop; groups of 5, the plain mean across groups, no noise, a
     clip above every update's norm, 24-bit quantization): the recommended Flower path, in the runtime that
     starts a new ClientApp process for every message (the Mod's state lives in the node's context).
2. Simulation, N = 10: Flower's ``run_simulation`` (Ray backend; benchmarks/flower_secagg.py) vs our engine
   in-process (``simulations.engine_driver.EngineDriver``: the engine mode of ``fl-coordinator simulate``,
   with the same random updates instead of training): start-up (call → first round done) apart from the
   warmed-up rounds.

Run: ``PYTHONPATH=. .venv-bench/bin/python benchmarks/bench_flower.py [--quick] [--rounds R] [--write]``
(--quick: N = 10 only, 2 Flower rounds; the default run takes ≈ 15-20 min on 2 cores, mostly Flower's
rounds).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
APP_DIR = REPO / "benchmarks" / "flower_app"
BIN = Path(sys.executable).parent  # the venv's console scripts: flower-superlink, flower-supernode, flwr
D = 101_770  # parameters of the MLP 784-128-10
MODEL = "mlp:784-128-10"
OUR_GROUP = 5  # the clients' default policy minimum (flcore.policy.PrivacyPolicy.min_group_size)
CLIP = 1.0
CLK = os.sysconf("SC_CLK_TCK")
RESULTS = REPO / "docs" / "results" / "bench_flower.txt"

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(APP_DIR))


def log(msg: str) -> None:
    """A progress line on stderr (the results go to stdout and, with --write, to the results file)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ── processes ───────────────────────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Proc:
    """One /proc/<pid>/stat: parent, short name, own CPU and the CPU of the children it reaped (seconds)."""

    pid: int
    ppid: int
    name: str
    cpu: float
    children_cpu: float


def read_proc(pid: int) -> Proc | None:
    """The process's stat line, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    name = text[text.index("(") + 1: text.rindex(")")]
    f = text.rsplit(")", 1)[1].split()
    return Proc(pid, int(f[1]), name, (int(f[11]) + int(f[12])) / CLK, (int(f[13]) + int(f[14])) / CLK)


def proc_table() -> dict[int, Proc]:
    """Every process this user can see."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (p := read_proc(int(entry))) is not None:
            out[p.pid] = p
    return out


def descendants(root: int, table: dict[int, Proc]) -> list[Proc]:
    """``root`` and every process below it (by parent links), ``root`` first."""
    kids: dict[int, list[int]] = {}
    for p in table.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(table[pid])
        todo.extend(kids.get(pid, []))
    return out


def tree_cpu(root: int, table: dict[int, Proc]) -> dict[str, float]:
    """CPU seconds of ``root``'s tree by process name (own + reaped children), the sum under ``"total"``."""
    out: dict[str, float] = {}
    for p in descendants(root, table):
        name = FULL_NAMES.get(p.name, p.name)
        out[name] = out.get(name, 0.0) + p.cpu + p.children_cpu
    out["total"] = sum(out.values())
    return out


def become_subreaper() -> None:
    """Adopt orphaned descendants (Flower's SuperExec runs in its own session and outlives a killed parent),
    so that they stay visible as ours, are killed at the end and are reaped here (PR_SET_CHILD_SUBREAPER)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def kill_descendants(grace: float = 5.0) -> int:
    """SIGTERM every process below this one, SIGKILL what is left after ``grace`` seconds, reap them.
    Only processes this run started (and theirs) are below it. Returns how many were signalled."""
    me = os.getpid()
    victims = [p.pid for p in descendants(me, proc_table()) if p.pid != me]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in victims):
        reap()
        time.sleep(0.1)
    for pid in victims:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    reap()
    return len(victims)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def reap() -> None:
    """Collect exited children (zombies) without blocking."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, ready: Callable[[], bool], timeout: float,
             check: Callable[[], None] = lambda: None) -> None:
    """Poll ``ready`` until it is true; ``check`` raises if something died; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ── results ─────────────────────────────────────────────────────────────────────────────────────────────────
@dataclass
class Run:
    """One side's deployment run: wall-clock marks (time.time()) and CPU samples at each round's end."""

    side: str
    label: str
    n: int
    launch: float = 0.0  # when the server process was started
    ends: list[float] = field(default_factory=list)  # each round's completion
    inner: list[float] = field(default_factory=list)  # each round's own duration (round start → completion)
    server_cpu: list[dict[str, float]] = field(default_factory=list)  # at each completion, by process name
    client_cpu: list[float] = field(default_factory=list)
    check: str = ""
    ok: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> float:
        """Launch → first round done (start-up)."""
        return self.ends[0] - self.launch if self.ends else float("nan")

    @property
    def first_inner(self) -> float:
        """The first round's own duration."""
        return self.inner[0] if self.inner else float("nan")

    @property
    def steady(self) -> float:
        """Mean spacing of round completions after the first round."""
        return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1) if len(self.ends) > 1 else float("nan")

    def per_round(self, series: list[float]) -> float:
        """A cumulative series' mean increase per steady round."""
        return (series[-1] - series[0]) / (len(series) - 1) if len(series) > 1 else float("nan")

    @property
    def server(self) -> float:
        return self.per_round([c["total"] for c in self.server_cpu])

    @property
    def clients(self) -> float:
        return self.per_round(self.client_cpu)

    def server_by_name(self) -> dict[str, float]:
        names = sorted({k for c in self.server_cpu for k in c if k != "total"})
        return {k: self.per_round([c.get(k, 0.0) for c in self.server_cpu]) for k in names}


def cell(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|")


def ratio(a: float, b: float) -> str:
    """a / b as "12×" (one decimal below 10)."""
    x = a / b
    return f"{x:.1f}×" if x < 10 else f"{x:.0f}×"


# names in /proc/<pid>/stat are cut at 15 characters
FULL_NAMES = {"flower-superlin": "flower-superlink", "flower-superexe": "flower-superexec",
              "flower-supernod": "flower-supernode"}


def threshold(n: int) -> int:
    """Our threshold for a group of n (complete graph), the same function the clients check with."""
    from flcore.policy import PrivacyPolicy, required_threshold

    t = required_threshold(n, "two-thirds", 1)
    PrivacyPolicy().check_group(n, n - 1, t)  # the clients' default policy accepts this group
    return t


# ── Flower deployment ───────────────────────────────────────────────────────────────────────────────────────
def flower_env(home: Path) -> dict[str, str]:
    """Flower's processes: a private FLWR_HOME/HOME, no telemetry, no update check, no runtime dependency
    installation (nothing may be downloaded), the venv's console scripts first on PATH (the SuperLink starts
    ``flower-superexec`` by name), and this checkout first on PYTHONPATH (the grouped workflow's app imports
    flower_interop: the code measured is the code of this commit)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO), FLWR_HOME=str(home), HOME=str(home), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def write_flower_config(home: Path, port: int) -> None:
    """The ``bench`` SuperLink connection of ``flwr run`` (flwr 1.42: $FLWR_HOME/config.toml)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')


def spawn(cmd: list[str], logfile: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process in its own process group, its output in ``logfile``."""
    with logfile.open("wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def read_marks(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines appended to the marks file since ``offset``, and the new offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return [json.loads(line) for line in data[:end].splitlines() if line.strip()], offset + end


def flower_deployment(n: int, rounds: int, round_timeout: float, workflow: str = "secaggplus") -> Run:
    """Flower's SecAgg+ over its deployment engine (module docstring) – or, with ``workflow="grouped"``, our
    GroupedSecureFitWorkflow and SecAgg+ Mod in the same engine; all its processes are killed after."""
    t = threshold(n)
    if workflow == "grouped":
        run = Run("Flower + flower_interop", f"SuperLink + {n} SuperNodes, GroupedSecureFitWorkflow: our SecAgg+ "
                  f"Mod in groups of {OUR_GROUP} (t={threshold(OUR_GROUP)}), mean across groups", n)
    else:
        run = Run("Flower", f"SuperLink + {n} SuperNodes, SecAgg+ num_shares={n} t={t}", n)
    with tempfile.TemporaryDirectory(prefix="fbench-flower-") as tmp_name:
        tmp = Path(tmp_name)
        port, env = free_port(), flower_env(tmp / "home")
        write_flower_config(tmp / "home", port)
        try:
            run.launch = time.time()
            link = spawn([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port",
                          str(port), "--disable-runtime-dependency-installation"], tmp / "superlink.log", env)
            died = _died_check({"SuperLink": (link, tmp / "superlink.log")})
            wait_for("SuperLink", lambda: port_open(port), 120, died)
            nodes = {f"SuperNode {i}": (spawn(
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}", "--port",
                 str(free_port()), "--node-config", f"partition-id={i} num-partitions={n}"],
                tmp / f"supernode-{i}.log", env), tmp / f"supernode-{i}.log") for i in range(n)}
            died = _died_check({"SuperLink": (link, tmp / "superlink.log"), **nodes})
            wait_for(f"{n} SuperNodes", lambda: all("SuperNode ID" in p.read_text(errors="replace")
                                                    for _, p in nodes.values()), 300, died)
            log(f"Flower N={n}: SuperLink + {n} SuperNodes up after {time.time() - run.launch:.1f} s; "
                "flwr run")
            marks = tmp / "marks.jsonl"
            watch = FlowerWatch(time.time())
            submit = subprocess.run(
                [str(BIN / "flwr"), "run", str(APP_DIR), "bench", "--run-config",
                 f"num-rounds={rounds} num-clients={n} dim={D} num-shares={n} threshold={t} marks='{marks}' "
                 f"workflow='{workflow}'"],
                cwd=tmp, env=env, capture_output=True, text=True, timeout=300, check=False)
            if submit.returncode != 0:
                raise RuntimeError(f"flwr run failed ({submit.returncode}): {submit.stdout}{submit.stderr}")
            _follow_flower(run, watch, link.pid, nodes, marks, round_timeout, died)
            run.notes += watch.notes(run)
            _check_flower(run, marks, rounds)
        except BaseException:
            logs = sorted(tmp.glob("*.log"))[:3]
            log("Flower logs:\n" + "\n".join(f"--- {p.name}\n{tail(p)}" for p in logs))
            raise
        finally:
            log(f"Flower N={n}: stopping ({kill_descendants()} processes)")
    return run


def _died_check(procs: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> Callable[[], None]:
    """A check that raises if one of ``procs`` has exited."""
    def check() -> None:
        for what, (p, logfile) in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{what} exited with {p.returncode}:\n{tail(logfile)}")

    return check


@dataclass
class FlowerWatch:
    """What the harness sees of a Flower run besides the round marks: when ``flwr run`` was called, when the
    ServerApp's main() and each round started, and the ``flwr-clientapp`` processes (pid → the round in
    progress when it was first seen; sampled every 0.5 s, and each lives for seconds)."""

    submitted: float
    main: float = float("nan")
    starts: dict[int, float] = field(default_factory=dict)
    clientapps: dict[int, int] = field(default_factory=dict)

    def sample(self, nodes: list[int], current_round: int) -> None:
        table = proc_table()
        for root in nodes:
            for p in descendants(root, table):
                if p.name == "flwr-clientapp":
                    self.clientapps.setdefault(p.pid, current_round)

    def notes(self, run: Run) -> list[str]:
        steady = range(2, len(run.ends) + 1)
        started = sum(1 for r in self.clientapps.values() if r in steady)
        per_round = started / len(steady) if started else float("nan")
        return [f"flwr run → ServerApp main(): {self.main - self.submitted:.1f} s, → round 1 start: "
                f"{self.starts.get(1, float('nan')) - self.submitted:.1f} s",
                f"flwr-clientapp processes started per steady round: {per_round:.0f} "
                f"({per_round / run.n:.1f} per client); clients' CPU per such process ≈ "
                f"{run.clients / per_round:.2f} s"]


def _follow_flower(run: Run, watch: FlowerWatch, link: int,
                   nodes: dict[str, tuple[subprocess.Popen[bytes], Path]], marks: Path, round_timeout: float,
                   died: Callable[[], None]) -> None:
    """Follow the ServerApp's marks until it is done; at each round's end sample the CPU of the SuperLink's
    tree (server side) and of the SuperNodes' trees (client side)."""
    offset, ticks = 0, 0
    deadline = time.monotonic() + 300 + round_timeout
    roots = [p.pid for p, _ in nodes.values()]
    while True:
        died()
        records, offset = read_marks(marks, offset)
        for m in records:
            if m["event"] == "main":
                watch.main = m["t"]
            elif m["event"] == "start":
                watch.starts[m["round"]] = m["t"]
            elif m["event"] == "end":
                table = proc_table()
                run.ends.append(m["t"])
                run.inner.append(m["t"] - watch.starts[m["round"]])
                run.server_cpu.append(tree_cpu(link, table))
                run.client_cpu.append(sum(tree_cpu(pid, table)["total"] for pid in roots))
                log(f"Flower N={run.n}: round {m['round']} done in {run.inner[-1]:.1f} s")
                deadline = time.monotonic() + round_timeout
            elif m["event"] == "done":
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Flower N={run.n}: round {len(run.ends) + 1} not done after "
                               f"{round_timeout:.0f} s")
        ticks += 1
        if ticks % 5 == 0:
            watch.sample(roots, len(run.ends) + 1)
        time.sleep(0.1)


def _check_flower(run: Run, marks: Path, rounds: int) -> None:
    """Each round's global model against the plain mean of the N updates (Flower quantizes: ≈ 1e-6)."""
    from fbench_app.common import update

    records, _ = read_marks(marks, 0)
    models = [m for m in records if m["event"] == "model"]
    stages: dict[str, list[float]] = {}
    for m in records:
        if m["event"] == "stage" and m["round"] > 1:
            stages.setdefault(m["stage"], []).append(m["s"])
    waits = [m["s"] for m in records if m["event"] == "wait" and m["round"] > 1]
    if len(models) != rounds or any(m["results"] != run.n or m["failures"] for m in models):
        run.check = f"INCOMPLETE: {[(m['round'], m['results'], m['failures']) for m in models]}"
        return
    err = 0.0
    for m in models:
        expected = np.mean([update(p, m["round"], D) for p in range(run.n)], axis=0)
        err = max(err, float(np.max(np.abs(np.load(m["path"]) - expected))))
    run.ok = err < 1e-4
    run.check = (f"{rounds} rounds × {run.n} results; max |global model − mean update| = {err:.1e}"
                 + ("" if run.ok else " (MISMATCH)"))
    if stages:
        steady = max(1, rounds - 1)
        by_stage = ", ".join(f"{k.removesuffix('_stage').replace('_', ' ')} {sum(v) / steady:.1f} s"
                             for k, v in stages.items())
        run.notes.append(f"steady rounds by stage: {by_stage}; waiting for the clients' replies "
                         f"(send_and_receive) {sum(waits) / steady:.1f} s of the round")


# ── ours: fl-coordinator serve + light clients ──────────────────────────────────────────────────────────────
def ours_deployment(n: int, group: int, rounds: int, round_timeout: float) -> Run:
    """Our coordinator (``fl-coordinator serve``, gRPC) with n light clients in one process, groups of
    ``group``; every process is killed after."""
    t = threshold(group)
    run = Run("ours", f"serve + {n} clients, groups of {group} (t={t})", n)
    with tempfile.TemporaryDirectory(prefix="fbench-ours-") as tmp_name:
        tmp = Path(tmp_name)
        ws, grpc = free_port(), free_port()
        cmd = [sys.executable, "-m", "coordinator.service.cli", "serve", "--data-dir", str(tmp / "data"),
               "--ws-port", str(ws), "--grpc-port", str(grpc), "--port-file", str(tmp / "ports.json"),
               "--model", MODEL, "--evaluation", "none", "--rounds", str(rounds), "--clients-per-round",
               str(n), "--group-size", str(group), "--aggregator", "mean", "--server-optimizer", "fedavg",
               "--server-lr", "1", "--l2-clip", str(CLIP), "--adaptive-clip-quantile", "0",
               "--noise-multiplier", "0", "--train-timeout", "300", "--phase-timeout", "300",
               "--log-level", "warning", "--exit-when-finished", "--exit-grace", "2"]
        try:
            run.launch = time.time()
            coord = spawn(cmd, tmp / "coordinator.log")
            died = _died_check({"fl-coordinator serve": (coord, tmp / "coordinator.log")})
            wait_for("fl-coordinator serve", (tmp / "ports.json").exists, 120, died)
            clients = spawn([sys.executable, str(REPO / "benchmarks" / "light_clients.py"), "--server",
                             f"127.0.0.1:{grpc}", "--transport", "grpc", "--count", str(n)],
                            tmp / "clients.log")
            _follow_ours(run, coord, clients.pid, tmp / "data" / "models", rounds, round_timeout)
            if coord.wait(60) != 0:
                raise RuntimeError(f"fl-coordinator serve exited with {coord.returncode}:\n"
                                   f"{tail(tmp / 'coordinator.log')}")
            _check_ours(run, tmp / "data", rounds)
            run.notes.append("start-up includes serve's probation: a new identity can be selected 10 s "
                             "after it enrols (--probation, default 10)")
        except BaseException:
            log("our logs:\n" + "\n".join(f"--- {p.name}\n{tail(p)}" for p in sorted(tmp.glob("*.log"))))
            raise
        finally:
            kill_descendants()
    return run


def _follow_ours(run: Run, coord: subprocess.Popen[bytes], clients: int, models: Path, rounds: int,
                 round_timeout: float) -> None:
    """Poll the data dir for each round's model file; sample the serve process's and the clients' CPU then."""
    deadline = time.monotonic() + 120 + round_timeout
    while len(run.server_cpu) < rounds:
        if (models / f"round-{len(run.server_cpu) + 1:06d}.mle").exists():
            table = proc_table()
            run.server_cpu.append(tree_cpu(coord.pid, table))
            run.client_cpu.append(tree_cpu(clients, table)["total"])
            deadline = time.monotonic() + round_timeout
            continue
        if coord.poll() is not None:
            raise RuntimeError(f"fl-coordinator serve exited with {coord.returncode} after "
                               f"{len(run.server_cpu)} of {rounds} rounds")
        if time.monotonic() > deadline:
            raise TimeoutError(f"ours N={run.n}: round {len(run.server_cpu) + 1} of {rounds} not done after "
                               f"{round_timeout:.0f} s")
        time.sleep(0.02)


def _check_ours(run: Run, data: Path, rounds: int) -> None:
    """Round times from the store; each round's model change against the plain mean of the N clients' clipped
    updates (light_clients.py: client i draws N(0, 0.01²) per round from default_rng(i)), which our 16-bit
    stochastic rounding meets within one grid step C / (2^15 − 1)."""
    import mle
    from coordinator.service.store import Store
    from flcore.modelspec import ModelSpec

    store = Store.open(data)
    try:
        rows = store.db.execute("SELECT round, started_at, completed_at FROM rounds WHERE status='completed' "
                                "ORDER BY round").fetchall()
        metrics = dict(store.metrics())
    finally:
        store.close()
    if len(rows) != rounds:
        run.check = f"INCOMPLETE: {len(rows)} of {rounds} rounds"
        return
    run.ends = [float(r[2]) for r in rows]
    run.inner = [float(metrics[r[0]].get("duration", r[2] - r[1])) for r in rows]
    spec: ModelSpec = _spec()
    names = [name for name, _ in spec.parameter_shapes()]
    init = spec.init_parameters(0)
    prev = np.concatenate([np.asarray(init[k], np.float32) for k in names])
    rngs = [np.random.default_rng(i) for i in range(run.n)]
    err, members = 0.0, []
    for r in range(1, rounds + 1):
        model = mle.load(data / "models" / f"round-{r:06d}.mle")
        params = np.concatenate([np.asarray(model[k], np.float32).ravel() for k in names])
        ups = [g.normal(0, 0.01, D).astype(np.float32) for g in rngs]
        expected = np.mean([u * min(1.0, CLIP / float(np.linalg.norm(u))) for u in ups], axis=0)
        err = max(err, float(np.max(np.abs((params - prev) - expected))))
        members.append(int(metrics[r].get("survivors", metrics[r].get("participants", run.n))))
        prev = params
    bound = CLIP / (2 ** 15 - 1) * 1.01
    run.ok = err <= bound and all(m == run.n for m in members)
    run.check = (f"{rounds} rounds, members per round {members}; max |model change − mean clipped update| = "
                 f"{err:.1e} (one 16-bit grid step: {bound:.1e})" + ("" if run.ok else " (MISMATCH)"))


def _spec() -> Any:
    from coordinator.service.settings import parse_model

    return parse_model(MODEL)


# ── simulation ──────────────────────────────────────────────────────────────────────────────────────────────
@dataclass
class SimRun:
    """One side's in-process simulation: start-up (call → first round done) and each round's duration."""

    side: str
    label: str
    startup: float
    rounds: list[float]
    check: str

    @property
    def steady(self) -> float:
        return statistics.mean(self.rounds[1:]) if len(self.rounds) > 1 else float("nan")


def flower_simulation(n: int, rounds: int) -> SimRun:
    """Flower's SecAgg+ in run_simulation (Ray backend, 2 actors on 2 cores): benchmarks/flower_secagg.py."""
    import flower_secagg

    t = threshold(n)
    f = flower_secagg.run(n, D, t, rounds)
    return SimRun("Flower", f"run_simulation (Ray), SecAgg+ num_shares={n} t={t}",
                  f["startup"] + f["rounds"][0], f["rounds"], f["check"])


def ours_simulation(n: int, group: int, rounds: int) -> SimRun:
    """Our engine in-process (simulations.engine_driver.EngineDriver: the engine mode of ``fl-coordinator
    simulate`` – real engine, one ClientSession per client, signatures, SecAgg+ in groups), every client's
    update a seeded N(0, 0.01²) vector instead of local training; the same settings as the deployment runs."""
    from coordinator.federation.config import FederationConfig
    from simulations.engine_driver import EngineDriver

    cfg = FederationConfig(model=_spec(), rounds=rounds, clients_per_round=n, group_size=group,
                           aggregator="mean", server_lr=1.0, l2_clip=CLIP, adaptive_clip_quantile=0.0,
                           noise_multiplier=0.0)
    rngs = [np.random.default_rng(i) for i in range(n)]

    def updates(rnd: int, params: np.ndarray, idxs: list[int]) -> np.ndarray:
        return np.stack([rngs[i].normal(0, 0.01, D).astype(np.float32) for i in idxs])

    marks: list[float] = []
    t0 = time.perf_counter()
    driver = EngineDriver(cfg, n, updates, seed=0)
    history = driver.run(on_round=lambda m: marks.append(time.perf_counter()))
    if len(history) != rounds or any(h["survivors"] != n for h in history):
        raise RuntimeError(f"our simulation: {len(history)} of {rounds} rounds ({driver.stopped_reason})")
    durations = [b - a for a, b in zip([t0, *marks], marks)]
    return SimRun("ours", f"EngineDriver in-process, groups of {group} (t={threshold(group)})", durations[0],
                  durations, f"{rounds} rounds × {n} survivors")


# ── report ──────────────────────────────────────────────────────────────────────────────────────────────────
class Report:
    """Prints result lines and keeps them for the results file."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


def provenance(argv: list[str]) -> list[str]:
    """Command, commit and tree state, versions, machine and load (like docs/results/bench_secagg.txt)."""
    import flwr
    import ray

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=False).stdout.strip()

    status = git("status", "--porcelain")
    return [f"# {sys.executable} benchmarks/bench_flower.py {' '.join(argv)}",
            f"commit {git('rev-parse', 'HEAD')}  git status --porcelain: "
            + ("empty (clean checkout)" if not status else "NOT EMPTY: " + status.replace("\n", "; ")),
            f"python {sys.version.split()[0]}, numpy {np.__version__}, flwr {flwr.__version__}, "
            f"ray {ray.__version__}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"load average at the start: {load()}"]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def deployment_table(out: Report, runs: list[Run]) -> None:
    out("| N | side | configuration | launch → round 1 done s | round 1 s | steady s/round | coordinator CPU "
        "s/round | clients' CPU s/round | check |")
    out("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        out(f"| {r.n} | {r.side} | {cell(r.label)} | {r.first:.1f} | {r.first_inner:.2f} | {r.steady:.2f} | "
            f"{r.server:.3f} | {r.clients:.2f} | {'ok' if r.ok else 'FAILED'} |")


def ratio_table(out: Report, runs: list[Run]) -> None:
    out("| N | Flower / ours (groups of 5): steady s/round | coordinator CPU | Flower / ours (one group of "
        "N): steady s/round | coordinator CPU |")
    out("|---|---|---|---|---|")
    for n in sorted({r.n for r in runs}):
        f = next((r for r in runs if r.n == n and r.side == "Flower"), None)
        o5 = next((r for r in runs if r.n == n and r.side == "ours" and "groups of 5" in r.label), None)
        on = next((r for r in runs if r.n == n and r.side == "ours" and f"groups of {n}" in r.label), None)
        if f is None:
            continue
        cells = [f"{ratio(f.steady, o.steady)} | {ratio(f.server, o.server)}" if o else "– | –"
                 for o in (o5, on)]
        out(f"| {n} | {cells[0]} | {cells[1]} |")
    for g in (r for r in runs if r.side == "Flower + flower_interop"):
        f = next((r for r in runs if r.n == g.n and r.side == "Flower"), None)
        if f is not None:
            out(f"- N={g.n}, in Flower's deployment engine: our grouped workflow + Mod / Flower's SecAgg+ = "
                f"{ratio(g.steady, f.steady)} steady s/round, {ratio(g.server, f.server)} coordinator CPU "
                "(six stages per round instead of four, in groups of 5)")


def simulation_table(out: Report, runs: list[SimRun]) -> None:
    out("| side | configuration | start-up: call → round 1 done s | warmed-up s/round | rounds after the "
        "first | check |")
    out("|---|---|---|---|---|---|")
    for r in runs:
        out(f"| {r.side} | {cell(r.label)} | {r.startup:.2f} | {r.steady:.3f} | "
            f"{' '.join(f'{x:.3f}' for x in r.rounds[1:])} | {cell(r.check)} |")


def details(out: Report, runs: list[Run]) -> None:
    """Per run: every round's completion spacing and own duration, CPU by process, the check, notes."""
    for r in runs:
        gaps = [b - a for a, b in zip(r.ends, r.ends[1:])]
        out(f"- {r.side} N={r.n}, {r.label}: round durations {' '.join(f'{x:.2f}' for x in r.inner)} s; "
            f"completion spacing {' '.join(f'{x:.2f}' for x in gaps)} s; coordinator CPU per steady round by "
            "process: " + ", ".join(f"{k} {v:.3f} s" for k, v in r.server_by_name().items()))
        out(f"  check: {r.check}")
        for note in r.notes:
            out(f"  {note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 10 only, 2 Flower deployment rounds")
    ap.add_argument("--rounds", type=int,
                    help="Flower deployment rounds per N, the first = start-up (default 3; --quick: 2)")
    ap.add_argument("--our-rounds", type=int, default=6, help="our deployment rounds per configuration")
    ap.add_argument("--sim-rounds", type=int, default=8, help="simulation rounds per side (N = 10)")
    ap.add_argument("--sizes", type=int, nargs="+", help="deployment client counts (default 10 20)")
    ap.add_argument("--no-simulation", action="store_true", help="deployment only")
    ap.add_argument("--grouped-sizes", type=int, nargs="*", default=[10],
                    help="N at which Flower's deployment engine also runs our grouped workflow + Mod (default 10)")
    ap.add_argument("--round-timeout", type=float, default=900.0, help="fail if a round takes longer (s)")
    ap.add_argument("--write", action="store_true", help=f"write the output to {RESULTS.relative_to(REPO)}")
    args = ap.parse_args()
    sizes = args.sizes or ([10] if args.quick else [10, 20])
    rounds = args.rounds or (2 if args.quick else 3)
    if rounds < 2 or args.our_rounds < 2 or args.sim_rounds < 2:
        ap.error("every side needs at least 2 rounds (the first is start-up)")
    # this process runs Flower's simulation: no telemetry, no update check, no Ray usage report
    os.environ.update(FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", RAY_USAGE_STATS_ENABLED="0")
    become_subreaper()
    atexit.register(kill_descendants)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on `kill`
    out = Report()
    for line in provenance(sys.argv[1:]):
        out(line)
    out(f"work: N clients × a random float32 update of d = {D:,} (the size of {MODEL}) per round, no "
        "training; secure aggregation on both sides (complete graph; every group's threshold accepted by our "
        "clients' default policy); mean of the updates; no evaluation, no DP noise")
    deployment: list[Run] = []
    for n in sizes:
        for group in (OUR_GROUP, n):
            log(f"ours N={n}, groups of {group}: {args.our_rounds} rounds")
            deployment.append(ours_deployment(n, group, args.our_rounds, args.round_timeout))
        log(f"Flower N={n}: {rounds} rounds (about a minute or more each)")
        deployment.append(flower_deployment(n, rounds, args.round_timeout))
        if n in args.grouped_sizes:
            log(f"Flower N={n} with our grouped workflow and Mod: {rounds} rounds")
            deployment.append(flower_deployment(n, rounds, args.round_timeout, workflow="grouped"))
    simulation: list[SimRun] = []
    if not args.no_simulation:
        for group in (OUR_GROUP, 10):
            log(f"our simulation N=10, groups of {group}: {args.sim_rounds} rounds")
            simulation.append(ours_simulation(10, group, args.sim_rounds))
        log(f"Flower simulation N=10: {args.sim_rounds} rounds")
        simulation.append(flower_simulation(10, args.sim_rounds))
    report(out, deployment, simulation, rounds, args)
    if args.write:
        RESULTS.write_text("\n".join(out.lines) + "\n")
        log(f"wrote {RESULTS}")
    return 0 if all(r.ok for r in deployment) else 1


def report(out: Report, deployment: list[Run], simulation: list[SimRun], rounds: int,
           args: argparse.Namespace) -> None:
    """The tables (markdown) and the per-run details."""
    out(f"\n## Deployment on loopback (Flower: {rounds} rounds per N; ours: {args.our_rounds}; steady = mean "
        "spacing of round completions after round 1)")
    deployment_table(out, deployment)
    out("\nratios (Flower / ours)")
    ratio_table(out, deployment)
    out("\ndetails")
    details(out, deployment)
    if any(r.side == "Flower" for r in deployment):
        out("- Flower 1.42's deployment runtime, from its source: an idle SuperNode polls the SuperLink "
            "every 3 s (flwr/supernode/start_client_internal.py), the ServerApp's grid pulls the replies "
            "every 3 s (flwr/superlink/grid/http_grid.py), and with the default subprocess isolation each "
            "message runs in a new flwr-clientapp process (counted above); SecAgg+ needs 4 such round trips "
            "per round")
    if simulation:
        out(f"\n## Simulation, N = 10, in-process ({args.sim_rounds} rounds per side; warmed-up = mean of "
            "the rounds after the first)")
        simulation_table(out, simulation)
        out("(ours: one process, the clients and the engine one after the other on one core; Flower: Ray, "
            "one actor per core)")
        f = next(r for r in simulation if r.side == "Flower")
        for o in (r for r in simulation if r.side == "ours"):
            out(f"- Flower / ours ({o.label}): warmed-up round {ratio(f.steady, o.steady)}, start-up "
                f"{ratio(f.startup, o.startup)}")
    out(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    sys.exit(main())
