"""The Kubernetes base renders and validates offline (kubernetes-validate --strict), and its
ConfigMap is a config the node accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from opentela.config import load

REPO = Path(__file__).resolve().parents[2]


def test_kubernetes_manifests_validate() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts/k8s-validate.sh")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_configmap_is_a_valid_node_config(tmp_path: Path) -> None:
    cm = yaml.safe_load((REPO / "deploy/kubernetes/configmap.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    cfg = load(str(path), env={})
    assert cfg.http_port == 8092 and cfg.p2p_port == 43905
