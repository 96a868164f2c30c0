"""Which forwarded requests may reach a backend (opentela/httppaths.py): the worker's trust
boundary against a member that turns it into a proxy or an admin console."""

from __future__ import annotations

import pytest

from opentela.httppaths import DEFAULT_ROUTES, METHODS, path_problem, request_problem

UNSAFE_FORMS = [
    "http://evil/x",  # absolute-form: scheme and authority
    "https://evil.example:443/v1/models",
    "//evil/x",  # network-path reference: base_url + "//evil" names another host
    "@evil/x",  # base_url + "@evil" makes the base host userinfo
    "/@evil/x",
    "/v1/models@evil",
    "/v1/../admin",
    "/v1/./models",
    "/v1/models/..",
    "/%2e%2e/x",
    "/%2E%2E/sleep",
    "/v1/%2e%2e/sleep",
    "/v1/.%2e/sleep",
    "/v1%2F..%2Fsleep",  # encoded slash changes the segments a second decoder sees
    "/v1%2fmodels",
    "/x%5cy",  # encoded backslash
    "/%252e%252e/sleep",  # double encoding
    "/x%00y",  # encoded NUL
    "/x%0d%0aHost:%20y",  # encoded CRLF
    "/x%20y",  # encoded space in the path
    "/x\\y",
    "/x\r\nHost: y",
    "/x\ny",
    "/x\ty",
    "/x\x00y",
    "/x\x7fy",
    "/v1/models y",
    "/v1/chat/completions HTTP/1.1",
    "",
    "*",
    "v1/models",  # relative: no leading slash
    "/v1//models",  # empty segment
    "/v1/models#frag",
    "/v1/mod%zzels",  # malformed escape
    "/v1/models%",
    "/v1/mod\u00e9ls",  # raw non-ASCII
    "/v1/models%C3%A9",  # decodes to non-ASCII bytes
    "/" + "a" * 9000,
]


@pytest.mark.parametrize("path", UNSAFE_FORMS)
def test_unsafe_forms_are_refused_with_400(path: str) -> None:
    for method in ("GET", "POST"):
        refusal = path_problem(method, path)
        assert refusal is not None, path
        assert refusal.status == 400 and refusal.code == "invalid_path"
        # Not even an allow-everything pattern lets a bad form through.
        allowed = path_problem(method, path, ("*",))
        assert allowed is not None and allowed.status == 400
        assert request_problem(method, path) is not None


@pytest.mark.parametrize("path", [None, 42, ["/v1/models"], b"/v1/models"])
def test_non_string_paths_are_refused(path: object) -> None:
    refusal = path_problem("GET", path)
    assert refusal is not None and refusal.status == 400


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "CONNECT", "TRACE", "get", "", None])
def test_methods_outside_the_api_are_refused(method: object) -> None:
    refusal = path_problem(method, "/v1/models/alice/m", ("*",))
    assert refusal is not None and refusal.status == 405
    assert refusal.code == "method_not_allowed"


