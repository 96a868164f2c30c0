"""The worker half of a node, as one component: the backend client, the server of forwarded
requests, the agent that keeps the advertised service true, and (with ``--subprocess``) the
supervised backend process. The node starts it, asks it for stats, and stops it; nothing of
its inside leaks into the composition root.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..aio_bridge import to_aio
from ..config import Config
from ..overlay.host import Host
from ..platform.labels import is_follower, user_labels
from ..table.sync import TableSync
from .agent import WorkerAgent
from .backend import Backend
from .serve import PROTOCOL, ForwardServer
from .supervisor import BackendSupervisor


class WorkerSide:
    def __init__(self, cfg: Config, sync: TableSync, peer_id: str) -> None:
        service = cfg.service_name or "llm"
        self.backend = Backend(cfg.backend_url, cfg.service_api_key)
        self.server = ForwardServer(self.backend, service, peer_id, cfg.service_allow_path)
        self.agent = WorkerAgent(
            sync,
            self.server,
            self.backend,
            service,
            cfg.service_identity_group,
            advertise=not is_follower(sync.own.labels),
            fixed_labels=frozenset(user_labels(cfg.label)),
        )
        self.server.served_models = lambda: self.agent.health.models
        self.supervisor = (
            BackendSupervisor(cfg.subprocess, cfg.subprocess_restart, self.agent)
            if cfg.subprocess
            else None
        )

    async def start(self, host: Host, nursery: trio.Nursery) -> None:
        await to_aio(self.backend.open)()
        host.set_handler(PROTOCOL, self.server.handle)
        if self.supervisor is not None:
            await nursery.start(self.supervisor.run)
        await nursery.start(self.agent.run)

    def ready(self) -> bool:
        return self.server.available

    @property
    def failed(self) -> bool:
        """The backend failed for good: the node exits non-zero."""
        return self.supervisor is not None and self.supervisor.failed

    async def until_stop(self, start_drain: Callable[[str], None]) -> None:
        """Ask the node to drain once the backend will not run again (``--subprocess``)."""
        if self.supervisor is not None:
            await self.supervisor.until_stop(start_drain)
        else:
            await trio.sleep_forever()

    def shutdown_steps(self) -> list[Callable[[], Awaitable[None]]]:
        steps: list[Callable[[], Awaitable[None]]] = []
        if self.supervisor is not None:
            steps.append(self.supervisor.stop)
        steps.append(to_aio(self.backend.close))
        return steps

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "in_flight": self.server.in_flight,
            "served": self.server.served,
            "cancelled": self.server.cancelled,
            "backend_up": self.agent.health.up,
            **({"backend": self.supervisor.stats} if self.supervisor else {}),
        }
