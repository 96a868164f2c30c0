"""Every example config is one the node accepts (placeholders aside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentela.config import load

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_loads(path: Path, tmp_path: Path) -> None:
    # Placeholders the user fills in, replaced by values of the right form.
    text = path.read_text().replace("HEAD_IP", "10.0.0.1")
    text = text.replace("HEAD_PEER_ID", "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5")
    filled = tmp_path / path.name
    filled.write_text(text)
    cfg = load(str(filled), env={})
    assert cfg.http_port and cfg.p2p_port
    if "worker" in path.name:
        assert cfg.effective_role == "worker" and cfg.subprocess
