"""GPUs of the pool's two kinds of Slurm nodes, from captured ``nvidia-smi`` output: Clariden's
GH200 (aarch64, 4 per node) and Bristen's A100 (x86_64); parsed, put in the record, and shown
as serving-api's ``device`` and in the ``table`` GPUS column."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from opentela.cli import _fmt_table
from opentela.gateway.platform import device_label
from opentela.platform import gpu
from opentela.platform.gpu import Gpu, detect_gpus, parse_nvidia_smi
from opentela.table.record import Gpu as RecordGpu
from opentela.table.record import NodeRecord

# `nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader,nounits`, as the
# node runs it, on a GH200 node (96 GB HBM3 per GPU: 97871 MiB; "120GB" is the name's own).
GH200_NOUNITS = """\
NVIDIA GH200 120GB, 97871, 1
NVIDIA GH200 120GB, 97871, 1
NVIDIA GH200 120GB, 97871, 74112
NVIDIA GH200 120GB, 97871, 1
"""
# The same with header and units (`--format=csv`), as people paste it.
GH200_CSV = """\
name, memory.total [MiB], memory.used [MiB]
NVIDIA GH200 120GB, 97871 MiB, 1 MiB
NVIDIA GH200 120GB, 97871 MiB, 74112 MiB
"""
A100_NOUNITS = """\
NVIDIA A100-SXM4-80GB, 81920, 4
NVIDIA A100-SXM4-80GB, 81920, 4
NVIDIA A100-SXM4-80GB, 81920, 61234
NVIDIA A100-SXM4-80GB, 81920, 4
"""
A100_CSV = """\
name, memory.total [MiB], memory.used [MiB]
NVIDIA A100-SXM4-80GB, 81920 MiB, 4 MiB
NVIDIA A100 80GB PCIe, 81920 MiB, 0 MiB
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GH200_NOUNITS, [Gpu("NVIDIA GH200 120GB", 97871, u) for u in (1, 1, 74112, 1)]),
        (GH200_CSV, [Gpu("NVIDIA GH200 120GB", 97871, 1), Gpu("NVIDIA GH200 120GB", 97871, 74112)]),
        (A100_NOUNITS, [Gpu("NVIDIA A100-SXM4-80GB", 81920, u) for u in (4, 4, 61234, 4)]),
        (
            A100_CSV,
            [Gpu("NVIDIA A100-SXM4-80GB", 81920, 4), Gpu("NVIDIA A100 80GB PCIe", 81920, 0)],
        ),
    ],
)
def test_parse(text: str, expected: list[Gpu]) -> None:
    assert parse_nvidia_smi(text) == expected


class _Log:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def info(self, *a: Any, **k: Any) -> None:
        self.calls.append((a, k))


@pytest.mark.parametrize(
    ("output", "device"),
    [(GH200_NOUNITS, "4x NVIDIA GH200 120GB"), (A100_NOUNITS, "4x NVIDIA A100-SXM4-80GB")],
)
def test_detected_gpus_reach_the_record_and_the_views(
    monkeypatch: pytest.MonkeyPatch, output: str, device: str
) -> None:
    monkeypatch.setattr(gpu.shutil, "which", lambda name: f"/usr/bin/{name}")

    def run(cmd: list[str], **_k: Any) -> subprocess.CompletedProcess[str]:
        assert cmd[:2] == ["nvidia-smi", "--query-gpu=name,memory.total,memory.used"]
        return subprocess.CompletedProcess(cmd, 0, output, "")

    monkeypatch.setattr(gpu.subprocess, "run", run)
    log = _Log()
    found = detect_gpus(log)
    assert log.calls == []
    rec = NodeRecord(
        "p",
        1,
        0.0,
        gpus=tuple(RecordGpu(g.name, g.total_memory_mib, g.used_memory_mib) for g in found),
    )
    back = NodeRecord.decode(rec.encode())
    assert back.gpus == rec.gpus and len(back.gpus) == 4
    assert device_label(back.gpus) == device
    node = {
        "id": "p",
        "role": "worker",
        "state": "alive",
        "hardware": {"gpus": [{"name": g.name} for g in back.gpus]},
        "last_seen": 0,
    }
    assert device in _fmt_table({"/p": node}, 0.0)


def test_mixed_kinds_on_one_node_are_grouped() -> None:
    gpus = parse_nvidia_smi(A100_CSV)
    assert device_label(gpus) == "1x NVIDIA A100-SXM4-80GB, 1x NVIDIA A100 80GB PCIe"
