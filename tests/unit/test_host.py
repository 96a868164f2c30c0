"""Pure-ish helpers of the libp2p host wrapper."""

from __future__ import annotations

import trio

from opentela.overlay.host import resolve_dns


def test_dns_multiaddrs_are_resolved_before_dialing() -> None:
    async def main() -> None:
        assert (
            await resolve_dns("/dns4/localhost/tcp/43905/p2p/X") == "/ip4/127.0.0.1/tcp/43905/p2p/X"
        )
        assert await resolve_dns("/ip4/127.0.0.9/tcp/1/p2p/X") == "/ip4/127.0.0.9/tcp/1/p2p/X"

    trio.run(main)
