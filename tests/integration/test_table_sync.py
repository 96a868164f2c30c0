"""Table replication over real libp2p hosts in one process: fast push, introductions, and
anti-entropy repairing what a lost push left stale."""

from __future__ import annotations

import time
from dataclasses import replace

import trio
from conftest import free_port
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.overlay import identity
from opentela.overlay.host import open_host
from opentela.table import sync as table_sync
from opentela.table.record import NodeRecord
from opentela.table.signing import sign
from opentela.table.sync import TableSync


def _record(key: Ed25519PrivateKey, addrs: list[str]) -> NodeRecord:
    return NodeRecord(
        peer_id=identity.peer_id(key),
        version=int(time.time() * 1000),
        timestamp=time.time(),
        addrs=tuple(addrs),
    )


async def _wait(pred, timeout_s: float) -> float:
    start = trio.current_time()
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(0.01)
    return trio.current_time() - start


def test_push_introduction_and_anti_entropy(monkeypatch) -> None:
    monkeypatch.setattr(table_sync, "AE_INTERVAL_S", 0.3)

    async def main() -> None:
        keys = [Ed25519PrivateKey.generate() for _ in range(3)]
        async with (
            open_host(keys[0], "127.0.0.1", free_port()) as h0,
            open_host(keys[1], "127.0.0.1", free_port()) as h1,
            open_host(keys[2], "127.0.0.1", free_port()) as h2,
            trio.open_nursery() as nursery,
        ):
            syncs = [
                TableSync(h, k, _record(k, h.addrs()))
                for h, k in zip((h0, h1, h2), keys, strict=True)
            ]
            for s in syncs:
                await nursery.start(s.run)
            # 1 and 2 both join through 0 only; they must learn of each other.
            for s in syncs[1:]:
                await s.join(await s.host.connect(h0.addrs()[0]))
            await _wait(lambda: all(len(s.peers()) == 2 for s in syncs), 5)

            # A change is pushed to everyone well within a second.
            syncs[1].update(load=7)
            took = await _wait(
                lambda: all(s.store.get(h1.peer_id).record.load == 7 for s in syncs), 2
            )
            assert took < 1.0

            # A "lost" push: node 2 changes its record but nobody is told. Anti-entropy repairs it.
            rec = replace(syncs[2].own, load=42, version=syncs[2].own.version + 1)
            syncs[2].store.apply([sign(rec, keys[2])], trio.current_time())
            syncs[2]._own = rec
            await _wait(lambda: all(s.store.get(h2.peer_id).record.load == 42 for s in syncs), 5)

            # Leaving is honoured at once.
            await syncs[2].leave()
            await _wait(
                lambda: h2.peer_id not in syncs[0].peers() and h2.peer_id not in syncs[1].peers(), 2
            )
            nursery.cancel_scope.cancel()

    trio.run(main)
