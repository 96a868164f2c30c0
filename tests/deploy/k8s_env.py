"""What the kubelet does to a head container's environment, so tests can hand it to the node's
config loader: downward-API values, ``secretKeyRef`` values, then ``$(VAR)`` expansion."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from conftest import NODE

_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in objs if o["kind"] == kind])
    return found[0]


def container_env(
    container: Mapping[str, Any],
    fields: Mapping[str, str],
    secrets: Mapping[tuple[str, str], str],
) -> dict[str, str]:
    """``fields``: fieldPath -> value; ``secrets``: (Secret name, key) -> value. A reference to
    a variable not defined earlier stays as written, as the kubelet leaves it."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            raw = str(e["value"])
        elif "fieldRef" in e.get("valueFrom", {}):
            raw = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            raw = secrets[(ref["name"], ref["key"])]
        env[e["name"]] = _REF.sub(lambda m: env.get(m.group(1), m.group(0)), raw)
    return env


def expand_args(args: list[str], env: Mapping[str, str]) -> list[str]:
    return [_REF.sub(lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def check_heads(
    objs: list[dict[str, Any]], n: int, namespace: str, peer_ids: list[str], tmp: Any
) -> list[Any]:
    """The multi-head contract both deploy/kubernetes and the Helm chart keep; returns the node
    config each head Pod would run with (``opentela.config.Config``)."""
    from opentela.config import load

    sts = one(objs, "StatefulSet")
    name = sts["metadata"]["name"]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    assert spec["replicas"] == n
    assert spec["podManagementPolicy"] == "Parallel"  # no head waits for another to be ready
    labels = sts["spec"]["template"]["metadata"]["labels"]
    services = [o for o in objs if o["kind"] == "Service"]
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1 and headless[0]["metadata"]["name"] == spec["serviceName"]
    assert headless[0]["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"] for p in headless[0]["spec"]["ports"]} == {"http", "p2p"}
    [client] = [s for s in services if s is not headless[0]]
    # Only ready heads take clients; no libp2p port behind a Service that picks any head.
    assert not client["spec"].get("publishNotReadyAddresses")
    assert [p["name"] for p in client["spec"]["ports"]] == ["http"]
    for s in services:
        assert s["spec"]["selector"].items() <= labels.items()
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    if n > 1:
        assert len(pdbs) == 1 and pdbs[0]["spec"]["maxUnavailable"] == 1
        assert pdbs[0]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    else:
        assert not pdbs

    [main] = pod["containers"]
    [init] = pod["initContainers"]
    assert main["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v1/health"
    for c in (main, init):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"]["drop"] == ["ALL"] and c["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] and not pod["automountServiceAccountToken"]
    home = next(v for v in pod["volumes"] if v["name"] == "home")
    assert home["emptyDir"]["medium"] == "Memory"

    cm = one(objs, "ConfigMap")
    config = tmp / "config.yaml"
    config.write_text(cm["data"]["config.yaml"])
    pre_stop = int(main["lifecycle"]["preStop"]["exec"]["command"][1])
    keys = next(v for v in pod["volumes"] if v["name"] in ("identities", "keys"))
    identity_sources = [
        s["secret"]
        for s in keys["projected"]["sources"]
        if s["secret"]["items"][0]["key"] == "identity.key"
    ]
    assert len(identity_sources) == n
    secrets = {}
    for i, src in enumerate(identity_sources):
        secrets[(src["name"], "peer-id")] = peer_ids[i]
    assert len({s["name"] for s in identity_sources}) == n  # one Secret per head

    cfgs = []
    for i in range(n):
        pod_name = f"{name}-{i}"
        fields = {
            "metadata.name": pod_name,
            "metadata.namespace": namespace,
            "status.hostIP": "192.0.2.10",
        }
        # The init container installs this Pod's own key, from the directory named after it.
        init_env = container_env(init, fields, secrets)
        src = next(a for a in expand_args(init["command"], init_env) if a.endswith("identity.key"))
        mine = [
            s
            for s in identity_sources
            if s["items"][0]["path"] == src.split("/run/secrets/opentela/")[1]
        ]
        assert len(mine) == 1, (src, identity_sources)
        assert mine[0]["name"] == identity_sources[i]["name"]
        env = container_env(main, fields, secrets)
        otela = {k: v for k, v in env.items() if k.startswith("OTELA_")}
        cfg = load(str(config), env=otela)
        own = f"/dns4/{pod_name}.{spec['serviceName']}.{namespace}.svc.cluster.local/tcp/{cfg.p2p_port}"
        if "OTELA_PUBLIC_ADDR" in otela and "$(HOST_IP)" not in main_announce(main):
            assert cfg.public_addr == own
        assert len(cfg.bootstrap) == n
        assert f"{own}/p2p/{peer_ids[i]}" in cfg.bootstrap  # every head lists every head
        assert cfg.effective_role == "head"
        # The whole stop fits the grace period: preStop, then the node's drain and leave.
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + cfg.drain_timeout + 1
        cfgs.append(cfg)
    assert len({c.public_addr for c in cfgs}) == n
    return cfgs


def main_announce(container: Mapping[str, Any]) -> str:
    return next(
        (str(e.get("value", "")) for e in container["env"] if e["name"] == "OTELA_PUBLIC_ADDR"), ""
    )


def peer_ids(tmp: Path, n: int) -> list[str]:
    """Real peer IDs of ``n`` fresh identities (``opentela-node init``) under ``tmp``."""
    out = []
    for i in range(n):
        home = tmp / f"head-{i}"
        subprocess.run([*NODE, "init", "--home", str(home)], check=True, capture_output=True)
        out.append(
            subprocess.run(
                [*NODE, "peer-id", "--home", str(home)], check=True, capture_output=True, text=True
            ).stdout.strip()
        )
    return out
