"""GPU parsing against captured tool output; detection must degrade, never raise."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from opentela.platform import gpu
from opentela.platform.gpu import Gpu, detect_gpus, parse_nvidia_smi, parse_rocm_smi

NVIDIA_CSV = """\
name, memory.total [MiB], memory.used [MiB]
NVIDIA A100-SXM4-80GB, 81920 MiB, 0 MiB
NVIDIA A100-SXM4-80GB, 81920 MiB, 1234 MiB
NVIDIA H100 80GB HBM3, 81559 MiB, 79000 MiB
"""

NVIDIA_NOHEADER = """\
Tesla V100-SXM2-32GB, 32768, 5
Tesla V100-SXM2-32GB, 32768, 31000
"""

ROCM_CSV = """\
device,VRAM Total Memory (B),VRAM Total Used Memory (B),Card series,Card model,Card vendor,Card SKU
card0,68702699520,10960896,AMD Instinct MI210,0x0c34,Advanced Micro Devices, Inc. [AMD/ATI],D67301
card1,68702699520,1073741824,AMD Instinct MI210,0x0c34,Advanced Micro Devices, Inc. [AMD/ATI],D67301
"""

ROCM_NEWER = (
    "WARNING: AMD GPU device(s) is/are in a low-power state. Check power control\n"
    "\n"
    "device,Card Series,Card Model,Card Vendor,Card SKU,Subsystem ID,Device Rev,Node ID,"
    "GUID,GFX Version,VRAM Total Memory (B),VRAM Total Used Memory (B)\n"
    'card0,AMD Instinct MI300X,0x74a1,"Advanced Micro Devices, Inc. [AMD/ATI]",M3000100,'
    "0x74a1,0x00,2,28851,gfx942,205822885888,299999232\n"
    "card1,N/A,N/A,N/A,N/A,N/A,N/A,3,1,gfx942,205822885888,0\n"
)


class _Log:
    """Captures structlog-style calls so tests can assert exactly one line."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.calls.append((event, kw))


def test_nvidia_with_header_and_units() -> None:
    assert parse_nvidia_smi(NVIDIA_CSV) == [
        Gpu("NVIDIA A100-SXM4-80GB", 81920, 0),
        Gpu("NVIDIA A100-SXM4-80GB", 81920, 1234),
        Gpu("NVIDIA H100 80GB HBM3", 81559, 79000),
    ]


def test_nvidia_noheader_nounits() -> None:
    assert parse_nvidia_smi(NVIDIA_NOHEADER) == [
        Gpu("Tesla V100-SXM2-32GB", 32768, 5),
        Gpu("Tesla V100-SXM2-32GB", 32768, 31000),
    ]


def test_nvidia_skips_garbage() -> None:
    text = (
        "No devices were found\n"
        "\n"
        "NVIDIA A10, [N/A], [N/A]\n"
        "just, two\n"
        ", 100 MiB, 0 MiB\n"
        "NVIDIA L4, 23034 MiB, 1 MiB\n"
        "NVIDIA L4, lots, 1 MiB\n"
        "\x00\xff garbage \ufffd\n"
    )
    assert parse_nvidia_smi(text) == [Gpu("NVIDIA L4", 23034, 1)]
    assert parse_nvidia_smi("") == []


def test_rocm_classic_layout_with_unquoted_vendor_comma() -> None:
    assert parse_rocm_smi(ROCM_CSV) == [
        Gpu("AMD Instinct MI210", 65520, 10),
        Gpu("AMD Instinct MI210", 65520, 1024),
    ]


def test_rocm_newer_layout_with_warning_and_na_names() -> None:
    assert parse_rocm_smi(ROCM_NEWER) == [
        Gpu("AMD Instinct MI300X", 196288, 286),
        Gpu("card1", 196288, 0),
    ]


def test_rocm_skips_garbage() -> None:
    text = ROCM_CSV + 'card2,not-a-number,0,X\ncard3\nrandom line\n"unterminated\n'
    assert len(parse_rocm_smi(text)) == 2
    assert parse_rocm_smi("card0,1,2,3\n") == []  # no header seen: cannot map columns
    assert parse_rocm_smi("") == []


def test_detect_without_tools_returns_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu.shutil, "which", lambda _name: None)

    def _no_run(*_a: Any, **_k: Any) -> None:
        raise AssertionError("must not run anything when no tool is on PATH")

    monkeypatch.setattr(gpu.subprocess, "run", _no_run)
    log = _Log()
    assert detect_gpus(log) == []
    assert len(log.calls) == 1
    assert log.calls[0][0] == "gpu.none"
    assert "reason" in log.calls[0][1]


def test_detect_tool_failure_is_logged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        gpu.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None
    )

    def _timeout(cmd: list[str], **_k: Any) -> None:
        raise subprocess.TimeoutExpired(cmd, 5)

    monkeypatch.setattr(gpu.subprocess, "run", _timeout)
    log = _Log()
    assert detect_gpus(log) == []
    assert [c[0] for c in log.calls] == ["gpu.none"]
    assert "nvidia-smi" in log.calls[0][1]["reason"]


def test_detect_parses_nvidia(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu.shutil, "which", lambda name: f"/usr/bin/{name}")

    def _run(cmd: list[str], **_k: Any) -> subprocess.CompletedProcess[str]:
        assert cmd[0] == "nvidia-smi"
        return subprocess.CompletedProcess(cmd, 0, NVIDIA_NOHEADER, "")

    monkeypatch.setattr(gpu.subprocess, "run", _run)
    log = _Log()
    assert len(detect_gpus(log)) == 2
    assert log.calls == []


def test_detect_nonzero_exit_falls_back_to_rocm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu.shutil, "which", lambda name: f"/usr/bin/{name}")

    def _run(cmd: list[str], **_k: Any) -> subprocess.CompletedProcess[str]:
        if cmd[0] == "nvidia-smi":
            return subprocess.CompletedProcess(cmd, 9, "", "NVIDIA-SMI has failed")
        return subprocess.CompletedProcess(cmd, 0, ROCM_CSV, "")

    monkeypatch.setattr(gpu.subprocess, "run", _run)
    log = _Log()
    assert [g.name for g in detect_gpus(log)] == ["AMD Instinct MI210"] * 2
    assert log.calls == []
