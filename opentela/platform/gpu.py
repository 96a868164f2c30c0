"""GPU discovery from the vendor CLI tools.

We shell out to ``nvidia-smi`` / ``rocm-smi`` rather than binding NVML/ROCm
libraries: HPC login and compute nodes differ wildly, and a missing or broken
driver must degrade to "no GPUs", never crash the node. Parsing is pure and kept
separate from I/O so it can be tested against captured output.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

_NVIDIA_CMD = [
    "nvidia-smi",
    "--query-gpu=name,memory.total,memory.used",
    "--format=csv,noheader,nounits",
]
_ROCM_CMD = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--csv"]
_TIMEOUT_S = 5.0
_MIB = 1024 * 1024

_UNIT_TO_MIB = {"": 1.0, "mib": 1.0, "kib": 1 / 1024, "gib": 1024.0, "b": 1 / _MIB}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Gpu:
    """One device as advertised to the overlay; memory in MiB as nvidia-smi reports it."""

    name: str
    total_memory_mib: int
    used_memory_mib: int


def _mem_mib(field: str) -> int | None:
    """Parse '81920 MiB' or '81920'; None for '[N/A]' and friends."""
    m = _MEM_RE.match(field)
    if not m:
        return None
    factor = _UNIT_TO_MIB.get(m.group(2).lower())
    if factor is None:
        return None
    return int(float(m.group(1)) * factor)


def parse_nvidia_smi(csv_text: str) -> list[Gpu]:
    """Parse ``--query-gpu=name,memory.total,memory.used``, with or without header/units."""
    gpus: list[Gpu] = []
    for line in csv_text.splitlines():
        # Split from the right: the two memory columns never contain commas, names might.
        parts = line.rsplit(",", 2)
        if len(parts) != 3:
            continue
        name = parts[0].strip()
        total = _mem_mib(parts[1])
        used = _mem_mib(parts[2])
        # The header row ("name, memory.total [MiB], ...") fails the numeric parse.
        if not name or total is None or used is None:
            continue
        gpus.append(Gpu(name=name, total_memory_mib=total, used_memory_mib=used))
    return gpus


def _col(header: list[str], *candidates: str) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for cand in candidates:
        if cand in lowered:
            return lowered.index(cand)
    return None


def _cell(row: list[str], idx: int | None) -> str:
    if idx is None or idx >= len(row):
        return ""
    return row[idx].strip()


def parse_rocm_smi(text: str) -> list[Gpu]:
    """Parse ``rocm-smi --showproductname --showmeminfo vram --csv``.

    The CSV looks like::

        device,VRAM Total Memory (B),VRAM Total Used Memory (B),Card series,Card model,...
        card0,68702699520,10960896,AMD Instinct MI210,0x740f,...

    Column names and order vary across ROCm releases (and warnings may precede the
    header), so columns are located by name and anything unexpected is skipped.
    """
    header: list[str] | None = None
    gpus: list[Gpu] = []
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error:
        return []
    for row in rows:
        if not row:
            continue
        first = row[0].strip().lower()
        if first == "device":
            header = row
            continue
        if header is None or not first.startswith("card"):
            continue
        total_i = _col(header, "vram total memory (b)")
        used_i = _col(header, "vram total used memory (b)")
        # Unquoted vendor strings ("Advanced Micro Devices, Inc.") can add cells at the
        # end, so left-based indexes stay valid for the columns before them.
        total = _cell(row, total_i)
        used = _cell(row, used_i)
        if not total.isdigit() or not used.isdigit():
            continue
        name = ""
        for cand in ("card series", "card model", "card sku", "card vendor"):
            value = _cell(row, _col(header, cand))
            if value and value.upper() != "N/A":
                name = value
                break
        gpus.append(
            Gpu(
                name=name or row[0].strip(),
                total_memory_mib=int(total) // _MIB,
                used_memory_mib=int(used) // _MIB,
            )
        )
    return gpus


def _run(cmd: list[str]) -> str:
    """Run a vendor tool; raises on failure so the caller can report one reason."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {detail[0] if detail else ''}")
    return proc.stdout


def detect_gpus(log: Any) -> list[Gpu]:
    """Best effort: a node without working GPU tooling simply advertises no GPUs."""
    reasons: list[str] = []
    for cmd, parse in ((_NVIDIA_CMD, parse_nvidia_smi), (_ROCM_CMD, parse_rocm_smi)):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            gpus = parse(_run(cmd))
        except Exception as exc:  # timeouts, OSError, odd output: never fatal
            reasons.append(f"{cmd[0]}: {exc}")
            continue
        if gpus:
            return gpus
        reasons.append(f"{cmd[0]}: no GPUs reported")
    log.info("gpu.none", reason="; ".join(reasons) or "neither nvidia-smi nor rocm-smi found")
    return []
