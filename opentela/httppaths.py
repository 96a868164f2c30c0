"""Which forwarded requests reach a backend: shared by the entry and the worker, like
``httpheaders``. Pure.

The worker builds its backend URL as ``base_url + path``, so the path decides where the worker
connects and what the backend does. Any member of the pool can send forwarding frames, so this
check is the worker's trust boundary (the entry runs it too, for an early, clear error).

**Form.** The path must be an origin-form path (RFC 9112 §3.2.1): ``/segments[?query]`` in
plain printable ASCII. No scheme, no authority (``//host``), no ``@``, ``\\``, ``#``, spaces or
control characters, no ``.``/``..`` segments (also when percent-encoded), no empty segments, and
no percent-encoded ``/``, ``\\``, ``%`` or control bytes in the path: those change what a backend
or a second decoder sees (``/v1%2F..%2Fsleep``, ``/%252e%252e/``), and no API route needs them.

**Route: an allow-list, not a deny-list.** By default only the inference routes of the OpenAI
API (and the native inference routes of vLLM, SGLang and llama.cpp), the model list and the
health/version/metrics probes pass; anything else needs ``--service.allow-path PATTERN``
(an fnmatch glob on the decoded path, query excluded). Why not a list of admin routes to refuse:
backends add administration routes with every release, and a deny-list silently lets the new
ones through. Reading vLLM at commit 048027fb (``vllm/entrypoints/openai/api_server.py`` and
``vllm/entrypoints/serve/*``: ``/sleep``, ``/wake_up``, ``/is_sleeping``, ``/collective_rpc``,
``/reset_prefix_cache``, ``/reset_mm_cache``, ``/v1/load_lora_adapter``, ``/pause``,
``/resume``, ``/scale_elastic_ep``, ``/start_profile``, ...) and SGLang at commit 0025436e
(``python/sglang/srt/entrypoints/http_server.py``: ``/flush_cache``, ``/update_weights_from_*``,
``/init_weights_update_group``, ``/set_internal_state``, ``/start_profile``, ``/freeze_gc``,
``/get_server_info`` which returns the server arguments, API key included, ...), the admin
surface is dozens of routes, several of them reachable with GET, and vLLM's own API key only
guards paths under ``/v1``. An allow-list refuses all of them, and next year's too; a new
inference route costs one ``--service.allow-path``. Some routes are allowed for one method only
(llama.cpp's ``GET /props`` reads, ``POST /props`` changes the server).

**Methods.** GET, POST, HEAD and OPTIONS: what the OpenAI API, the health and the model routes
use. DELETE is refused even with an allow pattern: OpenAI's ``DELETE /v1/models/{id}`` deletes
a fine-tune, which a pool has no business doing on someone's worker; PUT and PATCH likewise
(SGLang accepts PUT on its admin routes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import unquote_to_bytes

METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS"})
_READ = frozenset({"GET", "HEAD", "OPTIONS"})
_CALL = frozenset({"POST", "OPTIONS"})

# (methods, glob on the decoded path). Globs' ``*`` also matches ``/`` (model ids have one).
DEFAULT_ROUTES: tuple[tuple[frozenset[str], str], ...] = (
    # Probes and model lists (vLLM, SGLang, llama.cpp).
    (_READ, "/health"),
    (_READ, "/ping"),
    (_READ, "/version"),
    (_READ, "/metrics"),
    (_READ, "/v1/models"),
    (_READ, "/v1/models/*"),
    (_READ, "/get_model_info"),
    (_READ, "/props"),
    # OpenAI-compatible inference.
    (_CALL, "/v1/chat/completions"),
    (_CALL, "/v1/completions"),
    (_CALL, "/v1/embeddings"),
    (_CALL, "/v1/responses"),
    (_CALL | _READ, "/v1/responses/*"),  # retrieve and cancel a stored response
    (_CALL, "/v1/messages"),  # vLLM's Anthropic-compatible route
    (_CALL, "/v1/messages/count_tokens"),
    (_CALL, "/v1/audio/transcriptions"),
    (_CALL, "/v1/audio/translations"),
    (_CALL, "/v1/rerank"),
    (_CALL, "/v2/rerank"),
    (_CALL, "/rerank"),
    (_CALL, "/v1/score"),
    (_CALL, "/score"),
    (_CALL, "/pooling"),
    (_CALL, "/classify"),
    (_CALL, "/tokenize"),
    (_CALL, "/detokenize"),
    # Native inference routes: SGLang, llama.cpp.
    (_CALL, "/generate"),
    (_CALL, "/encode"),
    (_CALL, "/completion"),
    (_CALL, "/embedding"),
    (_CALL, "/infill"),
    (_CALL, "/reranking"),
    (_CALL, "/apply-template"),
)

MAX_PATH = 8192  # longer than any real route with its query; bounds the work per request

# Printable ASCII except space and  " # < > @ [ ] ^ ` { | }  and the backslash.
_SAFE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:/?%]*")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Percent-encoded bytes that would change the path's structure or meaning once decoded.
_BAD_ENCODED = re.compile(r"%(2[Ff]|5[Cc]|25|[01][0-9A-Fa-f]|7[Ff])")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused, as the HTTP answer the client gets."""

    status: int
    code: str
    message: str


