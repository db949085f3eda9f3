#!/usr/bin/env python
"""The pool against what users do instead: one ``manage.py`` process per worker under supervisord.

Run from the project root (needs supervisor: ``pip install 'django-worker-pool[bench]'``)::

    .venv/bin/python benchmarks/bench_peers.py                # everything (a few minutes)
    .venv/bin/python benchmarks/bench_peers.py --only idle    # benchmarks 1-3 (they share their runs)
    .venv/bin/python benchmarks/bench_peers.py --only restart # benchmark 4
    .venv/bin/python benchmarks/bench_peers.py --quick        # smoke mode: 3 and 5 workers, 5 crashes
    .venv/bin/python benchmarks/bench_peers.py --strict       # exit 1 when a target is missed

The two sides run the same trivial worker, from the benchmark's own Django project
(``benchmarks/peers/``: settings ``peersite.settings``, no database, the app ``idlers``). Its body
(``idlers/body.py``) appends a line ``ready``/``crash``/``exit`` with its pid and a
``time.monotonic_ns()`` timestamp to an events file, idles until it is stopped, and on demand
(when the file ``<crash dir>/<name>`` appears) removes that file and raises.

- Ours: one ``python manage.py runworkers`` process running N ``IdleWorker``s (a ``Worker`` whose
  ``run`` is the body with ``ctx.sleep`` as its wait). Metrics and tracing are switched off, as
  the baseline has neither; history is off (the default).
- Baseline, what a Django user writes without this package: one management command per worker
  (``manage.py idle <name>``: a loop in ``handle()`` waiting on a ``threading.Event`` that its
  SIGTERM/SIGINT handler sets), each its own supervisord program ``python manage.py idle idle-<i>``
  with ``autostart`` and ``autorestart`` and supervisord's other defaults (``startsecs=1``,
  ``stopsignal=TERM``, ``stopwaitsecs=10``), under one ``supervisord -n`` whose configuration,
  socket and logs are in a temporary directory. The baseline processes do not load django_workers.

Every process gets ``DJANGO_SETTINGS_MODULE=peersite.settings`` and runs with this interpreter.
Every wait is on an event with a deadline: the workers' lines in the events file (polled), a
process's exit (``waitpid``), supervisord's process state over its XML-RPC socket (what
``supervisorctl status`` reads); no measurement waits a fixed time. Each side is started in a
session of its own with ``PR_SET_PDEATHSIG`` (SIGTERM when the bench dies) and is killed in a
``finally`` if it is still running (supervisord is frozen first, then its group and each of its
children, which supervisord puts in process groups of their own, are killed by pid).

1-3. Runs of N idle workers, N = 10 and 50 (``--quick``: 3 and 5), 3 rounds per size, the two
   sides alternated round by round (baseline first in even rounds); best (lowest) of the rounds.
   One run of a side: take the time, start its top process (runworkers or supervisord), wait
   until all N workers have written ``ready``, read the memory, send SIGTERM to the top process
   and wait until it has exited.

   1. Start-up: from just before the top process is started to the last worker's ``ready``
      timestamp (taken by the worker). Reported for N = 50. Target: at most 0.2x.
   2. Memory: PSS (``Pss`` of ``/proc/<pid>/smaps_rollup``, where a page shared by k processes
      counts 1/k) summed over the top process and all its descendants: supervisord and its N
      children against the one runworkers process. RSS and USS (private pages) are printed too.
      Target: at most 2/N (0.2x for 10 workers, 0.04x for 50): ours may weigh as much as two of
      the baseline's worker processes, whatever N. A fixed ratio would not do: the pool is one
      Django process and the baseline N + 1, so the ratio falls as 1/N; 2/N says the pool's cost
      per worker (a thread) is small next to a process. Caveat: a page that the side's processes
      share with another process (this bench's interpreter, any other Python running on the
      machine) is split with it, which lowers a one-process side's PSS more than the baseline's;
      the USS line is free of that.
   3. Graceful stop: from SIGTERM to the top process until it has exited (runworkers exits after
      its workers; supervisord after it has stopped and reaped every program). Every worker must
      have written ``exit``, the top process must exit 0 and no worker process may be left.
      Reported for N = 50. Target: at most 0.2x.

4. Restart latency: one crashing worker per side, both sides running, crashes alternated between
   them, 20 per side (``--quick``: 5). The pool runs with ``MAX_EXECUTIONS_ATTEMPTS = 0`` and
   ``RESTART_BACKOFF = {"INITIAL": 0, ...}`` (every restart at once): supervisord restarts a
   process that ran past ``startsecs`` at once too, so the comparison is about supervision, not
   about backoff policies. Before each crash the bench waits until the worker is running again
   (its ``ready`` line; for the baseline also supervisord's state ``RUNNING`` for that pid, i.e.
   after ``startsecs``: a process that dies sooner counts as a failed start and is retried with a
   backoff, then given up). It then creates the trigger file and waits for the ``crash`` line and
   the next ``ready`` line. Latency = next ``ready`` timestamp - ``crash`` timestamp, both taken by
   the workers: for the pool a new attempt in the same process, for the baseline the traceback,
   the exit, supervisord's reaping and respawn, a new interpreter, Django's set-up and system
   checks, the command. Median and p95 (nearest rank) over all crashes. Target: both at most 0.1x.
   Most of the baseline's latency is supervisord's own: it respawns an exited program on the turn
   of its main loop after the one that reaped it, and that loop polls with a one-second timeout
   (its log shows each exit and respawn a second apart); noticing the exit can take a turn too,
   hence two modes a second apart. The new interpreter and Django's set-up are the smaller part.

The targets say "clearly better" with room for the noise of these 2-core machines. A restart in
the pool is a new attempt in a running process, where the baseline starts an interpreter and
Django: orders of magnitude, so 0.1x is a loose bound. Start-up and stop are one process against
N + 1: supervisord spawns its N programs together (after its first one-second poll) and N
interpreters importing Django share the 2 cores; it stops its programs one at a time (each
program is a group of its own, and its shutdown loop stops the next group only once the last is
reaped, a loop turn waiting up to a second), so its stop grows with N and varies a lot. 0.2x at
50 says at least five times faster and leaves a margin of several times over the hand measurement
(about 0.03x for both). ``--quick`` (1 round, 3 and 5 workers) is a smoke test: its start-up
and stop ratios are judged by targets meant for 50 workers. Exit status: 0, or 1 with ``--strict`` when
a target is missed, or 2 when a benchmark crashed or supervisor is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import importlib.metadata
import importlib.util
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xmlrpc.client
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

PEERS = Path(__file__).resolve().parent / "peers"
MANAGE = PEERS / "manage.py"
SETTINGS = "peersite.settings"

#: Generous deadline for anything the bench waits on; ``--quick`` shortens it.
DEADLINE = 180.0
#: How often the events file and supervisord's state are polled while waiting.
POLL = 0.01
MIB = 1024 * 1024


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    sizes: tuple[int, int]  # (small, large) numbers of idle workers; start-up and stop at the large one
    rounds: int
    crashes: int


FULL = Params(sizes=(10, 50), rounds=3, crashes=20)
QUICK = Params(sizes=(3, 5), rounds=1, crashes=5)

START_TARGET = 0.2
STOP_TARGET = 0.2
RESTART_TARGET = 0.1


def memory_target(n: int) -> float:
    """Ours may weigh as much as two of the baseline's worker processes."""
    return 2 / n


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    name: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None  # None: the benchmark crashed


