"""Backend load from vLLM / SGLang / llama.cpp metrics: realistic samples and garbage."""

from __future__ import annotations

import json

import pytest

from opentela.worker.metrics import BackendLoad, parse, parse_prometheus, parse_slots

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.41
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 17.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 17.0
vllm:num_requests_running_extra 99
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 11234.0
"""

SGLANG = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 7.0
# HELP sglang:num_used_tokens The number of used tokens.
# TYPE sglang:num_used_tokens gauge
sglang:num_used_tokens{model_name="Qwen/Qwen2.5-7B-Instruct"} 5123.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.28
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B-Instruct"} 12.0
# HELP sglang:cache_hit_rate The prefix cache hit rate.
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="Qwen/Qwen2.5-7B-Instruct"} 0.62
"""

LLAMACPP = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 4821
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 3.114
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.125
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
"""

TGI = """\
# TYPE tgi_queue_size gauge
tgi_queue_size 3
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 8
"""

SLOTS_NEW = [
    {
        "id": 0,
        "id_task": 41,
        "n_ctx": 4096,
        "speculative": False,
        "is_processing": True,
        "params": {"n_predict": -1, "temperature": 0.8},
        "next_token": {"has_next_token": True, "n_remain": -1, "n_decoded": 17},
    },
    {"id": 1, "id_task": -1, "n_ctx": 4096, "speculative": False, "is_processing": False},
    {"id": 2, "id_task": 43, "n_ctx": 4096, "speculative": False, "is_processing": True},
]
SLOTS_OLD = [
    {"id": 0, "task_id": 7, "state": 1, "prompt": "Hello"},
    {"id": 1, "task_id": -1, "state": 0, "prompt": ""},
]


def test_vllm_sums_label_sets_and_ignores_other_metrics() -> None:
    assert parse_prometheus(VLLM) == BackendLoad(running=5, waiting=4)
    assert parse_prometheus(VLLM).total == 9


def test_sglang() -> None:
    assert parse_prometheus(SGLANG) == BackendLoad(running=7, waiting=12)


def test_llamacpp_metrics() -> None:
    assert parse_prometheus(LLAMACPP) == BackendLoad(running=2, waiting=1)


def test_tgi() -> None:
    assert parse_prometheus(TGI) == BackendLoad(running=8, waiting=3)


def test_bytes_crlf_and_timestamps() -> None:
    text = "vllm:num_requests_running 2 1712345678000\r\nvllm:num_requests_waiting\t1e0\r\n"
    assert parse_prometheus(text.encode()) == BackendLoad(2, 1)


def test_one_side_missing_is_zero() -> None:
    assert parse_prometheus("vllm:num_requests_waiting 6\n") == BackendLoad(0, 6)


def test_labels_with_braces_quotes_and_spaces() -> None:
    text = (
        'vllm:num_requests_running{model_name="we}ird \\"model\\" {x}",engine="0"} 4\n'
        'vllm:num_requests_running{model_name="other"} 1.0\n'
    )
    assert parse_prometheus(text) == BackendLoad(5, 0)


def test_vllm_preferred_when_families_mix() -> None:
    assert parse_prometheus(SGLANG + VLLM) == BackendLoad(5, 4)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n# just comments\n",
        "<html><body>404 Not Found</body></html>",
        '{"detail": "Not Found"}',
        "python_gc_objects_collected_total 3\nprocess_cpu_seconds_total 1.5\n",
        "vllm:num_requests_running NaN\nvllm:num_requests_waiting +Inf\n",
        'vllm:num_requests_running{unterminated="x 3\n',
        "vllm:num_requests_running\n",
        "vllm:num_requests_running three\n",
        "vllm:num_requests_running-3 4\n",
        "\x00\xff garbage \ufffd",
    ],
)
def test_garbage_is_none(text: str) -> None:
    assert parse_prometheus(text) is None


def test_garbage_lines_among_good_ones_are_skipped() -> None:
    text = "vllm:num_requests_running oops\nvllm:num_requests_running 2\n}{ \x00\n"
    assert parse_prometheus(text) == BackendLoad(2, 0)


def test_negative_and_fractional_values() -> None:
    assert parse_prometheus("vllm:num_requests_running -2\nvllm:num_requests_waiting 1.6\n") == (
        BackendLoad(0, 2)
    )


def test_slots_new_and_old() -> None:
    assert parse_slots(SLOTS_NEW) == BackendLoad(2, 0)
    assert parse_slots(SLOTS_OLD) == BackendLoad(1, 0)
    assert parse_slots(json.dumps(SLOTS_NEW)) == BackendLoad(2, 0)
    assert parse_slots(json.dumps(SLOTS_OLD).encode()) == BackendLoad(1, 0)
    assert parse_slots({"slots": SLOTS_OLD}) == BackendLoad(1, 0)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {},
        "not json",
        b"\xff\xfe",
        [1, 2, 3],
        [{"id": 0}],
        [{"is_processing": "yes"}],
        [{"state": True}],
        {"error": {"code": 501, "message": "This server does not support slots endpoint."}},
        None,
    ],
)
def test_slots_garbage_is_none(data: object) -> None:
    assert parse_slots(data) is None


def test_parse_dispatches_on_format() -> None:
    assert parse(VLLM) == BackendLoad(5, 4)
    assert parse(LLAMACPP.encode()) == BackendLoad(2, 1)
    assert parse("  " + json.dumps(SLOTS_NEW)) == BackendLoad(2, 0)
    assert parse('{"error": "nope"}') is None
    assert parse(b"") is None
