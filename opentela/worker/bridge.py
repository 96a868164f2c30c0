"""Small, safe bridges for what one backend kind lacks, applied at the worker (issue 16).

The pool must never make a backend look worse than it is when called directly, and where a
backend misses something that is cheap and safe to supply, the worker supplies it, for that
backend kind only, and never rewrites what the backend supports. Today one kind needs it:
llama-cpp-python (``python -m llama_cpp.server``, kind ``llama-cpp-python``,
``worker/framework.py``):

* Chat ``content`` given as a list of text parts (what the OpenAI SDK, Open WebUI and
  guidellm send) crashes its chat templates with a 500 ("can only concatenate str (not
  "list") to str"), and a stream with such content answers 200 with an empty body. A list of
  only text parts is flattened to one string, the parts joined with ``"\\n"``: OpenAI does
  not name a separator, and vLLM (and TensorRT-LLM) join text parts with ``"\\n"``, so the
  same request gives the same prompt on every replica kind of the pool. Content with any
  other part (``image_url``, ``input_audio``) is left as it is: a multimodal handler may
  support it, and otherwise the backend's own error is the true answer.
* ``stream_options.include_usage`` is ignored: no usage chunk ever comes. The worker counts
  the stream and adds the final usage chunk in OpenAI's shape (``choices: []``) just before
  ``data: [DONE]``. Completion tokens are the content chunks: llama-cpp-python streams one
  token per chunk, except where it holds text back (a possible ``stop`` prefix, a
  character split across tokens) and later sends it in one chunk. Prompt tokens are exact for
  ``/v1/completions`` with a string prompt (the backend's ``/extras/tokenize/count`` runs
  the same tokenizer call as its completion path); a chat prompt goes through a chat template
  the server does not expose, so it is estimated at four characters a token. An estimate is
  marked ``"estimated": true`` inside ``usage`` (an extension field; OpenAI clients ignore
  unknown fields). A backend that does send usage itself is never given a second one.

Everything here is pure: bytes in, bytes out; the worker (``serve.py``) does the I/O. For
any other backend kind :func:`plan` returns None before looking at the body, so their hot
path parses no JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..openai_text import (
    DUMPS,
    EVENT_END,
    MAX_SSE_EVENT,
    estimate_prompt_tokens,
    has_content,
    sse_data,
)
from .framework import LLAMA_CPP_PYTHON

BRIDGED_KINDS = frozenset({LLAMA_CPP_PYTHON})
"""Backend kinds that need a bridge; for all others the worker forwards bytes untouched."""

TEXT_SEPARATOR = "\n"  # between flattened text parts: what vLLM does (see the module doc)


def _route(path: str) -> str:
    """``chat``, ``completions`` or "" for a request path (query ignored)."""
    p = path.split("?", 1)[0].rstrip("/")
    if p.endswith("/chat/completions"):
        return "chat"
    if p.endswith("/completions"):
        return "completions"
    return ""


def flatten_text_parts(content: Any) -> str | None:
    """The string a list of only text parts stands for, or None when ``content`` is not such
    a list (a string, an empty list, or a list with any non-text part: left as is)."""
    if not isinstance(content, list) or not content:
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            return None
        text = part.get("text")
        if not isinstance(text, str):
            return None
        texts.append(text)
    return TEXT_SEPARATOR.join(texts)


def flatten_messages(obj: dict[str, Any]) -> bool:
    """Flattens text-only list content of every message in place, and turns the
    ``developer`` role (OpenAI's newer name for ``system``, which llama-cpp-python's schema
    refuses with a validation error) into ``system``; True when any message changed."""
    messages = obj.get("messages")
    if not isinstance(messages, list):
        return False
    changed = False
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "developer":
            message["role"] = "system"
            changed = True
        flat = flatten_text_parts(message.get("content"))
        if flat is not None:
            message["content"] = flat
            changed = True
    return changed


@dataclass
class Plan:
    """What the worker does for one bridged request."""

    body: bytes
    """The body to send to the backend (the client's bytes when nothing changed)."""
    usage: UsageSynth | None = None
    """Set when the client asked for a usage chunk on a stream: feed it the response."""
    tokenize: str | None = None
    """Text whose token count is the exact prompt count (the backend's tokenizer is asked
    once, before the request); None when there is no exact count to get."""
    model: str | None = None


def plan(kind: str, method: str, path: str, body: bytes) -> Plan | None:
    """How to bridge a request to a backend of ``kind``; None: forward it unchanged. Returns
    None for any kind not in :data:`BRIDGED_KINDS` without reading the body."""
    if kind not in BRIDGED_KINDS or method.upper() != "POST" or not body:
        return None
    route = _route(path)
    if not route:
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None  # the backend's own 4xx is the answer
    if not isinstance(obj, dict):
        return None
    changed = route == "chat" and flatten_messages(obj)
    usage: UsageSynth | None = None
    tokenize: str | None = None
    opts = obj.get("stream_options")
    if obj.get("stream") is True and isinstance(opts, dict) and opts.get("include_usage") is True:
        usage = UsageSynth(
            prompt_tokens=estimate_prompt_tokens(obj), has_stop=bool(obj.get("stop"))
        )
        prompt = obj.get("prompt")
        if route == "completions":
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]  # what llama-cpp-python itself does with a one-item list
            if isinstance(prompt, str) and prompt:
                tokenize = prompt
    if not changed and usage is None:
        return None
    model = obj.get("model") if isinstance(obj.get("model"), str) else None
    return Plan(DUMPS(obj).encode() if changed else body, usage, tokenize, model)