# -- formatting -------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.1f} MiB"


def fmt_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.3g}x"


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "ERROR"}[passed]


def show_rounds(label: str, values: Sequence[float], fmt: Callable[[float], str], kept: str, best: float) -> None:
    print(f"    {label:<13} {', '.join(fmt(v) for v in values)}   {kept} {fmt(best)}")


def report_ratio(name: str, ours: float, baseline: float, limit: float, fmt: Callable[[float], str]) -> Row:
    ratio = ours / baseline
    passed = ratio <= limit
    print(
        f"    {name}: ours {fmt(ours)}, baseline {fmt(baseline)}, ratio {fmt_ratio(ratio)}, "
        f"target <= {limit:.2g}x: {verdict(passed)}"
    )
    return Row(name, fmt(ours), fmt(baseline), ratio, f"<= {limit:.2g}x", passed)


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


# -- the workers' events ----------------------------------------------------------------------


class Event(NamedTuple):
    kind: str  # ready, crash, exit
    name: str
    pid: int
    at: float  # time.monotonic() of the worker's process (one clock for the whole machine)


class EventLog:
    """The events file the workers of one side append to; read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[Event] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[Event]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.events
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            kind, name, pid, ns = line.decode().split()
            self.events.append(Event(kind, name, int(pid), int(ns) / 1e9))
        return self.events

    def of(self, kind: str, name: str | None = None) -> list[Event]:
        return [e for e in self.read() if e.kind == kind and (name is None or e.name == name)]


def wait_until(what: str, condition: Callable[[], bool], alive: Callable[[], str | None]) -> None:
    """Poll ``condition`` until true; fail when ``alive()`` reports a death or at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        dead = alive()
        if dead is not None:
            raise RuntimeError(f"{dead} while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {DEADLINE:g} s waiting for {what}")
        time.sleep(POLL)


