"""Labels from a real Slurm job (Debian slurm-wlm 22.05, started by scripts/slurm-up.sh): a
worker submitted with sbatch, running a fake backend under ``--subprocess``, joins a head
outside the job; the head's ``/v1/dnt/table`` and ``opentela-node table`` show the job's id,
partition, user and end time (``expires_at``) as Slurm itself reports them.

This cluster gets its own state directory and ports (``OTELA_SLURM_PORT``), apart from
tests/slurm/test_slurm_jobs.py's, so the two files may run at the same time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import NODE, Cluster, Node, http_json, wait_for

REPO = Path(__file__).resolve().parents[2]
MODEL = "m-slurm-labels"
PORT = "6947"  # slurmctld; slurmd on 6948

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the test Slurm cluster needs root")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("slurm-labels")
    env = {
        **os.environ,
        "OTELA_SLURM_DIR": str(state),
        "OTELA_SLURM_NODES": "1",
        "OTELA_SLURM_PORT": PORT,
    }
    up = subprocess.run(
        ["bash", str(REPO / "scripts/slurm-up.sh")], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    env["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(REPO / "scripts/slurm-down.sh")], env=env, capture_output=True)


def job_script(path: Path, head: Node, host: str) -> Path:
    py = sys.executable
    path.write_text(
        f"""#!/bin/bash
#SBATCH --job-name=otela-labels
#SBATCH --time=4
#SBATCH --output={path.parent}/job-%j.out
free() {{ {py} -c 'import socket; s=socket.socket(); s.bind(("{host}", 0)); print(s.getsockname()[1])'; }}
UP=$(free)
exec {py} -m opentela.cli start --home {path.parent}/home-$SLURM_JOB_ID \\
  --http-host {host} --http-port $(free) --p2p-host {host} --p2p-port $(free) \\
  --bootstrap {head.maddr} --service.port $UP --label team=slurm-test \\
  --subprocess "{py} -m opentela.testing.fake_upstream --host 127.0.0.1 --port $UP --model {MODEL}" \\
  --slurm.drain-before 30s --drain-timeout 5 --log-format json
"""
    )
    return path


def squeue(env: dict[str, str], job: str, fmt: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", fmt], env=env, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def scontrol_field(env: dict[str, str], job: str, name: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    m = re.search(rf"\b{name}=(\S+)", out)
    return m.group(1) if m else ""


def local_epoch(text: str) -> float:
    """Slurm prints local time (``2026-12-02T07:10:00``)."""
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def job_node(head: Node, job: str) -> dict | None:
    """The job's node in the head's table, once its backend serves."""
    _, _, table = http_json(f"{head.url}/v1/dnt/table")
    for node in table.values():
        labels = node.get("labels", {})
        if labels.get("slurm_job_id") == job and labels.get("status") == "ready":
            return node
    return None


def test_slurm_job_labels_in_the_table(
    slurm: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    head = cluster.node("head", "127.0.0.2")
    out = subprocess.run(
        ["sbatch", "--parsable", str(job_script(tmp_path / "worker.sbatch", head, "127.0.0.8"))],
        env=slurm, capture_output=True, text=True, check=True,
    )  # fmt: skip
    job = out.stdout.strip().split(";")[0]
    try:
        node = wait_for(lambda: job_node(head, job), 90, 0.3, what="the Slurm worker serving")
        # What Slurm says about the job, asked directly.
        partition, user, end_text = squeue(slurm, job, "%P|%u|%e").split("|")
        end = local_epoch(end_text)
        assert local_epoch(scontrol_field(slurm, job, "EndTime")) == end

        labels = node["labels"]
        assert labels["slurm_job_id"] == job
        assert labels["slurm_partition"] == partition == "debug"
        assert labels["launched_by"] == user
        assert abs(int(labels["expires_at"]) - end) <= 2, (labels["expires_at"], end_text)
        assert labels["cluster"] == labels["site"] == "otela"  # slurm.conf's ClusterName
        assert labels["team"] == "slurm-test" and "worker_group_id" not in labels  # one node
        assert node["slurm"]["job"] == job and node["slurm"]["partition"] == partition
        assert [s["status"] for s in node["service"]] == ["ready"]
        assert head.models() == [MODEL]

        table = subprocess.run(
            [*NODE, "table", "--url", head.url, "--wide"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        row = next(line for line in table.splitlines() if node["id"] in line)
        assert f"{job}@{partition}" in row and "otela" in row, table
        left = re.search(r"\bin (\d+)m\b", row)
        assert left is not None, table
        assert abs(int(left.group(1)) - (end - time.time()) / 60) <= 1.5, row
        assert f"launched_by={user}" in row and "team=slurm-test" in row, row
        print(f"squeue %e={end_text} expires_at={labels['expires_at']}\n{row}")
    except AssertionError:
        log = tmp_path / f"job-{job}.out"
        print(log.read_text()[-3000:] if log.exists() else "(no job output)")
        raise
    finally:
        subprocess.run(["scancel", job], env=slurm, check=False)
    wait_for(
        lambda: squeue(slurm, job, "%T") in ("", "COMPLETED", "CANCELLED"),
        30,
        0.5,
        what="the job gone",
    )
