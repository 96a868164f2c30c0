"""Start, watch and stop the backend command (``--subprocess``); restarts are decided by
``supervisor.py``.

The command is split like a shell would (``shlex``) and executed directly, in its own session,
so stopping it signals the whole process group (``vllm serve`` forks workers): SIGTERM, then
SIGKILL after a grace period. The group is also ended when its leader dies by itself: workers
left behind would keep the port and the GPU memory the restarted backend needs. Its output is
passed through line by line with a ``[backend]`` prefix. Use ``bash -c '...'`` for pipes.

If the node dies without stopping it (SIGKILL, OOM killer), the kernel sends the backend
SIGTERM (``PR_SET_PDEATHSIG``), so no orphaned server keeps holding a GPU. That signal fires
when the *thread* that forked the child exits, so the fork happens here, on trio's main thread
(``trio.lowlevel.open_process`` forks from a worker thread that idles out after ~10 s, which
would kill the backend ten seconds after start: seen).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable

import structlog
import trio

STOP_GRACE_S = 10.0
POLL_S = 0.2  # how often the exit status is polled (a cheap non-blocking waitpid)
PUMP_GRACE_S = 1.0  # output still buffered once the group is gone (or a stray holder of the pipe)

log = structlog.get_logger("opentela.subprocess")


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the thread that forked it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(command: str) -> subprocess.Popen:
    """Fork and exec ``command`` in a new session; raises OSError if it cannot be executed."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("--subprocess is empty")
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
    )


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(proc: subprocess.Popen) -> bool:
    """Whether any process of the backend's group still runs. Zombies do not count: when the
    node is PID 1 (a container), orphaned workers are reparented to it and nobody reaps them."""
    proc.poll()  # reap the leader, or it counts as a member
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                state, _ppid, pgrp = f.read().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == proc.pid and state != "Z":
            return True
    return False


async def _pump(stream: trio.lowlevel.FdStream, prefix: bytes) -> None:
    buf = b""
    out = sys.stderr.buffer
    async with stream:
        while chunk := await stream.receive_some(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if lines:
                out.write(b"".join(prefix + line + b"\n" for line in lines))
                out.flush()
    if buf:
        out.write(prefix + buf + b"\n")
        out.flush()


async def _wait(proc: subprocess.Popen, tick: Callable[[], None] | None = None) -> int:
    while (code := proc.poll()) is None:
        if tick is not None:
            tick()
        await trio.sleep(POLL_S)
    return code


async def watch(proc: subprocess.Popen, tick: Callable[[], None] | None = None) -> int:
    """Pass the output through until the process exits and return its code (``Popen``'s:
    negative for a signal). ``tick`` is called at every poll. What is left of its group is
    ended before returning; when cancelled, the whole group is stopped."""
    assert proc.stdout is not None
    output = trio.lowlevel.FdStream(os.dup(proc.stdout.fileno()))
    proc.stdout.close()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, output, b"[backend] ")
            code = await _wait(proc, tick)
            await stop(proc)
            nursery.cancel_scope.deadline = trio.current_time() + PUMP_GRACE_S
        return code
    finally:
        with trio.CancelScope(shield=True):
            await stop(proc)


async def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the whole group, SIGKILL what is left after ``grace_s`` or as soon as the caller
    is cancelled (its stop deadline passed); no-op once the group is gone."""
    if not _group_alive(proc):
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        with trio.move_on_after(grace_s):
            while _group_alive(proc):
                await trio.sleep(POLL_S)
    finally:
        if _group_alive(proc):
            log.warning("backend.kill", pid=proc.pid)
            _signal_group(proc.pid, signal.SIGKILL)
    with trio.move_on_after(grace_s):
        while _group_alive(proc):
            await trio.sleep(POLL_S)
    log.info("backend.stopped", pid=proc.pid, code=proc.returncode)
