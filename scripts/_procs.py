"""Small, dependency-light helpers for benchmark scripts that start local processes.

Benchmarks under ``scripts/`` start fake upstreams and opentela nodes as child processes on
127.0.0.1. This module keeps the boring, easy-to-get-wrong parts in one place:

* :func:`free_port` - ask the kernel for a free TCP port (bind to port 0, read it back, close).
  There is a small race between closing and the child binding it; fine for local benchmarks.
* :class:`ProcessGroup` - a context manager that starts children, sends their stdout/stderr to
  files in a directory, and on exit (normal, exception or Ctrl-C) stops **only the processes it
  started**, by PID: SIGTERM, wait, then SIGKILL. Children get their own session (so a Ctrl-C
  in the terminal reaches only the benchmark, which then shuts them down in order) and, on
  Linux, ``PR_SET_PDEATHSIG`` so they die even if the benchmark itself is SIGKILLed.
* :func:`wait_for_line` - wait (with a deadline) for a line with a given prefix on a child's
  stdout file, e.g. ``READY http://...`` from ``opentela.testing.fake_upstream``.
* :func:`wait_until` - poll a predicate until it returns a truthy value or a deadline passes.
* :func:`rss_mb` / :func:`peak_rss_mb` - resident memory of a PID (psutil if installed, else
  ``/proc/PID/status``); the peak is the kernel's high-water mark ``VmHWM``.
* :func:`tree_cpu_seconds` / :func:`tree_memory_mb` - the same over a process and its
  descendants (a node with HTTP worker processes is one router).
* :func:`sigterm_as_keyboard_interrupt` - make SIGTERM run ``finally`` blocks like Ctrl-C does.

Typical use::

    with ProcessGroup(log_dir) as procs:
        up = procs.start("upstream", [sys.executable, "-m", "opentela.testing.fake_upstream", ...])
        url = wait_for_line(up, "READY ", timeout=20).split()[1]
        ...
    # every child is stopped here, also on failure

Nothing here touches processes it did not start, and nothing listens on anything but what the
caller asks for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from opentela.testing.serving import free_port
from opentela.worker.subprocess import die_with_parent

try:  # optional
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None  # type: ignore[assignment]

T = TypeVar("T")

__all__ = [
    "ManagedProcess",
    "ProcessGroup",
    "StartupError",
    "cpu_seconds",
    "free_port",
    "node_bin",
    "peak_rss_mb",
    "rss_mb",
    "sigterm_as_keyboard_interrupt",
    "tree_cpu_seconds",
    "tree_memory_mb",
    "wait_for_line",
    "wait_until",
]


class StartupError(RuntimeError):
    """A child did not become ready in time (or exited early)."""


class ManagedProcess:
    """One child started by :class:`ProcessGroup`; output goes to ``stdout_path``/``stderr_path``."""

    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], stdout_path: Path, stderr_path: Path
    ):
        self.name = name
        self.popen = popen
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def read_stdout(self) -> str:
        return _read_text(self.stdout_path)

    def read_stderr(self) -> str:
        return _read_text(self.stderr_path)

    def tail(self, lines: int = 30) -> str:
        """Last lines of stderr and stdout, labelled, for failure reports."""
        parts = []
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = _read_text(path).rstrip("\n")
            if text:
                body = "\n".join(text.splitlines()[-lines:])
                parts.append(f"--- {self.name} {label} ({path}) ---\n{body}")
        return "\n".join(parts) or f"--- {self.name}: no output ---"

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Only ever signals our own PID."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} rc={self.returncode}>"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class ProcessGroup:
    """Start children with output captured to files; stop them all (reverse order) on exit."""

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        stop_timeout: float = 5.0,
        *,
        parallel_stop: bool = False,
    ):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stop_timeout = stop_timeout
        self.parallel_stop = parallel_stop  # stop all at once under one deadline (many nodes)
        self.procs: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> ManagedProcess:
        out = self.log_dir / f"{name}.stdout.log"
        err = self.log_dir / f"{name}.stderr.log"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=fo,
                stderr=fe,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        proc = ManagedProcess(name, popen, out, err)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> dict[str, int | None]:
        if self.parallel_stop:
            return self._stop_all_at_once()
        codes: dict[str, int | None] = {}
        for proc in reversed(self.procs):
            codes[proc.name] = proc.stop(self.stop_timeout)
        return codes

    def _stop_all_at_once(self) -> dict[str, int | None]:
        """SIGTERM every child, one shared deadline, then SIGKILL the rest: 50 nodes stopped
        one after another would take minutes. Still only our own PIDs."""
        live = [p for p in self.procs if p.alive()]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for p in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(max(0.0, deadline - time.monotonic()))
        for p in live:
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    p.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(5)
        return {p.name: p.returncode for p in self.procs}

    def tails(self, lines: int = 30) -> str:
        return "\n".join(p.tail(lines) for p in self.procs)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()


def wait_for_line(proc: ManagedProcess, prefix: str, timeout: float, poll_s: float = 0.02) -> str:
    """Return the first stdout line starting with ``prefix``; raise :class:`StartupError` on
    timeout or if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        for line in proc.read_stdout().splitlines():
            if line.startswith(prefix):
                return line
        if not proc.alive():
            raise StartupError(
                f"{proc.name} exited with code {proc.returncode} before printing {prefix!r}"
            )
        if time.monotonic() >= deadline:
            raise StartupError(f"{proc.name} did not print {prefix!r} within {timeout:.1f}s")
        time.sleep(poll_s)


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    poll_s: float = 0.05,
    procs: Sequence[ManagedProcess] = (),
) -> T:
    """Poll ``predicate`` until truthy; exceptions count as "not yet". Fail early if any of
    ``procs`` exits."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        for p in procs:
            if not p.alive():
                raise StartupError(
                    f"{p.name} exited with code {p.returncode} while waiting for {what}"
                )
        if time.monotonic() >= deadline:
            hint = f" (last error: {last_exc!r})" if last_exc else ""
            raise StartupError(f"timed out after {timeout:.1f}s waiting for {what}{hint}")
        time.sleep(poll_s)


def _proc_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def rss_mb(pid: int) -> float | None:
    """Current resident set size in MiB (None if the process is gone)."""
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss / (1024 * 1024)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
    kb = _proc_status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set size since the process started (Linux ``VmHWM``), in MiB."""
    kb = _proc_status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds consumed so far by ``pid`` (None if unavailable)."""
    if psutil is not None:
        try:
            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants (a node with HTTP worker processes is one router)."""
    if psutil is not None:
        try:
            return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return []
    try:  # /proc fallback: walk children files (Linux >= 3.5 with CONFIG_PROC_CHILDREN)
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        return out
    except (OSError, ValueError):
        return [pid] if os.path.exists(f"/proc/{pid}") else []


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` and every descendant, including children they already reaped
    (``/proc/PID/stat`` cutime/cstime), so a worker process that exits mid-window still counts."""
    total, seen = 0.0, False
    for p in _tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
            seen = True
        except (OSError, IndexError, ValueError):
            continue
    return total if seen else None


def tree_memory_mb(pid: int) -> dict[str, float | int | None]:
    """Memory of ``pid``'s process tree: the root's RSS, the RSS summed over the tree and the
    PSS summed over it (shared pages split between the processes sharing them, so a forked
    worker does not count its parent's pages twice); MiB, None where unreadable."""
    pids = _tree_pids(pid)
    rss = [v for v in (rss_mb(p) for p in pids) if v is not None]
    pss: list[float] = []
    for p in pids:
        kb = _smaps_rollup_kb(p, "Pss")
        if kb is not None:
            pss.append(kb / 1024)
    return {
        "rss": rss_mb(pid),
        "rss_sum": sum(rss) if rss else None,
        "pss_sum": sum(pss) if len(pss) == len(pids) and pss else None,
        "procs": len(pids),
    }


def _smaps_rollup_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def sigterm_as_keyboard_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread so ``finally`` blocks run."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def node_bin(explicit: str | None) -> str:
    """The ``opentela-node`` to benchmark: ``explicit``, the one beside this Python, or PATH's."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "opentela-node"
    if beside.exists():
        return str(beside)
    found = shutil.which("opentela-node")
    if not found:
        raise SystemExit("opentela-node not found; pass --node-bin")
    return found