# -- processes --------------------------------------------------------------------------------


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the bench dies (Linux ``PR_SET_PDEATHSIG``)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (from the parent pids in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[0] not in ("Z", "X"):
                children.setdefault(stat[1], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def is_peer_process(pid: int) -> bool:
    """True when ``pid`` is alive and runs this benchmark's manage.py (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(MANAGE).encode() in f.read() and alive(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False


@dataclass(frozen=True)
class Memory:
    pss: int
    rss: int
    uss: int
    processes: int


def memory_of(pids: Sequence[int]) -> Memory:
    """PSS, RSS and USS summed over ``pids``, from /proc/<pid>/smaps_rollup (kB there, bytes here)."""
    totals = {"Pss": 0, "Rss": 0, "Private_Clean": 0, "Private_Dirty": 0}
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in totals:
                    totals[key] += int(rest.split()[0]) * 1024
    uss = totals["Private_Clean"] + totals["Private_Dirty"]
    return Memory(totals["Pss"], totals["Rss"], uss, len(pids))


class Side:
    """One side of a run: a top process started in a temporary directory, its workers' events."""

    label = ""
    top = ""  # the top process's name
    setting = ""  # PEERS_SIDE for the settings module

    def __init__(self, workdir: Path, n: int, *, crash: bool) -> None:
        self.workdir = workdir
        self.n = n
        workdir.mkdir(parents=True)
        self.events = EventLog(workdir / "events.log")
        self.crash_dir = workdir / "crash" if crash else None
        if self.crash_dir is not None:
            self.crash_dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def environment(self) -> dict[str, str]:
        """Of the top process; supervisord passes its own on to its programs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEERS_")}
        env.update(DJANGO_SETTINGS_MODULE=SETTINGS, PEERS_SIDE=self.setting, PEERS_WORKERS=str(self.n))
        env["PEERS_EVENTS"] = str(self.events.path)
        if self.crash_dir is not None:
            env["PEERS_CRASH_DIR"] = str(self.crash_dir)
        return env

    def command(self) -> list[str]:
        raise NotImplementedError

    def launch(self) -> float:
        """Start the top process; return the time taken just before."""
        self._log = open(self.workdir / "top.log", "wb")  # closed in close()
        began = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=PEERS,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # the bench is single-threaded
        )
        return began

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def death(self) -> str | None:
        """Why the side cannot make progress any more, or None."""
        if self.proc is not None and self.proc.poll() is not None:
            return f"{self.label}: {self.top} exited with {self.proc.returncode}"
        return None

    def wait_running(self, count: int = 1) -> dict[str, Event]:
        """Wait until every worker has written ``ready`` ``count`` times; return each one's last."""
        names = [f"idle-{i}" for i in range(self.n)]

        def done() -> bool:
            ready = self.events.of("ready")
            return all(sum(1 for e in ready if e.name == name) >= count for name in names)

        wait_until(f"{self.label}: {self.n} worker(s) running", done, self.death)
        return {e.name: e for e in self.events.of("ready")}

    def stop(self) -> float:
        """SIGTERM to the top process; the seconds until it has exited. Checks that all went well."""
        assert self.proc is not None
        tree = process_tree(self.proc.pid)
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(DEADLINE)
        seconds = time.monotonic() - began
        if code != 0:
            raise RuntimeError(f"{self.label}: the top process exited with {code} after SIGTERM")
        left = [pid for pid in tree if is_peer_process(pid)]
        if left:
            raise RuntimeError(f"{self.label}: worker process(es) {left} still running after the stop")
        exits = {e.name for e in self.events.of("exit")}
        if len(exits) != self.n:
            raise RuntimeError(f"{self.label}: {len(exits)} of {self.n} worker(s) stopped gracefully")
        return seconds

    def close(self) -> None:
        """Kill whatever is left (idempotent); called in ``finally``."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.kill()
                self.proc.wait(DEADLINE)
        finally:
            for event in self.events.read():
                if is_peer_process(event.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(event.pid, signal.SIGKILL)
            if self._log is not None:
                self._log.close()

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def logs(self) -> list[Path]:
        return [self.workdir / "top.log"]

    def tail(self, lines: int = 15) -> str:
        out = []
        for path in self.logs():
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {self.label}: {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)

    def crash_once(self) -> float:
        """Crash the worker ``idle-0`` once; return the seconds from its crash to its next attempt."""
        assert self.crash_dir is not None
        crashes = len(self.events.of("crash"))
        readies = len(self.events.of("ready"))
        self.ready_to_crash(self.events.of("ready")[-1])
        (self.crash_dir / "idle-0").touch()
        wait_until(
            f"{self.label}: crash {crashes + 1} and the next attempt",
            lambda: len(self.events.of("crash")) > crashes and len(self.events.of("ready")) > readies,
            self.death,
        )
        crash, ready = self.events.of("crash")[crashes], self.events.of("ready")[readies]
        return ready.at - crash.at

    def ready_to_crash(self, last_ready: Event) -> None:
        """Wait until a crash now would be an ordinary crash of a running worker."""


class PoolSide(Side):
    label = "ours"
    top = "runworkers"
    setting = "pool"

    def command(self) -> list[str]:
        return [sys.executable, str(MANAGE), "runworkers"]


SUPERVISORD_CONF = """\
[unix_http_server]
file={dir}/supervisor.sock

[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{dir}/supervisor.sock
"""

SUPERVISORD_PROGRAM = """
[program:{name}]
command={python} {manage} idle {name}
directory={peers}
autostart=true
autorestart=true
redirect_stderr=true
stdout_logfile={dir}/{name}.log
"""


class SupervisordSide(Side):
    label = "baseline"
    top = "supervisord"
    setting = "baseline"

    def __init__(self, workdir: Path, n: int, *, crash: bool) -> None:
        super().__init__(workdir, n, crash=crash)
        self.conf = workdir / "supervisord.conf"
        parts = [SUPERVISORD_CONF.format(dir=workdir)]
        parts += [
            SUPERVISORD_PROGRAM.format(name=f"idle-{i}", python=sys.executable, manage=MANAGE, peers=PEERS, dir=workdir)
            for i in range(n)
        ]
        self.conf.write_text("".join(parts))
        self._rpc: Any = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        # supervisord's HTTP server calls urllib.parse.splitquery(), deprecated since Python 3.8 (the
        # family of https://github.com/Supervisor/supervisor/issues/1513): under PYTHONWARNINGS=error
        # every request to its socket would fail.
        filters = [env.get("PYTHONWARNINGS", ""), "ignore::DeprecationWarning:supervisor.http"]
        env["PYTHONWARNINGS"] = ",".join(f for f in filters if f)
        return env

    def rpc(self) -> Any:
        """supervisord's XML-RPC interface (what supervisorctl talks to)."""
        if self._rpc is None:
            from supervisor.xmlrpc import SupervisorTransport

            transport = SupervisorTransport(None, None, f"unix://{self.workdir}/supervisor.sock")
            self._rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        return self._rpc

    def state(self, name: str) -> tuple[str, int] | None:
        try:
            info = self.rpc().supervisor.getProcessInfo(name)
        except (OSError, http.client.HTTPException, xmlrpc.client.Fault):  # not listening yet
            self.close_rpc()  # the transport's connection is left unusable after a failed request
            return None
        return info["statename"], info["pid"]

    def close_rpc(self) -> None:
        if self._rpc is not None:
            self._rpc("close")()
            self._rpc = None

    def ready_to_crash(self, last_ready: Event) -> None:
        wait_until(
            f"supervisord to report {last_ready.name} (pid {last_ready.pid}) RUNNING",
            lambda: self.state(last_ready.name) == ("RUNNING", last_ready.pid),
            self.death,
        )

    def kill(self) -> None:
        # supervisord would respawn what is killed first: freeze it, then kill it and its children
        # (each in a process group of its own) by pid.
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGSTOP)
        tree = process_tree(self.proc.pid)
        super().kill()
        for pid in tree:
            if is_peer_process(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.close_rpc()

    def logs(self) -> list[Path]:
        return [self.workdir / "top.log", self.workdir / "idle-0.log"]  # top.log: supervisord's log (-n)


SIDES: dict[str, type[Side]] = {"ours": PoolSide, "baseline": SupervisordSide}


# -- 1-3. start-up, memory and stop of idle workers -------------------------------------------


@dataclass(frozen=True)
class IdleRun:
    start: float
    memory: Memory
    stop: float


class Runs:
    """Hands out a fresh work directory per run, and keeps the last side for a crash report."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.count = 0
        self.current: list[Side] = []

    def make(self, side: str, n: int, *, crash: bool = False) -> Side:
        self.count += 1
        made = SIDES[side](self.tmp / f"{self.count:02d}-{side}-{n}", n, crash=crash)
        self.current.append(made)
        return made

    def tails(self) -> str:
        return "\n".join(side.tail() for side in self.current)


def idle_run(runs: Runs, label: str, n: int) -> IdleRun:
    runs.current = []
    side = runs.make(label, n)
    try:
        launched = side.launch()
        ready = side.wait_running()
        start = max(e.at for e in ready.values()) - launched
        memory = memory_of(process_tree(side.pid))
        stop = side.stop()
    finally:
        side.close()
    print(
        f"      {label:<9} start {duration(start)}, PSS {mib(memory.pss)} (RSS {mib(memory.rss)}, "
        f"USS {mib(memory.uss)}, {memory.processes} process(es)), stop {duration(stop)}"
    )
    return IdleRun(start, memory, stop)


def idle_rounds(runs: Runs, n: int, rounds: int) -> dict[str, list[IdleRun]]:
    results: dict[str, list[IdleRun]] = {"ours": [], "baseline": []}
    for i in range(rounds):
        print(f"    round {i + 1}:")
        order = ["baseline", "ours"] if i % 2 == 0 else ["ours", "baseline"]
        for label in order:
            results[label].append(idle_run(runs, label, n))
    return results


def bench_idle(p: Params, runs: Runs) -> list[Row]:
    small, large = p.sizes
    by_size: dict[int, dict[str, list[IdleRun]]] = {}
    for n in (small, large):
        print(f"[1-3] {n} idle workers: one runworkers vs supervisord + {n} manage.py processes, {p.rounds} round(s)")
        by_size[n] = idle_rounds(runs, n, p.rounds)
    print()

    rows: list[Row] = []
    print(f"[1] start-up until {large} workers are running (best of {p.rounds})")
    results = by_size[large]
    for label in ("ours", "baseline"):
        starts = [r.start for r in results[label]]
        show_rounds(label, starts, duration, "best", min(starts))
    best = {label: min(r.start for r in results[label]) for label in results}
    rows.append(report_ratio(f"1. start-up, {large} workers", best["ours"], best["baseline"], START_TARGET, duration))
    print()

    print(f"[2] memory (PSS) of idle workers, summed over each side's processes (lowest of {p.rounds})")
    lowest: dict[int, dict[str, Memory]] = {}
    for n in (small, large):
        results = by_size[n]
        lowest[n] = {}
        for label in ("ours", "baseline"):
            pss = [r.memory.pss for r in results[label]]
            show_rounds(f"{label} ({n})", pss, mib, "lowest", min(pss))
            lowest[n][label] = min((r.memory for r in results[label]), key=lambda m: m.pss)
        ours, base = lowest[n]["ours"], lowest[n]["baseline"]
        print(
            f"    USS for information: ours {mib(ours.uss)}, baseline {mib(base.uss)}: {fmt_ratio(ours.uss / base.uss)}"
        )
        rows.append(report_ratio(f"2. memory (PSS), {n} idle workers", ours.pss, base.pss, memory_target(n), mib))
    for label in ("ours", "baseline"):
        per_worker = (lowest[large][label].pss - lowest[small][label].pss) / (large - small)
        print(f"    for information, PSS per added worker ({small} -> {large}), {label}: {per_worker / 1024:,.0f} KiB")
    print()

    print(f"[3] graceful stop of {large} workers: SIGTERM to the top process until it exited (best of {p.rounds})")
    results = by_size[large]
    for label in ("ours", "baseline"):
        stops = [r.stop for r in results[label]]
        show_rounds(label, stops, duration, "best", min(stops))
    best = {label: min(r.stop for r in results[label]) for label in results}
    rows.append(
        report_ratio(f"3. graceful stop, {large} workers", best["ours"], best["baseline"], STOP_TARGET, duration)
    )
    print(
        f"    for information, start-up and stop of {small}: "
        + "; ".join(
            f"{label} {duration(min(r.start for r in by_size[small][label]))} and "
            f"{duration(min(r.stop for r in by_size[small][label]))}"
            for label in ("ours", "baseline")
        )
    )
    return rows


# -- 4. restart latency -----------------------------------------------------------------------


def bench_restart(p: Params, runs: Runs) -> list[Row]:
    print(f"[4] restart latency: one worker crashing on demand, {p.crashes} crashes per side, alternated")
    runs.current = []
    sides = {label: runs.make(label, 1, crash=True) for label in ("ours", "baseline")}
    latencies: dict[str, list[float]] = {"ours": [], "baseline": []}
    try:
        for side in sides.values():
            side.launch()
        for side in sides.values():
            side.wait_running()
        for i in range(p.crashes):
            order = ["baseline", "ours"] if i % 2 == 0 else ["ours", "baseline"]
            for label in order:
                latencies[label].append(sides[label].crash_once())
        for side in sides.values():
            side.wait_running(p.crashes + 1)
            side.stop()
    finally:
        for side in sides.values():
            side.close()

    rows: list[Row] = []
    for label in ("ours", "baseline"):
        print(f"    {label:<13} {', '.join(duration(v) for v in latencies[label])}")
    for stat, fn in (("median", statistics.median), ("p95", p95)):
        ours, base = fn(latencies["ours"]), fn(latencies["baseline"])
        rows.append(report_ratio(f"4. restart latency, {stat}", ours, base, RESTART_TARGET, duration))
    return rows


# -- main -------------------------------------------------------------------------------------

BENCHMARKS: dict[str, tuple[str, Callable[[Params, Runs], list[Row]]]] = {
    "idle": ("1-3. start-up, memory, stop", bench_idle),
    "restart": ("4. restart latency", bench_restart),
}


def print_table(rows: list[Row]) -> None:
    headers = ("benchmark", "ours", "baseline", "ratio", "target", "result")
    lines = [(r.name, r.ours, r.baseline, fmt_ratio(r.ratio), r.target, verdict(r.passed)) for r in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *lines)]
    print()
    print("Summary")
    for line in (headers, tuple("-" * w for w in widths), *lines):
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="idle (benchmarks 1-3) or restart (4)")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 3 and 5 workers, 5 crashes, 1 round")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    if args.quick:
        global DEADLINE
        DEADLINE = 60.0
    if importlib.util.find_spec("supervisor") is None:
        print("supervisor is not installed: pip install 'django-worker-pool[bench]'", file=sys.stderr)
        return 2
    if not os.path.exists("/proc/self/smaps_rollup"):
        print("this benchmark needs Linux's /proc/<pid>/smaps_rollup", file=sys.stderr)
        return 2
    # A SIGTERM to the bench unwinds through the finally blocks that stop the sides.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    import django_workers

    print(f"django_workers {django_workers.__version__} against supervisor {importlib.metadata.version('supervisor')}")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    print(f"CPUs: {os.cpu_count()}{' (quick mode)' if args.quick else ''}")
    print()

    rows: list[Row] = []
    crashed = False
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        runs = Runs(Path(tmp))
        for key, (title, bench) in BENCHMARKS.items():
            if args.only is not None and key != args.only:
                continue
            try:
                rows.extend(bench(params, runs))
            except Exception:
                crashed = True
                traceback.print_exc()
                print(runs.tails())
                rows.append(Row(title, "-", "-", None, "-", None))
            print()

    print_table(rows)
    print(f"\nTotal time: {time.perf_counter() - began:.1f} s")
    if crashed:
        return 2
    if args.strict and not all(r.passed for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