def _bad(message: str) -> Refusal:
    return Refusal(400, "invalid_path", message)


def path_problem(method: object, path: object, allow: Iterable[str] = ()) -> Refusal | None:
    """None when ``method path`` may reach the backend; otherwise the refusal to answer.
    ``allow``: the worker's ``--service.allow-path`` globs."""
    early = request_problem(method, path)
    if early is not None:
        return early
    assert isinstance(method, str) and isinstance(path, str)
    route = unquote_to_bytes(path.partition("?")[0]).decode("latin-1")
    if route_allowed(method, route, allow):
        return None
    return Refusal(
        403,
        "route_not_allowed",
        f"{method} {route[:200]} is not an inference route; the worker's operator can allow it "
        "with --service.allow-path",
    )


def request_problem(method: object, path: object) -> Refusal | None:
    """The method and form checks alone: what an entry node can judge without knowing the
    serving worker's allow patterns."""
    if not isinstance(method, str) or method not in METHODS:
        shown = method if isinstance(method, str) else type(method).__name__
        return Refusal(
            405,
            "method_not_allowed",
            f"method {shown[:16]!r} is not forwarded; allowed: {', '.join(sorted(METHODS))}",
        )
    return form_problem(path)


def form_problem(path: object) -> Refusal | None:
    """None for an origin-form path this module can reason about; else why not."""
    if not isinstance(path, str) or not path:
        return _bad("the request path is empty")
    if len(path) > MAX_PATH:
        return _bad(f"the request path is longer than {MAX_PATH} characters")
    if not path.startswith("/"):
        return _bad("the request path must start with '/' (no scheme, no host, no '*')")
    if path.startswith("//"):
        return _bad("the request path must not start with '//' (that names a host)")
    if not _SAFE.fullmatch(path):
        bad = next(c for c in path if not _SAFE.fullmatch(c))
        return _bad(f"the request path contains a forbidden character {bad!r}")
    if _PCT.search(path):
        return _bad("the request path has a malformed percent-escape")
    route, _, _query = path.partition("?")
    if _BAD_ENCODED.search(route):
        return _bad("the request path percent-encodes '/', '\\', '%' or a control character")
    decoded = unquote_to_bytes(route)
    if any(b < 0x21 or b > 0x7E for b in decoded):
        return _bad("the request path decodes to a space, a control or a non-ASCII byte")
    segments = decoded.decode("ascii").split("/")[1:]
    # A trailing slash leaves one empty last segment; empty ones inside mean '//'.
    if any(s == "" for s in segments[:-1]):
        return _bad("the request path has an empty segment ('//')")
    if any(s in (".", "..") for s in segments):
        return _bad("the request path has a '.' or '..' segment")
    return None


def route_allowed(method: str, route: str, allow: Iterable[str] = ()) -> bool:
    """The decoded path (no query) is a default route for this method, or matches one of
    the operator's ``--service.allow-path`` globs (any allowed method)."""
    if any(method in methods and fnmatchcase(route, pat) for methods, pat in DEFAULT_ROUTES):
        return True
    return any(fnmatchcase(route, pat) for pat in allow)
