"""The OpenAI conformance matrix, shared by every backend's run: each feature checked against
a backend DIRECTLY (its own port) and THROUGH THE POOL (an entry node), with the official
openai SDK. A cell is ok, unsupported (the backend answers the feature with an error, or
ignores it) or fail (an answer of the wrong shape). ``worse_through_the_pool`` checks the rule the pool must
keep: every cell that works direct works through the pool.

Used by tests/conformance/test_conformance_matrix.py (the demo's llama-cpp-python, in CI) and
tests/vllm/test_vllm_matrix.py (vLLM's CPU build, ``make conformance-vllm``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

MAX_TOKENS = 8  # SmolLM2 on 2 shared CPU cores: every cell must be quick
# SmolLM2's <|endoftext|> and <|im_end|>: banned, so a long generation really runs to max_tokens.
NO_EOS = {"0": -100, "2": -100}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


class Unsupported(Exception):
    """The backend does not do this: it answers with an error, or ignores the parameter."""


@dataclass
class Target:
    """One column: a base URL and key, the model, and how to reach the backend that served a
    response (the cancellation check asks that backend whether it is still busy)."""

    name: str
    base: str
    model: str
    backend_of: Callable[[Mapping[str, str]], str]
    api_key: str = "none"
    backend_key: str = "none"
    # How many requests the backend is generating, from its own /metrics (vLLM, SGLang): a
    # batching server answers a probe at once even while an abandoned generation goes on.
    running: Callable[[str], float] | None = None

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base}/v1", api_key=self.api_key, max_retries=0, timeout=120
        )

    def backend_client(self, backend: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{backend}/v1", api_key=self.backend_key, max_retries=0, timeout=120
        )


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _chat(t: Target, **kw: Any) -> Any:
    kw.setdefault("max_tokens", MAX_TOKENS)
    kw.setdefault("messages", user("Say hello."))
    kw.setdefault("temperature", 0)
    return t.client().chat.completions.create(model=t.model, **kw)


def _stream(t: Target, **kw: Any) -> list[Any]:
    return list(_chat(t, stream=True, **kw))


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# -- the checks: None (or a note) is ok; Unsupported or an API error is unsupported ------------


def check_text_parts(t: Target) -> str:
    parts = [{"type": "text", "text": "Say hello"}, {"type": "text", "text": "in French."}]
    msgs = [{"role": "user", "content": parts}]
    resp = _chat(t, messages=msgs)
    assert resp.choices[0].message.content, "no content"
    streamed = _stream(t, messages=msgs)
    # Not compared with the answer: the pool may send the two to different replicas.
    assert _text(streamed), "the stream carried no content"
    return "non-streamed and streamed"


def check_system_role(t: Target) -> None:
    msgs = [{"role": "system", "content": "Answer in one word."}, *user("Name a color.")]
    assert _chat(t, messages=msgs).choices[0].message.content


def check_developer_role(t: Target) -> None:
    msgs = [{"role": "developer", "content": "Answer in one word."}, *user("Name a color.")]
    assert _chat(t, messages=msgs).choices[0].message.content


def check_n(t: Target) -> None:
    resp = _chat(t, n=2, temperature=1.0)
    if len(resp.choices) == 1:
        raise Unsupported("n ignored: 1 choice")
    assert [c.index for c in resp.choices] == [0, 1]


def check_stop(t: Target) -> None:
    resp = _chat(t, messages=user("Count: 1, 2, 3, 4, 5"), stop=[","], max_tokens=16)
    content = resp.choices[0].message.content or ""
    assert "," not in content, f"stop string in {content!r}"
    assert resp.choices[0].finish_reason in ("stop", "length")


def check_logprobs(t: Target) -> None:
    resp = _chat(t, logprobs=True, top_logprobs=2)
    lp = resp.choices[0].logprobs
    if lp is None or not lp.content:
        raise Unsupported("no logprobs in the answer")
    assert all(len(x.top_logprobs) <= 2 and x.token for x in lp.content)


def check_json_mode(t: Target) -> None:
    resp = _chat(t, response_format={"type": "json_object"}, messages=user("A JSON object."))
    content = (resp.choices[0].message.content or "").lstrip()
    if not content.startswith(("{", "[")):
        raise Unsupported(f"not JSON: {content[:20]!r}")


def _ask_for_weather() -> dict[str, Any]:
    return {
        "tools": [WEATHER],
        "tool_choice": FORCE_WEATHER,
        "max_tokens": 64,  # vLLM's hermes format spends ~20 tokens before the arguments
        "messages": user("Weather in Paris?"),
    }


def check_tools(t: Target) -> str:
    resp = _chat(t, **_ask_for_weather())
    calls = resp.choices[0].message.tool_calls
    if not calls:
        raise Unsupported("no tool call")
    assert calls[0].function.name == "get_weather"
    return f"arguments {calls[0].function.arguments}"


def check_tools_stream(t: Target) -> None:
    chunks = _stream(t, **_ask_for_weather())
    names = [
        tc.function.name
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
        if tc.function and tc.function.name
    ]
    if not names:
        raise Unsupported("no tool-call delta in the stream")
    assert names[0] == "get_weather"


def check_include_usage(t: Target) -> str:
    notes = []
    for route in ("chat", "completions"):
        if route == "chat":
            chunks = _stream(t, stream_options={"include_usage": True})
            contents = [c for c in chunks if c.choices and c.choices[0].delta.content]
        else:
            chunks = list(
                t.client().completions.create(
                    model=t.model,
                    prompt="1, 2, 3,",
                    max_tokens=MAX_TOKENS,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            contents = [c for c in chunks if c.choices and c.choices[0].text]
        usage = [c for c in chunks if c.usage is not None]
        if not usage:
            raise Unsupported(f"no usage chunk ({route})")
        assert len(usage) == 1 and usage[0] is chunks[-1] and usage[0].choices == []
        u = usage[0].usage
        assert u.completion_tokens == len(contents), (u, len(contents))
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens
        if route == "completions":
            plain = t.client().completions.create(
                model=t.model, prompt="1, 2, 3,", max_tokens=1, temperature=0
            )
            assert u.prompt_tokens == plain.usage.prompt_tokens, "prompt count not exact"
        else:
            assert u.prompt_tokens > 0
        notes.append(f"{route} {u.prompt_tokens}+{u.completion_tokens}")
    return ", ".join(notes)


def check_prompt_list(t: Target) -> None:
    resp = t.client().completions.create(
        model=t.model, prompt=["1, 2, 3,", "a, b, c,"], max_tokens=4, temperature=0
    )
    assert sorted(c.index for c in resp.choices) == [0, 1], "not one choice per prompt"


def check_embeddings(t: Target) -> None:
    resp = t.client().embeddings.create(model=t.model, input=["hello", "world"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) > 0


def check_cancellation(t: Target) -> str:
    """Closing a stream frees the backend. For a server that batches, its own running count
    drops to 0; for one that serves a request at a time, a request sent straight to it comes
    back in a fraction of the time the abandoned generation would have taken."""
    max_tokens = 300
    raw = t.client().chat.completions.with_raw_response.create(
        model=t.model,
        max_tokens=max_tokens,
        stream=True,
        logit_bias=NO_EOS,
        messages=user("Write a very long story."),
    )
    backend = t.backend_of(raw.headers)
    stamps: list[float] = []
    stream = raw.parse()
    for _ in stream:
        stamps.append(time.monotonic())
        if len(stamps) == 11:
            break
    stream.close()
    busy_for_s = (max_tokens - len(stamps)) * (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    t0 = time.monotonic()
    if t.running is not None:
        running = t.running
        deadline = t0 + busy_for_s / 3
        while running(backend) > 0:
            assert time.monotonic() < deadline, (
                f"backend still generating after {busy_for_s / 3:.1f}s"
            )
            time.sleep(0.05)
        return f"running 0 after {time.monotonic() - t0:.2f}s (would run {busy_for_s:.1f}s)"
    resp = t.backend_client(backend).chat.completions.create(
        model=t.model, max_tokens=2, messages=user("Hi")
    )
    took = time.monotonic() - t0
    assert resp.choices, resp
    assert took < busy_for_s / 3, f"backend still busy: {took:.1f}s of {busy_for_s:.1f}s"
    return f"free after {took:.2f}s (would be busy {busy_for_s:.1f}s)"


def check_context_too_long(t: Target) -> str:
    try:
        _chat(t, messages=user("hello " * 2100), max_tokens=4)
    except openai.BadRequestError as exc:
        return f"400: {str(exc.message)[:60]}"
    raise AssertionError("a prompt over the context window was answered 200")


def check_unknown_parameter(t: Target) -> str:
    try:
        resp = _chat(t, extra_body={"frobnicate": 1})
    except openai.BadRequestError:
        return "400"
    assert resp.choices[0].message.content is not None
    return "ignored (200)"


CHECKS: dict[str, Callable[[Target], str | None]] = {
    "text_parts": check_text_parts,
    "system_role": check_system_role,
    "developer_role": check_developer_role,
    "n": check_n,
    "stop": check_stop,
    "logprobs": check_logprobs,
    "json_mode": check_json_mode,
    "tools": check_tools,
    "tools_stream": check_tools_stream,
    "include_usage": check_include_usage,
    "prompt_list": check_prompt_list,
    "embeddings": check_embeddings,
    "cancellation": check_cancellation,
    "context_too_long": check_context_too_long,
    "unknown_parameter": check_unknown_parameter,
}


def run_cell(check: Callable[[Target], str | None], target: Target) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        note = check(target) or ""
        result = "ok"
    except Unsupported as exc:
        result, note = "unsupported", str(exc)
    except openai.APIStatusError as exc:
        result, note = "unsupported", f"{exc.status_code}: {str(exc.message)[:80]}"
    except (AssertionError, openai.APIError, ValueError, KeyError, IndexError, TypeError) as exc:
        result, note = "fail", f"{type(exc).__name__}: {str(exc)[:120]}"
    note = " ".join(note.split())  # one line per cell
    return {"result": result, "note": note, "s": round(time.monotonic() - t0, 2)}


def format_matrix(backend: str, rows: dict[str, dict[str, dict[str, Any]]]) -> str:
    width = max(len(f) for f in rows) + 2
    lines = [f"{backend}", f"{'feature':<{width}}{'direct':<14}{'pool':<14}notes (pool)"]
    for feature, cells in rows.items():
        d, p = cells["direct"], cells["pool"]
        note = p["note"] or d["note"]
        lines.append(f"{feature:<{width}}{d['result']:<14}{p['result']:<14}{note}")
    return "\n".join(lines)


Matrix = dict[str, dict[str, dict[str, Any]]]


def run_matrix(direct: Target, through: Target, skip: frozenset[str] = frozenset()) -> Matrix:
    return {
        feature: {t.name: run_cell(check, t) for t in (direct, through)}
        for feature, check in CHECKS.items()
        if feature not in skip
    }


def worse_through_the_pool(rows: Matrix) -> list[str]:
    return [f for f, c in rows.items() if c["direct"]["result"] == "ok" != c["pool"]["result"]]


def report_matrix(
    backend: str, direct: Target, through: Target, *paths: Path
) -> tuple[str, Matrix]:
    """Run the matrix, print its table, write it to ``paths`` and fail on any cell that works
    direct but not through the pool; the table and the cells, for further assertions."""
    started = time.monotonic()
    rows = run_matrix(direct, through)
    took = time.monotonic() - started
    table = format_matrix(backend, rows)
    print(f"\n{table}\n({len(rows) * 2} cells in {took:.0f}s)")
    write_matrix(backend, rows, took, *paths)
    worse = worse_through_the_pool(rows)
    assert not worse, f"worse through the pool than direct: {worse}\n{table}"
    return table, rows


def write_matrix(backend: str, rows: Matrix, seconds: float, *paths: Path) -> None:
    """Merged into what is there: each backend's run keeps the others' columns."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            out = json.loads(path.read_text())
        except (OSError, ValueError):
            out = {}
        out.setdefault("backends", {})[backend] = {"features": rows, "seconds": round(seconds, 1)}
        path.write_text(json.dumps(out, indent=2) + "\n")