ADMIN = [
    # vLLM
    ("POST", "/sleep"),
    ("POST", "/sleep?level=2"),
    ("POST", "/wake_up"),
    ("GET", "/is_sleeping"),
    ("POST", "/reset_prefix_cache"),
    ("POST", "/reset_mm_cache"),
    ("POST", "/collective_rpc"),
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/v1/unload_lora_adapter"),
    ("POST", "/start_profile"),
    ("POST", "/stop_profile"),
    ("POST", "/scale_elastic_ep"),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("GET", "/server_info"),
    ("POST", "/sl%65ep"),  # encoded letters decode to the admin route
    ("POST", "/sleep/"),  # Starlette redirects the trailing slash to /sleep
    ("POST", "/SLEEP"),
    # SGLang
    ("POST", "/flush_cache"),
    ("GET", "/flush_cache"),
    ("POST", "/update_weights_from_disk"),
    ("POST", "/update_weights_from_tensor"),
    ("POST", "/init_weights_update_group"),
    ("POST", "/release_memory_occupation"),
    ("POST", "/resume_memory_occupation"),
    ("GET", "/start_profile"),
    ("POST", "/configure_logging"),
    ("POST", "/abort_request"),
    ("POST", "/set_internal_state"),
    ("POST", "/slow_down"),
    ("GET", "/get_server_info"),  # returns the server arguments, API key included
    # llama.cpp
    ("POST", "/slots/0?action=save"),
    ("POST", "/slots/0?action=erase"),
    ("GET", "/slots"),  # slot state can include other users' prompts
    ("POST", "/lora-adapters"),
    ("POST", "/props"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN)
def test_admin_routes_are_refused_by_default(method: str, path: str) -> None:
    refusal = path_problem(method, path)
    assert refusal is not None, (method, path)
    assert refusal.status == 403 and refusal.code == "route_not_allowed"
    assert "--service.allow-path" in refusal.message
    # The entry cannot know the worker's allow patterns: it checks form and method only.
    assert request_problem(method, path) is None


def test_an_allow_pattern_opens_exactly_what_it_matches() -> None:
    allow = ("/slots/*", "/sleep")
    assert path_problem("POST", "/slots/0?action=save", allow) is None
    assert path_problem("POST", "/sleep", allow) is None
    assert path_problem("POST", "/sleep?level=1", allow) is None  # query is not matched
    assert path_problem("POST", "/wake_up", allow) is not None
    assert path_problem("GET", "/slots", allow) is not None  # "/slots/*" needs the slash
    assert path_problem("POST", "/v1/load_lora_adapter", ("/v1/*_lora_adapter",)) is None
    # Matching is on the decoded path, case-sensitive.
    assert path_problem("POST", "/sl%65ep", allow) is None
    assert path_problem("POST", "/Sleep", allow) is not None
    # Never DELETE, whatever is allowed.
    assert path_problem("DELETE", "/sleep", allow) is not None


NORMAL = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("OPTIONS", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("HEAD", "/v1/models"),
    ("GET", "/v1/models/swiss-ai/Apertus-8B"),
    ("GET", "/v1/models/alice/my-model:q4_k_m"),
    ("GET", "/v1/models?limit=10&after=x%20y"),  # encoded space in a query is fine
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/version"),
    ("GET", "/ping"),
    ("GET", "/props"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/resp_123"),
    ("POST", "/v1/responses/resp_123/cancel"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("POST", "/v1/rerank"),
    ("POST", "/generate"),
    ("POST", "/completion"),
    ("POST", "/v1/chat/completions?stream=true&x=%26%3D"),
]


@pytest.mark.parametrize(("method", "path"), NORMAL)
def test_inference_model_and_health_routes_pass(method: str, path: str) -> None:
    assert path_problem(method, path) is None
    assert request_problem(method, path) is None


def test_default_routes_use_only_forwarded_methods() -> None:
    for methods, pattern in DEFAULT_ROUTES:
        assert methods <= METHODS and pattern.startswith("/")


def test_method_specific_routes() -> None:
    assert path_problem("GET", "/v1/chat/completions") is not None
    assert path_problem("POST", "/v1/models") is not None
    assert path_problem("POST", "/health") is not None


def test_client_credentials_and_invalid_headers_do_not_cross_to_a_backend() -> None:
    from opentela.httpheaders import DROP_TO_BACKEND, end_to_end

    headers = [
        ("Authorization", "Bearer client"),
        ("authorization", "Bearer again"),
        ("Proxy-Authorization", "Basic x"),
        ("Cookie", "s=1"),
        ("X-API-Key", "k"),
        ("X-Injected", "a\r\nHost: evil"),
        ("Bad Name", "v"),
        ("Content-Type", "application/json"),
        ("X-Request-Id", "3f2b8c1e-7d4a-4e1f-9a0b-2c3d4e5f6a7b"),
    ]
    assert end_to_end(headers, DROP_TO_BACKEND) == [
        ["Content-Type", "application/json"],
        ["X-Request-Id", "3f2b8c1e-7d4a-4e1f-9a0b-2c3d4e5f6a7b"],
    ]
