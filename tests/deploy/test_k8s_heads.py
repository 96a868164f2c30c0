"""deploy/kubernetes runs several heads: one identity each, a headless Service naming each
one, every head listing every head, a client Service of ready heads only, a PDB."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from k8s_env import check_heads, objects, peer_ids

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy/kubernetes"


def _base() -> str:
    """The base as kubectl renders it, or its files as they are without kubectl."""
    if shutil.which("kubectl"):
        return subprocess.run(
            ["kubectl", "kustomize", str(BASE)], check=True, capture_output=True, text=True
        ).stdout
    names = ["configmap.yaml", "statefulset.yaml", "service.yaml", "pdb.yaml"]
    return "\n---\n".join((BASE / n).read_text() for n in names)


def test_the_base_runs_two_heads_each_with_its_own_identity(tmp_path: Path) -> None:
    objs = objects(_base())
    cfgs = check_heads(objs, 2, "opentela", peer_ids(tmp_path, 2), tmp_path)
    assert cfgs[0].public_addr.startswith("/dns4/opentela-head-0.opentela-head-pods.opentela.")


def test_the_worker_example_bootstraps_through_the_client_service() -> None:
    from opentela.config import load

    cfg = load(str(BASE / "worker-config.example.yaml"), env={})
    assert cfg.effective_role == "worker" and cfg.backend_url
    assert cfg.bootstrap_url == (
        "http://opentela-head.opentela.svc.cluster.local:8092/v1/dnt/bootstraps"
    )
    service = objects((BASE / "service.yaml").read_text())[0]
    assert service["metadata"]["name"] == "opentela-head"
    assert service["spec"]["ports"][0]["port"] == 8092
