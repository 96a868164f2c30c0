"""``--http-workers N``: N-1 child processes that listen on the node's HTTP port beside it
(SO_REUSEPORT: the kernel spreads new connections over all N), each on a core of its own.

A child is a head of its own (``child_config.py``); this component starts, restarts and
stops them. They stop when the parent stops (SIGTERM at the start of its drain, so both
drain at once) and even when it is killed: a child's stdin is a pipe from the parent, which
the kernel closes when the parent dies, and the child drains on that EOF
(``until_parent_exits``). (``PR_SET_PDEATHSIG`` is no substitute: it fires when the parent
*thread* that forked exits, and trio forks from a worker thread that ends when idle: it
stopped a healthy child after 10 s.) One that exits on its own is restarted with backoff.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio
import yaml

from ..config import Config
from ..overlay import identity
from ..store.url import resolve
from .child_config import child_settings, parent_maddr

log = structlog.get_logger("opentela.edge")

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
JOIN_S = 30.0  # an HTTP worker listens once it joined, or after this long anyway
HEALTHY_RUN_S = 60.0  # a child that ran this long restarts from the shortest backoff again


def _free_port(host: str) -> int:
    """A port free a moment ago; a child that loses it to a race fails to start and is
    started again with another."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Child:
    def __init__(self, index: int, home: Path, peer_id: str) -> None:
        self.index = index
        self.home = home
        self.peer_id = peer_id
        self.process: trio.Process | None = None
        self.restarts = 0

    def stats(self) -> dict[str, Any]:
        running = self.process is not None and self.process.returncode is None
        return {
            "index": self.index,
            "peer_id": self.peer_id,
            "pid": self.process.pid if running and self.process else None,
            "restarts": self.restarts,
        }


class HttpWorkers:
    """The node's extra HTTP processes (none with ``--http-workers 1``)."""

    def __init__(self, cfg: Config, peer_id: str) -> None:
        self.cfg = cfg
        self.parent = parent_maddr(cfg, peer_id)
        self.stopping = False
        self.children: list[Child] = []
        for k in range(1, cfg.http_workers):
            home = cfg.home_path / "http-workers" / str(k)
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = identity.load_or_create(home)
            self.children.append(Child(k, home, identity.peer_id(key)))

    @property
    def stats(self) -> dict[str, Any]:
        return {"http_workers": [c.stats() for c in self.children]} if self.children else {}

    async def start(self, nursery: trio.Nursery) -> None:
        for child in self.children:
            nursery.start_soon(self._supervise, child)

    def _argv_env(self, child: Child) -> tuple[list[str], dict[str, str]]:
        port = _free_port(self.cfg.p2p_host)
        settings = child_settings(
            self.cfg,
            home=str(child.home),
            db_url=resolve(self.cfg.db or self.cfg.home_path),
            p2p_port=port,
            parent=self.parent,
        )
        path = child.home / "config.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(settings, f, sort_keys=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTELA_")}
        if self.cfg.join_token:
            env["OTELA_JOIN_TOKEN"] = self.cfg.join_token
        argv = [sys.executable, "-m", "opentela.cli", "http-worker", "--config", str(path)]
        return argv, env

    async def _supervise(self, child: Child) -> None:
        backoff = RESTART_MIN_S
        while not self.stopping:
            argv, env = self._argv_env(child)
            started = trio.current_time()
            # Its own process group: a terminal's Ctrl-C (SIGINT to the foreground group)
            # reaches the parent only, which stops the children itself, in order.
            child.process = await trio.lowlevel.open_process(
                argv, env=env, stdin=subprocess.PIPE, process_group=0
            )
            log.info("edge.http_worker_started", index=child.index, pid=child.process.pid)
            code = await child.process.wait()
            if child.process.stdin is not None:
                await child.process.stdin.aclose()
            if self.stopping:
                return
            ran = trio.current_time() - started
            backoff = RESTART_MIN_S if ran >= HEALTHY_RUN_S else backoff
            log.warning(
                "edge.http_worker_exited",
                index=child.index,
                code=code,
                ran_s=round(ran, 3),
                restart_in_s=backoff,
            )
            await trio.sleep(backoff)
            backoff = min(RESTART_MAX_S, backoff * 2)
            child.restarts += 1

    def signal_stop(self) -> None:
        """SIGTERM every child, once (a second one would cut its drain short): each drains
        its own requests while the parent drains."""
        if self.stopping:
            return
        self.stopping = True
        for child in self.children:
            p = child.process
            if p is not None and p.returncode is None:
                p.send_signal(signal.SIGTERM)

    async def wait_stopped(self, deadline: float) -> None:
        """Until every child exited, or ``deadline`` (trio time): then SIGKILL the rest."""
        self.signal_stop()
        with trio.move_on_at(deadline):
            for child in self.children:
                if child.process is not None:
                    await child.process.wait()
        for child in self.children:
            p = child.process
            if p is not None and p.returncode is None:
                log.warning("edge.http_worker_killed", index=child.index, pid=p.pid)
                p.kill()
                with trio.move_on_after(2):
                    await p.wait()


async def until_parent_exits(start_drain: Callable[[str], None]) -> None:
    """In an HTTP worker: drain once stdin, the parent's pipe, reaches EOF (the parent
    exited, however it died). Nothing is ever written to it."""
    stream = trio.lowlevel.FdStream(os.dup(0))
    try:
        while await stream.receive_some(4096):
            pass
    except (trio.BrokenResourceError, OSError):
        pass
    finally:
        await stream.aclose()
    start_drain("parent exited")


async def joined_or_timeout(joined: Callable[[], bool], timeout_s: float = JOIN_S) -> None:
    """In an HTTP worker, before it listens: until it joined the pool (its parent is its
    first bootstrap, on the same machine: milliseconds), at most ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while not joined():
            await trio.sleep(0.05)
