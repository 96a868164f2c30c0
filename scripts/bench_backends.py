#!/usr/bin/env python3
"""llama.cpp's C++ ``llama-server`` vs llama-cpp-python's server, same model, same machine.

Answers issue 16 with numbers: should the demo and the tests run llama.cpp's own server instead
of ``python -m llama_cpp.server``? For each backend, one after the other (never two models at
once on 2 cores), on 127.0.0.1 with the bundled SmolLM2-135M GGUF:

* start: seconds from spawn until ``GET /v1/models`` answers, and until a first chat
  completion (max_tokens 1) succeeds: what a test fixture or ``make demo`` waits for;
* decode: tokens/s of non-streamed chat completions on one fixed prompt (temperature 0,
  max_tokens 64, ``--runs`` runs after one warm-up, median), the p50 time to first token of
  streamed requests, and the aggregate tokens/s of two concurrent requests (``--parallel 2``
  lets llama-server batch them; llama-cpp-python serves one at a time);
* memory: RSS after the runs and the peak (VmHWM);
* a quick OpenAI conformance probe: list-of-parts content, ``stream_options.include_usage``,
  ``n=2``, ``stop``, ``logprobs``, ``response_format`` json_object, ``tools``,
  ``/v1/completions`` with a list of prompts, and whether ``/health``, ``/metrics`` and
  ``/slots`` exist and parse with the worker's own load parsers (opentela.worker.metrics).

Every request has a timeout, every wait a deadline, and each server is stopped by PID
(scripts/_procs.py ProcessGroup) before the next one starts.

    .venv/bin/python scripts/bench_backends.py [--llama-server PATH] [--runs 5]
                                               [--backends llama-cpp-python,llama-server]

Without --llama-server the binary is taken from the cache of scripts/llama_server_build.sh
(run that first; this script never builds).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import ProcessGroup, StartupError, free_port, peak_rss_mb, tree_memory_mb, wait_until

from opentela.demo import DEFAULT_ALIAS, bundled_model
from opentela.worker import metrics as load_parsers

HOST = "127.0.0.1"
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
PROMPT = "Write a long story about a robot who learns to paint."
ROOT = Path(__file__).resolve().parent.parent


def default_llama_server() -> Path:
    """Where scripts/llama_server_build.sh caches the binary."""
    cache = os.environ.get("OPENTELA_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "opentela"
    )
    return Path(cache) / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}" / "bin" / "llama-server"


def backend_argv(name: str, model: Path, port: int, threads: int, llama_server: Path) -> list[str]:
    """The two command lines under test. llama-cpp-python gets the demo's flags (n_ctx 2048,
    no interrupting a stream); llama-server gets 2 slots of 2048 tokens and --metrics, which
    the worker needs to read its load (without it /metrics is 501)."""
    if name == "llama-cpp-python":
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model), "--model_alias", DEFAULT_ALIAS,
            "--host", HOST, "--port", str(port),
            "--n_threads", str(threads), "--n_ctx", "2048",
            "--interrupt_requests", "False",
        ]  # fmt: skip
    if name == "llama-server":
        return [
            str(llama_server),
            "--model", str(model), "--alias", DEFAULT_ALIAS,
            "--host", HOST, "--port", str(port),
            "-t", str(threads), "--parallel", "2", "-c", "4096",
            "--metrics", "--no-webui",
        ]  # fmt: skip
    raise SystemExit(f"unknown backend {name!r}")


# --- HTTP (stdlib only, one connection per request, always with a timeout) -------------------


class Http:
    """Tiny JSON client for one server; ``timeout`` bounds every request."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, raw = self.request("GET", path)
        return status, raw

    def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        status, _, raw = self.request("POST", path, body)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def stream(self, path: str, body: dict[str, Any]) -> tuple[float | None, list[Any], float]:
        """POST with stream=true; returns (seconds to first content, parsed events, total s)."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        t0 = time.perf_counter()
        ttft: float | None = None
        events: list[Any] = []
        try:
            conn.request(
                "POST", path, body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            )  # fmt: skip
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
            for raw in resp:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                event = json.loads(payload)
                events.append(event)
                if ttft is None and _delta_text(event):
                    ttft = time.perf_counter() - t0
        finally:
            conn.close()
        return ttft, events, time.perf_counter() - t0


def _delta_text(event: Any) -> str:
    with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
        choice = event["choices"][0]
        return choice.get("delta", {}).get("content") or choice.get("text") or ""
    return ""


def chat_body(max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": DEFAULT_ALIAS,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


# --- measurements -----------------------------------------------------------------------------


def first_completion_ok(client: Http) -> bool:
    status, body = client.post_json("/v1/chat/completions", chat_body(1))
    return status == 200 and isinstance(body, dict) and bool(body.get("choices"))


def decode_runs(client: Http, runs: int, max_tokens: int) -> dict[str, Any]:
    """Non-streamed tokens/s (completion tokens over wall time), after one warm-up."""
    client.post_json("/v1/chat/completions", chat_body(max_tokens))
    rates, tokens, walls = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        status, body = client.post_json("/v1/chat/completions", chat_body(max_tokens))
        wall = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"decode run: HTTP {status}: {str(body)[:200]}")
        n = int(body["usage"]["completion_tokens"])
        rates.append(n / wall)
        tokens.append(n)
        walls.append(wall)
    return {
        "tok_s_median": statistics.median(rates),
        "tok_s_runs": [round(r, 2) for r in rates],
        "completion_tokens": tokens,
        "wall_s_median": statistics.median(walls),
    }


def ttft_runs(client: Http, runs: int, max_tokens: int) -> dict[str, Any]:
    ttfts, streamed_rates = [], []
    for _ in range(runs):
        ttft, events, total = client.stream(
            "/v1/chat/completions", chat_body(max_tokens, stream=True)
        )
        if ttft is None:
            raise RuntimeError("stream carried no content")
        ttfts.append(ttft)
        chunks = sum(1 for e in events if _delta_text(e))
        if total > ttft and chunks > 1:
            streamed_rates.append((chunks - 1) / (total - ttft))
    return {
        "ttft_ms_p50": statistics.median(ttfts) * 1000,
        "ttft_ms_runs": [round(t * 1000, 1) for t in ttfts],
        "stream_decode_tok_s_median": statistics.median(streamed_rates) if streamed_rates else None,
    }


def _one_request(client: Http, max_tokens: int, results: list[int], errors: list[str]) -> None:
    """One request of a concurrent pair; the outcome goes to ``results`` or ``errors``."""
    try:
        status, body = client.post_json("/v1/chat/completions", chat_body(max_tokens))
        if status == 200:
            results.append(int(body["usage"]["completion_tokens"]))
        else:
            errors.append(f"HTTP {status}")
    except Exception as exc:
        errors.append(repr(exc))


def concurrent_runs(client: Http, rounds: int, max_tokens: int) -> dict[str, Any]:
    """Two requests at once, ``rounds`` times: aggregate completion tokens over wall time."""
    rates: list[float] = []
    for _ in range(rounds):
        results: list[int] = []
        errors: list[str] = []

        threads = [
            threading.Thread(target=_one_request, args=(client, max_tokens, results, errors))
            for _ in range(2)
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(client.timeout + 5)
        wall = time.perf_counter() - t0
        if errors or len(results) != 2:
            return {"c2_tok_s_median": None, "c2_error": "; ".join(errors) or "timeout"}
        rates.append(sum(results) / wall)
    return {
        "c2_tok_s_median": statistics.median(rates),
        "c2_tok_s_runs": [round(r, 2) for r in rates],
    }


# --- conformance probes: each returns (passed, short detail) ---------------------------------

Probe = Callable[[Http], tuple[bool, str]]
PARTIAL = "model-limited: "  # detail prefix of a failure that is the tiny model's, not the API's


def _chat(client: Http, **extra: Any) -> tuple[int, Any]:
    body = {"model": DEFAULT_ALIAS, "temperature": 0, "max_tokens": 16, **extra}
    body.setdefault("messages", [{"role": "user", "content": "Say hello."}])
    return client.post_json("/v1/chat/completions", body)


def _err(status: int, body: Any) -> str:
    text = body.get("error", body) if isinstance(body, dict) else body
    return f"HTTP {status}: {str(text)[:160]}"


def probe_content_parts(client: Http) -> tuple[bool, str]:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
    status, body = _chat(client, messages=msgs)
    if status != 200:
        return False, _err(status, body)
    content = body["choices"][0]["message"].get("content")
    return isinstance(content, str) and bool(content), f"content={str(content)[:40]!r}"


def probe_include_usage(client: Http) -> tuple[bool, str]:
    body = {
        "model": DEFAULT_ALIAS, "temperature": 0, "max_tokens": 8, "stream": True,
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    _, events, _ = client.stream("/v1/chat/completions", body)
    usage = [e for e in events if isinstance(e, dict) and e.get("usage")]
    if not usage:
        return False, f"no chunk with usage in {len(events)} chunks"
    last = usage[-1]
    spec = last is events[-1] and last.get("choices") == []
    return spec, f"usage={last['usage']} last_chunk={'yes' if last is events[-1] else 'no'}" + (
        "" if spec else f" choices={str(last.get('choices'))[:60]}"
    )


def probe_n2(client: Http) -> tuple[bool, str]:
    status, body = _chat(client, n=2, temperature=0.8)
    if status != 200:
        return False, _err(status, body)
    n = len(body.get("choices", []))
    return n == 2, f"{n} choice(s)"


def probe_stop(client: Http) -> tuple[bool, str]:
    status, body = _chat(client, max_tokens=32, stop=[" "])
    if status != 200:
        return False, _err(status, body)
    choice = body["choices"][0]
    text = (choice["message"].get("content") or "").strip()
    ok = " " not in text and choice.get("finish_reason") == "stop"
    return ok, f"text={text!r} finish={choice.get('finish_reason')}"


def probe_logprobs(client: Http) -> tuple[bool, str]:
    status, body = _chat(client, max_tokens=4, logprobs=True, top_logprobs=2)
    if status != 200:
        return False, _err(status, body)
    lp = body["choices"][0].get("logprobs") or {}
    content = lp.get("content") if isinstance(lp, dict) else None
    ok = (
        isinstance(content, list)
        and bool(content)
        and "logprob" in content[0]
        and len(content[0].get("top_logprobs") or []) == 2
    )
    return ok, f"{len(content or [])} token(s)" if ok else f"logprobs={str(lp)[:100]}"


def probe_json_object(client: Http) -> tuple[bool, str]:
    msgs = [{"role": "user", "content": "Reply with a JSON object with a key 'name'."}]
    status, body = _chat(
        client, messages=msgs, max_tokens=64, response_format={"type": "json_object"}
    )
    if status != 200:
        return False, _err(status, body)
    text = body["choices"][0]["message"].get("content") or ""
    finish = body["choices"][0].get("finish_reason")
    try:
        value = json.loads(text)
    except ValueError:
        if finish == "length" and text.lstrip().startswith("{"):
            # Constrained to JSON (the grammar forced the '{'), but the tiny model did not close
            # the object within max_tokens: the feature works, the model rambles.
            return False, f"{PARTIAL}JSON-constrained but cut at max_tokens: {text[:50]!r}"
        return False, f"not JSON ({finish}): {text[:60]!r}"
    return isinstance(value, dict), f"{text[:50]!r}"


def probe_tools(client: Http) -> tuple[bool, str]:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    status, body = _chat(
        client,
        messages=msgs,
        max_tokens=64,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    if status != 200:
        return False, _err(status, body)
    msg = body["choices"][0]["message"]
    calls = msg.get("tool_calls") or []
    if not calls:
        return False, f"no tool_calls; content={str(msg.get('content'))[:60]!r}"
    fn = calls[0].get("function", {})
    try:
        args = json.loads(fn.get("arguments") or "")
    except ValueError:
        args = None
    ok = fn.get("name") == "get_weather" and isinstance(args, dict)
    return ok, f"{fn.get('name')}({str(fn.get('arguments'))[:40]})"


def probe_prompt_list(client: Http) -> tuple[bool, str]:
    body = {"model": DEFAULT_ALIAS, "prompt": ["1, 2, 3,", "a, b, c,"], "max_tokens": 4,
            "temperature": 0}  # fmt: skip
    status, data = client.post_json("/v1/completions", body)
    if status != 200:
        return False, _err(status, data)
    idx = sorted(c.get("index") for c in data.get("choices", []))
    return idx == [0, 1], f"choice indexes {idx}"


def probe_endpoint(path: str) -> Probe:
    def probe(client: Http) -> tuple[bool, str]:
        status, raw = client.get(path)
        if status != 200:
            return False, f"HTTP {status}"
        if path == "/metrics":
            load = load_parsers.parse_prometheus(raw)
            return load is not None, f"worker parser: {load}"
        if path == "/slots":
            load = load_parsers.parse_slots(raw)
            return load is not None, f"worker parser: {load}"
        return True, raw[:60].decode(errors="replace")

    return probe


PROBES: dict[str, Probe] = {
    "content_parts": probe_content_parts,
    "include_usage": probe_include_usage,
    "n=2": probe_n2,
    "stop": probe_stop,
    "logprobs": probe_logprobs,
    "json_object": probe_json_object,
    "tools": probe_tools,
    "prompt_list": probe_prompt_list,
    "/health": probe_endpoint("/health"),
    "/metrics": probe_endpoint("/metrics"),
    "/slots": probe_endpoint("/slots"),
}


def conformance(client: Http) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, probe in PROBES.items():
        try:
            ok, detail = probe(client)
        except Exception as exc:  # a probe that crashes is a failed probe, not a failed bench
            ok, detail = False, f"error: {exc!r}"[:200]
        out[name] = {"ok": ok, "detail": detail}
    return out


# --- one backend ------------------------------------------------------------------------------


def bench_backend(name: str, args: argparse.Namespace, model: Path, log_dir: Path) -> dict:
    port = free_port()
    argv = backend_argv(name, model, port, args.threads, Path(args.llama_server))
    client = Http(port, timeout=args.request_timeout)
    result: dict[str, Any] = {"backend": name, "argv": argv}
    with ProcessGroup(log_dir, stop_timeout=10) as procs:
        t0 = time.monotonic()
        proc = procs.start(name, argv)
        try:
            wait_until(
                lambda: client.get("/v1/models")[0] == 200,
                timeout=args.start_timeout, what=f"{name} /v1/models", poll_s=0.05, procs=[proc],
            )  # fmt: skip
            result["start_models_s"] = time.monotonic() - t0
            wait_until(
                lambda: first_completion_ok(client),
                timeout=args.start_timeout, what=f"{name} first completion", poll_s=0.05,
                procs=[proc],
            )  # fmt: skip
            result["start_first_completion_s"] = time.monotonic() - t0
        except StartupError as exc:
            result["error"] = f"{exc}\n{proc.tail(20)}"
            return result
        _, headers, raw = client.request("GET", "/v1/models")
        with contextlib.suppress(ValueError, KeyError, IndexError):
            result["owned_by"] = json.loads(raw)["data"][0].get("owned_by")
        result["server_header"] = headers.get("server")
        result.update(decode_runs(client, args.runs, args.max_tokens))
        result.update(ttft_runs(client, args.runs, args.max_tokens))
        result.update(concurrent_runs(client, args.c2_rounds, args.max_tokens))
        mem = tree_memory_mb(proc.pid)
        result["rss_mb"] = mem["rss"]
        result["peak_rss_mb"] = peak_rss_mb(proc.pid)
        result["conformance"] = conformance(client)
        result["alive_at_end"] = proc.alive()
    return result


# --- output ----------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _verdict(res: dict[str, Any]) -> str:
    if res["ok"]:
        return "ok"
    return "part" if res["detail"].startswith(PARTIAL) else "FAIL"


def table(results: list[dict]) -> str:
    names = [r["backend"] for r in results]
    rows: list[tuple[str, list[str]]] = [
        ("start: /v1/models (s)", [_fmt(r.get("start_models_s")) for r in results]),
        ("start: 1st completion (s)", [_fmt(r.get("start_first_completion_s")) for r in results]),
        ("tokens/s (median, c=1)", [_fmt(r.get("tok_s_median"), ".1f") for r in results]),
        ("tokens/s (2 concurrent)", [_fmt(r.get("c2_tok_s_median"), ".1f") for r in results]),
        ("TTFT p50 streamed (ms)", [_fmt(r.get("ttft_ms_p50"), ".1f") for r in results]),
        ("RSS / peak (MiB)", [f"{_fmt(r.get('rss_mb'), '.0f')} / {_fmt(r.get('peak_rss_mb'), '.0f')}"
                              for r in results]),
    ]  # fmt: skip
    for probe in PROBES:
        rows.append(
            (
                probe,
                [_verdict(r["conformance"][probe]) if "conformance" in r else "-" for r in results],
            )
        )
    width = max(len(k) for k, _ in rows)
    cols = [max(len(n), *(len(v[i]) for _, v in rows)) for i, n in enumerate(names)]
    lines = [" | ".join([" " * width, *(n.ljust(c) for n, c in zip(names, cols, strict=True))])]
    lines.append("-+-".join(["-" * width, *("-" * c for c in cols)]))
    for key, vals in rows:
        lines.append(
            " | ".join([key.ljust(width), *(v.ljust(c) for v, c in zip(vals, cols, strict=True))])
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backends", default="llama-cpp-python,llama-server")
    ap.add_argument("--llama-server", default=str(default_llama_server()))
    ap.add_argument("--model", default=None, help="GGUF (default: the bundled SmolLM2-135M)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--c2-rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--request-timeout", type=float, default=120.0)
    ap.add_argument("--out", default=str(ROOT / ".bench" / "backends.json"))
    args = ap.parse_args()

    model = Path(args.model) if args.model else bundled_model()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "llama-server" in backends and not os.access(args.llama_server, os.X_OK):
        raise SystemExit(
            f"no llama-server at {args.llama_server}: run scripts/llama_server_build.sh first"
        )
    out = Path(args.out)
    log_dir = out.parent / "backends-logs"
    results = []
    for name in backends:
        print(f"[bench_backends] {name} ...", file=sys.stderr, flush=True)
        results.append(bench_backend(name, args, model, log_dir))
        if "error" in results[-1]:
            print(f"[bench_backends] {name} failed: {results[-1]['error']}", file=sys.stderr)
    ok = [r for r in results if "error" not in r]
    if ok:
        print(table(ok))
        for r in ok:
            for probe, res in r["conformance"].items():
                if not res["ok"]:
                    print(f"  {r['backend']}: {probe}: {res['detail']}")
    doc = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_end": os.getloadavg()},
        "model": str(model),
        "prompt": PROMPT,
        "params": {"runs": args.runs, "max_tokens": args.max_tokens, "threads": args.threads,
                   "temperature": 0, "c2_rounds": args.c2_rounds},
        "results": results,
    }  # fmt: skip
    if "llama-server" in backends:
        vfile = Path(args.llama_server).parent.parent / "version.txt"
        with contextlib.suppress(OSError):
            doc["llama_server_version"] = vfile.read_text().strip().splitlines()[-2:]
        with contextlib.suppress(OSError):
            doc["llama_server_size_mb"] = os.path.getsize(args.llama_server) / 2**20
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
