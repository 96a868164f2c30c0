"""Run the backend command (``--subprocess``) under the node's supervision.

The command is split like a shell would (``shlex``) and executed directly, in its own session,
so stopping it signals the whole process group (``vllm serve`` forks workers): SIGTERM, then
SIGKILL after a grace period. If the node itself is killed (SIGKILL, OOM), the kernel sends the
backend SIGTERM (``PR_SET_PDEATHSIG``), so no server is left holding a GPU. Its output is
passed through line by line with a ``[backend]`` prefix. Use ``bash -c '...'`` for pipes.
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

log = structlog.get_logger("opentela.subprocess")


def _signal_group(proc: trio.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _pump(stream: trio.abc.ReceiveStream, prefix: bytes) -> None:
    buf = b""
    out = sys.stderr.buffer
    async for chunk in stream:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        if lines:
            out.write(b"".join(prefix + line + b"\n" for line in lines))
            out.flush()
    if buf:
        out.write(prefix + buf + b"\n")
        out.flush()


def die_with_parent() -> None:
    """``preexec_fn`` for processes forked from a long-lived *main* thread (e.g. the demo
    launcher): the child gets SIGTERM when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def run_backend(
    command: str,
    on_exit: Callable[[int], None],
    *,
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start ``command``; report its exit through ``on_exit``; stop it when cancelled."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("--subprocess is empty")
    proc = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.info("backend.started", pid=proc.pid, command=command)
    task_status.started(proc)
    try:
        async with trio.open_nursery() as nursery:
            assert proc.stdout is not None
            nursery.start_soon(_pump, proc.stdout, b"[backend] ")
            code = await proc.wait()
            log.warning("backend.exited", pid=proc.pid, code=code)
            on_exit(code)
            _signal_group(proc, signal.SIGTERM)  # its own children may still hold the pipe
    finally:
        if proc.returncode is None:
            with trio.CancelScope(shield=True):
                await stop(proc)


async def stop(proc: trio.Process, grace_s: float = STOP_GRACE_S) -> None:
    _signal_group(proc, signal.SIGTERM)
    with trio.move_on_after(grace_s):
        await proc.wait()
    if proc.returncode is None:
        log.warning("backend.kill", pid=proc.pid)
        _signal_group(proc, signal.SIGKILL)
        await proc.wait()
    log.info("backend.stopped", pid=proc.pid, code=proc.returncode)
