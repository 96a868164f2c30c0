"""How busy the local backend says it is, read from its own metrics (pure parsers).

Supported, in this order of preference when several are present:

* vLLM ``/metrics``: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``;
* SGLang ``/metrics``: ``sglang:num_running_reqs``, ``sglang:num_queue_reqs``;
* llama.cpp server ``/metrics`` (``--metrics``): ``llamacpp:requests_processing``,
  ``llamacpp:requests_deferred``;
* Hugging Face TGI ``/metrics``: ``tgi_batch_current_size``, ``tgi_queue_size``;
* llama.cpp server ``/slots`` JSON: one object per slot, busy when ``is_processing`` is true
  (newer servers) or ``state`` is non-zero (older ones); it shows no queue, so ``waiting`` is 0.

Gauges are summed over label sets (one per model, engine or data-parallel rank). Anything
unparsable is skipped, never raised: a backend's metrics must not take the worker down.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendLoad:
    running: int
    waiting: int

    @property
    def total(self) -> int:
        return self.running + self.waiting


# family: (running metric, waiting metric)
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("vllm", "vllm:num_requests_running", "vllm:num_requests_waiting"),
    ("sglang", "sglang:num_running_reqs", "sglang:num_queue_reqs"),
    ("llamacpp", "llamacpp:requests_processing", "llamacpp:requests_deferred"),
    ("tgi", "tgi_batch_current_size", "tgi_queue_size"),
)
_WANTED = frozenset(name for _, r, w in FAMILIES for name in (r, w))
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _sample(line: str) -> tuple[str, float] | None:
    """``name{labels} value [timestamp]`` → (name, value); None for anything else."""
    m = _NAME.match(line)
    if m is None:
        return None
    name, i = m.group(), m.end()
    if i < len(line) and line[i] == "{":
        # Skip the label set; values are quoted and may hold '}' or escaped quotes.
        i += 1
        quoted = False
        while i < len(line):
            ch = line[i]
            if quoted and ch == "\\":
                i += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == "}" and not quoted:
                break
            i += 1
        else:
            return None
        i += 1
    rest = line[i:].split()
    if not rest or (i == m.end() and not line[i : i + 1].isspace()):
        return None
    try:
        value = float(rest[0])
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return name, value


def parse_prometheus(text: str | bytes) -> BackendLoad | None:
    """Load from a Prometheus text exposition; None if no known family is in it."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return None
    sums: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sample = _sample(line)
        if sample is not None and sample[0] in _WANTED:
            sums[sample[0]] = sums.get(sample[0], 0.0) + sample[1]
    for _family, running, waiting in FAMILIES:
        if running in sums or waiting in sums:
            return BackendLoad(_count(sums.get(running, 0.0)), _count(sums.get(waiting, 0.0)))
    return None


def _count(value: float) -> int:
    return max(0, round(value))


def parse_slots(data: Any) -> BackendLoad | None:
    """Load from llama.cpp's ``/slots`` (decoded JSON, or its text/bytes)."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if isinstance(data, dict) and isinstance(data.get("slots"), list):
        data = data["slots"]
    if not isinstance(data, list):
        return None
    known, busy = 0, 0
    for slot in data:
        if not isinstance(slot, dict):
            continue
        flag = slot.get("is_processing")
        state = slot.get("state")
        if isinstance(flag, bool):
            known += 1
            busy += flag
        elif isinstance(state, int | float) and not isinstance(state, bool):
            known += 1
            busy += state != 0
    return BackendLoad(busy, 0) if known else None


def parse(body: str | bytes) -> BackendLoad | None:
    """Either format, told apart by its first character (JSON slots or Prometheus text)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str):
        return None
    if body.lstrip()[:1] in ("[", "{"):
        return parse_slots(body)
    return parse_prometheus(body)
