#!/usr/bin/env python3
"""Hold every packet of one NFQUEUE queue for a fixed time, then let it go: added latency.

This kernel has no ``tc netem``, so a WAN link is made in user space: an nftables rule in a
network namespace sends the packets to delay to queue ``--queue`` (``scripts/netns.sh delay``
writes it), and this program, running in the same namespace, gives each packet its ACCEPT
verdict ``--delay-ms`` (plus up to ``--jitter-ms``) after it arrived.

    ip netns exec otw-h1 .venv/bin/python scripts/nfq_delay.py --queue 101 --delay-ms 40

Behaviour worth knowing:

- *Order is kept*: a packet is never released before the one queued ahead of it, so jitter
  stretches the delay instead of reordering (a real path reorders rarely; TCP would take
  reordering for loss and retransmit).
- *Bounded*: at most ``--max-held`` packets wait at once (the kernel queue length; the
  kernel drops beyond that, like a full router queue), and the program exits by itself after
  ``--max-seconds``. The rule uses ``bypass``, so once no program listens packets pass
  undelayed instead of being dropped.
- *Stoppable by PID*: SIGTERM or SIGINT releases every held packet at once and exits 0.
- It prints one ``ready`` line when bound (``netns.sh`` waits for it) and one line of counts
  when it ends, nothing per packet.

Needs the PyPI package ``netfilterqueue`` (built against Debian ``libnetfilter-queue-dev``);
``scripts/netns.sh delay`` installs both on first use.
"""

from __future__ import annotations

import argparse
import collections
import random
import selectors
import signal
import sys
import time
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue", type=int, required=True, help="NFQUEUE number to serve")
    ap.add_argument("--delay-ms", type=float, required=True, help="added one-way delay")
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="plus uniform 0..this")
    ap.add_argument("--max-held", type=int, default=4096, help="packets waiting at once")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="exit after this long")
    ap.add_argument("--seed", type=int, default=None, help="jitter random seed")
    a = ap.parse_args(argv)
    if a.delay_ms < 0 or a.jitter_ms < 0 or a.max_held < 1 or a.max_seconds <= 0:
        ap.error("delays must be >= 0, --max-held >= 1, --max-seconds > 0")
    return a


class Delayer:
    """FIFO of (release time, packet): one verdict per packet, in arrival order."""

    def __init__(self, delay_s: float, jitter_s: float, rng: random.Random) -> None:
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.rng = rng
        self.held: collections.deque[tuple[float, Any]] = collections.deque()
        self.last_release_s = 0.0
        self.seen = 0

    def hold(self, pkt: Any, now_s: float) -> None:
        self.seen += 1
        release = (
            now_s + self.delay_s + (self.rng.uniform(0, self.jitter_s) if self.jitter_s else 0)
        )
        self.last_release_s = max(self.last_release_s, release)  # never overtake
        self.held.append((self.last_release_s, pkt))

    def release_due(self, now_s: float) -> None:
        while self.held and self.held[0][0] <= now_s:
            self.held.popleft()[1].accept()

    def release_all(self) -> None:
        while self.held:
            self.held.popleft()[1].accept()

    def next_due_s(self) -> float | None:
        return self.held[0][0] if self.held else None


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from netfilterqueue import COPY_META, NetfilterQueue  # late: --help works without it

    delayer = Delayer(a.delay_ms / 1000, a.jitter_ms / 1000, random.Random(a.seed))
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    nfq = NetfilterQueue()
    # The verdict is given later, from the loop below (netfilterqueue allows that).
    # Metadata only: the payload is never looked at, so it is not copied to user space.
    nfq.bind(
        a.queue,
        lambda pkt: delayer.hold(pkt, time.monotonic()),
        max_len=a.max_held,
        mode=COPY_META,
    )
    sock = nfq.get_fd()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    end_s = time.monotonic() + a.max_seconds
    print(
        f"nfq_delay ready: queue={a.queue} delay={a.delay_ms}ms jitter={a.jitter_ms}ms "
        f"max_held={a.max_held} max_seconds={a.max_seconds:g}",
        flush=True,
    )
    try:
        while not stop:
            now = time.monotonic()
            if now >= end_s:
                print("nfq_delay: --max-seconds reached, packets now pass undelayed", flush=True)
                break
            due = delayer.next_due_s()
            wait = min(end_s - now, 0.5 if due is None else max(0.0, due - now))
            if sel.select(wait):
                nfq.run(block=False)  # reads what is queued, calls hold() per packet
            delayer.release_due(time.monotonic())
    finally:
        delayer.release_all()
        sel.close()
        nfq.unbind()
        print(f"nfq_delay done: seen={delayer.seen}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
