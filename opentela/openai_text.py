"""What the entry's usage accounting and the worker's bridges both read in OpenAI bodies and
streams: SSE event boundaries and ``data:`` lines, chunks that carry generated text, and the
four-characters-a-token estimate (one rule, so a worker's estimate matches the entry's)."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_SSE_EVENT = 1024 * 1024
"""A partial SSE event longer than this is passed on unread (never buffered without bound)."""
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def sse_data(event: bytes) -> bytes | None:
    """The joined ``data:`` lines of one SSE event, or None when it has none (a comment)."""
    data = [line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


def has_content(obj: dict[str, Any]) -> bool:
    """A chunk that carries generated text or a tool-call delta (one token, roughly)."""
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return False
    for ch in choices:
        if not isinstance(ch, dict):
            continue
        if ch.get("text"):
            return True
        delta = ch.get("delta")
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
        ):
            return True
    return False


def text_len(value: Any) -> int:
    """Characters of prompt text in a message list / prompt / input (for estimates only)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_len(v) for v in value)
    if isinstance(value, dict):
        return text_len(value.get("content")) + text_len(value.get("text"))
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """About four characters per token: the usual rule of thumb for English BPE vocabularies."""
    n = sum(text_len(body.get(k)) for k in ("messages", "prompt", "input"))
    return (n + 3) // 4


def plain_sse(status: int, headers: Any) -> bool:
    """A successful, uncompressed event stream: the only answer a bridge may add a usage
    chunk to (an error answer, or compressed bytes, pass on untouched)."""
    get = getattr(headers, "get", None)
    if status != 200 or get is None:
        return False
    return "text/event-stream" in (get("Content-Type") or "") and not get("Content-Encoding")
