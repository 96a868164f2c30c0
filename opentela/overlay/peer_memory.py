"""The members a node knew, kept in ``<home>/peers.json`` so it can find its pool after a
restart (a head has no bootstrap of its own; see ``redial``).

What is kept: each member last seen alive, with the addresses it advertised, for at most
``TTL_S`` and at most ``MAX_MEMBERS`` of them (the most recently seen). A member that left
gracefully is forgotten at once: a finished Slurm job does not come back with the same
identity, and dialing it would only cost time. The file is written atomically (temporary file,
then rename), so a node killed mid-write keeps the previous version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FILE = "peers.json"
TTL_S = 7 * 24 * 3600.0  # a member unseen for a week is not worth dialing
MAX_MEMBERS = 256

ALIVE, DEAD, LEFT = "alive", "dead", "left"


@dataclass(frozen=True)
class Remembered:
    addrs: tuple[str, ...]  # dialable: each ends in /p2p/<peer id>
    seen: float  # wall-clock seconds when last seen alive


def dialable(peer_id: str, addrs: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(a if "/p2p/" in a else f"{a}/p2p/{peer_id}" for a in addrs)


def updated(
    memory: Mapping[str, Remembered],
    members: Mapping[str, tuple[tuple[str, ...], str]],
    now: float,
) -> dict[str, Remembered]:
    """Fold the current view (peer → (addresses, alive|dead|left)) into the memory."""
    out = dict(memory)
    for pid, (addrs, state) in members.items():
        if state == LEFT:
            out.pop(pid, None)
        elif state == ALIVE and addrs:
            out[pid] = Remembered(dialable(pid, addrs), now)
    fresh = [(pid, r) for pid, r in out.items() if now - r.seen <= TTL_S]
    fresh.sort(key=lambda item: item[1].seen, reverse=True)
    return dict(fresh[:MAX_MEMBERS])


def load(home: Path) -> dict[str, Remembered]:
    """The remembered members; an absent or unreadable file is an empty memory (it is only a
    shortcut back into the pool, never a reason not to start)."""
    try:
        data = json.loads((home / FILE).read_text())
        return {
            str(pid): Remembered(tuple(str(a) for a in m["addrs"]), float(m["seen"]))
            for pid, m in data.get("members", {}).items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def save(home: Path, memory: Mapping[str, Remembered]) -> None:
    """Write atomically; raises OSError (the caller logs it once)."""
    data = {"members": {pid: {"addrs": list(r.addrs), "seen": r.seen} for pid, r in memory.items()}}
    path = home / FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
