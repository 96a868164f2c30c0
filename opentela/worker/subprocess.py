"""Run the backend command (``--subprocess``) under the node's supervision.

The command is split like a shell would (``shlex``) and executed directly, in its own session,
so stopping it signals the whole process group (``vllm serve`` forks workers): SIGTERM, then
SIGKILL after a grace period. Its output is passed through line by line with a ``[backend]``
prefix. Use ``bash -c '...'`` for pipes.

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

log = structlog.get_logger("opentela.subprocess")


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the thread that forked it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


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


async def _wait(proc: subprocess.Popen) -> int:
    while (code := proc.poll()) is None:
        await trio.sleep(POLL_S)
    return code


async def run_backend(
    command: str,
    on_exit: Callable[[int], None],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start ``command``; report its exit through ``on_exit``; stop it when cancelled."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("--subprocess is empty")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
    )
    assert proc.stdout is not None
    output = trio.lowlevel.FdStream(os.dup(proc.stdout.fileno()))
    proc.stdout.close()
    log.info("backend.started", pid=proc.pid, command=command)
    task_status.started(proc.pid)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, output, b"[backend] ")
            code = await _wait(proc)
            log.warning("backend.exited", pid=proc.pid, code=code)
            on_exit(code)
            _signal_group(proc, signal.SIGTERM)  # its own children may still hold the pipe
    finally:
        if proc.poll() is None:
            with trio.CancelScope(shield=True):
                await stop(proc)


async def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    _signal_group(proc, signal.SIGTERM)
    with trio.move_on_after(grace_s):
        await _wait(proc)
    if proc.poll() is None:
        log.warning("backend.kill", pid=proc.pid)
        _signal_group(proc, signal.SIGKILL)
        await _wait(proc)
    log.info("backend.stopped", pid=proc.pid, code=proc.returncode)
