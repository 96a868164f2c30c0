"""What an HTTP worker process is configured with (edge/child_config.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from opentela import config
from opentela.edge.child_config import child_public_addr, child_settings, parent_maddr

PEER = "12D3KooWF7wD8cMSpirw6zUN9YpDagSso8RDxzSJPb82r5scbFte"


def _child(tmp_path: Path, cfg: config.Config) -> config.Config:
    settings = child_settings(
        cfg, home=str(tmp_path / "c"), db_url="sqlite:////x/opentela.db", p2p_port=40001,
        parent=parent_maddr(cfg, PEER),
    )  # fmt: skip
    path = tmp_path / "child.yaml"
    path.write_text(yaml.safe_dump(settings))
    return config.load(str(path), env={})  # the child's own start validates it again


def test_a_worker_nodes_http_worker_is_a_head_with_the_pool_settings(tmp_path: Path) -> None:
    cfg = config.Config(
        home=str(tmp_path / "p"), http_host="127.0.0.1", http_port=9000, http_workers=3,
        p2p_host="0.0.0.0", p2p_port=43905, service_port=8080, service_name="llm",
        subprocess="vllm serve x", routing_policy="least-loaded", auth="required",
        bootstrap=(f"/ip4/10.0.0.1/tcp/43905/p2p/{PEER}",), slurm_resubmit="/tmp/again.sh",
        max_body_bytes=1234, probe_interval=0.5,
    )  # fmt: skip
    child = _child(tmp_path, cfg)
    assert child.effective_role == "head" and child.backend_url == "" and child.subprocess == ""
    assert (child.http_host, child.http_port, child.http_workers) == ("127.0.0.1", 9000, 1)
    assert child.p2p_port == 40001 and child.home == str(tmp_path / "c")
    assert child.db == "sqlite:////x/opentela.db"  # the parent's store: keys, quotas, usage
    assert child.bootstrap == (f"/ip4/127.0.0.1/tcp/43905/p2p/{PEER}", *cfg.bootstrap)
    assert (child.routing_policy, child.auth, child.max_body_bytes, child.probe_interval) == (
        "least-loaded", "required", 1234, 0.5,
    )  # fmt: skip
    assert child.slurm_resubmit == ""  # only the parent hands its job over


def test_secrets_and_addresses(tmp_path: Path) -> None:
    cfg = config.Config(join_token="otj_secret", p2p_host="10.1.2.3")
    settings = child_settings(cfg, home="h", db_url="d", p2p_port=5, parent="p")
    assert "join_token" not in settings  # passed in the environment, never written down
    assert parent_maddr(cfg, PEER) == f"/ip4/10.1.2.3/tcp/43905/p2p/{PEER}"
    assert parent_maddr(config.Config(p2p_host="::"), PEER).startswith("/ip6/::1/")
    assert child_public_addr("203.0.113.7", 40001) == "203.0.113.7"
    assert (
        child_public_addr("/dns4/head.example/tcp/43905", 40001) == "/dns4/head.example/tcp/40001"
    )
