"""Every example config is one the node accepts (placeholders aside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentela.config import load
from opentela.fleet.spec import load as load_fleet

REPO = Path(__file__).resolve().parents[2]
# fleet.yaml is the head's list of models to run on Slurm, not a node config.
FLEET = REPO / "examples" / "fleet.yaml"
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if p != FLEET)


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


def test_example_fleet_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # From the repo root: the first model's sbatch path is written relative to it.
    monkeypatch.chdir(REPO)
    fleet = load_fleet(FLEET)
    assert [m.id for m in fleet.models] == ["swiss-ai/Apertus-8B", "Qwen/Qwen2.5-7B-Instruct"]
    assert all(m.sbatch.is_file() for m in fleet.models)
