"""Every example config is one the node accepts (placeholders aside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentela.config import load

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_loads(path: Path) -> None:
    cfg = load(str(path), env={})
    assert cfg.http_port and cfg.p2p_port
    if "worker" in path.name:
        assert cfg.effective_role == "worker" and cfg.subprocess
