"""One long-lived outbound stream per peer for a one-way protocol (SWIM, table gossip).

Why: opening a stream costs ~6 ms and a multistream negotiation, so a protocol that sends many
small messages keeps one stream per peer and writes one frame per message. Each peer has a
small queue served by its own task, so a hung peer (SIGSTOP keeps its TCP connection open)
can only delay messages to itself; a full queue drops, as UDP would: the protocols using this
cope with loss by design (SWIM's failure detector, gossip's anti-entropy).

A broken stream is reset and reopened with ``redial=True`` (clearing libp2p's negative dial
cache: the protocol above decides who is worth dialing). A stream that worked before and fails
on write is retried once on a fresh stream: the connection budget (``overlay/connections.py``)
closes idle connections under live one-way streams, and that must not cost a message. A peer
that gets no message for ``idle_s`` has its stream closed and its task ended, so its
connection can be reaped; the next ``send`` starts a new task.
"""

from __future__ import annotations

import trio

from . import framing
from .host import Host, PeerStream, StreamFailed


class PeerSenders:
    """One long-lived outbound stream per peer for a one-way protocol (see module doc)."""

    def __init__(
        self,
        host: Host,
        protocol: str,
        *,
        queue_size: int = 32,
        send_timeout_s: float = 1.0,
        idle_s: float = 30.0,
    ) -> None:
        self.host = host
        self.protocol = protocol
        self.queue_size = queue_size
        self.send_timeout_s = send_timeout_s
        self.idle_s = idle_s
        self.stats: dict[str, int] = {"sent": 0, "dropped": 0, "bytes_sent": 0}
        self._queues: dict[str, trio.MemorySendChannel[bytes]] = {}
        self._nursery: trio.Nursery | None = None

    def send(self, peer_id: str, payload: bytes) -> bool:
        """Queue one message body for ``peer_id``; False when it was dropped (queue full, or
        not running). Never blocks."""
        queue = self._queues.get(peer_id)
        if queue is None:
            if self._nursery is None:
                self.stats["dropped"] += 1
                return False
            queue, receive = trio.open_memory_channel[bytes](self.queue_size)
            self._queues[peer_id] = queue
            self._nursery.start_soon(self._sender, peer_id, queue, receive)
        try:
            queue.send_nowait(framing.encode(framing.BODY, payload))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.stats["dropped"] += 1
            return False
        return True

    def forget(self, peer_id: str) -> None:
        """Stop sending to ``peer_id`` (it died): what is queued is still tried, then its task
        ends; a later ``send`` starts afresh."""
        queue = self._queues.pop(peer_id, None)
        if queue is not None:
            queue.close()

    def active(self) -> int:
        """Peers with a sender task (an open or opening stream)."""
        return len(self._queues)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the per-peer tasks; runs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._queues.clear()

    async def _open(self, peer_id: str) -> PeerStream:
        return await self.host.open_stream(peer_id, self.protocol, redial=True)

    async def _sender(
        self,
        peer_id: str,
        queue: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        stream: PeerStream | None = None
        try:
            while True:
                frame: bytes | None = None
                with trio.move_on_after(self.idle_s):
                    try:
                        frame = await receive.receive()
                    except trio.EndOfChannel:  # forget(): nothing more will come
                        return
                if frame is None:
                    # Idle: retire this task. No checkpoint between the timeout and this pop,
                    # so no message can slip into the queue being retired.
                    if self._queues.get(peer_id) is queue:
                        del self._queues[peer_id]
                    if stream is not None:
                        await stream.close()  # EOF: the peer's handler ends quietly
                        stream = None
                    return
                sent = False
                with trio.move_on_after(self.send_timeout_s):
                    try:
                        fresh = stream is None
                        if stream is None:
                            stream = await self._open(peer_id)
                        try:
                            await stream.send(frame)
                        except StreamFailed:
                            if fresh:
                                raise
                            # It had worked: its connection was closed under it. Once more.
                            await stream.reset()
                            stream = None
                            stream = await self._open(peer_id)
                            await stream.send(frame)
                        sent = True
                    except StreamFailed:
                        pass
                if sent:
                    self.stats["sent"] += 1
                    self.stats["bytes_sent"] += len(frame)
                    continue
                # Failed or timed out: drop this message and the stream; the next one redials.
                self.stats["dropped"] += 1
                if stream is not None:
                    await stream.reset()
                    stream = None
        finally:
            if self._queues.get(peer_id) is queue:
                del self._queues[peer_id]
            queue.close()
            if stream is not None:
                await stream.reset()