@dataclass
class UsageSynth:
    """Adds the final usage chunk to a llama-cpp-python stream that was asked for one.

    ``feed`` takes the backend's bytes as they come (an event may be split at any byte) and
    returns what the client gets: every complete event as it arrived, and before
    ``data: [DONE]`` the usage chunk. A partial event is held until its end arrives (one
    ``readany`` almost always holds whole events, so this adds no delay in practice).
    Nothing is added when the backend sent usage itself, sent an error event, or never sent
    ``[DONE]`` (a broken stream: the entry node estimates then, as before).
    """

    prompt_tokens: int
    prompt_exact: bool = False
    has_stop: bool = False
    completion_tokens: int = 0
    backend_usage: bool = False
    error: bool = False
    added: bool = False
    _last: dict[str, Any] = field(default_factory=dict)
    _buf: bytearray = field(default_factory=bytearray)
    _off: bool = False  # an oversized event went by: read nothing more, add nothing

    def exact_prompt(self, tokens: int) -> None:
        """The backend's tokenizer counted the prompt."""
        self.prompt_tokens, self.prompt_exact = tokens, True

    @property
    def estimated(self) -> bool:
        """Whether the synthesized usage is an estimate: the prompt was not counted by the
        backend, or a ``stop`` list may have made it hold text back and merge chunks."""
        return not self.prompt_exact or self.has_stop

    def usage(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.estimated:
            out["estimated"] = True
        return out

    def usage_event(self, sep: bytes) -> bytes:
        """The usage chunk, in the shape OpenAI sends it (``choices: []``)."""
        chunk: dict[str, Any] = {
            k: self._last[k]
            for k in ("id", "object", "created", "model", "system_fingerprint")
            if k in self._last
        }
        chunk["choices"] = []
        chunk["usage"] = self.usage()
        return b"data: " + DUMPS(chunk).encode() + sep

    def feed(self, chunk: bytes) -> bytes:
        if self._off:
            return chunk
        self._buf += chunk
        out: list[bytes] = []
        last = 0
        for m in EVENT_END.finditer(self._buf):
            event = bytes(self._buf[last : m.end()])
            last = m.end()
            out.append(self._event(event, m.group()))
        del self._buf[:last]
        if len(self._buf) > MAX_SSE_EVENT:
            out.append(bytes(self._buf))  # no event is this large: not ours to read
            self._buf.clear()
            self._off = True
        return b"".join(out)

    def finish(self) -> bytes:
        """The end of the response: whatever partial event is still held goes out as is."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def _event(self, event: bytes, sep: bytes) -> bytes:
        data = sse_data(event)
        if data is None:
            return event  # a comment (ping) or an empty event
        if data.strip() == b"[DONE]":
            if self.backend_usage or self.error or self.added:
                return event
            self.added = True
            return self.usage_event(sep) + event
        if not data.startswith(b"{"):
            return event
        try:
            obj = json.loads(data)
        except ValueError:
            return event
        if not isinstance(obj, dict):
            return event
        if isinstance(obj.get("usage"), dict):
            self.backend_usage = True  # it honours include_usage now: never add a second
        if "error" in obj and "choices" not in obj:
            self.error = True
        if has_content(obj):
            self.completion_tokens += 1
        if "id" in obj:
            self._last = obj
        return event
