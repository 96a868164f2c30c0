"""A worker stopping closes its backend client while the health probe may still run: the
probe must get a BackendError (which it handles), not aiohttp's RuntimeError."""

from __future__ import annotations

import asyncio

import pytest

from opentela.worker.backend import Backend, BackendError


def test_a_probe_after_close_is_a_backend_error() -> None:
    async def main() -> None:
        backend = Backend("http://127.0.0.1:9")
        await backend.open()
        await backend.close()
        with pytest.raises(BackendError, match="not open"):
            await backend.list_models()

    asyncio.run(main())
